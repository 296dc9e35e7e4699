"""Helpers shared by the peer-simulator adapters (numpy and gymnasium only)."""

from __future__ import annotations

import logging
import string
from collections.abc import Iterable

import numpy as np
from gymnasium import spaces

from robolearn.types import OBS_ENV_STATE, OBS_STATE, TASK, image_key

STATE_DIM = 22
"""joint pos (7), joint vel (7), gripper width (1), EE position (3), EE quaternion wxyz (4)."""


def check_action(action: object, dim: int) -> tuple[np.ndarray, bool]:
    """Validate one action in [-1, 1]^dim; return it clipped (float64) and whether clipping happened.

    Raises ``ValueError`` for a wrong shape, a non-numeric value, NaN or inf.
    """
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"action must be a numeric array of shape ({dim},); got {action!r}") from err
    if a.shape != (dim,):
        raise ValueError(f"action must have shape ({dim},) with values in [-1, 1]; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(
            f"action must be finite (no NaN or inf), shape ({dim},) in [-1, 1]; got {a.tolist()}"
        )
    clipped = np.clip(a, -1.0, 1.0)
    return clipped, bool(np.any(clipped != a))


def instruction_space() -> spaces.Text:
    """The space of ``observation["task"]``: the episode's language instruction."""
    return spaces.Text(max_length=256, charset=string.printable)


def observation_space(env_state_dim: int, cameras: Iterable[str], image_size: tuple[int, int]) -> spaces.Dict:
    """The ``Dict`` observation space shared by the adapters."""
    h, w = image_size
    entries: dict[str, spaces.Space] = {
        OBS_STATE: spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
        OBS_ENV_STATE: spaces.Box(-np.inf, np.inf, (env_state_dim,), np.float32),
    }
    for cam in cameras:
        entries[image_key(cam)] = spaces.Box(0, 255, (h, w, 3), np.uint8)
    entries[TASK] = instruction_space()
    return spaces.Dict(entries)


def proprio(
    joint_pos: np.ndarray,
    joint_vel: np.ndarray,
    gripper_width: float,
    ee_pos: np.ndarray,
    ee_quat_wxyz: np.ndarray,
) -> np.ndarray:
    """Pack the 22-D ``observation.state`` vector (float32)."""
    out = np.empty(STATE_DIM, dtype=np.float32)
    out[0:7] = joint_pos
    out[7:14] = joint_vel
    out[14] = gripper_width
    out[15:18] = ee_pos
    out[18:22] = ee_quat_wxyz
    return out


def xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    """Reorder a quaternion from (x, y, z, w) to (w, x, y, z)."""
    q = np.asarray(q)
    return np.concatenate([q[..., 3:4], q[..., 0:3]], axis=-1)


def resolve_cameras(cameras: Iterable[str], aliases: dict[str, str]) -> dict[str, str]:
    """Map each requested camera name (the observation key suffix) to the simulator's camera name."""
    out: dict[str, str] = {}
    for cam in cameras:
        if cam in out:
            raise ValueError(f"camera {cam!r} is listed twice")
        out[cam] = aliases.get(cam, cam)
    return out


_PEER_NOISE: dict[str, tuple[str, ...]] = {
    "robosuite_logs": (
        # robosuite runs fine on its shipped macros; the private file only overrides defaults.
        "No private macro file found",
        "It is recommended to use a private macro file",
        "To setup, run:",
        # Extra robot models and the mink whole-body IK serve humanoids; the adapters use a Panda.
        "Could not import robosuite_models",
        "Could not load the mink-based whole-body IK",
    ),
}
"""Per peer logger: messages that say nothing about robolearn's use of the peer."""


class _PeerNoiseFilter(logging.Filter):
    """Drops a peer's INFO/DEBUG records and its known irrelevant warnings; keeps every other warning."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and not record.getMessage().startswith(self.prefixes)


def quiet_peer_logs() -> None:
    """Filter the peers' import-time and per-env log noise (idempotent; call before importing them).

    A filter on the logger survives the peer setting its own level and handlers at import.
    """
    for name, prefixes in _PEER_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _PeerNoiseFilter) for f in logger.filters):
            logger.addFilter(_PeerNoiseFilter(prefixes))
