"""robosuite 1.5 manipulation tasks (Panda, OSC_POSE delta control) behind robolearn's env conventions.

Observation (``gymnasium.spaces.Dict``):

- ``observation.state`` (22,) float32: joint positions (7), joint velocities (7), gripper width (m,
  opening of both fingers), EE position (3, world frame), EE quaternion (4, **wxyz**; robosuite
  itself uses xyzw).
- ``observation.environment_state`` float32: robosuite's ``object-state`` vector unchanged, i.e.
  what robomimic datasets store as ``obs/object`` (Lift 10, Stack 23, PickPlaceCan 14,
  NutAssemblySquare 14 values; quaternions in it stay xyzw), so policies trained on robomimic
  low-dim data can be evaluated here.
- ``observation.images.<cam>`` uint8 (H, W, 3), upright (robosuite renders them upside down).
- ``task``: the language instruction.

Action: ``Box(-1, 1, (7,))`` = [dx, dy, dz, droll, dpitch, dyaw, gripper], passed to robosuite's
OSC_POSE controller in delta mode (robosuite's default scale: 5 cm and 0.5 rad per step at |a| = 1,
base frame); gripper -1 opens, +1 closes.

Quirks of the peer handled here: robosuite ignores gymnasium's ``reset(seed=...)`` (its GymWrapper
reseeds only numpy's global RNG), so we reseed robosuite's own generator in place — the placement
samplers and robot init noise share that object; ``hard_reset=False`` (a hard reset reloads the
model, 0.7-0.9 s); robosuite never makes its offscreen GL context current before rendering, so once
any other renderer in the process has drawn (another env, a video writer) its images come out black:
we make it current before every step and reset. Lift draws its cube size when the model is built,
from an unseeded generator; ``model_seed`` fixes it so all instances build the same scene.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from typing import Any  # noqa: E402

from robolearn.envs.adapters._common import quiet_peer_logs  # noqa: E402

quiet_peer_logs()  # before robosuite's import-time warnings

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import robosuite  # noqa: E402
from robosuite import macros  # noqa: E402
from robosuite.controllers import load_composite_controller_config  # noqa: E402

from robolearn.envs.adapters import RobosuiteConfig  # noqa: E402
from robolearn.envs.adapters._common import (  # noqa: E402
    check_action,
    observation_space,
    proprio,
    resolve_cameras,
    xyzw_to_wxyz,
)
from robolearn.types import OBS_ENV_STATE, OBS_STATE, TASK, image_key  # noqa: E402

INSTRUCTIONS: dict[str, str] = {
    "Lift": "lift the red cube",
    "Stack": "stack the red cube on top of the green cube",
    "PickPlaceCan": "pick up the can and place it in its compartment of the bin",
    "NutAssemblySquare": "fit the square nut onto the square peg",
}
CAMERA_ALIASES = {"front": "agentview", "wrist": "robot0_eye_in_hand"}
DEFAULT_EPISODE_STEPS = 400
"""robomimic's evaluation horizon for Lift, Can and Square."""


def panda_osc_config() -> dict[str, Any]:
    """robosuite's BASIC composite controller for a Panda: OSC_POSE, delta input, arm part only."""
    cfg = load_composite_controller_config(controller="BASIC", robot="Panda")
    # Only the right arm exists on a Panda; dropping the other parts avoids one warning per part.
    cfg["body_parts"] = {"right": cfg["body_parts"]["right"]}
    return cfg


def make_render_cheap(rs_env: Any) -> None:
    """Turn off shadows and multisampling in a robosuite env's offscreen renderer.

    Both are read when MuJoCo's render context is created, which robosuite does inside its
    constructor, so the context is rebuilt here with the new quality settings.
    """
    model = rs_env.sim.model._model
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    ctx = rs_env.sim._render_context_offscreen
    if ctx is None:
        return
    ctx.gl_ctx.make_current()
    ctx.con.free()
    ctx.con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
    mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, ctx.con)
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0


class RobosuiteEnv(gym.Env):
    """A robosuite task with a Panda arm, following robolearn's observation/action conventions."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str = "Lift",
        cameras: tuple[str, ...] = (),
        image_size: tuple[int, int] = (96, 96),
        max_episode_steps: int = 0,
        reward_type: str = "dense",
        terminate_on_success: bool = True,
        control_hz: float = 20.0,
        cheap_render: bool = True,
        model_seed: int = 0,
        render_mode: str | None = None,
    ):
        self.config = RobosuiteConfig(
            task=task,  # type: ignore[arg-type]
            cameras=tuple(cameras),
            image_size=tuple(image_size),  # type: ignore[arg-type]
            max_episode_steps=max_episode_steps,
            reward_type=reward_type,  # type: ignore[arg-type]
            terminate_on_success=terminate_on_success,
            control_hz=control_hz,
            cheap_render=cheap_render,
            model_seed=model_seed,
        )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array'; got {render_mode!r}")
        self.render_mode = render_mode
        self.metadata = {**type(self).metadata, "render_fps": control_hz}
        self.instruction = INSTRUCTIONS[task]
        self.max_episode_steps = max_episode_steps or DEFAULT_EPISODE_STEPS
        self._cameras = resolve_cameras(cameras, CAMERA_ALIASES)
        # Videos of a policy that sees no camera come from the front view, outside the observation.
        self._video_camera = None if self._cameras or render_mode is None else CAMERA_ALIASES["front"]
        h, w = self.config.image_size
        self._env = robosuite.make(
            task,
            robots="Panda",
            controller_configs=panda_osc_config(),
            has_renderer=False,
            has_offscreen_renderer=bool(self._cameras) or self._video_camera is not None,
            use_camera_obs=bool(self._cameras),
            camera_names=list(self._cameras.values()) or "agentview",
            camera_heights=h,
            camera_widths=w,
            camera_depths=False,
            reward_shaping=reward_type == "dense",
            control_freq=control_hz,
            horizon=self.max_episode_steps,
            ignore_done=True,  # truncation is ours, so robosuite never raises on a finished episode
            hard_reset=False,
            seed=model_seed,
        )
        # Built from model_seed; episodes are random until reset(seed=...) is given one.
        self._env.rng.bit_generator.state = np.random.default_rng().bit_generator.state
        if (self._cameras or self._video_camera) and cheap_render:
            make_render_cheap(self._env)
        self._robot = self._env.robots[0]
        self._flip = macros.IMAGE_CONVENTION == "opengl"
        env_state_dim = int(self._env._get_observations(force_update=True)["object-state"].shape[0])
        self.observation_space = observation_space(env_state_dim, self._cameras, self.config.image_size)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self._steps = 0
        self._last_obs: dict[str, Any] | None = None

    @property
    def unwrapped_robosuite(self) -> Any:
        """The underlying robosuite environment (for inspection; stepping it directly bypasses checks)."""
        return self._env

    def _make_gl_current(self) -> None:
        ctx = self._env.sim._render_context_offscreen
        if ctx is not None:
            ctx.gl_ctx.make_current()

    def _observation(self, rs_obs: dict[str, Any]) -> dict[str, Any]:
        q = rs_obs["robot0_gripper_qpos"]  # finger joints: +opening and -opening
        obs: dict[str, Any] = {
            OBS_STATE: proprio(
                rs_obs["robot0_joint_pos"],
                rs_obs["robot0_joint_vel"],
                float(q[0] - q[1]),
                rs_obs["robot0_eef_pos"],
                xyzw_to_wxyz(rs_obs["robot0_eef_quat"]),
            ),
            OBS_ENV_STATE: np.asarray(rs_obs["object-state"], dtype=np.float32),
        }
        for name, rs_cam in self._cameras.items():
            img = rs_obs[f"{rs_cam}_image"]
            obs[image_key(name)] = np.ascontiguousarray(img[::-1] if self._flip else img, dtype=np.uint8)
        obs[TASK] = self.instruction
        self._last_obs = obs
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Start an episode; the same ``seed`` gives the same initial robot and object state."""
        super().reset(seed=seed)
        if seed is not None:
            # In place: the placement samplers and the robots hold references to this generator.
            self._env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._make_gl_current()
        rs_obs = self._env.reset()
        self._steps = 0
        return self._observation(rs_obs), {"is_success": bool(self._env._check_success())}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        """Apply one delta-EE action (7,) for one control period (1 / control_hz s)."""
        a, clipped = check_action(action, 7)
        self._make_gl_current()
        rs_obs, reward, _, _ = self._env.step(a)
        self._steps += 1
        success = bool(self._env._check_success())
        terminated = success and self.config.terminate_on_success
        truncated = self._steps >= self.max_episode_steps and not terminated
        info = {"is_success": success, "action_clipped": clipped}
        return self._observation(rs_obs), float(reward), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """With ``render_mode='rgb_array'``: the latest image of the first observation camera, or, when
        the observation has none, the ``front`` view (agentview) at ``image_size``; else None."""
        if self.render_mode != "rgb_array" or self._last_obs is None:
            return None
        if self._video_camera is None:
            return self._last_obs[image_key(next(iter(self._cameras)))]
        h, w = self.config.image_size
        self._make_gl_current()
        img = self._env.sim.render(width=w, height=h, camera_name=self._video_camera)
        return np.ascontiguousarray(img[::-1] if self._flip else img, dtype=np.uint8)

    def close(self) -> None:
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()
            self._env = None


def build(config: RobosuiteConfig, **kwargs: Any) -> RobosuiteEnv:
    """Registry builder: a :class:`RobosuiteEnv` from its config (``kwargs`` e.g. ``render_mode``)."""
    return RobosuiteEnv(
        task=config.task,
        cameras=config.cameras,
        image_size=config.image_size,
        max_episode_steps=config.max_episode_steps,
        reward_type=config.reward_type,
        terminate_on_success=config.terminate_on_success,
        control_hz=config.control_hz,
        cheap_render=config.cheap_render,
        model_seed=config.model_seed,
        **kwargs,
    )
