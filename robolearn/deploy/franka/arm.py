"""The arm a :class:`~robolearn.deploy.franka.driver.FrankaDriver` drives: a small 1 kHz contract.

:class:`Arm` is what the driver needs from libfranka: read a state, start a motion, then per robot
packet ``read()`` (blocks until the next one) and ``write()`` one command; ``recover()`` runs the
robot's automatic error recovery. :class:`~robolearn.deploy.franka.libfranka.LibfrankaArm` speaks
to a real arm (or franky-sim) through pylibfranka; tests use an ideal in-memory arm. Every backend
error surfaces as :class:`ArmFault`, carrying the robot's own error flags when it has them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MODES", "Arm", "ArmFault", "ArmState"]

MODES = ("position", "velocity")
"""Joint position control (the stream's q) or joint velocity control (its dq)."""


class ArmFault(RuntimeError):
    """The arm stopped a motion (a reflex, a libfranka ControlException, a lost connection). ``kind``
    is the exception's class name, ``errors`` the robot's error flags (comma-separated; may be empty)."""

    def __init__(self, kind: str, message: str, errors: str = ""):
        self.kind, self.errors = kind, errors
        super().__init__(f"{kind}: {message}" + (f" [robot errors: {errors}]" if errors else ""))


@dataclass
class ArmState:
    """One robot packet: measured and commanded joints (7,), the flange pose and the robot's own
    bookkeeping."""

    q: np.ndarray
    dq: np.ndarray
    q_d: np.ndarray
    """The joint positions the robot was last commanded (libfranka's ``q_d``)."""
    O_T_EE: np.ndarray = field(default_factory=lambda: np.eye(4).reshape(-1, order="F"))
    """End-effector pose in the base frame, 16 values, column-major (libfranka's layout)."""
    time: float = 0.0
    """Robot clock, s."""
    mode: str = "Idle"
    """libfranka's RobotMode name (Idle, Move, Reflex, UserStopped, ...)."""
    errors: str = ""
    """Active error flags, comma-separated (empty: none)."""
    success_rate: float = 1.0
    """The robot's own control_command_success_rate over its last 100 packets."""
    gripper_width: float = float("nan")
    """Finger opening (m) when a gripper is attached."""


class Arm(ABC):
    """A 7-joint arm with a 1 kHz motion interface (see the module docstring)."""

    name: str = "arm"

    @abstractmethod
    def connect(self) -> None:
        """Open the connection (the robot stays idle)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (safe to call twice)."""

    @abstractmethod
    def read_state(self) -> ArmState:
        """One state read while no motion runs."""

    @abstractmethod
    def start(self, mode: str) -> ArmState:
        """Begin a ``mode`` motion (one of :data:`MODES`); returns the state it starts from."""

    @abstractmethod
    def read(self) -> tuple[ArmState, float]:
        """Block until the next robot packet of the running motion: (state, robot seconds since the
        previous one; more than 1 ms after missed packets). Raises :class:`ArmFault`."""

    @abstractmethod
    def write(self, q: np.ndarray, dq: np.ndarray, finished: bool = False) -> None:
        """Send this packet's command: joint positions ``q`` (position mode) or velocities ``dq``
        (velocity mode), each (7,); ``finished`` ends the motion. Raises :class:`ArmFault`."""

    @abstractmethod
    def recover(self) -> None:
        """The robot's automatic error recovery (only ever on an explicit request)."""

    def set_gripper(self, width: float) -> None:  # noqa: B027  (optional: arms without a hand)
        """Ask the hand for a finger opening (m); returns at once. Arms without a hand ignore it."""
