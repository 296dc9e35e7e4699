"""The sim twin: the embedded Franka run in real time behind a bridge, as a real arm would be.

``robolearn sim-robot --task franka-lift --bridge ros1|zenoh|zmq`` runs this. The physics advance at
``joint_state_hz`` (100 Hz: the env in ``joint_pos`` mode at that rate); the policy commands at its
own rate (``policy_hz``, the task's 20 Hz). Topics under the cell's namespace (``/robolearn``):

=================================  ====================  =====================================
topic                              type                  rate / meaning
=================================  ====================  =====================================
``joint_states``                   JointState            every physics tick: 7 arm joints + 2 fingers
``tcp_pose``                       PoseStamped           every physics tick: the TCP in the base frame
``joint_target``                   JointState            every physics tick: what the safety layer let through
``cameras/<cam>/image_raw``        Image (rgb8)          policy rate
``environment_state``              Float64MultiArray     policy rate (sim only: object poses)
``status``                         String (JSON)         policy rate: safety state, episode counts
``command/ee_delta``               Float64MultiArray     in: 7-D ``ee_delta`` action (the env's units)
``command/joint_position``         Float64MultiArray     in: 7 joint targets (rad) + gripper in [-1, 1]
``estop``                          String                in: ``stop`` latches the e-stop, ``reset`` clears it
=================================  ====================  =====================================

Services (request/reply, JSON): ``describe`` (features, rates, command modes), ``reset``
(``{"seed": s}``: a new episode; replies with its instruction and start stamp), ``episode``.

An end-effector command is solved to a joint target by the env's own damped-least-squares IK once,
when it arrives (as the env does once per control step); a joint command is taken as is. Either
then passes the :class:`~robolearn.deploy.safety.SafetyFilter` (limits, workspace, change per step),
and every physics tick sends the filter's output (watchdog and e-stop included) to the sim: the
safety layer is the last step before the arm. Episodes follow ``robolearn eval``'s protocol: they
end ``hold_steps`` policy steps after the first success or at the task's length (counted in policy
steps). This module imports mujoco (the sim side); the robot client never does.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any

import numpy as np

from robolearn import types
from robolearn.deploy.safety import SafetyFilter, SafetyLimits
from robolearn.deploy.topics import (
    Backend,
    Float64MultiArray,
    Header,
    Image,
    JointState,
    PoseStamped,
    StringMsg,
)
from robolearn.deploy.topics.names import ARM_JOINTS, COMMAND_MODES, FINGER_JOINTS, image_topic, topic_names

__all__ = ["SimTwin", "TwinEpisode"]


@dataclasses.dataclass
class TwinEpisode:
    """The twin's episode counts, in policy steps (as ``robolearn eval`` counts them)."""

    seed: int | None = None
    task: str = ""
    steps: int = 0
    ret: float = 0.0
    first_success_step: int | None = None
    held: bool = False
    done: bool = False


class SimTwin:
    """The embedded env ``task`` behind ``backend`` (robot role); see the module docstring.

    ``cameras`` / ``image_size``: rendered at the policy rate. ``safety``: the cell's limits.
    :meth:`tick` is one physics step (the real-time loop of :meth:`serve` calls it; tests may call it
    directly with a fake ``now``).
    """

    def __init__(
        self,
        backend: Backend | None,
        task: str = "franka-lift",
        *,
        safety: SafetyLimits | None = None,
        cameras: tuple[str, ...] = (),
        image_size: tuple[int, int] = (96, 96),
        joint_state_hz: float = 100.0,
        policy_hz: float | None = None,
        hold_steps: int = 20,
        namespace: str = "/robolearn",
        overrides: tuple[str, ...] = (),
        seed: int = 0,
    ):
        from robolearn.envs import env_config, make_env
        from robolearn.envs.franka.controller import DiffIKController

        base = env_config(task, None, overrides)
        if not hasattr(base, "control_mode"):
            raise ValueError(f"sim-robot: {task} is not an embedded Franka task")
        self.policy_hz = float(policy_hz or base.control_hz)
        ratio = joint_state_hz / self.policy_hz
        if abs(ratio - round(ratio)) > 1e-6 or ratio < 1:
            raise ValueError(
                f"sim-robot: joint_state_hz {joint_state_hz:g} must be a whole multiple of the policy rate "
                f"{self.policy_hz:g}"
            )
        self.ratio = int(round(ratio))
        self.task_name, self.hold_steps, self.namespace = task, hold_steps, namespace
        self.policy_action_mode = base.control_mode
        self.base_config = dataclasses.replace(base, control_hz=self.policy_hz)
        probe = make_env(task, dataclasses.replace(base, control_hz=self.policy_hz))
        self.episode_steps = int(base.max_episode_steps or probe.unwrapped.max_episode_steps)
        probe.close()
        from robolearn.envs.franka.env import CAMERAS

        bad = [c for c in cameras if c not in CAMERAS]
        if bad:
            raise ValueError(f"sim-robot: unknown camera {bad[0]!r}; available: {', '.join(CAMERAS)}")
        # Cameras render at the policy rate (below), not on every physics tick as the env would.
        fields = {"cameras": (), "control_mode": "joint_pos", "control_hz": float(joint_state_hz)}
        fields["image_size"] = tuple(image_size)
        cfg = dataclasses.replace(base, **fields, terminate_on_success=False, max_episode_steps=10**9)
        self.config = cfg
        self.env = make_env(task, cfg)
        self.fe = self.env.unwrapped
        self.dt = 1.0 / joint_state_hz
        self.joint_state_hz = float(joint_state_hz)
        fe = self.fe
        self._ik = DiffIKController(fe.model, fe.data, fe.arm, fe._tcp, 1.0 / self.policy_hz)
        self._ik.rest = fe._ik.rest.copy()
        # The env's joint_pos step rate-limits ctrl per physics tick; widen it to the policy period, so
        # the servos see the target at once, as the env does at the policy rate (the safety filter has
        # already capped the change per command to the velocity limit over one period).
        fe._ik.dq_step = self._ik.dq_step.copy()
        self._ee_step, self._rot_step = base.max_ee_step, base.max_ee_rot_step
        self._ws_low, self._ws_high = np.array(base.workspace_low), np.array(base.workspace_high)
        self.filter = SafetyFilter(safety or SafetyLimits(), period=1.0 / self.policy_hz)
        self.backend = backend
        self.topics = topic_names(namespace)
        self.cameras = tuple(cameras)
        self._lock = threading.RLock()
        self._cmd: tuple[str, np.ndarray, float] | None = None
        self._cmd_lock = threading.Lock()
        self._gripper = -1.0
        self._first_seed = seed
        self.episode = TwinEpisode()
        self.ticks = 0
        self.sent: list[np.ndarray] = []
        """Every target sent to the sim since the last reset, when :attr:`log_targets` is set (tests)."""
        self.log_targets = False
        self.hold_events: list[tuple[float, float]] = []
        """(last fresh command, the tick at which the watchdog's hold took effect), monotonic s: the
        tick's deadline on the physics grid when :meth:`serve` runs it."""
        self._obs: dict[str, Any] = {}
        self._closing = threading.Event()
        self.reset(seed)
        if backend is not None:
            self._wire(backend)

    # ------------------------------------------------------------------ bridge
    def _wire(self, bus: Backend) -> None:
        t = self.topics
        for mode in COMMAND_MODES:
            sub = bus.subscribe(t[f"command/{mode}"], Float64MultiArray, queue_size=1)
            threading.Thread(target=self._pump, args=(sub, mode), daemon=True, name=f"twin-{mode}").start()
        estop = bus.subscribe(t["estop"], StringMsg, queue_size=8)
        threading.Thread(target=self._pump_estop, args=(estop,), daemon=True, name="twin-estop").start()
        bus.serve("describe", lambda _req: self.describe())
        bus.serve("reset", lambda req: self.reset(req.get("seed")))
        bus.serve("episode", lambda _req: dataclasses.asdict(self.episode))

    def _pump(self, sub: Any, mode: str) -> None:
        while not self._closing.is_set():
            env = sub.get(timeout=0.1)
            if env is not None:
                self.command(mode, env.msg.data)

    def _pump_estop(self, sub: Any) -> None:
        while not self._closing.is_set():
            env = sub.get(timeout=0.1)
            if env is None:
                continue
            with self._lock:
                if env.msg.data == "stop":
                    self.filter.estop("e-stop topic", self._measured())
                elif env.msg.data == "reset":
                    self.filter.clear_estop()

    def describe(self) -> dict[str, Any]:
        """Features, rates and command modes (the ``describe`` service's reply)."""
        from robolearn.config import to_dict
        from robolearn.envs.recording import env_features

        feats = env_features(self.env)
        obs = {k: v.to_json() for k, v in feats.items() if k.startswith("observation.")}
        for cam in self.cameras:
            obs[types.image_key(cam)] = types.FeatureSpec("video", (*self.config.image_size, 3)).to_json()
        ee = types.FeatureSpec("float32", (7,), types.EE_DELTA_ACTION_NAMES).to_json()
        joint = types.FeatureSpec("float32", (8,), types.JOINT_POS_ACTION_NAMES).to_json()
        return {
            "task": self.task_name, "instruction": self.episode.task, "observation_features": obs,
            "actions": {"ee_delta": ee, "joint_position": joint}, "policy_action": self.policy_action_mode,
            "policy_hz": self.policy_hz, "joint_state_hz": self.joint_state_hz, "cameras": list(self.cameras),
            "namespace": self.namespace, "robot_type": self.config.robot_type, "hold_steps": self.hold_steps,
            "episode_steps": self.episode_steps, "env_config": json.loads(json.dumps(to_dict(self.base_config))),
        }  # fmt: skip

    # ------------------------------------------------------------------ commands
    def command(self, mode: str, action: Any, now: float | None = None) -> np.ndarray | None:
        """Take in a command (``ee_delta`` (7,) or ``joint_position`` (8,)); returns the safe joint
        target (8,) the filter stored, or None when it ignored the command."""
        arr = np.asarray(action, dtype=float).reshape(-1)
        with self._lock:
            if mode == "ee_delta":
                target = self._ee_target(arr)
            elif mode == "joint_position":
                target = arr
            else:
                raise ValueError(f"unknown command mode {mode!r}; known: {COMMAND_MODES}")
            return self.filter.command(target, now)

    def _ee_target(self, act: np.ndarray) -> np.ndarray:
        if act.shape != (7,) or not np.isfinite(act).all():
            return np.full(8, np.nan)  # the filter rejects it and holds the last safe target
        act = np.clip(act, -1.0, 1.0)
        d = self.fe.data
        tcp = d.site_xpos[self.fe._tcp]
        goal = np.clip(tcp + act[:3] * self._ee_step, self._ws_low, self._ws_high)
        q = self._ik.solve(np.concatenate([goal - tcp, act[3:6] * self._rot_step]))
        return np.concatenate([q, [act[6]]])

    def _measured(self) -> np.ndarray:
        return np.concatenate([self.fe.data.qpos[:7], [self._gripper]])

    # ------------------------------------------------------------------ episodes
    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """A new episode from ``env.reset(seed)``; the filter is re-armed at the new posture."""
        with self._lock:
            seed = self._first_seed if seed is None else seed
            obs, _ = self.env.reset(seed=seed)
            self._obs = obs
            self._gripper = -1.0
            self.episode = TwinEpisode(seed=seed, task=str(obs[types.TASK]))
            self.ticks = 0
            self.sent = []
            self.filter.reset(self._measured())
            stamp = time.time()
            self._reset_stamp = stamp
            return {"task": self.episode.task, "stamp": stamp, "seed": seed}

    def tick(self, now: float | None = None) -> np.ndarray:
        """One physics step: the filter's output goes to the sim; publishes the tick's topics."""
        with self._lock:
            now = time.monotonic() if now is None else now
            was = self.filter.state
            target = self.filter.tick(self._measured(), now)
            if was == "active" and self.filter.state == "hold":
                self.hold_events.append((self.filter.last_fresh, now))
            ep = self.episode
            if not ep.done:
                obs, reward, _, _, info = self.env.step(target.astype(np.float32))
                self._obs = obs
                self._gripper = float(target[7])
                self.ticks += 1
                if self.log_targets:
                    self.sent.append(target.copy())
                if self.ticks % self.ratio == 0:
                    self._policy_step(float(reward), bool(info["is_success"]))
            stamp = time.time()
            if self.backend is not None:
                self._publish_state(stamp, target)
                if self.ticks % self.ratio == 0 or ep.done:
                    self._publish_policy_rate(stamp)
            return target

    def _policy_step(self, reward: float, success: bool) -> None:
        ep = self.episode
        ep.steps += 1
        ep.ret += reward
        ep.held = success
        if success and ep.first_success_step is None:
            ep.first_success_step = ep.steps
        ep.done = ep.steps >= self.episode_steps or (
            ep.first_success_step is not None and ep.steps - ep.first_success_step >= self.hold_steps
        )

    def _publish_state(self, stamp: float, target: np.ndarray) -> None:
        bus, t, d = self.backend, self.topics, self.fe.data
        h = Header(stamp=stamp, frame_id="fr3_link0")
        names = [*ARM_JOINTS, *FINGER_JOINTS]
        bus.publish(
            t["joint_states"], JointState(h, names, d.qpos[:9].copy(), d.qvel[:9].copy(), np.zeros(9))
        )
        state = self._obs[types.OBS_STATE]
        quat = np.asarray(state[18:22], float)  # (w, x, y, z) -> ROS (x, y, z, w)
        bus.publish(t["tcp_pose"], PoseStamped(Header(stamp, "fr3_link0"), np.asarray(state[15:18], float),
                                               np.array([quat[1], quat[2], quat[3], quat[0]])))  # fmt: skip
        bus.publish(t["joint_target"], JointState(Header(stamp), [*ARM_JOINTS, "gripper"], target.copy()))

    def _publish_policy_rate(self, stamp: float) -> None:
        bus, obs = self.backend, self._obs
        for cam in self.cameras:
            img = self.fe._render_camera(cam)
            bus.publish(image_topic(self.namespace, cam), Image.from_array(img, Header(stamp)))
        env_state = np.asarray(obs[types.OBS_ENV_STATE], float)
        bus.publish(self.topics["environment_state"], Float64MultiArray(env_state, types.OBS_ENV_STATE),
                    source_time=stamp)  # fmt: skip
        hold = self.hold_events[-1][1] - self.hold_events[-1][0] if self.hold_events else None
        status = {"state": self.filter.state, "hold_after_s": hold, "episode": dataclasses.asdict(self.episode),
                  "reset_stamp": self._reset_stamp, "counts": self.filter.counts, "estop": self.filter.estop_reason}  # fmt: skip
        bus.publish(self.topics["status"], StringMsg(json.dumps(status)), source_time=stamp)

    # ------------------------------------------------------------------ real time
    def serve(self, stop: threading.Event, on_tick: Any = None, rt_priority: int | None = 50) -> None:
        """Run :meth:`tick` at ``joint_state_hz`` on absolute deadlines until ``stop`` is set (under
        ``SCHED_FIFO`` at ``rt_priority`` where the OS allows it); each tick runs at its deadline's
        time, so the watchdog fires on the physics grid."""
        from robolearn.deploy.loop import RateLoop, realtime_priority

        loop = RateLoop(self.joint_state_hz)
        loop.start()
        with realtime_priority(rt_priority) as granted:
            loop.realtime = granted
            while not stop.is_set():
                loop.wait()
                self.tick(now=loop.deadline() - loop.period)
                if on_tick is not None:
                    on_tick(self)
        self.jitter = loop.stats()

    def close(self) -> None:
        """Stop the command threads and close the env (the backend is the caller's)."""
        self._closing.set()
        self.env.close()
