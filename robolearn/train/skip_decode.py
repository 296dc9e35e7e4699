"""Skip decoding camera frames the policy will not look at (a frozen vision tower's cached features).

A policy that caches per-frame image features says, per training sample, whether it still needs
the pixels (``policy.pixels_needed(frame_keys) -> list[bool]``, frame keys being
``(dataset_index, index)``). :class:`SkipCachedPixels` asks it for every batch just before the
batch is loaded and marks the samples whose frames it does not need; :class:`PixelsOptional`
then reads those samples without decoding (zeros in place of the frames, flagged in
:data:`PIXELS_SKIPPED`). The first epoch fills the cache; later visits of a cached frame decode
nothing. A cache only grows, so a sample marked when its batch was drawn is still cached when the
batch is used (DataLoader workers draw batches ahead: those frames are decoded, which is safe).
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
