"""Normalization inside the policy: per-feature affine maps stored as buffers (saved with the weights).

Stats come as ``{feature_key: {"mean"|"std"|"min"|"max": array}}`` (LeRobot's ``meta/stats.json``).
Every mode is an affine map ``y = x * scale + offset``; scale and offset are precomputed once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from robolearn.types import is_image_key

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_EPS = 1e-6
STAT_NAMES = ("mean", "std", "min", "max")


def clean_stats(
    stats: Mapping[str, Mapping[str, Any]] | None, keys: list[str]
) -> dict[str, dict[str, np.ndarray]]:
    """Keep the stats of ``keys`` only, as float64 numpy arrays (JSON-ready via ``.tolist()``)."""
    if stats is None:
        return {}
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:
        if key in stats:
            out[key] = {s: np.asarray(v, dtype=np.float64) for s, v in stats[key].items() if s in STAT_NAMES}
    return out


def _stat(stats: Mapping[str, Any], key: str, name: str, size: int) -> np.ndarray:
    if name not in stats:
        raise KeyError(f"normalization stats of feature {key!r}: missing {name!r} (found: {sorted(stats)})")
    arr = np.asarray(stats[name], dtype=np.float64).reshape(-1)
    if arr.size != size:
        raise ValueError(
            f"normalization stats of feature {key!r}: {name!r} expected {size} values, found {arr.size}"
        )
    return arr


def affine_params(
    key: str, shape: tuple[int, ...], mode: str, stats: Mapping[str, Any] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) shaped to broadcast against one frame of ``shape``."""
    size = shape[0]
    view = (size, 1, 1) if is_image_key(key) else (size,)
    if mode == "none":
        return np.ones(view), np.zeros(view)
    if mode == "imagenet":
        if size != 3:
            raise ValueError(f"feature {key!r}: imagenet normalization needs 3 channels, found {size}")
        std = np.asarray(IMAGENET_STD)
        return (1.0 / std).reshape(view), (-np.asarray(IMAGENET_MEAN) / std).reshape(view)
    if stats is None:
        raise KeyError(f"feature {key!r}: mode {mode!r} needs normalization stats, found none")
    if mode == "min_max":
        lo, hi = _stat(stats, key, "min", size), _stat(stats, key, "max", size)
        span = hi - lo
        ok = span > _EPS
        scale = np.where(ok, 2.0 / np.where(ok, span, 1.0), 1.0)
        # Constant dimensions map to 0 (scale 1 around their centre).
        offset = np.where(ok, -1.0 - lo * scale, -(hi + lo) / 2.0)
        return scale.reshape(view), offset.reshape(view)
    if mode == "mean_std":
        mean, std = _stat(stats, key, "mean", size), _stat(stats, key, "std", size)
        scale = np.where(std > _EPS, 1.0 / np.where(std > _EPS, std, 1.0), 1.0)
        return scale.reshape(view), (-mean * scale).reshape(view)
    raise ValueError(f"feature {key!r}: unknown normalization mode {mode!r}")


class Normalizer(nn.Module):
    """Normalize / unnormalize named features; ``x`` is (..., *frame_shape) for each key."""

    def __init__(
        self,
        features: Mapping[str, tuple[int, ...]],
        modes: Mapping[str, str],
        stats: Mapping[str, Mapping[str, Any]] | None,
    ) -> None:
        super().__init__()
        self._names: dict[str, tuple[str, str]] = {}
        for i, (key, shape) in enumerate(features.items()):
            feature_stats = None if stats is None else stats.get(key)
            if stats is not None and feature_stats is None and modes[key] in ("min_max", "mean_std"):
                raise KeyError(f"normalization stats: missing feature {key!r} (found: {sorted(stats)})")
            if stats is None and modes[key] in ("min_max", "mean_std"):
                mode = "none"  # no stats at all: identity (data already normalized, or a smoke test)
            else:
                mode = modes[key]
            scale, offset = affine_params(key, tuple(shape), mode, feature_stats)
            names = (f"scale_{i}", f"offset_{i}")
            self.register_buffer(names[0], torch.as_tensor(scale, dtype=torch.float32))
            self.register_buffer(names[1], torch.as_tensor(offset, dtype=torch.float32))
            self._names[key] = names

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """Raw units -> normalized."""
        scale_name, offset_name = self._names[key]
        return torch.addcmul(self._buffers[offset_name], x, self._buffers[scale_name])

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        """Normalized -> raw units."""
        scale_name, offset_name = self._names[key]
        return (y - self._buffers[offset_name]) / self._buffers[scale_name]
