"""Adapters that put peer simulators (robosuite, Meta-World) behind robolearn's env conventions.

This module is light: it holds only the config dataclasses, so the env registry can list and
validate adapter configs without importing robosuite, Meta-World or mujoco. The heavy code lives in
:mod:`robolearn.envs.adapters.robosuite_env` and :mod:`robolearn.envs.adapters.metaworld_env`, each
with a ``build(config) -> gymnasium.Env``.

Both adapters follow the embedded envs' conventions: a ``Dict`` observation with
``observation.state`` (22-D proprio: joint pos 7, joint vel 7, gripper width 1 m, EE position 3,
EE quaternion wxyz 4), ``observation.environment_state`` (task dependent, flat),
``observation.images.<camera>`` (uint8 H×W×3) and ``task`` (the language instruction);
``info["is_success"]`` on every step; malformed actions raise ``ValueError`` and out-of-range ones
are clipped with ``info["action_clipped"] = True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ROBOSUITE_TASKS: tuple[str, ...] = ("Lift", "Stack", "PickPlaceCan", "NutAssemblySquare")


def _check_common(name: str, image_size: tuple[int, int], max_episode_steps: int, reward_type: str) -> None:
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"{name}.image_size must be (height, width) with positive ints; got {image_size!r}")
    if max_episode_steps < 0:
        raise ValueError(f"{name}.max_episode_steps must be >= 0 (0 = task default); got {max_episode_steps}")
    if reward_type not in ("dense", "sparse"):
        raise ValueError(f"{name}.reward_type must be 'dense' or 'sparse'; got {reward_type!r}")


@dataclass
class RobosuiteConfig:
    """One robosuite 1.5 task with a Panda arm, OSC_POSE delta control at ``control_freq``."""

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
    control_freq: int = 20
    """Policy rate (Hz); robosuite runs 1 / (control_freq * 0.002) physics substeps per step."""
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
        if self.control_freq <= 0:
            raise ValueError(f"RobosuiteConfig.control_freq must be > 0; got {self.control_freq}")
        self.cameras = tuple(self.cameras)
        self.image_size = tuple(self.image_size)


@dataclass
class MetaWorldConfig:
    """One Meta-World v3 task (Sawyer arm, mocap xyz control), goal observable, randomised per reset.

    Meta-World's native action is 4-D, so this adapter's action space is ``Box(-1, 1, (4,))``:
    [dx, dy, dz, gripper] (gripper -1 open, +1 close), 1 cm per step at |a| = 1; the control rate is
    80 Hz (5 substeps of 2.5 ms).
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
    cheap_render: bool = True
    """Turn off shadows and multisample anti-aliasing for camera images."""

    def __post_init__(self) -> None:
        if not self.task.endswith("-v3"):
            raise ValueError(
                f"MetaWorldConfig.task must be a Meta-World v3 name like 'reach-v3'; got {self.task!r}"
            )
        _check_common("MetaWorldConfig", self.image_size, self.max_episode_steps, self.reward_type)
        self.cameras = tuple(self.cameras)
        self.image_size = tuple(self.image_size)


__all__ = ["ROBOSUITE_TASKS", "MetaWorldConfig", "RobosuiteConfig"]
