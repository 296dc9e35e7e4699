"""Put streams recorded at their own rates onto one fixed-rate frame grid, and measure the mismatch.

Every stream is a sorted array of message times (seconds). For each frame time the stream gives
one message (``nearest``: the closest; ``previous``: the latest at or before it, what a robot
would have seen live) or a blend of its two neighbours (``interpolate``, numeric streams only).
:class:`AlignStats` adds up, per stream, how far the used message was from the frame time and how
many messages were dropped (never used) or duplicated (used by several frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def frame_grid(t0: float, t1: float, fps: float) -> np.ndarray:
    """Frame times t0, t0 + 1/fps, ... up to t1 (inclusive, to 1e-9 s)."""
    if t1 < t0:
        return np.zeros(0)
    n = int(np.floor((t1 - t0) * fps + 1e-9)) + 1
    return t0 + np.arange(n) / fps


def select(times: np.ndarray, grid: np.ndarray, mode: str) -> np.ndarray:
    """Index into ``times`` of the message each frame uses (``nearest`` or ``previous``)."""
    right = np.searchsorted(times, grid, side="right")
    prev = np.clip(right - 1, 0, len(times) - 1)
    if mode == "previous":
        return prev
    nxt = np.clip(right, 0, len(times) - 1)
    # Ties go to the earlier message.
    return np.where(np.abs(times[nxt] - grid) < np.abs(grid - times[prev]), nxt, prev)


def interpolate(times: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of (N, D) ``values`` at ``grid``; clamped at the ends."""
    out = np.empty((len(grid), values.shape[1]), dtype=np.float64)
    for d in range(values.shape[1]):
        out[:, d] = np.interp(grid, times, values[:, d])
    return out


@dataclass
class AlignStats:
    """Mismatch between one stream and the frame grid, summed over episodes."""

    label: str
    mode: str
    frames: int = 0
    offset_sum: float = 0.0
    offset_max: float = 0.0
    in_window: int = 0
    used: int = 0
    duplicated: int = 0

    def add(self, times: np.ndarray, grid: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Record one episode's selection; returns the per-frame offsets (s) to the chosen message.

        For ``interpolate`` streams ``idx`` is the nearest message, so the offset says how far the
        blend reached; dropped/duplicated counts are not meaningful there and are not reported.
        """
        offsets = np.abs(times[idx] - grid)
        self.frames += len(grid)
        self.offset_sum += float(offsets.sum())
        self.offset_max = max(self.offset_max, float(offsets.max(initial=0.0)))
        lo = int(np.searchsorted(times, grid[0], side="left"))
        hi = int(np.searchsorted(times, grid[-1], side="right"))
        unique = np.unique(idx)
        self.in_window += hi - lo
        self.used += int(np.count_nonzero((unique >= lo) & (unique < hi)))
        self.duplicated += len(idx) - len(unique)
        return offsets

    @property
    def dropped(self) -> int:
        """Messages inside the episodes' time windows that no frame used."""
        return max(0, self.in_window - self.used)

    def line(self) -> str:
        """One report line: ``/joint_states.position  nearest  max 4.1 ms  mean 1.2 ms  ...``."""
        mean_ms = 1e3 * self.offset_sum / max(1, self.frames)
        text = f"{self.label:<32} {self.mode:<11} max {1e3 * self.offset_max:7.1f} ms  mean {mean_ms:6.1f} ms"
        if self.mode != "interpolate":
            text += f"  dropped {self.dropped}  duplicated {self.duplicated}"
        return text
