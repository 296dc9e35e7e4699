"""Where the embedded Franka tasks put things: the table's reach, the clearances kept around task cubes,
the goal and a push's lane, and the seeded samplers that respect them."""

from __future__ import annotations

import numpy as np

TABLE_X = (0.4, 0.6)
TABLE_Y = (-0.18, 0.18)
DISTRACTOR_CLEARANCE = 0.1
"""Least distance (m) from a distractor's centre to a task cube's or the goal's: the open fingers
(pads 5.4 cm from the TCP) and a cube set down on the goal never touch one."""
DISTRACTOR_SPACING = 0.08
"""Least distance (m) between two distractors' centres (a cube's half diagonal is 2.8 cm)."""
PUSH_LANE = 0.1
"""Least distance (m) of a distractor from the line a pushed cube travels, from behind the cube
(where the pusher lowers) to just past the goal."""


def random_yaw_quat(rng: np.random.Generator) -> np.ndarray:
    """A (w, x, y, z) rotation about z by a uniform yaw in [-pi/4, pi/4] (a cube's whole symmetry range)."""
    yaw = rng.uniform(-np.pi / 4, np.pi / 4)
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def segment_dist(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance from point ``p`` to the segment ``a``-``b`` (all xy)."""
    ab = b - a
    denom = float(ab @ ab)
    t = 0.0 if denom == 0.0 else min(max(float((p - a) @ ab) / denom, 0.0), 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


def free_spot(
    rng: np.random.Generator, zones: list[tuple[np.ndarray, np.ndarray, float]], taken: list[np.ndarray]
) -> np.ndarray | None:
    """A uniform table position outside every zone and :data:`DISTRACTOR_SPACING` from ``taken``."""
    for _ in range(200):
        xy = np.array([rng.uniform(*TABLE_X), rng.uniform(*TABLE_Y)])
        if all(segment_dist(xy, a, b) >= r for a, b, r in zones) and all(
            np.linalg.norm(xy - t) >= DISTRACTOR_SPACING for t in taken
        ):
            return xy
    return None


def sample_xy(rng: np.random.Generator, avoid: list[np.ndarray], min_dist: float) -> np.ndarray:
    """Uniform table position at least ``min_dist`` from every point in ``avoid``."""
    for _ in range(100):
        xy = np.array([rng.uniform(*TABLE_X), rng.uniform(*TABLE_Y)])
        if all(np.linalg.norm(xy - a) >= min_dist for a in avoid):
            return xy
    raise RuntimeError("could not place objects; table too small for min_dist")


__all__ = ["DISTRACTOR_CLEARANCE", "DISTRACTOR_SPACING", "PUSH_LANE", "TABLE_X", "TABLE_Y", "free_spot",
           "random_yaw_quat", "sample_xy", "segment_dist"]  # fmt: skip
