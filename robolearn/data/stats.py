"""Per-episode feature statistics and their streaming aggregation, in LeRobot 0.4.x's shapes.

Each feature gets ``min, max, mean, std, count, q01, q10, q50, q90, q99``. Vectors of shape ``(D,)``
give ``(D,)`` arrays; scalar columns give ``(1,)``; camera features give per-channel ``(3, 1, 1)``
arrays scaled to ``[0, 1]``; ``count`` is always ``(1,)`` (frames in the episode).

Differences from LeRobot, on purpose: per-episode quantiles are exact (LeRobot interpolates a
5000-bin histogram) and image statistics use every frame of the episode through a 256-bin
histogram per channel (LeRobot samples ~100 frames), so ``count`` for images is the number of frames.
Aggregation across episodes follows LeRobot exactly: count-weighted means, pooled variance,
min of mins, max of maxes, count-weighted averages of the quantiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(round(q * 100)):02d}" for q in QUANTILES)
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)

Stats = dict[str, np.ndarray]


def numeric_stats(values: np.ndarray) -> Stats:
    """Stats of one numeric feature over an episode.

    ``values``: ``(N,)`` for a scalar column or ``(N, *shape)``; statistics are per last-axis
    dimension (LeRobot flattens the leading axes the same way).
    """
    values = np.asarray(values)
    n = int(values.shape[0])
    if n == 0:
        raise ValueError("cannot compute stats of an empty episode")
    flat = values.reshape(-1, 1) if values.ndim == 1 else values.reshape(-1, values.shape[-1])
    as_float = flat.astype(np.float64)
    out: Stats = {
        "min": flat.min(axis=0),
        "max": flat.max(axis=0),
        "mean": as_float.mean(axis=0),
        "std": as_float.std(axis=0),
        "count": np.array([n], dtype=np.int64),
    }
    quantiles = np.quantile(as_float, QUANTILES, axis=0)
    for key, q in zip(QUANTILE_KEYS, quantiles, strict=True):
        out[key] = q
    return out


def _downsample(img: np.ndarray) -> np.ndarray:
    # LeRobot strides large images down to ~150 px before taking stats.
    h, w = img.shape[:2]
    if max(h, w) < 300:
        return img
    step = int(max(h, w) / 150)
    return img[::step, ::step]


class ImageStats:
    """Streaming per-channel stats of uint8 ``(H, W, C)`` frames, through exact 256-bin histograms."""

    def __init__(self, channels: int = 3):
        self.hist = np.zeros((channels, 256), dtype=np.int64)
        self.frames = 0

    def update(self, img: np.ndarray) -> None:
        """Add one frame (uint8, ``(H, W, C)``)."""
        small = _downsample(img)
        for c in range(self.hist.shape[0]):
            self.hist[c] += np.bincount(small[..., c].ravel(), minlength=256)
        self.frames += 1

    def result(self) -> Stats:
        """Stats in LeRobot's image convention: ``(C, 1, 1)`` arrays in ``[0, 1]``."""
        if self.frames == 0:
            raise ValueError("no frames seen")
        levels = np.arange(256, dtype=np.float64)
        total = self.hist.sum(axis=1).astype(np.float64)
        mean = (self.hist * levels).sum(axis=1) / total
        var = (self.hist * (levels[None] - mean[:, None]) ** 2).sum(axis=1) / total
        nonzero = self.hist > 0
        lo = nonzero.argmax(axis=1).astype(np.float64)
        hi = 255 - nonzero[:, ::-1].argmax(axis=1).astype(np.float64)
        out: Stats = {"min": lo, "max": hi, "mean": mean, "std": np.sqrt(var)}
        out = {k: (v / 255.0).reshape(-1, 1, 1) for k, v in out.items()}
        out["count"] = np.array([self.frames], dtype=np.int64)
        cum = np.cumsum(self.hist, axis=1)
        for key, q in zip(QUANTILE_KEYS, QUANTILES, strict=True):
            vals = [_hist_quantile(cum[c], q) for c in range(self.hist.shape[0])]
            out[key] = (np.array(vals) / 255.0).reshape(-1, 1, 1)
        return {k: out[k] for k in STAT_KEYS}


def _hist_quantile(cum: np.ndarray, q: float) -> float:
    """Quantile with linear interpolation (numpy's default) from the cumulative counts of 0..255."""
    pos = q * (cum[-1] - 1)
    lo_rank, frac = int(np.floor(pos)), pos - np.floor(pos)
    lo = int(np.searchsorted(cum, lo_rank, side="right"))
    hi = int(np.searchsorted(cum, min(lo_rank + 1, cum[-1] - 1), side="right"))
    return lo + frac * (hi - lo)


def aggregate(stats_list: list[Stats]) -> Stats:
    """Combine one feature's stats from several episodes (LeRobot's formulas)."""
    if not stats_list:
        raise ValueError("nothing to aggregate")
    means = np.stack([np.asarray(s["mean"], dtype=np.float64) for s in stats_list])
    variances = np.stack([np.asarray(s["std"], dtype=np.float64) ** 2 for s in stats_list])
    counts = np.stack([np.asarray(s["count"]).reshape(1) for s in stats_list])  # (E, 1)
    total = counts.sum(axis=0)
    # (E, 1, ..., 1): broadcasts against (E, D) vectors and (E, 3, 1, 1) image stats alike.
    weights = counts.reshape((len(stats_list),) + (1,) * (means.ndim - 1)).astype(np.float64)
    total_w = weights.sum(axis=0)
    mean = (means * weights).sum(axis=0) / total_w
    var = ((variances + (means - mean) ** 2) * weights).sum(axis=0) / total_w
    out: Stats = {
        "min": np.min(np.stack([np.asarray(s["min"]) for s in stats_list]), axis=0),
        "max": np.max(np.stack([np.asarray(s["max"]) for s in stats_list]), axis=0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": total,
    }
    for key in QUANTILE_KEYS:
        if all(key in s for s in stats_list):
            qs = np.stack([np.asarray(s[key], dtype=np.float64) for s in stats_list])
            out[key] = (qs * weights).sum(axis=0) / total_w
    return out


def merge(running: dict[str, Stats] | None, episode: dict[str, Stats]) -> dict[str, Stats]:
    """Fold one episode's stats into the dataset's running stats (features absent on one side are kept)."""
    if not running:
        return {k: dict(v) for k, v in episode.items()}
    out: dict[str, Stats] = {}
    for key in list(running) + [k for k in episode if k not in running]:
        parts = [s[key] for s in (running, episode) if key in s]
        out[key] = aggregate(parts) if len(parts) > 1 else dict(parts[0])
    return out


def to_json(stats: dict[str, Stats]) -> dict[str, dict[str, Any]]:
    """``meta/stats.json`` content: nested lists."""
    return {f: {k: np.asarray(v).tolist() for k, v in s.items()} for f, s in stats.items()}


def from_json(data: dict[str, dict[str, Any]]) -> dict[str, Stats]:
    return {f: {k: np.asarray(v) for k, v in s.items()} for f, s in data.items()}


def flatten_episode(stats: dict[str, Stats]) -> dict[str, Any]:
    """Per-episode stats as the ``stats/<feature>/<stat>`` columns of the episodes parquet."""
    return {f"stats/{f}/{k}": np.asarray(v).tolist() for f, s in stats.items() for k, v in s.items()}


def unflatten_episode(row: dict[str, Any]) -> dict[str, Stats]:
    """Inverse of :func:`flatten_episode` (other columns are ignored)."""
    out: dict[str, Stats] = {}
    for col, value in row.items():
        if not col.startswith("stats/") or value is None:
            continue
        feature, _, stat = col[len("stats/") :].rpartition("/")
        out.setdefault(feature, {})[stat] = np.asarray(value)
    return out
