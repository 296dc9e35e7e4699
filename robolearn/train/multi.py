"""Several LeRobot v3.0 datasets as one training source (``robolearn train --dataset A --dataset B``).

The datasets must have identical features (dtype, shape, and element names where both declare
them) and one fps; the first difference is an error naming both datasets and the feature. Each
dataset is split into train and validation episodes on its own (the split it records, else
:func:`split_episodes` with the same fraction and seed; :mod:`robolearn.data.splits`), its windows are built by its own :class:`WindowedDataset`, and the windows are
concatenated. Normalization stats are combined exactly: every dataset's stats over its training
episodes, then LeRobot's aggregation across them (count-weighted means, pooled variance, min of mins,
max of maxes, count-weighted quantiles), which is what one dataset holding all those episodes
would give. The instructions (``task`` strings) of all datasets are merged, in order.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robolearn.data.errors import DatasetError
from robolearn.types import FeatureSpec


@dataclass
class TrainingData:
    """What the trainer needs to know about its datasets before building windows."""

    roots: list[Path]
    features: dict[str, FeatureSpec]
    """The (shared) features of every dataset."""
    fps: int
    envs: tuple[str, ...]
    """Union of the envs the datasets record (``robolearn.env``), in order."""
    tasks: list[str]
    """Every instruction of every dataset, each once, in order."""
    train_episodes: list[list[int]]
    """Per dataset: its training episodes."""
    val_episodes: list[list[int]]
    """Per dataset: its validation episodes."""


def check_same_features(
    first: Path, first_features: dict[str, FeatureSpec], other: Path, features: dict[str, FeatureSpec]
) -> None:
    """Raise :class:`DatasetError` naming both datasets and the first feature that differs."""
    from robolearn.data.merge import spec_difference

    for key in sorted(set(first_features) | set(features)):
        diff = spec_difference(first_features.get(key), features.get(key))
        if diff:
            raise DatasetError(
                f"feature {key!r} is {diff[1]} in {other} but {diff[0]} in {first}: "
                "datasets used together need identical features",
                file=f"{other}/meta/info.json",
            )


def load_training_data(roots: Sequence[str | Path], val_fraction: float, seed: int) -> TrainingData:
    """Open every dataset's metadata, check they fit together, and split each into train/val."""
    from robolearn.data.reader import LeRobotReader
    from robolearn.data.splits import dataset_split
    from robolearn.train.trainer import dataset_envs

    paths = [Path(r) for r in roots]
    if not paths:
        raise ValueError("no dataset given")
    if len(set(p.resolve() for p in paths)) != len(paths):
        raise ValueError(f"a dataset is given twice: {[str(p) for p in paths]}")
    readers = [LeRobotReader(p) for p in paths]
    try:
        first = readers[0]
        envs: list[str] = []
        tasks: list[str] = []
        for path, reader in zip(paths, readers, strict=True):
            check_same_features(paths[0], first.features, path, reader.features)
            if reader.fps != first.fps:
                raise DatasetError(
                    f"fps {reader.fps} in {path} but {first.fps} in {paths[0]}: datasets used together "
                    "need one fps",
                    file=f"{path}/meta/info.json",
                )
            envs.extend(dataset_envs(reader.info, f"{path}/meta/info.json"))
            tasks.extend(reader.tasks)
        # a recorded split (an imported robomimic file's mask/train, mask/valid) wins over the drawn one
        splits = [dataset_split(r.info, r.num_episodes, val_fraction, seed) for r in readers]
        return TrainingData(
            roots=paths, features=dict(first.features), fps=first.fps, envs=tuple(dict.fromkeys(envs)),
            tasks=list(dict.fromkeys(tasks)), train_episodes=[t for t, _ in splits],
            val_episodes=[v for _, v in splits],
        )  # fmt: skip
    finally:
        for reader in readers:
            reader.close()


def combined_stats(
    roots: Sequence[str | Path], episodes: Sequence[Sequence[int]], keys: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Stats over ``episodes[i]`` of ``roots[i]`` for every ``i``, combined exactly (module docstring)."""
    from robolearn.data import stats as stats_mod
    from robolearn.data.dataset_stats import compute_stats

    parts = [compute_stats(r, eps, keys) for r, eps in zip(roots, episodes, strict=True) if len(eps)]
    if not parts:
        raise ValueError("combined_stats: no episodes selected")
    if len(parts) == 1:
        return parts[0]
    return {k: stats_mod.aggregate([p[k] for p in parts]) for k in parts[0]}


class TaggedConcat(torch.utils.data.ConcatDataset):
    """Windows of several datasets end to end; each sample also says which: ``dataset_index``
    (int64, the position of its dataset in ``tags``), so an error about a batch can name it."""

    def __init__(self, datasets: list, tags: list[int]):
        super().__init__(datasets)
        self.tags = list(tags)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.sample(i)

    def _part(self, i: int) -> tuple[int, int]:
        if i < 0:
            i += len(self)
        k = bisect.bisect_right(self.cumulative_sizes, i)
        return k, i - (self.cumulative_sizes[k - 1] if k else 0)

    def frame_key(self, i: int) -> tuple[int, int]:
        """(``dataset_index``, frame ``index``) of sample ``i``."""
        k, j = self._part(i)
        return self.tags[k], self.datasets[k].frame_key(j)[1]

    def sample(self, i: int, images: bool = True) -> dict[str, Any]:
        """Sample ``i`` (``images=False``: camera frames not decoded, see ``WindowedDataset.sample``)."""
        k, j = self._part(i)
        sample = self.datasets[k].sample(j, images)
        sample["dataset_index"] = torch.tensor(self.tags[k], dtype=torch.int64)
        return sample


def windows(data: TrainingData, split: str, **kwargs: Any):
    """The ``split`` (``"train"`` or ``"val"``) windows of every dataset: one :class:`WindowedDataset`
    for a single dataset, a :class:`TaggedConcat` for several; None when the split is empty.
    ``kwargs`` go to each :class:`WindowedDataset` (``video_cache_mb`` is shared out among them)."""
    from robolearn.data.sampler import WindowedDataset

    episodes = data.train_episodes if split == "train" else data.val_episodes
    parts = [(i, root, eps) for i, (root, eps) in enumerate(zip(data.roots, episodes, strict=True)) if eps]
    if not parts:
        return None
    if len(data.roots) == 1:
        return WindowedDataset(parts[0][1], episodes=parts[0][2], **kwargs)
    if "video_cache_mb" in kwargs:
        kwargs = {**kwargs, "video_cache_mb": kwargs["video_cache_mb"] / len(parts)}
    sets = [WindowedDataset(root, episodes=eps, **kwargs) for _, root, eps in parts]
    return TaggedConcat(sets, [i for i, _, _ in parts])
