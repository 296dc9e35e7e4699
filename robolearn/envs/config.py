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
CUBE_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
"""The colours a cube (or goal) can have, in the fixed slot order of the distractor layout."""
DISTRACTOR_TASKS: dict[str, int] = {"lift": 1, "push": 2, "pick-place": 2, "stack": 2}
"""Tasks that take ``extra: {distractors: N}``, with the colours each one's instruction names (the
distractors take other colours, so at most ``len(CUBE_COLOURS)`` minus that many)."""
MAX_DISTRACTORS = 3
"""Most distractor cubes that fit on the table beside a task's own objects, all kept apart."""
SLOT_FIELDS = ("present", "x", "y", "z", "qw", "qx", "qy", "qz")
"""Per colour slot of the distractor layout: 1/0 whether a cube of that colour is on the table, then
its pose (all zero when absent)."""
SLOT_ENV_STATE_NAMES: tuple[str, ...] = (
    *(f"{c}_cube_{f}" for c in CUBE_COLOURS for f in SLOT_FIELDS),
    "goal_present", "goal_x", "goal_y", "goal_z",
)  # fmt: skip
"""``observation.environment_state`` of every task with distractors (52): one 8-slot per colour in
:data:`CUBE_COLOURS` order, whether or not the cube is the target, then the goal disc (1/0 present,
its position; zero for lift and stack). No position in it depends on which cube is the target, so
the instruction is the only thing that says which one it is; and lift, push, pick-place and stack
share the layout, so their demos go into one dataset."""


def distractor_count(task: str, extra: dict[str, float]) -> int:
    """``extra["distractors"]`` as a checked int (0 when absent); ``ValueError`` naming the problem."""
    value = extra.get("distractors", 0)
    if task not in DISTRACTOR_TASKS:
        if value:
            raise ValueError(
                f"task {task!r} takes no distractors (tasks with distractors: {', '.join(DISTRACTOR_TASKS)})"
            )
        return 0
    if isinstance(value, bool) or not float(value).is_integer() or not 0 <= value <= MAX_DISTRACTORS:
        raise ValueError(
            f"task {task!r}: extra.distractors must be a whole number 0..{MAX_DISTRACTORS}, found {value!r}"
        )
    return int(value)


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
    """Task-specific knobs (e.g. ``success_height``); unknown ones are rejected by the task.
    ``distractors: N`` (lift, push, pick-place, stack; default 0) adds N cubes of colours the
    instruction does not name, and switches ``observation.environment_state`` to the colour-slot
    layout :data:`SLOT_ENV_STATE_NAMES` (the ``franka-*-d2`` envs set N = 2)."""

    def __post_init__(self) -> None:
        distractor_count(self.task, self.extra)  # a bad count fails where the config is made

    @property
    def distractors(self) -> int:
        """Number of distractor cubes (``extra["distractors"]``, checked; 0 when unset)."""
        return distractor_count(self.task, self.extra)

    @property
    def robot_type(self) -> str:
        """LeRobot's ``robot_type`` of the arm: ``franka_<hardware>``, e.g. ``franka_fr3``."""
        return f"franka_{self.hardware}"

    def feature_names(self) -> dict[str, tuple[str, ...]]:
        """Element names of ``observation.state``, ``observation.environment_state`` and ``action``."""
        action = EE_DELTA_ACTION_NAMES if self.control_mode == "ee_delta" else JOINT_POS_ACTION_NAMES
        env_state = SLOT_ENV_STATE_NAMES if self.distractors else ENV_STATE_NAMES[self.task]
        return {OBS_STATE: STATE_NAMES, OBS_ENV_STATE: env_state, ACTION: action}

    def instruction_template(self) -> str:
        """The task's instruction with its per-episode colours as ``{placeholders}``."""
        return INSTRUCTION_TEMPLATES[self.task]
