"""Adapters that put peer simulators (robosuite, Meta-World, gym-hil) behind robolearn's env conventions.

This module is light: it holds only the config dataclasses, so the env registry can list and
validate adapter configs without importing robosuite, Meta-World, gym-hil or mujoco. The heavy code
lives in :mod:`robolearn.envs.adapters.robosuite_env`, :mod:`robolearn.envs.adapters.metaworld_env`
and :mod:`robolearn.envs.adapters.gym_hil_env`, each with a ``build(config) -> gymnasium.Env``.

All adapters follow the embedded envs' conventions: a ``Dict`` observation with
``observation.state`` (22-D proprio: joint pos 7, joint vel 7, gripper width 1 m, EE position 3,
EE quaternion wxyz 4), ``observation.environment_state`` (task dependent, flat),
``observation.images.<camera>`` (uint8 H×W×3) and ``task`` (the language instruction);
``info["is_success"]`` on every step; malformed actions raise ``ValueError`` and out-of-range ones
are clipped with ``info["action_clipped"] = True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from robolearn.types import ACTION, EE_DELTA_ACTION_NAMES, OBS_ENV_STATE, OBS_STATE, STATE_NAMES

ROBOSUITE_TASKS: tuple[str, ...] = ("Lift", "Stack", "PickPlaceCan", "NutAssemblySquare")


def _vec(name: str, axes: str = "xyz") -> tuple[str, ...]:
    return tuple(f"{name}_{a}" for a in axes)


def _rs_pose(name: str) -> tuple[str, ...]:
    return (*_vec(f"{name}_pos"), *_vec(f"{name}_quat", "xyzw"))


ROBOSUITE_ENV_STATE_NAMES: dict[str, tuple[str, ...]] = {
    "Lift": (*_rs_pose("cube"), *_vec("gripper_to_cube_pos")),
    "Stack": (*_rs_pose("cubeA"), *_rs_pose("cubeB"), *_vec("cubeA_to_cubeB"),
              *_vec("gripper_to_cubeA"), *_vec("gripper_to_cubeB")),
    "PickPlaceCan": (*_rs_pose("Can_to_robot0_eef"), *_rs_pose("Can")),
    "NutAssemblySquare": (*_rs_pose("SquareNut_to_robot0_eef"), *_rs_pose("SquareNut")),
}  # fmt: skip
"""Element names of ``observation.environment_state`` per robosuite task: robosuite's ``object-state``
observables in robosuite's order, each ``<observable>_<axis>`` (world frame; quaternions xyzw, as
robosuite reports them). ``gripper_to_X`` is X minus the EE position; ``X_to_robot0_eef`` is X's pose
in the EE frame. Note robosuite reports the ``X_to_robot0_eef`` entries as zeros on the first frame
after a reset (they are computed from the previous step's EE pose)."""


def _check_common(name: str, image_size: tuple[int, int], max_episode_steps: int, reward_type: str) -> None:
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"{name}.image_size must be (height, width) with positive ints; got {image_size!r}")
    if max_episode_steps < 0:
        raise ValueError(f"{name}.max_episode_steps must be >= 0 (0 = task default); got {max_episode_steps}")
    if reward_type not in ("dense", "sparse"):
        raise ValueError(f"{name}.reward_type must be 'dense' or 'sparse'; got {reward_type!r}")


@dataclass
class RobosuiteConfig:
    """One robosuite 1.5 task with a Panda arm, OSC_POSE delta control at ``control_hz``."""

    task: Literal["Lift", "Stack", "PickPlaceCan", "NutAssemblySquare"] = "Lift"
    """robosuite environment name."""
    cameras: tuple[str, ...] = ()
    """Cameras rendered into ``observation.images.<name>``: robosuite camera names (``agentview``,
    ``robot0_eye_in_hand``, ``frontview``, ``birdview``, ``sideview``) or the aliases ``front``
    (= agentview) and ``wrist`` (= robot0_eye_in_hand). The key keeps the name given here."""
    image_size: tuple[int, int] = (96, 96)
    """(height, width) of every camera image."""
    max_episode_steps: int = 0
    """Episode length in control steps; 0 takes 400 (robomimic's evaluation horizon)."""
    reward_type: Literal["dense", "sparse"] = "dense"
    """``dense``: robosuite's shaped reward (``reward_shaping=True``); ``sparse``: 1 on success else 0."""
    terminate_on_success: bool = True
    """End the episode (``terminated=True``) on the first successful step."""
    control_hz: float = 20.0
    """Policy rate (Hz); robosuite runs ``int(1 / (control_hz * 0.002))`` physics substeps per step
    (its ``control_freq``)."""
    cheap_render: bool = True
    """Turn off shadows and multisample anti-aliasing in the offscreen renderer (3-9x faster
    frames); False keeps robosuite's default look."""
    model_seed: int = 0
    """Seed of robosuite's build-time randomness (e.g. Lift draws its cube size when the model is
    built), so every instance builds the same scene; ``reset(seed=...)`` then fixes each episode."""

    def __post_init__(self) -> None:
        if self.task not in ROBOSUITE_TASKS:
            raise ValueError(f"RobosuiteConfig.task must be one of {ROBOSUITE_TASKS}; got {self.task!r}")
        _check_common("RobosuiteConfig", self.image_size, self.max_episode_steps, self.reward_type)
        if not 0 < self.control_hz <= 500:
            raise ValueError(
                f"RobosuiteConfig.control_hz must be in (0, 500] (physics runs at 500 Hz); got {self.control_hz}"
            )
        self.cameras = tuple(self.cameras)
        self.image_size = tuple(self.image_size)

    @property
    def robot_type(self) -> str:
        """LeRobot's ``robot_type`` of the arm (robosuite's Panda)."""
        return "panda"

    def feature_names(self) -> dict[str, tuple[str, ...]]:
        """Element names of ``observation.state``, ``observation.environment_state`` and ``action``."""
        return {
            OBS_STATE: STATE_NAMES,
            OBS_ENV_STATE: ROBOSUITE_ENV_STATE_NAMES[self.task],
            ACTION: EE_DELTA_ACTION_NAMES,
        }


METAWORLD_PHYSICS_HZ = 400.0
"""Meta-World's MuJoCo timestep is 2.5 ms."""
METAWORLD_ENV_STATE_NAMES: tuple[str, ...] = (
    *_vec("obj"), "obj_qx", "obj_qy", "obj_qz", "obj_qw",
    *_vec("obj2"), "obj2_qx", "obj2_qy", "obj2_qz", "obj2_qw", *_vec("goal"),
)  # fmt: skip
"""Element names of a Meta-World adapter's 17-D ``observation.environment_state``: Meta-World's object
block (first object position, quaternion; second object position, quaternion, zero for one-object
tasks such as reach, push and pick-place) then the goal position. Reach, push and pick-place report
their puck's quaternion xyzw (scipy's order); some other Meta-World tasks report MuJoCo's wxyz there."""
METAWORLD_ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "gripper")
"""Meta-World's native 4-D action: hand mocap displacement (1 cm at |a| = 1) and gripper (-1 open)."""


@dataclass
class MetaWorldConfig:
    """One Meta-World v3 task (Sawyer arm, mocap xyz control), goal observable, randomised per reset.

    Meta-World's native action is 4-D, so this adapter's action space is ``Box(-1, 1, (4,))``:
    [dx, dy, dz, gripper] (gripper -1 open, +1 close), 1 cm per step at |a| = 1; the control rate is
    ``control_hz`` (Meta-World's 80 Hz: 5 substeps of 2.5 ms).
    """

    task: str = "reach-v3"
    """Meta-World v3 environment name, e.g. ``reach-v3``, ``push-v3``, ``pick-place-v3``."""
    cameras: tuple[str, ...] = ()
    """Cameras rendered into ``observation.images.<name>``: Meta-World camera names (``corner``,
    ``corner2``, ``corner3``, ``corner4``, ``topview``, ``behindGripper``, ``gripperPOV``) or the
    aliases ``front`` (= corner) and ``wrist`` (= gripperPOV)."""
    image_size: tuple[int, int] = (96, 96)
    """(height, width) of every camera image."""
    max_episode_steps: int = 0
    """Episode length in control steps; 0 takes Meta-World's ``max_path_length`` (500)."""
    reward_type: Literal["dense", "sparse"] = "dense"
    """``dense``: Meta-World's shaped reward (0-10); ``sparse``: 1 on success else 0."""
    terminate_on_success: bool = True
    """End the episode (``terminated=True``) on the first successful step."""
    control_hz: float = 80.0
    """Policy rate (Hz): ``400 / control_hz`` physics substeps of 2.5 ms per step, which must be a
    whole number (80, 40, 20, ...). Meta-World's scripted policies are tuned for its default 80."""
    cheap_render: bool = True
    """Turn off shadows and multisample anti-aliasing for camera images."""

    def __post_init__(self) -> None:
        if not self.task.endswith("-v3"):
            raise ValueError(
                f"MetaWorldConfig.task must be a Meta-World v3 name like 'reach-v3'; got {self.task!r}"
            )
        _check_common("MetaWorldConfig", self.image_size, self.max_episode_steps, self.reward_type)
        substeps = METAWORLD_PHYSICS_HZ / self.control_hz if self.control_hz > 0 else 0.0
        if substeps < 1 or abs(substeps - round(substeps)) > 1e-6:
            raise ValueError(
                "MetaWorldConfig.control_hz must divide Meta-World's 400 Hz physics rate "
                f"(80, 40, 20, ...); got {self.control_hz}"
            )
        self.cameras = tuple(self.cameras)
        self.image_size = tuple(self.image_size)

    @property
    def substeps(self) -> int:
        """Physics substeps per control step (Meta-World's ``frame_skip``)."""
        return round(METAWORLD_PHYSICS_HZ / self.control_hz)

    @property
    def robot_type(self) -> str:
        """LeRobot's ``robot_type`` of the arm (Meta-World's Sawyer)."""
        return "sawyer"

    def feature_names(self) -> dict[str, tuple[str, ...]]:
        """Element names of ``observation.state``, ``observation.environment_state`` and ``action``."""
        return {
            OBS_STATE: STATE_NAMES,
            OBS_ENV_STATE: METAWORLD_ENV_STATE_NAMES,
            ACTION: METAWORLD_ACTION_NAMES,
        }


def _hil_pose(name: str) -> tuple[str, ...]:
    return (*_vec(f"{name}_pos"), *_vec(f"{name}_quat", "wxyz"))


GYM_HIL_TASKS: tuple[str, ...] = ("PandaPickCube", "PandaArrangeBoxes")
GYM_HIL_ENV_STATE_NAMES: dict[str, tuple[str, ...]] = {
    "PandaPickCube": _hil_pose("block"),
    "PandaArrangeBoxes": tuple(n for i in range(1, 6) for n in _hil_pose(f"block{i}")),
}
"""Element names of ``observation.environment_state`` per gym-hil task: each block's world position
(m) then its quaternion (wxyz)."""


@dataclass
class GymHilConfig:
    """One gym-hil task (LeRobot's Panda + Robotiq 2F-85 sims), driven through gym-hil's own
    operational-space controller tracking a mocap target."""

    task: Literal["PandaPickCube", "PandaArrangeBoxes"] = "PandaPickCube"
    """gym-hil base environment: ``PandaPickCube`` (lift one cube 10 cm) or ``PandaArrangeBoxes``
    (move five boxes onto the pad of their colour)."""
    cameras: tuple[str, ...] = ()
    """Cameras rendered into ``observation.images.<name>``: gym-hil camera names (``front``,
    ``handcam_rgb``, ``handcam_depth``) or the alias ``wrist`` (= handcam_rgb)."""
    image_size: tuple[int, int] = (96, 96)
    """(height, width) of every camera image."""
    max_episode_steps: int = 0
    """Episode length in control steps; 0 takes the task default (PickCube 100, as gym-hil
    registers it; ArrangeBoxes 400)."""
    reward_type: Literal["dense", "sparse"] = "dense"
    """``dense``: gym-hil's shaped reward; ``sparse``: 1 on success else 0."""
    terminate_on_success: bool = True
    """End the episode (``terminated=True``) on the first successful step."""
    control_hz: float = 10.0
    """Policy rate (Hz); gym-hil's controller runs ``round(1 / (control_hz * 0.002))`` physics
    substeps per step (gym-hil's default is 10 Hz)."""
    max_ee_step: float = 0.025
    """Metres the mocap target moves per control step at |action| = 1 (gym-hil's own step size)."""
    max_ee_rot_step: float = 0.1
    """Radians the mocap target turns per control step at |action| = 1."""
    randomize: bool = True
    """Draw the initial block layout from ``reset(seed=...)``: PickCube's cube uniformly in gym-hil's
    sampling box, ArrangeBoxes' boxes in a random order. False keeps gym-hil's fixed layout."""
    cheap_render: bool = True
    """Turn off shadows and multisample anti-aliasing for camera images (several times faster)."""

    def __post_init__(self) -> None:
        if self.task not in GYM_HIL_TASKS:
            raise ValueError(f"GymHilConfig.task must be one of {GYM_HIL_TASKS}; got {self.task!r}")
        _check_common("GymHilConfig", self.image_size, self.max_episode_steps, self.reward_type)
        if not 0 < self.control_hz <= 500:
            raise ValueError(
                f"GymHilConfig.control_hz must be in (0, 500] (physics runs at 500 Hz); got {self.control_hz}"
            )
        for name in ("max_ee_step", "max_ee_rot_step"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GymHilConfig.{name} must be > 0; got {getattr(self, name)}")
        self.cameras = tuple(self.cameras)
        self.image_size = tuple(self.image_size)

    @property
    def robot_type(self) -> str:
        """LeRobot's ``robot_type`` of the arm (gym-hil's Panda)."""
        return "panda"

    def feature_names(self) -> dict[str, tuple[str, ...]]:
        """Element names of ``observation.state``, ``observation.environment_state`` and ``action``."""
        return {
            OBS_STATE: STATE_NAMES,
            OBS_ENV_STATE: GYM_HIL_ENV_STATE_NAMES[self.task],
            ACTION: EE_DELTA_ACTION_NAMES,
        }


__all__ = [
    "GYM_HIL_ENV_STATE_NAMES",
    "GYM_HIL_TASKS",
    "METAWORLD_ACTION_NAMES",
    "METAWORLD_ENV_STATE_NAMES",
    "ROBOSUITE_ENV_STATE_NAMES",
    "ROBOSUITE_TASKS",
    "GymHilConfig",
    "MetaWorldConfig",
    "RobosuiteConfig",
]
