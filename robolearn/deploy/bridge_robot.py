"""``BridgeRobot``: a robot on the far side of a topic bridge (the sim twin or a real cell's driver).

It implements :class:`~robolearn.deploy.robot.Robot` over the topics of
:mod:`robolearn.deploy.sim_twin` (the real-arm driver serves the same ones), so the runner, the
recorder and teleop drive either without knowing which::

    with BridgeRobot("ros1", port=11311) as robot:          # the rosmaster's port
        obs = robot.reset(seed)                              # the `reset` service; waits for fresh topics
        robot.send_action(action)                            # published on command/ee_delta

``observation.state`` (22-D, :data:`robolearn.types.STATE_NAMES`) is put together from
``joint_states`` (joints, velocities, finger width) and ``tcp_pose``; images come from
``cameras/<cam>/image_raw``, ``observation.environment_state`` from its topic where the robot side
publishes it (the sim). The observation's ``timestamp`` is the joint state's source stamp on this
machine's monotonic clock. ``episode`` follows the robot side's ``status`` topic (steps, return,
first and held success, done), so :class:`~robolearn.deploy.runner.Runner` ends episodes as it does
with the in-process sim. An action is published at once (``target_time`` is not forwarded: the robot
side applies the newest command at its next tick, then its safety layer holds when commands stop).

With ``record=True`` every :meth:`send_action` adds a dataset frame to ``episode.frames``: the
observation last returned (measured state), the ``action`` as commanded, and ``action.joint_target``,
the joint target (7 joints + gripper) the robot side's safety layer let through at that moment.
torch-free and mujoco-free.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robolearn import types
from robolearn.deploy.robot import TIMESTAMP_KEY, Robot, RobotError, ee_delta_hold
from robolearn.deploy.topics import (
    Backend,
    BridgeError,
    Float64MultiArray,
    Image,
    JointState,
    PoseStamped,
    StringMsg,
    make_backend,
)
from robolearn.deploy.topics.names import image_topic, topic_names
from robolearn.types import FeatureSpec

__all__ = ["JOINT_TARGET", "BridgeEpisode", "BridgeRobot"]

JOINT_TARGET = "action.joint_target"
"""Frame key of the joint target the robot side's safety layer let through (recording)."""


@dataclass
class BridgeEpisode:
    """The robot side's episode counts (``status`` topic), plus the frames recorded here."""

    seed: int | None = None
    task: str = ""
    steps: int = 0
    ret: float = 0.0
    first_success_step: int | None = None
    held: bool = False
    done: bool = False
    frames: list[dict[str, np.ndarray]] = field(default_factory=list)

    @property
    def success(self) -> bool:
        """Success was reached on some step."""
        return self.first_success_step is not None


def _spec(d: dict[str, Any]) -> FeatureSpec:
    names = d.get("names")
    if d["dtype"] in ("image", "video"):
        names = None
    return FeatureSpec(d["dtype"], tuple(d["shape"]), tuple(names) if names else None)


class BridgeRobot(Robot):
    """The robot behind bridge ``backend`` (``zmq`` | ``zenoh`` | ``ros1`` | ``inproc``) at
    ``host:port``; ``command``: ``ee_delta``, ``joint_position`` or ``auto`` (the robot side's
    policy action). ``bus``: an already open backend to use instead (not closed on disconnect)."""

    def __init__(
        self,
        backend: str = "zmq",
        *,
        host: str = "127.0.0.1",
        port: int = 7447,
        namespace: str = "/robolearn",
        command: str = "auto",
        record: bool = False,
        timeout: float = 10.0,
        bus: Backend | None = None,
    ):
        if command not in ("auto", "ee_delta", "joint_position"):
            raise ValueError(f"command must be auto, ee_delta or joint_position, found {command!r}")
        self.kind, self.host, self.port, self.namespace = backend, host, port, namespace
        self.name = f"{backend}:{host}:{port}{namespace}"
        self.command_mode = command
        self.record, self.timeout = record, timeout
        self._given_bus = bus
        self.bus: Backend | None = None
        self.info: dict[str, Any] = {}
        self.topics = topic_names(namespace)
        self.episode = BridgeEpisode()
        self._reset_stamp: float | None = None
        self._last_obs: dict[str, Any] | None = None
        self._ret_seen = 0.0
        self._gripper = -1.0
        self.safety_state = ""
        """The robot side's safety state from its latest status (``active``, ``hold``, ``estop``, ...)."""

    # ------------------------------------------------------------------ description
    @property
    def observation_features(self) -> dict[str, FeatureSpec]:
        self._require_connected()
        return {k: _spec(v) for k, v in self.info["observation_features"].items()}

    @property
    def action_feature(self) -> FeatureSpec:
        self._require_connected()
        return _spec(self.info["actions"][self.command_mode])

    @property
    def control_hz(self) -> float:
        self._require_connected()
        return float(self.info["policy_hz"])

    @property
    def features(self) -> dict[str, FeatureSpec]:
        """Observation features, ``action`` and, when recording, ``action.joint_target`` and the
        per-frame reward, done and success columns (what :attr:`episode` ``.frames`` hold)."""
        out = super().features
        if self.record:
            out[JOINT_TARGET] = FeatureSpec("float32", (8,), types.JOINT_POS_ACTION_NAMES)
            out[types.REWARD] = FeatureSpec("float32", (1,))
            out[types.DONE] = FeatureSpec("bool", (1,))
            out[types.SUCCESS] = FeatureSpec("bool", (1,))
        return out

    # ------------------------------------------------------------------ lifecycle
    @property
    def is_connected(self) -> bool:
        return self.bus is not None

    def connect(self) -> None:
        """Open the bridge, ask the robot side to describe itself, subscribe to its topics."""
        if self.bus is not None:
            return
        bus = self._given_bus or make_backend(
            self.kind, role="client", host=self.host, port=self.port, namespace=self.namespace,
            node_name="robolearn_run",
        )  # fmt: skip
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    self.info = bus.request("describe", {}, timeout=min(2.0, self.timeout))
                    break
                except BridgeError:
                    if time.monotonic() > deadline:
                        raise RobotError(
                            f"{self.name}: no robot answered 'describe' within {self.timeout:g} s "
                            "(is `robolearn sim-robot` or the driver running on this bridge?)"
                        ) from None
            if self.command_mode == "auto":
                self.command_mode = (
                    "ee_delta" if self.info["policy_action"] == "ee_delta" else "joint_position"
                )
            t = self.topics
            self._subs = {
                "joints": bus.subscribe(t["joint_states"], JointState, 1),
                "tcp": bus.subscribe(t["tcp_pose"], PoseStamped, 1),
                "target": bus.subscribe(t["joint_target"], JointState, 1),
                "env": bus.subscribe(t["environment_state"], Float64MultiArray, 1),
                "status": bus.subscribe(t["status"], StringMsg, 4),
            }
            for cam in self.info["cameras"]:
                self._subs[f"cam:{cam}"] = bus.subscribe(image_topic(self.namespace, cam), Image, 1)
        except BaseException:
            if self._given_bus is None:
                bus.close()
            raise
        self.bus = bus

    def disconnect(self) -> None:
        if self.bus is None:
            return
        bus, self.bus = self.bus, None
        if self._given_bus is None:
            bus.close()

    # ------------------------------------------------------------------ episodes
    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """Start an episode on the robot side (its ``reset`` service) and wait for topics from after it."""
        self._require_connected()
        reply = self.bus.request("reset", {"seed": seed}, timeout=self.timeout)
        if "error" in reply:
            raise RobotError(f"{self.name}: reset refused: {reply['error']}")
        self._reset_stamp = float(reply["stamp"])
        self.episode = BridgeEpisode(seed=reply.get("seed", seed), task=str(reply.get("task", "")))
        self._ret_seen, self._gripper = 0.0, -1.0
        deadline = time.monotonic() + self.timeout
        while True:
            obs = self._observe()
            if obs is not None:
                return obs
            if time.monotonic() > deadline:
                raise RobotError(f"{self.name}: no fresh joint states within {self.timeout:g} s of reset")
            time.sleep(0.002)

    def _update_episode(self) -> None:
        for env in self._subs["status"].drain():
            status = json.loads(env.msg.data)
            if self._reset_stamp is not None and abs(status["reset_stamp"] - self._reset_stamp) > 1e-6:
                continue  # the previous episode's
            ep, got = self.episode, status["episode"]
            ep.steps, ep.ret, ep.held, ep.done = got["steps"], got["ret"], got["held"], got["done"]
            ep.first_success_step = got["first_success_step"]
            ep.task = got["task"] or ep.task
            self.safety_state = status["state"]

    def _observe(self) -> dict[str, Any] | None:
        s = self._subs
        js, tcp = s["joints"].latest(), s["tcp"].latest()
        fresh = self._reset_stamp or 0.0
        if js is None or tcp is None or js.source_time < fresh or tcp.source_time < fresh:
            return None
        obs: dict[str, Any] = {}
        for cam in self.info["cameras"]:
            img = s[f"cam:{cam}"].latest()
            if img is None or img.source_time < fresh:
                return None
            obs[types.image_key(cam)] = img.msg.to_array()
        pos, vel = js.msg.position, js.msg.velocity
        p, q = tcp.msg.position, tcp.msg.orientation
        state = np.concatenate([pos[:7], vel[:7], [pos[7] + pos[8]], p, [q[3], q[0], q[1], q[2]]])
        obs[types.OBS_STATE] = state.astype(np.float32)
        if types.OBS_ENV_STATE in self.info["observation_features"]:
            env = s["env"].latest()
            if env is None or env.source_time < fresh:
                return None
            obs[types.OBS_ENV_STATE] = env.msg.data.astype(np.float32)
        obs[types.TASK] = self.episode.task
        # Source stamps are wall-clock (comparable across machines); the loop runs on monotonic time.
        obs[TIMESTAMP_KEY] = time.monotonic() - (time.time() - js.source_time)
        self._update_episode()
        return obs

    # ------------------------------------------------------------------ I/O
    def get_observation(self) -> dict[str, Any]:
        self._require_connected()
        deadline = time.monotonic() + self.timeout
        while (obs := self._observe()) is None:
            if time.monotonic() > deadline:
                raise RobotError(f"{self.name}: no observation within {self.timeout:g} s")
            time.sleep(0.002)
        self._last_obs = obs
        return obs

    def send_action(self, action: np.ndarray, target_time: float | None = None) -> np.ndarray:
        self._require_connected()
        arr = self.check_action(action)
        self.bus.publish(
            self.topics[f"command/{self.command_mode}"], Float64MultiArray(arr.astype(np.float64))
        )
        self._gripper = float(arr[-1])
        if self.record and self._last_obs is not None and not self.episode.done:
            self._add_frame(self._last_obs, arr)
        return arr

    def _add_frame(self, obs: dict[str, Any], action: np.ndarray) -> None:
        frame = {k: np.asarray(v) for k, v in obs.items() if k not in (types.TASK, TIMESTAMP_KEY)}
        frame[types.ACTION] = action.astype(np.float32)
        target = self._subs["target"].latest()
        frame[JOINT_TARGET] = (
            np.asarray(target.msg.position, np.float32)
            if target is not None
            else np.concatenate([obs[types.OBS_STATE][:7], [self._gripper]]).astype(np.float32)
        )
        reward = self.episode.ret - self._ret_seen
        self._ret_seen = self.episode.ret
        frame[types.REWARD] = np.array([reward], dtype=np.float32)
        frame[types.DONE] = np.array([self.episode.done])
        frame[types.SUCCESS] = np.array([self.episode.held])
        self.episode.frames.append(frame)

    def hold_action(self) -> np.ndarray:
        self._require_connected()
        if self.command_mode == "ee_delta":
            return ee_delta_hold(self._gripper)
        obs = self._last_obs or self.get_observation()
        return np.concatenate([obs[types.OBS_STATE][:7], [self._gripper]]).astype(np.float32)

    def estop(self) -> None:
        """Publish ``stop`` on the e-stop topic: the robot side latches it until :meth:`clear_estop`."""
        self._require_connected()
        self.bus.publish(self.topics["estop"], StringMsg("stop"))

    def clear_estop(self) -> None:
        """Publish ``reset`` on the e-stop topic: the robot side then holds until a fresh command."""
        self._require_connected()
        self.bus.publish(self.topics["estop"], StringMsg("reset"))
