"""The robot interface everything above the bridge is written against (DESIGN.md §3).

A robot is a small hardware contract, the same for the in-process sim robot
(:class:`robolearn.deploy.sim_robot.SimRobot`), the bridged sim twin and the real arm::

    with SimRobot("franka-lift") as robot:         # connect() ... disconnect()
        obs = robot.get_observation()              # {"observation.state": ..., "task": ..., "timestamp": t}
        robot.send_action(action)                  # executed at the robot's next control tick
        robot.send_action(robot.hold_action())     # stay where you are

Observations use the dataset/policy feature keys (:mod:`robolearn.types`): ``observation.state``,
``observation.environment_state``, ``observation.images.<cam>`` (uint8 H x W x 3), the instruction
under ``task``, plus ``timestamp``: the ``time.monotonic()`` seconds at which the observation was
taken, so the client can measure how stale an observation is and how many control steps an inference
took. Actions are float32 vectors of :attr:`Robot.action_feature`'s shape, in the robot's own units.

Only numpy is imported here: this module runs on a robot PC without torch or mujoco.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from robolearn.types import ACTION, EE_DELTA_ACTION_NAMES, FeatureSpec

__all__ = ["TIMESTAMP_KEY", "NotConnectedError", "Robot", "RobotError", "ee_delta_hold"]

TIMESTAMP_KEY = "timestamp"
"""Observation key of the ``time.monotonic()`` seconds at which an observation was taken."""


class RobotError(RuntimeError):
    """The robot refused a command or lost its connection; the message names the robot and why."""


class NotConnectedError(RobotError):
    """A command was sent before :meth:`Robot.connect` or after :meth:`Robot.disconnect`."""


def ee_delta_hold(gripper: float) -> np.ndarray:
    """The 7-D ``ee_delta`` action that holds position: no motion, gripper command kept at ``gripper``."""
    hold = np.zeros(len(EE_DELTA_ACTION_NAMES), dtype=np.float32)
    hold[-1] = gripper
    return hold


class Robot(ABC):
    """A robot the control loop drives: connect, observe, act, hold, disconnect.

    Subclasses set :attr:`name` and implement the abstract methods. The features describe what
    :meth:`get_observation` returns and what :meth:`send_action` accepts; the client checks them
    against the policy server's metadata before the first action is sent.
    """

    name: str = "robot"

    # --------------------------------------------------------------------- description
    @property
    @abstractmethod
    def observation_features(self) -> dict[str, FeatureSpec]:
        """Observation key -> per-frame spec (``float32`` vectors, ``video`` uint8 (H, W, 3) images);
        ``task`` and ``timestamp`` are not listed."""

    @property
    @abstractmethod
    def action_feature(self) -> FeatureSpec:
        """Shape, dtype and element names of the action :meth:`send_action` takes."""

    @property
    @abstractmethod
    def control_hz(self) -> float:
        """The robot's control rate: one action is executed per tick."""

    @property
    def features(self) -> dict[str, FeatureSpec]:
        """Observation features plus ``action``: what a dataset recorded from this robot holds."""
        return {**self.observation_features, ACTION: self.action_feature}

    # --------------------------------------------------------------------- lifecycle
    @property
    @abstractmethod
    def is_connected(self) -> bool:
        """True between :meth:`connect` and :meth:`disconnect`."""

    @abstractmethod
    def connect(self) -> None:
        """Open the connection to the robot (idempotent: connecting twice is an error-free no-op)."""

    @abstractmethod
    def disconnect(self) -> None:
        """Stop the robot and release it (safe to call twice, and after a failed connect)."""

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()

    # --------------------------------------------------------------------- I/O
    @abstractmethod
    def get_observation(self) -> dict[str, Any]:
        """The latest observation: feature arrays, ``task`` (str) and ``timestamp`` (monotonic s)."""

    @abstractmethod
    def send_action(self, action: np.ndarray, target_time: float | None = None) -> np.ndarray:
        """Queue ``action`` for execution at the first control tick at or after ``target_time``
        (``time.monotonic()`` seconds; None: the next tick). A later action for the same tick replaces
        an earlier one. Returns the action as it will be executed (clipped to the robot's limits).
        Raises :class:`NotConnectedError` when not connected, ``ValueError`` for a malformed action."""

    @abstractmethod
    def hold_action(self) -> np.ndarray:
        """The action that keeps the robot where it is now (``ee_delta``: zero motion with the
        current gripper command; joint targets: the current joint positions)."""

    def stop(self) -> None:
        """Bring the robot to rest and keep it there until the next :meth:`send_action`: from the
        next tick on it executes :meth:`hold_action`. Robots with a hardware stop override this."""
        self.send_action(self.hold_action())

    # --------------------------------------------------------------------- helpers
    def check_action(self, action: Any) -> np.ndarray:
        """``action`` as a float32 vector of the action feature's shape, or a ``ValueError`` naming
        the robot, the expected shape and the one found, or the non-finite values."""
        spec = self.action_feature
        arr = np.asarray(action, dtype=np.float32)
        if arr.shape != tuple(spec.shape):
            names = f" ({' '.join(spec.names)})" if spec.names else ""
            raise ValueError(
                f"{self.name}: action must have shape {tuple(spec.shape)}{names}, found {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"{self.name}: action contains NaN or inf: {arr.tolist()}")
        return arr

    def _require_connected(self) -> None:
        if not self.is_connected:
            raise NotConnectedError(f"{self.name}: not connected; call connect() first")
