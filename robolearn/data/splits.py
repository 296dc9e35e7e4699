"""A dataset's train / validation split: the one it records, else the one ``robolearn train`` draws.

A dataset records a split in ``meta/info.json`` as ``robolearn.splits``: ``{"train": [episode
indices], "valid": [...], <other name>: [...]}`` (an import of a robomimic file keeps its
``mask/*`` there). Without one, the split is :func:`robolearn.data.sampler.split_episodes` with
``robolearn train``'s defaults (``val_fraction`` 0.05, seed 0), so a robomimic export's
``mask/valid`` holds the same episodes that ``robolearn train`` holds out.
"""

from __future__ import annotations

from typing import Any

TRAIN, VALID = "train", "valid"
DEFAULT_VAL_FRACTION = 0.05
"""``robolearn train``'s ``val_fraction`` default (:class:`robolearn.train.config.TrainConfig`)."""


def recorded_splits(info: dict[str, Any]) -> dict[str, list[int]]:
    """``info.json``'s ``robolearn.splits`` (``{}`` when absent)."""
    block = info.get("robolearn")
    splits = block.get("splits") if isinstance(block, dict) else None
    if not isinstance(splits, dict):
        return {}
    return {str(k): [int(i) for i in v] for k, v in splits.items() if isinstance(v, list)}


def train_valid(
    splits: dict[str, list[int]],
    num_episodes: int,
    val_fraction: float | None = None,
    seed: int = 0,
) -> dict[str, list[int]]:
    """``splits`` completed with ``train`` and ``valid`` over ``range(num_episodes)``.

    A recorded ``train`` or ``valid`` alone is completed by its complement; with neither, the
    split is drawn (:func:`~robolearn.data.sampler.split_episodes`, ``val_fraction`` defaulting to
    :data:`DEFAULT_VAL_FRACTION`). Other recorded names are kept as they are; indices outside the
    dataset are dropped.
    """
    from robolearn.data.sampler import split_episodes

    out = {k: sorted(i for i in v if 0 <= i < num_episodes) for k, v in splits.items()}
    every = set(range(num_episodes))
    if TRAIN in out and VALID not in out:
        out[VALID] = sorted(every - set(out[TRAIN]))
    elif VALID in out and TRAIN not in out:
        out[TRAIN] = sorted(every - set(out[VALID]))
    elif TRAIN not in out:
        frac = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
        out[TRAIN], out[VALID] = split_episodes(num_episodes, frac, seed)
    return out


def dataset_split(
    info: dict[str, Any], num_episodes: int, val_fraction: float | None = None, seed: int = 0
) -> tuple[list[int], list[int]]:
    """``(train, valid)`` episode indices of a dataset with ``info.json`` ``info``: its recorded
    split where it has one (an imported robomimic file's masks), else the drawn one."""
    both = train_valid(recorded_splits(info), num_episodes, val_fraction, seed)
    return both[TRAIN], both[VALID]
