"""``SimRobot``: a registered env (the embedded Franka by default) run in real time in this process.

The simulation keeps its own control clock: tick ``k`` of an episode happens at ``t0 + k / control_hz``
on the monotonic clock, ``t0`` being the moment of :meth:`SimRobot.reset`. The physics of a tick are
computed lazily, the next time the robot is asked anything at or after that moment, so no thread is
needed and a rollout is reproducible: what a tick executes depends only on the actions that arrived
before its time, never on when Python got round to stepping it.

- ``send_action(a)`` queues ``a`` for the next tick (``target_time``: the first tick at or after it);
- a tick that received no action executes :meth:`hold_action`, as an arm does that hears no command
  (logged as ``"idle"``); :meth:`stop` drops what is queued, so holding starts at the next tick;
- ``get_observation()`` is the state after the latest tick, stamped with that tick's time.

Episodes follow ``robolearn eval``'s protocol (:mod:`robolearn.eval.evaluate`): the env never ends an
episode on success; it ends ``hold_steps`` ticks after the first success or at the env's own end, and
:attr:`SimRobot.episode` reports first success and held success the same way. Ticks after the end
execute nothing. Not thread-safe: drive one robot from one thread (the control loop).

This module imports mujoco (through the env); the rest of :mod:`robolearn.deploy`'s robot side does not.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robolearn import types
from robolearn.deploy.robot import TIMESTAMP_KEY, Robot, ee_delta_hold
from robolearn.types import FeatureSpec

__all__ = ["ActionRecord", "SimEpisode", "SimRobot"]

_BOOKKEEPING = (types.ACTION, types.REWARD, types.DONE, types.SUCCESS)


@dataclass
class ActionRecord:
    """One executed tick: when, what, and whether the action was sent or the robot held by itself."""

    tick: int
    """1-based tick of the episode (the step count after it)."""
    time: float
    """The tick's moment on the monotonic clock."""
    action: np.ndarray
    source: str
    """``"sent"``: queued with :meth:`SimRobot.send_action`; ``"idle"``: nothing arrived, it held."""


@dataclass
class SimEpisode:
    """The episode in progress: counts as ``robolearn eval`` counts them."""

    seed: int | None
    task: str
    steps: int = 0
    """Ticks executed, the hold steps included."""
    ret: float = 0.0
    first_success_step: int | None = None
    """Ticks executed when success was first reached (1-based); None when it never was."""
    held: bool = False
    """``info["is_success"]`` on the latest tick: on the last one, the held-success figure."""
    done: bool = False
    truncated: bool = False
    idle_ticks: int = 0
    """Ticks that received no action and held."""
    frames: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Dataset frames (observation, executed action, reward, done, success), when recording."""

    @property
    def success(self) -> bool:
        """Success was reached on some tick (first success)."""
        return self.first_success_step is not None


class SimRobot(Robot):
    """The env ``task`` (a registered env name) as a real-time :class:`Robot`; see the module docstring.

    ``config`` replaces the registry's default config (its ``terminate_on_success`` is switched off);
    ``cameras`` / ``image_size`` / ``overrides`` adjust the default one instead. ``record=True`` keeps
    each episode's dataset frames in :attr:`episode` ``.frames``. ``clock`` is the monotonic clock
    (tests pass a fake one).
    """

    def __init__(
        self,
        task: str = "franka-lift",
        *,
        config: Any = None,
        cameras: Iterable[str] = (),
        image_size: tuple[int, int] = (96, 96),
        overrides: Iterable[str] = (),
        hold_steps: int = 20,
        seed: int = 0,
        record: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        from robolearn.envs import env_config

        if hold_steps < 0:
            raise ValueError(f"hold_steps must be >= 0, found {hold_steps}")
        cfg = config
        if cfg is None:
            fields: dict[str, Any] = {"cameras": tuple(cameras)}
            if fields["cameras"]:
                fields["image_size"] = tuple(image_size)
            cfg = env_config(task, None, overrides, **fields)
        if not hasattr(cfg, "terminate_on_success"):
            raise ValueError(f"env {task}: {type(cfg).__name__} has no terminate_on_success field")
        self.name = f"sim:{task}"
        self.task_name = task
        self.config = dataclasses.replace(cfg, terminate_on_success=False)
        self.hold_steps = hold_steps
        self.record = record
        self._first_seed = seed
        self._clock = clock
        self._env = None
        self._features: dict[str, FeatureSpec] = {}
        self._hz = 0.0
        self._dt = 0.0
        self._t0 = 0.0
        self._pending: dict[int, np.ndarray] = {}
        self._obs: dict[str, Any] = {}
        self._gripper = -1.0
        self.episode = SimEpisode(seed=None, task="")
        self.action_log: list[ActionRecord] = []
        """Every tick executed in the current episode, in order (cleared by :meth:`reset`)."""
        self.stop_times: list[float] = []
        """Monotonic times at which :meth:`stop` was called in the current episode."""

    # ------------------------------------------------------------------ description
    @property
    def observation_features(self) -> dict[str, FeatureSpec]:
        self._require_connected()
        return {k: v for k, v in self._features.items() if k not in _BOOKKEEPING}

    @property
    def action_feature(self) -> FeatureSpec:
        self._require_connected()
        return self._features[types.ACTION]

    @property
    def control_hz(self) -> float:
        self._require_connected()
        return self._hz

    @property
    def instruction(self) -> str:
        """The current episode's language instruction."""
        return self.episode.task

    @property
    def env(self):
        """The underlying gymnasium env (for inspection; stepping it bypasses the robot's clock)."""
        self._require_connected()
        return self._env

    # ------------------------------------------------------------------ lifecycle
    @property
    def is_connected(self) -> bool:
        return self._env is not None

    def connect(self) -> None:
        """Build the env and start an episode from the constructor's ``seed``."""
        if self._env is not None:
            return
        from robolearn.envs import make_env
        from robolearn.envs.catalog import feature_names, is_ee_delta
        from robolearn.envs.recording import env_features

        env = make_env(self.task_name, self.config)
        try:
            names = feature_names(env).get(types.ACTION)
            self._ee_delta = is_ee_delta(env)
            if not self._ee_delta and names != types.JOINT_POS_ACTION_NAMES:
                raise ValueError(
                    f"{self.name}: no hold action is known for its action {tuple(env.action_space.shape)}; "
                    "SimRobot drives ee_delta or joint_pos Franka actions"
                )
            self._features = env_features(env)
            self._hz = float((env.metadata or {}).get("render_fps") or getattr(self.config, "control_hz", 0))
            if self._hz <= 0:
                raise ValueError(f"{self.name}: the env reports no control rate (metadata['render_fps'])")
        except BaseException:
            env.close()
            raise
        self._env, self._dt = env, 1.0 / self._hz
        self.reset(self._first_seed)

    def disconnect(self) -> None:
        if self._env is None:
            return
        env, self._env = self._env, None
        self._pending.clear()
        env.close()

    # ------------------------------------------------------------------ episodes
    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """Start an episode from ``env.reset(seed=seed)``; its clock starts now. Returns the first
        observation (stamped with the episode's start time)."""
        self._require_connected()
        obs, _ = self._env.reset(seed=seed)
        self._t0 = self._clock()
        self._pending.clear()
        self._obs = obs
        self._gripper = -1.0  # the env resets with the fingers open
        self.episode = SimEpisode(seed=seed, task=str(obs[types.TASK]))
        self.action_log = []
        self.stop_times = []
        return self._stamped()

    def tick_time(self, k: int) -> float:
        """The monotonic moment of tick ``k`` of the current episode (tick 0: its start)."""
        return self._t0 + k * self._dt

    def advance(self) -> int:
        """Execute every tick that is due by now; returns how many ran. Every other call does this
        first, so calling it is only needed to make time pass without observing or acting."""
        self._require_connected()
        now = self._clock()
        due = math.floor((now - self._t0) * self._hz + 1e-9)
        ran = 0
        while self.episode.steps < due and not self.episode.done:
            self._tick()
            ran += 1
        return ran

    def _tick(self) -> None:
        ep = self.episode
        k = ep.steps + 1
        action = self._pending.pop(k, None)
        source = "sent"
        if action is None:
            action, source = self.hold_action(), "idle"
            ep.idle_ticks += 1
        before = self._obs
        obs, reward, terminated, truncated, info = self._env.step(action)
        self._gripper = float(action[-1])
        self._obs = obs
        ep.steps = k
        ep.ret += float(reward)
        ep.held = bool(info["is_success"])
        if ep.held and ep.first_success_step is None:
            ep.first_success_step = k
        ep.truncated = bool(truncated)
        ended = terminated or truncated
        ep.done = ended or (
            ep.first_success_step is not None and k - ep.first_success_step >= self.hold_steps
        )
        self.action_log.append(ActionRecord(k, self.tick_time(k), action, source))
        if self.record:
            from robolearn.envs.recording import frame_from

            ep.frames.append(frame_from(before, action, float(reward), ep.done, ep.held))

    # ------------------------------------------------------------------ I/O
    def get_observation(self) -> dict[str, Any]:
        self.advance()
        return self._stamped()

    def _stamped(self) -> dict[str, Any]:
        obs = dict(self._obs)
        obs[TIMESTAMP_KEY] = self.tick_time(self.episode.steps)
        return obs

    def send_action(self, action: np.ndarray, target_time: float | None = None) -> np.ndarray:
        self._require_connected()
        self.advance()
        arr = self.check_action(action)
        space = self._env.action_space
        arr = np.clip(arr, space.low, space.high).astype(np.float32)
        k = self.episode.steps + 1
        if target_time is not None:
            k = max(k, math.ceil((target_time - self._t0) * self._hz - 1e-9))
        self._pending[k] = arr
        return arr

    def hold_action(self) -> np.ndarray:
        self._require_connected()
        if self._ee_delta:
            return ee_delta_hold(self._gripper)
        joints = np.asarray(self._obs[types.OBS_STATE][:7], dtype=np.float32)
        return np.concatenate([joints, [self._gripper]]).astype(np.float32)

    def stop(self) -> None:
        """Drop every queued action: from the next tick on the robot holds until it is sent another."""
        self._require_connected()
        self.advance()
        self._pending.clear()
        self.stop_times.append(self._clock())
