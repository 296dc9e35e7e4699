"""Feature keys and feature specs shared by envs, datasets and policies.

Keys follow the LeRobot dataset conventions so that an env observation, a dataset frame and a
policy input use the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

OBS_STATE = "observation.state"
"""Robot proprioception: joint positions (7), joint velocities (7), gripper width (1), EE pose (7)."""
OBS_ENV_STATE = "observation.environment_state"
"""Object poses and goal positions (task dependent), as LeRobot's gym envs name them."""
OBS_SIM_STATE = "observation.sim_state"
"""The simulator's full physics state (MuJoCo ``mj_getState(..., mjSTATE_FULLPHYSICS)``, float64) where
recorded (``collect --record-sim-state``); robomimic's ``states``. Policies do not take it as input."""
OBS_IMAGE_PREFIX = "observation.images."
"""Camera images: ``observation.images.<camera>``, uint8 (H, W, 3) in the env, video in datasets."""
ACTION = "action"
TASK = "task"
"""The language instruction of the episode."""
ACTION_EXECUTED = "action.executed"
"""The action the env actually executed, where it differs from the ``action`` label: DART collection
(``collect --expert-noise``) records the noisy action here next to the expert's clean label."""
REWARD = "next.reward"
DONE = "next.done"
SUCCESS = "next.success"
PIXELS_SKIPPED = "pixels_skipped"
"""Training-batch key: bool per sample, True where the camera frames were left undecoded (zeros)
because the policy holds their features (:mod:`robolearn.train.skip_decode`)."""

STATE_NAMES: tuple[str, ...] = (
    *(f"q{i}" for i in range(1, 8)),
    *(f"dq{i}" for i in range(1, 8)),
    "gripper_width",
    "tcp_x", "tcp_y", "tcp_z", "tcp_qw", "tcp_qx", "tcp_qy", "tcp_qz",
)  # fmt: skip
"""Element names of the 22-D ``observation.state`` every robolearn env reports (the adapters' EE
point is their TCP)."""
EE_DELTA_ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
"""The 7-D ``ee_delta`` action: EE translation and rotation steps in [-1, 1], gripper -1 open, +1 closed."""
JOINT_POS_ACTION_NAMES: tuple[str, ...] = (*(f"q{i}" for i in range(1, 8)), "gripper")
"""The 8-D ``joint_pos`` action of the embedded Franka tasks: 7 joint targets (rad) and the gripper."""

# Per-frame bookkeeping columns written by LeRobot v3.0.
TIMESTAMP = "timestamp"
FRAME_INDEX = "frame_index"
EPISODE_INDEX = "episode_index"
INDEX = "index"
TASK_INDEX = "task_index"


def image_key(camera: str) -> str:
    """``front`` -> ``observation.images.front``."""
    return f"{OBS_IMAGE_PREFIX}{camera}"


def is_image_key(key: str) -> bool:
    return key.startswith(OBS_IMAGE_PREFIX)


@dataclass(frozen=True)
class FeatureSpec:
    """Shape and dtype of one feature, as written in LeRobot's ``meta/info.json``.

    ``dtype`` is a numpy dtype name (``float32``, ``int64``, ``bool``), ``image`` or ``video``;
    ``names`` labels the last dimension where it has meaning (joint names, xyz).
    """

    dtype: str
    shape: tuple[int, ...]
    names: tuple[str, ...] | None = None

    def to_json(self) -> dict:
        out: dict = {"dtype": self.dtype, "shape": list(self.shape)}
        if self.dtype in ("image", "video"):
            out["names"] = ["height", "width", "channels"]
        else:
            out["names"] = list(self.names) if self.names is not None else None
        return out
