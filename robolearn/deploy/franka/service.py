"""The driver behind a topic bridge: the same topics and services as the sim twin.

:class:`DriverService` puts a :class:`~robolearn.deploy.franka.driver.FrankaDriver` on a
:class:`~robolearn.deploy.topics.Backend` (robot role), so ``robolearn run --robot ros1|zenoh|zmq``
(:class:`~robolearn.deploy.bridge_robot.BridgeRobot`) drives the real arm exactly as it drives
``robolearn sim-robot``. Under the cell's namespace (names in :mod:`robolearn.deploy.topics.names`):

- out, every ``joint_state_hz`` tick: ``joint_states`` (7 arm joints + 2 fingers at half the opening
  each), ``tcp_pose`` (libfranka's ``O_T_EE``), ``joint_target`` (the safety filter's safe target);
- out, at the policy rate: ``status`` (JSON: the safety filter's state and counters, the episode, the
  driver's state, fault, command success rate and tracking error);
- in: ``command/joint_position`` (7 joint targets + gripper in [-1, 1]), ``command/ee_delta`` (the
  embedded tasks' 7-D action: TCP steps of ``ee_step`` m and ``rot_step`` rad per unit from the last
  safe target, solved to a joint target by damped least squares on the arm's kinematics), ``estop``
  (``stop`` | ``reset``);
- services: ``describe``, ``reset`` (a new episode: counters only; the arm does not move),
  ``episode``, ``recover`` (the robot's automatic error recovery after a fault: only on this request).

A real arm has no reward: an episode is done after ``episode_steps`` commands; success stays unset.
torch-free and mujoco-free.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any

import numpy as np

from robolearn import types
from robolearn.deploy.franka.driver import FrankaDriver
from robolearn.deploy.safety import forward_kinematics
from robolearn.deploy.topics import Backend, Float64MultiArray, Header, JointState, PoseStamped, StringMsg
from robolearn.deploy.topics.names import ARM_JOINTS, COMMAND_MODES, FINGER_JOINTS, topic_names

__all__ = ["DriverEpisode", "DriverService", "ee_delta_target", "rotation_to_quaternion"]


@dataclasses.dataclass
class DriverEpisode:
    """Episode counts in policy commands, shaped as the twin's (``status`` and ``episode``)."""

    seed: int | None = None
    task: str = ""
    steps: int = 0
    ret: float = 0.0
    first_success_step: int | None = None
    held: bool = False
    done: bool = False


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), ROS order, of rotation matrix ``r`` (3, 3)."""
    tr = np.trace(r)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = [0.0, 0.0, 0.0, (r[k, j] - r[j, k]) / s]
        q[i], q[j], q[k] = 0.25 * s, (r[j, i] + r[i, j]) / s, (r[k, i] + r[i, k]) / s
    q = np.asarray(q, float)
    return q / np.linalg.norm(q)


def ee_delta_target(hw, q: np.ndarray, act: np.ndarray, ee_step: float, rot_step: float,
                    damping: float = 0.05) -> np.ndarray:  # fmt: skip
    """Joint target (7,) for an ``ee_delta`` action (7,) from joints ``q``: the TCP moves ``act[:3] *
    ee_step`` m and turns ``act[3:6] * rot_step`` rad (base frame), by damped least squares on a
    finite-difference Jacobian of the arm's kinematics (``hw``: its HardwareLimits)."""
    act = np.clip(np.asarray(act, float), -1.0, 1.0)
    p0, r0 = forward_kinematics(hw, q)
    jac, eps = np.zeros((6, 7)), 1e-6
    for i in range(7):
        dq = np.zeros(7)
        dq[i] = eps
        p, r = forward_kinematics(hw, q + dq)
        w = r @ r0.T  # small rotation: its skew part is the turn
        jac[:3, i] = (p - p0) / eps
        jac[3:, i] = np.array([w[2, 1] - w[1, 2], w[0, 2] - w[2, 0], w[1, 0] - w[0, 1]]) / (2 * eps)
    twist = np.concatenate([act[:3] * ee_step, act[3:6] * rot_step])
    return q + jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * np.eye(6), twist)


class DriverService:
    """Serves ``driver`` on ``bus`` (see the module docstring). ``policy_action``: the command mode
    ``describe`` advertises (``joint_position`` or ``ee_delta``)."""

    def __init__(self, driver: FrankaDriver, bus: Backend, *, namespace: str = "/robolearn",
                 joint_state_hz: float = 100.0, policy_hz: float = 20.0, episode_steps: int = 400,
                 policy_action: str = "joint_position", task: str = "franka-real",
                 ee_step: float = 0.05, rot_step: float = 0.2):  # fmt: skip
        if policy_action not in COMMAND_MODES:
            raise ValueError(f"policy_action must be one of {COMMAND_MODES}, found {policy_action!r}")
        self.driver, self.bus, self.namespace = driver, bus, namespace
        self.joint_state_hz, self.policy_hz = float(joint_state_hz), float(policy_hz)
        self.episode_steps, self.policy_action, self.task = int(episode_steps), policy_action, task
        self.ee_step, self.rot_step = ee_step, rot_step
        self.topics = topic_names(namespace)
        self.episode = DriverEpisode(task=task)
        self.reset_stamp = time.time()
        self.published = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Subscribe, serve, and start publishing (returns at once)."""
        bus, t = self.bus, self.topics
        for mode in COMMAND_MODES:
            sub = bus.subscribe(t[f"command/{mode}"], Float64MultiArray, queue_size=1)
            self._spawn(self._pump, sub, mode)
        self._spawn(self._pump_estop, bus.subscribe(t["estop"], StringMsg, queue_size=8))
        bus.serve("describe", lambda _req: self.describe())
        bus.serve("reset", lambda req: self.reset(req.get("seed")))
        bus.serve("episode", lambda _req: dataclasses.asdict(self.episode))
        bus.serve("recover", lambda _req: self.recover())
        self._spawn(self._publish_loop)

    def _spawn(self, fn, *args) -> None:
        th = threading.Thread(target=fn, args=args, daemon=True, name=f"driver-{fn.__name__}")
        th.start()
        self._threads.append(th)

    def stop(self) -> None:
        """Stop serving (the driver and the bus are the caller's)."""
        self._stop.set()
        for th in self._threads:
            th.join(timeout=5.0)

    # ------------------------------------------------------------------ services
    def describe(self) -> dict[str, Any]:
        """Features, rates and command modes, as the twin describes itself."""
        state = types.FeatureSpec("float32", (len(types.STATE_NAMES),), types.STATE_NAMES).to_json()
        ee = types.FeatureSpec("float32", (7,), types.EE_DELTA_ACTION_NAMES).to_json()
        joint = types.FeatureSpec("float32", (8,), types.JOINT_POS_ACTION_NAMES).to_json()
        hw = self.driver.pipeline.filter.hardware.name
        return {
            "task": self.task, "instruction": self.episode.task, "observation_features": {types.OBS_STATE: state},
            "actions": {"ee_delta": ee, "joint_position": joint}, "policy_action": self.policy_action,
            "policy_hz": self.policy_hz, "joint_state_hz": self.joint_state_hz, "cameras": [],
            "namespace": self.namespace, "robot_type": f"franka_{hw}", "hold_steps": 0,
            "episode_steps": self.episode_steps, "env_config": None, "robot": "franka",
        }  # fmt: skip

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """A new episode (counters only)."""
        with self._lock:
            self.episode = DriverEpisode(seed=seed, task=self.task)
            self.reset_stamp = time.time()
            return {"task": self.task, "stamp": self.reset_stamp, "seed": seed}

    def recover(self) -> dict[str, Any]:
        """The robot's automatic error recovery (the only way out of a fault); replies the status."""
        self.driver.recover()
        return self.driver.status()

    # ------------------------------------------------------------------ commands
    def _pump(self, sub, mode: str) -> None:
        while not self._stop.is_set():
            env = sub.get(timeout=0.1)
            if env is not None:
                self.command(mode, env.msg.data)

    def command(self, mode: str, action: Any) -> np.ndarray | None:
        """Take a command (``joint_position`` (8,) or ``ee_delta`` (7,)); the safe target or None."""
        arr = np.asarray(action, dtype=float).reshape(-1)
        if mode == "ee_delta":
            obs = self.driver.observe()
            if arr.shape != (7,) or not np.isfinite(arr).all() or obs is None:
                arr = np.full(8, np.nan)  # the filter rejects it and keeps the last safe target
            else:
                # From the last safe target: the 1 kHz stream follows it with some lag (its acceleration
                # and jerk limits), and steps from the lagging arm would each fall short. The watchdog's
                # hold resets that target to the measured joints when commands pause.
                hw = self.driver.pipeline.filter.hardware
                last = self.driver.pipeline.target if self.driver.state == "running" else None
                base = obs.q if last is None else last[:7]
                q = ee_delta_target(hw, base, arr, self.ee_step, self.rot_step)
                arr = np.append(q, np.clip(arr[6], -1.0, 1.0))
        safe = self.driver.command(arr)
        with self._lock:
            ep = self.episode
            if not ep.done:
                ep.steps += 1
                ep.done = ep.steps >= self.episode_steps
        return safe

    def _pump_estop(self, sub) -> None:
        while not self._stop.is_set():
            env = sub.get(timeout=0.1)
            if env is None:
                continue
            if env.msg.data == "stop":
                self.driver.estop("e-stop topic")
            elif env.msg.data == "reset":
                self.driver.clear_estop()

    # ------------------------------------------------------------------ publishing
    def _publish_loop(self) -> None:
        period = 1.0 / self.joint_state_hz
        every = max(1, int(round(self.joint_state_hz / self.policy_hz)))
        next_t, k = time.monotonic(), 0
        while not self._stop.is_set():
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()  # fell behind: do not burst
            obs = self.driver.observe()
            if obs is None:
                continue
            stamp = time.time()
            self._publish_state(obs, stamp)
            if k % every == 0:
                self._publish_status(stamp)
            k += 1
            self.published += 1

    def _publish_state(self, obs, stamp: float) -> None:
        bus, t = self.bus, self.topics
        width = obs.gripper_width if np.isfinite(obs.gripper_width) else 0.0
        pos = np.concatenate([obs.q, [width / 2, width / 2]])
        vel = np.concatenate([obs.dq, [0.0, 0.0]])
        bus.publish(t["joint_states"], JointState(Header(stamp, "fr3_link0"), [*ARM_JOINTS, *FINGER_JOINTS],
                                                  pos, vel, np.zeros(9)))  # fmt: skip
        pose = np.asarray(obs.O_T_EE, float).reshape(4, 4, order="F")
        bus.publish(t["tcp_pose"], PoseStamped(Header(stamp, "fr3_link0"), pose[:3, 3].copy(),
                                               rotation_to_quaternion(pose[:3, :3])))  # fmt: skip
        target = self.driver.pipeline.target
        if target is not None:
            bus.publish(t["joint_target"], JointState(Header(stamp), [*ARM_JOINTS, "gripper"], target))

    def _publish_status(self, stamp: float) -> None:
        drv = self.driver
        filt = drv.pipeline.filter
        with self._lock:
            episode = dataclasses.asdict(self.episode)
        status = {"state": filt.state, "hold_after_s": None, "episode": episode, "reset_stamp": self.reset_stamp,
                  "counts": dict(filt.counts), "estop": filt.estop_reason, "driver": drv.status()}  # fmt: skip
        self.bus.publish(self.topics["status"], StringMsg(json.dumps(status)), source_time=stamp)
