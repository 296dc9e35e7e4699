"""Skip decoding camera frames the policy will not look at (a frozen vision tower's cached features).

A policy that caches per-frame image features says, per training sample, whether it still needs
the pixels (``policy.pixels_needed(frame_keys) -> list[bool]``, frame keys being
``(dataset_index, index)``). :class:`SkipCachedPixels` asks it for every batch just before the
batch is loaded and marks the samples whose frames it does not need; :class:`PixelsOptional`
then reads those samples without decoding (zeros in place of the frames, flagged in
:data:`PIXELS_SKIPPED`). The first epoch fills the cache; later visits of a cached frame decode
nothing. A cache only grows, so a sample marked when its batch was drawn is still cached when the
batch is used (DataLoader workers draw batches ahead: those frames are decoded, which is safe).

:func:`warm_feature_cache` fills the cache before training, in one pass over the frames in dataset
order: each episode's video is decoded front to back once, and the tower runs on large batches,
instead of random frames being decoded and encoded a batch at a time over the first epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from robolearn.types import PIXELS_SKIPPED

PixelsNeeded = Callable[[Sequence[tuple[int, int]]], list[bool]]


class SkipCachedPixels(torch.utils.data.Sampler):
    """Batches of ``batches`` as ``(sample, decode_images)`` pairs, asking ``pixels_needed`` of the
    samples' frame keys (``dataset.frame_key``) when each batch is drawn."""

    def __init__(self, batches: Iterable[list[int]], dataset: Any, pixels_needed: PixelsNeeded):
        self.batches, self.dataset, self.pixels_needed = batches, dataset, pixels_needed

    def __iter__(self):
        for batch in self.batches:
            needed = self.pixels_needed([self.dataset.frame_key(i) for i in batch])
            yield list(zip(batch, needed, strict=True))

    def __len__(self) -> int:
        return len(self.batches)


class PixelsOptional(torch.utils.data.Dataset):
    """``dataset`` indexed by ``(sample, decode_images)`` (see :class:`SkipCachedPixels`)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, bool]) -> dict[str, Any]:
        i, decode = item
        sample = self.dataset.sample(i, images=decode)
        sample[PIXELS_SKIPPED] = torch.tensor(not decode)
        return sample


def warm_feature_cache(
    policy: Any, dataset: Any, batch_size: int, num_workers: int, device: torch.device, show: bool
) -> int:
    """Cache the frozen-tower features of every training sample of ``dataset`` that ``policy``
    (with ``cache_frame_features`` and ``pixels_needed``) has not cached; stops early when the
    cache budget is full. Returns the samples encoded."""
    from robolearn.progress import progress

    todo = [i for i, need in enumerate(policy.pixels_needed([dataset.frame_key(i) for i in range(len(dataset))]))
            if need]  # fmt: skip
    if not todo:
        return 0
    # its own generator: the global RNG (training noise) must not move (resume stays exact)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, todo), batch_size=batch_size,
                                         num_workers=num_workers, generator=torch.Generator().manual_seed(0))  # fmt: skip
    bar = progress(total=len(todo), desc="cache image features", unit="frame", enabled=show)
    done = 0
    was = policy.training
    policy.train()  # the cache is filled in training mode, as training visits would
    try:
        for batch in loader:
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            policy.cache_frame_features(batch)
            done += len(batch["index"])
            bar.update(len(batch["index"]))
            keys = list(zip(batch.get("dataset_index", torch.zeros_like(batch["index"])).tolist(),
                            batch["index"].tolist(), strict=True))  # fmt: skip
            if any(policy.pixels_needed(keys)):
                break  # the budget is full: training encodes the rest as it visits them
    finally:
        policy.train(was)
        bar.close()
    return done
