"""Orientation helpers the scripted experts servo with: quaternion <-> rotation matrix, and yaw angles
folded to a cube's or a push's symmetry and kept inside the hand's range."""

from __future__ import annotations

import math

import numpy as np


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """(w, x, y, z) unit quaternion -> 3x3 rotation matrix."""
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def mat_to_quat(m: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix -> (w, x, y, z) quaternion (Shepperd's branch for small w)."""
    w = math.sqrt(max(1.0 + m[0, 0] + m[1, 1] + m[2, 2], 1e-12)) / 2
    if w > 1e-3:
        return np.array(
            [w, (m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), (m[1, 0] - m[0, 1]) / (4 * w)]
        )
    i = int(np.argmax(np.diag(m)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-12)) * 2
    q = np.empty(4)
    q[0] = (m[k, j] - m[j, k]) / s
    q[1 + i] = s / 4
    q[1 + j] = (m[j, i] + m[i, j]) / s
    q[1 + k] = (m[k, i] + m[i, k]) / s
    return q


def quat_yaw(quat: np.ndarray) -> float:
    """Rotation about z of a (w, x, y, z) quaternion, in (-pi, pi]."""
    w, x, y, z = quat
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def cube_yaw(quat: np.ndarray) -> float:
    """Yaw of a cube folded into [-pi/4, pi/4] (a cube looks the same every quarter turn)."""
    return (quat_yaw(quat) + math.pi / 4) % (math.pi / 2) - math.pi / 4


YAW_LIMIT = math.pi / 2 + 0.4
"""Largest |hand yaw| an expert asks for (keeps joint 7 well inside its range)."""


def hand_yaw(state: np.ndarray) -> float:
    """Yaw of the hand's x axis from the TCP quaternion in ``observation.state``."""
    return quat_yaw(state[18:22])


def nearest_yaw(yaw: float, period: float, current: float) -> float:
    """The yaw equivalent to ``yaw`` modulo ``period`` that is closest to ``current`` and within
    ±YAW_LIMIT. Servoing to it never flips the hand by a full period when the folded target crosses
    its wrap-around, so the demonstrated actions are a continuous function of the state."""
    k = round((current - yaw) / period)
    best = None
    for cand in (yaw + (k + d) * period for d in (-1, 0, 1)):
        if abs(cand) <= YAW_LIMIT and (best is None or abs(cand - current) < abs(best - current)):
            best = cand
    return yaw if best is None else best


__all__ = ["YAW_LIMIT", "cube_yaw", "hand_yaw", "mat_to_quat", "nearest_yaw", "quat_to_mat", "quat_yaw"]
