"""Typed config for the embedded Franka tasks (light: no mujoco import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from robolearn.types import (
    ACTION,
    EE_DELTA_ACTION_NAMES,
    JOINT_POS_ACTION_NAMES,
    OBS_ENV_STATE,
    OBS_STATE,
    STATE_NAMES,
)


def _pose(body: str) -> tuple[str, ...]:
    return tuple(f"{body}_{c}" for c in ("x", "y", "z", "qw", "qx", "qy", "qz"))


ENV_STATE_NAMES: dict[str, tuple[str, ...]] = {
    "reach": ("target_x", "target_y", "target_z"),
    "lift": _pose("cube"),
    "push": (*_pose("cube"), "goal_x", "goal_y", "goal_z"),
    "pick-place": (*_pose("cube"), "goal_x", "goal_y", "goal_z"),
    "stack": (*_pose("cube_a"), *_pose("cube_b")),
}
"""Element names of ``observation.environment_state`` per embedded task: object positions (m, world
frame, table top at z = 0) and quaternions (wxyz), then the goal's position."""
INSTRUCTION_TEMPLATES: dict[str, str] = {
    "reach": "reach the {colour} ball",
    "lift": "lift the {colour} cube",
    "push": "push the {cube} cube to the {goal} circle",
    "pick-place": "put the {cube} cube on the {goal} circle",
    "stack": "put the {cube_a} cube on the {cube_b} cube",
}
"""The instruction each task draws per episode; colours are sampled at reset."""


@dataclass
class FrankaTaskConfig:
    """Everything that defines one embedded Franka task instance."""

    task: Literal["reach", "lift", "push", "stack", "pick-place"] = "lift"
    """Which task scene, reward and success test to build."""
    control_mode: Literal["ee_delta", "joint_pos"] = "ee_delta"
    """``ee_delta``: action (7,) = [dx, dy, dz, droll, dpitch, dyaw, gripper] in [-1, 1], scaled by
    ``max_ee_step`` / ``max_ee_rot_step`` and solved with damped-least-squares IK once per control step.
    ``joint_pos``: action (8,) = 7 absolute joint targets (rad) + gripper in [-1, 1]."""
    cameras: tuple[str, ...] = ()
    """Cameras to render into ``observation.images.<name>``: any of ``front``, ``wrist``."""
    image_size: tuple[int, int] = (96, 96)
    """(height, width) of every camera image."""
    control_hz: float = 20.0
    """Policy / control rate; physics advances ``round(1 / (control_hz * physics_dt))`` substeps per step."""
    physics_dt: float = 0.002
    """MuJoCo timestep (s)."""
    max_episode_steps: int = 0
    """Episode length in control steps; 0 takes the task's default."""
    reward_type: Literal["dense", "sparse"] = "dense"
    """Reward returned by ``step``; both are always in ``info["reward_dense"|"reward_sparse"]``... see task docs."""
    terminate_on_success: bool = True
    """End the episode (``terminated=True``) on the first successful step."""
    max_ee_step: float = 0.05
    """Metres per control step at |action| = 1 (1 m/s at 20 Hz)."""
    max_ee_rot_step: float = 0.2
    """Radians per control step at |action| = 1."""
    workspace_low: tuple[float, float, float] = (0.25, -0.4, 0.005)
    """End-effector target box, lower corner (m, world frame, table top at z = 0)."""
    workspace_high: tuple[float, float, float] = (0.8, 0.4, 0.5)
    """End-effector target box, upper corner."""
    hardware: str = "fr3"
    """Arm description in ``hardware/franka/<name>.yaml`` (kinematics, limits, rates)."""
    extra: dict[str, float] = field(default_factory=dict)
    """Task-specific knobs (e.g. ``success_height``); unknown ones are rejected by the task."""

    @property
    def robot_type(self) -> str:
        """LeRobot's ``robot_type`` of the arm: ``franka_<hardware>``, e.g. ``franka_fr3``."""
        return f"franka_{self.hardware}"

    def feature_names(self) -> dict[str, tuple[str, ...]]:
        """Element names of ``observation.state``, ``observation.environment_state`` and ``action``."""
        action = EE_DELTA_ACTION_NAMES if self.control_mode == "ee_delta" else JOINT_POS_ACTION_NAMES
        return {OBS_STATE: STATE_NAMES, OBS_ENV_STATE: ENV_STATE_NAMES[self.task], ACTION: action}

    def instruction_template(self) -> str:
        """The task's instruction with its per-episode colours as ``{placeholders}``."""
        return INSTRUCTION_TEMPLATES[self.task]
