"""gym-hil tasks (LeRobot's Panda + Robotiq 2F-85 MuJoCo sims) behind robolearn's env conventions.

Observation (``gymnasium.spaces.Dict``):

- ``observation.state`` (22,) float32: joint positions (7), joint velocities (7), gripper width (m,
  between the two finger pads: about 0.085 open, 0 closed on nothing), pinch-site position (3, world
  frame), pinch-site quaternion (4, wxyz). gym-hil's own 18-D ``agent_pos`` instead carries the
  gripper's actuator command (0-255) and no orientation; everything here is read from its MuJoCo data.
- ``observation.environment_state`` float32: each block's world position (3) and quaternion (4,
  wxyz); names in :data:`robolearn.envs.adapters.GYM_HIL_ENV_STATE_NAMES` (PickCube 7, ArrangeBoxes
  35 values). gym-hil itself reports only the first block's position.
- ``observation.images.<cam>`` uint8 (H, W, 3); ``task``: the language instruction.

Action: ``Box(-1, 1, (7,))`` = [dx, dy, dz, droll, dpitch, dyaw, gripper]. The translation moves
gym-hil's mocap target by ``max_ee_step`` m per step at |a| = 1 (gym-hil's own 2.5 cm; the target is
integrated, not reset to the hand, and clipped to gym-hil's workspace box); the rotation turns the
target's orientation about the world axes by ``max_ee_rot_step`` rad (gym-hil's wrapper drops it, but
its controller tracks the target orientation); gripper -1 opens, +1 closes, as an absolute closure
command like the Franka envs' (0 = half closed). gym-hil's operational-space controller then tracks
the target for every 2 ms physics substep (50 per step at the default 10 Hz).

Differences from gym-hil, on purpose: episodes end only on success (``terminate_on_success``) or at
``max_episode_steps``, never because a block left gym-hil's sampling box; the initial layout is drawn
from ``reset(seed=...)`` (gym-hil draws it from numpy's global generator, so a seeded reset was not
reproducible); success is gym-hil's ``_is_success`` (PickCube: cube 10 cm up and within 5 cm of the
pinch point; ArrangeBoxes: every box within 3 cm of its pad); the 1 s sleep of gym-hil's reset
wrapper is not used.
"""

from __future__ import annotations

import atexit
import os
import weakref

os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gym_hil.envs import PandaArrangeBoxesGymEnv, PandaPickCubeGymEnv  # noqa: E402
from gym_hil.mujoco_gym_env import MAX_GRIPPER_COMMAND, GymRenderingSpec  # noqa: E402

from robolearn.envs.adapters import GYM_HIL_ENV_STATE_NAMES, GymHilConfig  # noqa: E402
from robolearn.envs.adapters._common import (  # noqa: E402
    check_action,
    observation_space,
    proprio,
    resolve_cameras,
)
from robolearn.types import OBS_ENV_STATE, OBS_STATE, TASK, image_key  # noqa: E402

CAMERA_ALIASES = {"wrist": "handcam_rgb"}
PHYSICS_DT = 0.002
PICK_SAMPLING_BOUNDS = np.array([[0.3, -0.15], [0.5, 0.15]])
"""(x, y) box gym-hil draws PickCube's cube from when ``random_block_position=True``."""
PICK_LIFT = 0.1
"""PickCube's success height above the cube's resting height (m)."""
_ARRANGE_ROWS = np.linspace(-0.3, 0.3, 5)  # the y of ArrangeBoxes' five pads (and boxes)


@dataclass(frozen=True)
class _Task:
    env_cls: type
    blocks: tuple[str, ...]
    instruction: str
    episode_steps: int


TASKS: dict[str, _Task] = {
    "PandaPickCube": _Task(PandaPickCubeGymEnv, ("block",), "pick up the purple cube and lift it", 100),
    "PandaArrangeBoxes": _Task(
        PandaArrangeBoxesGymEnv,
        tuple(f"block{i}" for i in range(1, 6)),
        "move each box onto the pad of its colour",
        400,
    ),
}


class GymHilEnv(gym.Env):
    """A gym-hil task following robolearn's observation/action conventions (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str = "PandaPickCube",
        cameras: tuple[str, ...] = (),
        image_size: tuple[int, int] = (96, 96),
        max_episode_steps: int = 0,
        reward_type: str = "dense",
        terminate_on_success: bool = True,
        control_hz: float = 10.0,
        max_ee_step: float = 0.025,
        max_ee_rot_step: float = 0.1,
        randomize: bool = True,
        cheap_render: bool = True,
        render_mode: str | None = None,
    ):
        self.config = GymHilConfig(
            task=task,  # type: ignore[arg-type]
            cameras=tuple(cameras),
            image_size=tuple(image_size),  # type: ignore[arg-type]
            max_episode_steps=max_episode_steps,
            reward_type=reward_type,  # type: ignore[arg-type]
            terminate_on_success=terminate_on_success,
            control_hz=control_hz,
            max_ee_step=max_ee_step,
            max_ee_rot_step=max_ee_rot_step,
            randomize=randomize,
            cheap_render=cheap_render,
        )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array'; got {render_mode!r}")
        self.render_mode = render_mode
        spec = TASKS[task]
        self._spec = spec
        self.instruction = spec.instruction
        self.max_episode_steps = max_episode_steps or spec.episode_steps
        h, w = self.config.image_size
        # Dense is asked for so that gym-hil's reward stays available; sparse is computed here.
        env = spec.env_cls(reward_type="dense", render_spec=GymRenderingSpec(height=h, width=w))
        env.close()  # gym-hil always opens a renderer; ours is built below, with the render settings
        # gym-hil floors control_dt // physics_dt in floating point: 1, 2 and 4 Hz lose a substep.
        env._n_substeps = max(1, round(1.0 / (control_hz * PHYSICS_DT)))
        env._control_dt = env._n_substeps * PHYSICS_DT
        self.metadata = {**type(self).metadata, "render_fps": control_hz}
        self._env = env
        self._model, self._data = env.model, env.data
        m = self._model
        arm = [m.joint(f"joint{i}") for i in range(1, 8)]
        self._arm_qpos = np.array([j.qposadr[0] for j in arm])
        self._arm_dof = np.array([j.dofadr[0] for j in arm])
        self._pads = (m.geom("left_pad1").id, m.geom("right_pad1").id)
        self._pad_thickness = 2.0 * float(m.geom("left_pad1").size[1])
        self._pinch = m.site("pinch").id
        self._block_bodies = np.array([m.body(b).id for b in spec.blocks])
        self._block_qpos = np.array([m.joint(b).qposadr[0] for b in spec.blocks])
        self._grip_ctrl = env._gripper_ctrl_id

        self._cameras = resolve_cameras(cameras, CAMERA_ALIASES)
        for name, cam in self._cameras.items():
            if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, cam) < 0:
                raise ValueError(f"camera {name!r}: gym-hil's scene has no camera {cam!r}")
        # Videos of a policy that sees no camera come from the front view, outside the observation.
        self._video_camera = None if self._cameras or render_mode is None else "front"
        self._renderer: mujoco.Renderer | None = None
        if self._cameras or self._video_camera:
            if cheap_render:
                m.vis.quality.shadowsize = 0
                m.vis.quality.offsamples = 0
            self._renderer = mujoco.Renderer(m, height=h, width=w)
            # Free the GL context at exit even if close() is never called: registered after mujoco's
            # own eglTerminate, it runs first (atexit is LIFO).
            self._finalizer = weakref.finalize(self, self._renderer.close)
            self._finalizer.atexit = False
            atexit.register(self._finalizer)
        state_dim = len(GYM_HIL_ENV_STATE_NAMES[task])
        self.observation_space = observation_space(state_dim, self._cameras, self.config.image_size)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self._steps = 0
        self._last_obs: dict[str, Any] | None = None

    @property
    def unwrapped_gym_hil(self) -> Any:
        """The underlying gym-hil environment (for inspection; stepping it directly bypasses checks)."""
        return self._env

    def _gripper_width(self) -> float:
        left, right = self._pads
        gap = float(np.linalg.norm(self._data.geom_xpos[left] - self._data.geom_xpos[right]))
        return max(gap - self._pad_thickness, 0.0)

    def _observation(self) -> dict[str, Any]:
        d = self._data
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, d.site_xmat[self._pinch])
        env_state = np.concatenate(
            [np.concatenate([d.xpos[b], d.xquat[b]]) for b in self._block_bodies]
        ).astype(np.float32)
        obs: dict[str, Any] = {
            OBS_STATE: proprio(
                d.qpos[self._arm_qpos],
                d.qvel[self._arm_dof],
                self._gripper_width(),
                d.site_xpos[self._pinch],
                quat,
            ),
            OBS_ENV_STATE: env_state,
        }
        for name, cam in self._cameras.items():
            obs[image_key(name)] = self._render(cam)
        obs[TASK] = self.instruction
        self._last_obs = obs
        return obs

    def _render(self, camera: str) -> np.ndarray:
        assert self._renderer is not None
        self._renderer.update_scene(self._data, camera=camera)
        return self._renderer.render()

    def _place_blocks(self) -> None:
        """Initial layout, drawn from ``self.np_random`` (gym-hil's own draws use numpy's global RNG)."""
        qpos = self._data.qpos
        if self.config.task == "PandaPickCube":
            xy = self.np_random.uniform(*PICK_SAMPLING_BOUNDS) if self.config.randomize else (0.5, 0.0)
            z = float(self._model.geom("block").size[2])
            qpos[self._block_qpos[0] : self._block_qpos[0] + 3] = (*xy, z)
        elif self.config.randomize:  # ArrangeBoxes: same boxes, rows shuffled, as gym-hil does
            for adr, y in zip(self._block_qpos, self.np_random.permutation(_ARRANGE_ROWS), strict=True):
                qpos[adr + 1] = y

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Start an episode; the same ``seed`` gives the same initial robot and block state."""
        super().reset(seed=seed)
        env, m, d = self._env, self._model, self._data
        mujoco.mj_resetData(m, d)
        env.reset_robot()  # home posture, mocap target on the pinch point, gripper open
        self._place_blocks()
        mujoco.mj_forward(m, d)
        if self.config.task == "PandaPickCube":
            # gym-hil's reward and success read these, which its own reset sets.
            env._z_init = float(d.xpos[self._block_bodies[0], 2])
            env._z_success = env._z_init + PICK_LIFT
        self._steps = 0
        return self._observation(), {"is_success": bool(env._is_success())}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        """Apply one delta-EE action (7,) for one control period (1 / control_hz s)."""
        a, clipped = check_action(action, 7)
        d = self._data
        rotvec = a[3:6] * self.config.max_ee_rot_step
        angle = float(np.linalg.norm(rotvec))
        if angle > 0:
            turn, quat = np.empty(4), np.empty(4)
            mujoco.mju_axisAngle2Quat(turn, rotvec / angle, angle)
            mujoco.mju_mulQuat(quat, turn, d.mocap_quat[0])  # world-frame rotation of the target
            mujoco.mju_normalize4(quat)
            d.mocap_quat[0] = quat
        closure = 0.5 * (a[6] + 1.0)  # gym-hil adds its command to the current closure in [0, 1]
        grip = closure - d.ctrl[self._grip_ctrl] / MAX_GRIPPER_COMMAND
        self._env.apply_action(np.concatenate([a[:3] * self.config.max_ee_step, np.zeros(3), [grip]]))
        self._steps += 1
        success = bool(self._env._is_success())
        reward = float(success) if self.config.reward_type == "sparse" else float(self._env._compute_reward())
        terminated = success and self.config.terminate_on_success
        truncated = self._steps >= self.max_episode_steps and not terminated
        info = {"is_success": success, "action_clipped": clipped}
        return self._observation(), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """With ``render_mode='rgb_array'``: the latest image of the first observation camera, or, when
        the observation has none, the ``front`` view at ``image_size``; else None."""
        if self.render_mode != "rgb_array" or self._last_obs is None:
            return None
        if self._video_camera is None:
            return self._last_obs[image_key(next(iter(self._cameras)))]
        return self._render(self._video_camera)

    def close(self) -> None:
        if getattr(self, "_renderer", None) is not None:
            self._finalizer()
            atexit.unregister(self._finalizer)
            self._renderer = None
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()
            self._env = None


class PickCubeExpert:
    """A scripted PickCube policy: hover over the cube, descend, close, lift.

    It is stateless: every step it decides from the observation alone (pinch point, gripper width,
    cube position), so a missed or slipped grasp is retried rather than replayed. ``expert(obs)``
    takes one observation dict or a batch from a vector env and returns (7,) or (B, 7) actions.
    """

    HOVER = 0.06
    """Height above the cube (m) at which the hand lines up before descending."""
    GRASP_DEPTH = 0.005
    """How far below the cube's centre the pinch point goes to grasp (m)."""

    def __init__(self, max_ee_step: float = 0.025, gain: float = 0.8):
        self.max_ee_step = max_ee_step
        self.gain = gain

    def reset(self) -> None:
        """Nothing to forget (the expert keeps no state); present for the expert interface."""

    def __call__(self, obs: Mapping[str, Any]) -> np.ndarray:
        state = np.asarray(obs[OBS_STATE], dtype=np.float64)
        env_state = np.asarray(obs[OBS_ENV_STATE], dtype=np.float64)
        if state.ndim == 1:
            return self.act(state, env_state)
        return np.stack([self.act(s, e) for s, e in zip(state, env_state, strict=True)])

    def act(self, state: np.ndarray, env_state: np.ndarray) -> np.ndarray:
        """One action (7,) from one (state (22,), environment_state (7,)) pair."""
        width, pinch, cube = state[14], state[15:18], env_state[0:3]
        grasp = cube - np.array([0.0, 0.0, self.GRASP_DEPTH])
        xy_err = float(np.linalg.norm(cube[:2] - pinch[:2]))
        holding = 0.02 < width < 0.05 and float(np.linalg.norm(cube - pinch)) < 0.03
        if holding:
            goal, gripper = np.array([*pinch[:2], cube[2] + 2 * PICK_LIFT]), 1.0
        elif xy_err > 0.012:
            # Line up above the cube first, so the fingers never sweep it sideways.
            low = pinch[2] < cube[2] + 0.5 * self.HOVER
            goal, gripper = np.array([*(pinch[:2] if low else cube[:2]), cube[2] + self.HOVER]), -1.0
        elif pinch[2] - grasp[2] > 0.01:
            goal, gripper = grasp, -1.0
        else:
            goal, gripper = grasp, (1.0 if width > 0.02 else -1.0)  # closed on nothing: reopen, retry
        action = np.zeros(7, dtype=np.float32)
        action[:3] = np.clip(self.gain * (goal - pinch) / self.max_ee_step, -1.0, 1.0)
        action[6] = gripper
        return action


def scripted_expert(env: GymHilEnv | GymHilConfig) -> PickCubeExpert:
    """The scripted expert for a PickCube env (or config); other gym-hil tasks have none."""
    config = env.config if isinstance(env, GymHilEnv) else env
    if config.task != "PandaPickCube":
        raise ValueError(f"no scripted expert for gym-hil task {config.task!r} (only PandaPickCube)")
    return PickCubeExpert(max_ee_step=config.max_ee_step)


def build(config: GymHilConfig, **kwargs: Any) -> GymHilEnv:
    """Registry builder: a :class:`GymHilEnv` from its config (``kwargs`` e.g. ``render_mode``)."""
    return GymHilEnv(
        task=config.task,
        cameras=config.cameras,
        image_size=config.image_size,
        max_episode_steps=config.max_episode_steps,
        reward_type=config.reward_type,
        terminate_on_success=config.terminate_on_success,
        control_hz=config.control_hz,
        max_ee_step=config.max_ee_step,
        max_ee_rot_step=config.max_ee_rot_step,
        randomize=config.randomize,
        cheap_render=config.cheap_render,
        **kwargs,
    )
