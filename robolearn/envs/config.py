"""Typed config for the embedded Franka tasks (light: no mujoco import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
