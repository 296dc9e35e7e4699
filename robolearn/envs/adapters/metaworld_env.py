"""Meta-World v3 tasks (Sawyer arm) behind robolearn's env conventions, plus its scripted experts.

Observation (``gymnasium.spaces.Dict``):

- ``observation.state`` (22,) float32: Sawyer joint positions (7), joint velocities (7), gripper
  width (m, distance between the two claws: about 0.1 open), hand position (3, world frame),
  hand quaternion (4, wxyz).
- ``observation.environment_state`` (17,) float32: Meta-World's object block of the current frame
  (up to two objects as position 3 + quaternion 4 as Meta-World reports it, mostly scipy's xyzw;
  zero padded to 14) followed by the goal position (3). Together with the state this is everything in Meta-World's native 39-D goal-observable
  observation (whose second frame is a copy of the previous one).
- ``observation.images.<cam>`` uint8 (H, W, 3); ``task``: the language instruction.

Action: ``Box(-1, 1, (4,))`` — Meta-World's native action, **not** the 7-D delta-pose action of the
Franka envs: [dx, dy, dz, gripper] moving the hand's mocap target by 1 cm per step at |a| = 1,
gripper -1 open, +1 close. The control rate is ``control_hz``: 80 Hz (5 substeps of 2.5 ms) by default.

Object and goal positions are re-drawn at every reset from the env's seeded generator (Meta-World's
benchmark classes instead cycle through 50 fixed task variants); ``reset(seed=s)`` reseeds it.
"""

from __future__ import annotations

import atexit
import os
import warnings
import weakref

os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Mapping  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from metaworld.env_dict import ALL_V3_ENVIRONMENTS  # noqa: E402
from metaworld.policies import ENV_POLICY_MAP  # noqa: E402

from robolearn.envs.adapters import MetaWorldConfig  # noqa: E402
from robolearn.envs.adapters._common import (  # noqa: E402
    check_action,
    observation_space,
    proprio,
    resolve_cameras,
)
from robolearn.types import OBS_ENV_STATE, OBS_STATE, TASK, image_key  # noqa: E402

INSTRUCTIONS: dict[str, str] = {
    "reach-v3": "move the gripper to the goal position",
    "push-v3": "push the puck to the goal position",
    "pick-place-v3": "pick up the puck and place it at the goal position",
    "door-open-v3": "open the door",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
}
CAMERA_ALIASES = {"front": "corner", "wrist": "gripperPOV"}
UPSIDE_DOWN_CAMERAS = frozenset({"corner", "corner2", "corner3", "corner4"})
"""Meta-World's MJCF gives these cameras a downward up-axis; their images are rotated 180° here."""
ARM_JOINTS = tuple(f"right_j{i}" for i in range(7))
ENV_STATE_DIM = 17
_OBJ_BLOCK = slice(4, 18)  # native obs: hand 0:3, gripper 3, objects 4:18, previous frame 18:36, goal 36:39
_GRIPPER_NORM = 0.1  # Meta-World divides the claw distance by this for its native gripper entry


def instruction_for(task: str) -> str:
    """The language instruction of a Meta-World task (a readable fallback for tasks without one)."""
    return INSTRUCTIONS.get(task, task.removesuffix("-v3").replace("-", " "))


class MetaWorldEnv(gym.Env):
    """A Meta-World v3 task with the goal observable and object/goal positions randomised per reset."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str = "reach-v3",
        cameras: tuple[str, ...] = (),
        image_size: tuple[int, int] = (96, 96),
        max_episode_steps: int = 0,
        reward_type: str = "dense",
        terminate_on_success: bool = True,
        control_hz: float = 80.0,
        cheap_render: bool = True,
        render_mode: str | None = None,
    ):
        self.config = MetaWorldConfig(
            task=task,
            cameras=tuple(cameras),
            image_size=tuple(image_size),  # type: ignore[arg-type]
            max_episode_steps=max_episode_steps,
            reward_type=reward_type,  # type: ignore[arg-type]
            terminate_on_success=terminate_on_success,
            control_hz=control_hz,
            cheap_render=cheap_render,
        )
        if task not in ALL_V3_ENVIRONMENTS:
            raise ValueError(
                f"unknown Meta-World task {task!r}; known: {', '.join(sorted(ALL_V3_ENVIRONMENTS))}"
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array'; got {render_mode!r}")
        self.render_mode = render_mode
        self.instruction = instruction_for(task)
        env = ALL_V3_ENVIRONMENTS[task]()
        # What Meta-World's goal-observable variants do, minus freezing the random vector: the goal
        # enters the observation and each reset draws object/goal positions from env.np_random.
        env._partially_observable = False
        env.__dict__.pop("sawyer_observation_space", None)  # cached property sized for the hidden goal
        env._set_task_called = True
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.seed(int(np.random.SeedSequence().generate_state(1)[0]))
        self.max_episode_steps = max_episode_steps or env.max_path_length
        env.frame_skip = self.config.substeps
        self.metadata = {**type(self).metadata, "render_fps": control_hz}
        env.max_path_length = self.max_episode_steps
        self._env = env
        self._model, self._data = env.model, env.data
        self._arm_qpos = np.array([self._model.joint(j).qposadr[0] for j in ARM_JOINTS])
        self._arm_dof = np.array([self._model.joint(j).dofadr[0] for j in ARM_JOINTS])
        self._cameras = resolve_cameras(cameras, CAMERA_ALIASES)
        for name, mw_cam in self._cameras.items():
            if mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_CAMERA, mw_cam) < 0:
                raise ValueError(f"camera {name!r}: Meta-World has no camera {mw_cam!r}")
        # Videos of a policy that sees no camera come from the front view, outside the observation.
        self._video_camera = None if self._cameras or render_mode is None else CAMERA_ALIASES["front"]
        self._renderer: mujoco.Renderer | None = None
        if self._cameras or self._video_camera:
            if cheap_render:
                self._model.vis.quality.shadowsize = 0
                self._model.vis.quality.offsamples = 0
            h, w = self.config.image_size
            self._renderer = mujoco.Renderer(self._model, height=h, width=w)
            # Free the GL context at exit even if close() is never called. mujoco registers its
            # eglTerminate with atexit when the first Renderer is made; registering after it runs
            # ours first (LIFO), whereas garbage collection at shutdown would free a dead display.
            self._finalizer = weakref.finalize(self, self._renderer.close)
            self._finalizer.atexit = False
            atexit.register(self._finalizer)
        self.observation_space = observation_space(ENV_STATE_DIM, self._cameras, self.config.image_size)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._native_obs = np.zeros(39)
        self._steps = 0
        self._last_obs: dict[str, Any] | None = None

    @property
    def native_observation(self) -> np.ndarray:
        """Meta-World's own 39-D observation after the last reset/step (what its scripted policies read)."""
        return self._native_obs.copy()

    def _observation(self, native: np.ndarray) -> dict[str, Any]:
        self._native_obs = np.asarray(native, dtype=np.float64)
        d = self._data
        width = float(np.linalg.norm(d.body("rightclaw").xpos - d.body("leftclaw").xpos))
        hand = d.body("hand")
        env_state = np.empty(ENV_STATE_DIM, dtype=np.float32)
        env_state[:14] = native[_OBJ_BLOCK]
        env_state[14:] = native[36:39]
        obs: dict[str, Any] = {
            OBS_STATE: proprio(d.qpos[self._arm_qpos], d.qvel[self._arm_dof], width, hand.xpos, hand.xquat),
            OBS_ENV_STATE: env_state,
        }
        for name, mw_cam in self._cameras.items():
            assert self._renderer is not None
            self._renderer.update_scene(d, camera=mw_cam)
            img = self._renderer.render()
            obs[image_key(name)] = (
                np.ascontiguousarray(img[::-1, ::-1]) if mw_cam in UPSIDE_DOWN_CAMERAS else img
            )
        obs[TASK] = self.instruction
        self._last_obs = obs
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Start an episode; the same ``seed`` gives the same hand, object and goal positions."""
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(seed)
        native, _ = self._env.reset()
        self._steps = 0
        return self._observation(native), {"is_success": False}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        """Apply one 4-D action [dx, dy, dz, gripper] for one control period (1 / control_hz s)."""
        a, clipped = check_action(action, 4)
        native, reward, _, _, mw_info = self._env.step(a.astype(np.float32))
        self._steps += 1
        success = bool(mw_info.get("success", 0.0))
        if self.config.reward_type == "sparse":
            reward = float(success)
        terminated = success and self.config.terminate_on_success
        truncated = self._steps >= self.max_episode_steps and not terminated
        info = {"is_success": success, "action_clipped": clipped}
        return self._observation(native), float(reward), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """With ``render_mode='rgb_array'``: the latest image of the first observation camera, or, when
        the observation has none, the ``front`` view (corner) at ``image_size``; else None."""
        if self.render_mode != "rgb_array" or self._last_obs is None:
            return None
        if self._video_camera is None:
            return self._last_obs[image_key(next(iter(self._cameras)))]
        assert self._renderer is not None
        self._renderer.update_scene(self._data, camera=self._video_camera)
        img = self._renderer.render()
        return np.ascontiguousarray(img[::-1, ::-1]) if self._video_camera in UPSIDE_DOWN_CAMERAS else img

    def close(self) -> None:
        if getattr(self, "_renderer", None) is not None:
            self._finalizer()
            atexit.unregister(self._finalizer)
            self._renderer = None
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()
            self._env = None


class MetaWorldExpert:
    """Meta-World's shipped scripted policy for one task, driven by this adapter's observations.

    ``expert(obs)`` takes one observation dict (state (22,), environment_state (17,)) or a batch
    from a vector env ((B, 22), (B, 17)) and returns actions (4,) or (B, 4) in [-1, 1].
    """

    def __init__(self, task: str):
        if task not in ENV_POLICY_MAP:
            raise ValueError(f"Meta-World ships no scripted policy for {task!r}")
        self.task = task
        self._policy = ENV_POLICY_MAP[task]()

    @staticmethod
    def native_observation(state: np.ndarray, env_state: np.ndarray) -> np.ndarray:
        """Rebuild Meta-World's 39-D observation from one (state, environment_state) pair."""
        frame = np.empty(18)
        frame[0:3] = state[15:18]
        frame[3] = np.clip(state[14] / _GRIPPER_NORM, 0.0, 1.0)
        frame[4:18] = env_state[:14]
        return np.concatenate([frame, frame, env_state[14:17]])

    def __call__(self, obs: Mapping[str, Any]) -> np.ndarray:
        state = np.asarray(obs[OBS_STATE], dtype=np.float64)
        env_state = np.asarray(obs[OBS_ENV_STATE], dtype=np.float64)
        if state.ndim == 1:
            return self._act(state, env_state)
        return np.stack([self._act(s, e) for s, e in zip(state, env_state, strict=True)])

    def _act(self, state: np.ndarray, env_state: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            # The scripted policies warn whenever their P-controller saturates, which is by design.
            warnings.filterwarnings("ignore", message="Constant.*may be too high")
            action = self._policy.get_action(self.native_observation(state, env_state))
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)


def build(config: MetaWorldConfig, **kwargs: Any) -> MetaWorldEnv:
    """Registry builder: a :class:`MetaWorldEnv` from its config (``kwargs`` e.g. ``render_mode``)."""
    return MetaWorldEnv(
        task=config.task,
        cameras=config.cameras,
        image_size=config.image_size,
        max_episode_steps=config.max_episode_steps,
        reward_type=config.reward_type,
        terminate_on_success=config.terminate_on_success,
        control_hz=config.control_hz,
        cheap_render=config.cheap_render,
        **kwargs,
    )
