"""``FrankaEnv``: the embedded MuJoCo Franka task as a gymnasium env.

Control runs at ``control_hz`` (20 Hz by default): each step solves the controller once in Python,
then advances the physics with one ``mj_step(nstep=k)`` call so the substeps stay in C.
"""

from __future__ import annotations

import atexit
import os
import string
import weakref
from functools import lru_cache
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from robolearn import types  # noqa: E402
from robolearn.envs.config import FrankaTaskConfig  # noqa: E402
from robolearn.envs.franka.controller import DiffIKController, quat_to_rotvec  # noqa: E402
from robolearn.envs.franka.description import ArmDescription, load_arm  # noqa: E402
from robolearn.envs.franka.mjcf import FINGER_RANGE, SceneSpec, scene_xml  # noqa: E402
from robolearn.envs.franka.tasks import TASKS  # noqa: E402

STATE_DIM = 22
"""joint pos (7), joint vel (7), gripper width (1), TCP position (3), TCP quaternion wxyz (4)."""
STATE_NAMES = (
    *(f"q{i}" for i in range(1, 8)),
    *(f"dq{i}" for i in range(1, 8)),
    "gripper_width",
    "tcp_x", "tcp_y", "tcp_z", "tcp_qw", "tcp_qx", "tcp_qy", "tcp_qz",
)  # fmt: skip
READY_TCP = np.array([0.45, 0.0, 0.25])
CAMERAS = ("front", "wrist")


@lru_cache(maxsize=4)
def ready_posture(arm_name: str) -> tuple[float, ...]:
    """Joint posture with the TCP at ``READY_TCP`` pointing down, found once by iterating the IK."""
    arm = load_arm(arm_name)
    model = mujoco.MjModel.from_xml_string(scene_xml(arm, SceneSpec(), 0.002, (64, 64)))
    data = mujoco.MjData(model)
    data.qpos[:7] = arm.q_home
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "tcp")
    ik = DiffIKController(model, data, arm, site, control_dt=1.0, posture_gain=0.0)
    down = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
    for _ in range(200):
        mujoco.mj_forward(model, data)
        rot = data.site_xmat[site].reshape(3, 3)
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, (down @ rot.T).ravel())
        twist = np.concatenate([READY_TCP - data.site_xpos[site], quat_to_rotvec(quat)])
        data.qpos[:7] = ik.solve(twist)
    return tuple(float(q) for q in data.qpos[:7])


_RENDERING_ENVS: weakref.WeakSet = weakref.WeakSet()


def _close_renderers() -> None:
    """Free GL contexts at exit, before mujoco's EGL display is terminated (errors otherwise)."""
    for env in list(_RENDERING_ENVS):
        env.close()


def _track_renderer(env: FrankaEnv) -> None:
    # Registered after the first Renderer exists, i.e. after mujoco.egl registered its own
    # eglTerminate hook: atexit runs last-in first-out, so ours runs first.
    if not _RENDERING_ENVS:
        atexit.unregister(_close_renderers)
        atexit.register(_close_renderers)
    _RENDERING_ENVS.add(env)


class FrankaEnv(gym.Env):
    """A Franka-class arm on a table with a task from :data:`robolearn.envs.franka.tasks.TASKS`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, config: FrankaTaskConfig | None = None, render_mode: str | None = None):
        self.config = cfg = config or FrankaTaskConfig()
        if cfg.task not in TASKS:
            raise ValueError(f"unknown task {cfg.task!r}; known: {sorted(TASKS)}")
        bad = [c for c in cfg.cameras if c not in CAMERAS]
        if bad:
            raise ValueError(f"unknown camera {bad[0]!r}; available: {CAMERAS}")
        self.arm: ArmDescription = load_arm(cfg.hardware)
        self.task = TASKS[cfg.task](dict(cfg.extra))
        self.model = mujoco.MjModel.from_xml_string(
            scene_xml(self.arm, self.task.spec, cfg.physics_dt, cfg.image_size)
        )
        self.data = mujoco.MjData(self.model)
        self.task.bind(self.model)
        self.n_substeps = max(1, round(1.0 / (cfg.control_hz * cfg.physics_dt)))
        self.control_dt = self.n_substeps * cfg.physics_dt
        self.metadata = {**self.metadata, "render_fps": cfg.control_hz}
        self.max_episode_steps = cfg.max_episode_steps or self.task.episode_steps
        self.render_mode = render_mode
        self._tcp = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "tcp")
        self._ik = DiffIKController(self.model, self.data, self.arm, self._tcp, self.control_dt)
        self._ready = np.array(ready_posture(cfg.hardware))
        self._ik.rest = self._ready.copy()
        self._ws_low = np.array(cfg.workspace_low)
        self._ws_high = np.array(cfg.workspace_high)
        self._finger_step = 0.5 * self.arm.gripper_max_speed * self.control_dt
        self._ee_mode = cfg.control_mode == "ee_delta"
        self._ee_step, self._rot_step = cfg.max_ee_step, cfg.max_ee_rot_step
        self._twist = np.zeros(6)
        self._renderer: mujoco.Renderer | None = None
        self._video_renderer: mujoco.Renderer | None = None
        self._quat = np.empty(4)
        self._env_state = np.zeros(self.task.env_state_dim)
        self._steps = 0
        self._define_spaces()

    # ----------------------------------------------------------------- spaces
    def _define_spaces(self) -> None:
        cfg = self.config
        inf = np.inf
        obs = {
            types.OBS_STATE: gym.spaces.Box(-inf, inf, (STATE_DIM,), np.float32),
            types.OBS_ENV_STATE: gym.spaces.Box(-inf, inf, (self.task.env_state_dim,), np.float32),
        }
        for cam in cfg.cameras:
            obs[types.image_key(cam)] = gym.spaces.Box(0, 255, (*cfg.image_size, 3), np.uint8)
        obs[types.TASK] = gym.spaces.Text(max_length=256, charset=string.printable)
        self.observation_space = gym.spaces.Dict(obs)
        if cfg.control_mode == "ee_delta":
            self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
            self._act_low, self._act_high = -np.ones(7), np.ones(7)
        else:
            low = np.concatenate([self.arm.q_min, [-1.0]]).astype(np.float32)
            high = np.concatenate([self.arm.q_max, [1.0]]).astype(np.float32)
            self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
            self._act_low, self._act_high = low.astype(np.float64), high.astype(np.float64)

    # --------------------------------------------------------------- episode
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        q0 = self._ready + self.np_random.uniform(-0.03, 0.03, size=7)
        d.qpos[:7] = q0
        d.qpos[7:9] = FINGER_RANGE
        d.ctrl[:7] = q0
        d.ctrl[7:9] = FINGER_RANGE
        self.task.reset_scene(self.np_random, d)
        mujoco.mj_forward(m, d)
        self._steps = 0
        obs = self._observation()
        return obs, {"is_success": False, "action_clipped": False, "workspace_clipped": False}

    def step(self, action):
        act = self._check_action(action)
        clipped_act = np.minimum(np.maximum(act, self._act_low), self._act_high)
        action_clipped = bool((clipped_act != act).any())
        d = self.data
        ws_clipped = False
        if self._ee_mode:
            tcp = d.site_xpos[self._tcp]
            target = tcp + clipped_act[:3] * self._ee_step
            bounded = np.minimum(np.maximum(target, self._ws_low), self._ws_high)
            ws_clipped = bool((bounded != target).any())
            self._twist[:3] = bounded - tcp
            self._twist[3:] = clipped_act[3:6] * self._rot_step
            d.ctrl[:7] = self._ik.solve(self._twist)
        else:
            d.ctrl[:7] = self._ik.limit(d.qpos[:7], clipped_act[:7] - d.qpos[:7])
        # Fingers move toward the commanded opening no faster than the hand's rated speed.
        finger_goal = 0.5 * (1.0 - float(clipped_act[-1])) * FINGER_RANGE
        current = float(d.ctrl[7])
        delta = min(max(finger_goal - current, -self._finger_step), self._finger_step)
        d.ctrl[7] = d.ctrl[8] = current + delta
        mujoco.mj_step(self.model, d, nstep=self.n_substeps)
        self._steps += 1

        tcp = d.site_xpos[self._tcp]
        width = float(d.qpos[7] + d.qpos[8])
        success = bool(self.task.success(d, tcp, width))
        if self.config.reward_type == "dense":
            reward = float(self.task.dense_reward(d, tcp, width))
        else:
            reward = float(success)
        terminated = success and self.config.terminate_on_success
        truncated = self._steps >= self.max_episode_steps
        info = {"is_success": success, "action_clipped": action_clipped, "workspace_clipped": ws_clipped}
        return self._observation(), reward, terminated, truncated, info

    def _check_action(self, action: Any) -> np.ndarray:
        act = np.asarray(action, dtype=np.float64)
        if act.shape != self._act_low.shape:
            raise ValueError(
                f"{self.config.task}: action must have shape {self.action_space.shape} "
                f"({self._action_doc()}), found {act.shape}"
            )
        if not np.isfinite(act).all():
            raise ValueError(f"{self.config.task}: action contains NaN or inf: {act.tolist()}")
        return act

    def _action_doc(self) -> str:
        if self.config.control_mode == "ee_delta":
            return "[dx, dy, dz, droll, dpitch, dyaw, gripper] in [-1, 1]"
        return "7 joint positions (rad) + gripper in [-1, 1]"

    # ----------------------------------------------------------- observation
    def _observation(self) -> dict[str, Any]:
        d = self.data
        state = np.empty(STATE_DIM, dtype=np.float32)
        state[0:7] = d.qpos[:7]
        state[7:14] = d.qvel[:7]
        state[14] = d.qpos[7] + d.qpos[8]
        state[15:18] = d.site_xpos[self._tcp]
        mujoco.mju_mat2Quat(self._quat, d.site_xmat[self._tcp])
        state[18:22] = self._quat
        self.task.env_state(d, self._env_state)
        obs = {types.OBS_STATE: state, types.OBS_ENV_STATE: self._env_state.astype(np.float32)}
        for cam in self.config.cameras:
            obs[types.image_key(cam)] = self._render_camera(cam)
        obs[types.TASK] = self.task.state.instruction
        return obs

    def _render_camera(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            h, w = self.config.image_size
            self._renderer = mujoco.Renderer(self.model, h, w)
            _track_renderer(self)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()

    def render(self) -> np.ndarray | None:
        """Front view at 240x320 for videos (``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array":
            return None
        if self._video_renderer is None:
            self._video_renderer = mujoco.Renderer(self.model, 240, 320)
            _track_renderer(self)
        self._video_renderer.update_scene(self.data, camera="front")
        return self._video_renderer.render()

    # ------------------------------------------------------------- helpers
    @property
    def instruction(self) -> str:
        return self.task.state.instruction

    def close(self) -> None:
        for r in (self._renderer, self._video_renderer):
            if r is not None:
                r.close()
        self._renderer = self._video_renderer = None


__all__ = ["FrankaEnv", "STATE_DIM", "STATE_NAMES"]
