"""From policy targets to the 1 kHz command: safety filter, interpolation, last check.

::

    pipe = MotionPipeline(limits)              # a cell's SafetyLimits (deploy/cells/<cell>.yaml)
    pipe.reset(q_commanded)                    # at rest where the arm is
    pipe.command(target)                       # any thread, 10-30 Hz: 7 joints [+ gripper in [-1, 1]]
    q, dq = pipe.tick(q_measured, steps=1)     # the control thread, every robot packet

Each target goes through :class:`robolearn.deploy.safety.SafetyFilter` (finite, joint range, change
per command, workspace and TCP speed; watchdog and e-stop latch), whose per-tick output the
:class:`~robolearn.deploy.franka.interpolator.JointInterpolator` turns into a jerk-limited stream
within the cell's velocity, acceleration and jerk limits (scaled by ``dynamics`` for a margin).
Every sample is checked once more against the joint range and velocity limits before it may leave;
one that fails raises :class:`LimitViolation` and the driver ends the motion instead of sending it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from robolearn.deploy.franka.interpolator import DOF, JointInterpolator, KinematicLimits
from robolearn.deploy.safety import SafetyFilter, SafetyLimits

__all__ = ["LimitViolation", "MotionPipeline"]


class LimitViolation(RuntimeError):
    """A 1 kHz sample broke the joint range or velocity limits (never sent)."""


class MotionPipeline:
    """Safety filter + interpolator + last check; see the module docstring.

    ``policy_hz``: the nominal command rate (the filter's change-per-command cap is the velocity
    limit over one period); ``dynamics``: (velocity, acceleration, jerk) factors in (0, 1] applied to
    the cell's limits for the stream; ``dt``: the control period.
    """

    def __init__(self, limits: SafetyLimits, *, policy_hz: float = 20.0,
                 dynamics: tuple[float, float, float] = (0.5, 0.5, 0.2), dt: float = 0.001,
                 clock: Callable[[], float] | None = None):  # fmt: skip
        kwargs = {"clock": clock} if clock is not None else {}
        self.filter = SafetyFilter(limits, period=1.0 / policy_hz, **kwargs)
        lim = self.filter.lim
        self.limits = KinematicLimits(
            lim["q_min"], lim["q_max"], lim["dq_max"], lim["ddq_max"], lim["dddq_max"]
        )
        self.interp = JointInterpolator(self.limits.scaled(*dynamics), dt=dt)
        self.dt = dt
        self._lock = threading.Lock()
        self._goal: np.ndarray | None = None
        self._last: np.ndarray | None = None
        self._braking = False
        self._period = 1.0 / policy_hz
        self.gripper = -1.0
        """The last safe gripper command in [-1, 1] (-1: open, +1: closed)."""
        self.hold_events: list[tuple[float, float]] = []
        """(last fresh command, the tick at which the watchdog's hold took effect), on the clock."""

    @property
    def state(self) -> str:
        """The safety filter's state: ``active`` | ``hold`` | ``stopped`` | ``estop``."""
        return self.filter.state

    @property
    def target(self) -> np.ndarray | None:
        """What the safety filter let through at the latest tick: 7 joints + gripper (None before
        :meth:`reset`)."""
        goal = self._goal
        return None if goal is None else np.append(goal, self.gripper)

    def reset(self, q: np.ndarray, gripper: float = -1.0) -> None:
        """At rest at the arm's commanded joints ``q`` (7,), the hand at ``gripper`` (in [-1, 1]; -1:
        open): the filter is armed there and holds."""
        q = np.asarray(q, float)
        g = float(np.clip(gripper, -1.0, 1.0)) if np.isfinite(gripper) else -1.0
        with self._lock:
            self.filter.reset(np.append(q, g))
            self.gripper = g
            self._braking = False
            self.interp.reset(q)
            self._goal, self._last = q.copy(), q.copy()

    def command(self, target: np.ndarray) -> np.ndarray | None:
        """Filter a fresh policy target (7 joints, or 8 with the gripper; 7 keep the hand's command):
        the safe target stored (8,), or None while the filter ignores commands (e-stop, stopped)."""
        arr = np.asarray(target, dtype=float).reshape(-1)
        if arr.shape == (DOF,):
            arr = np.append(arr, self.gripper)
        with self._lock:
            safe = self.filter.command(arr)
        if safe is not None:
            self.gripper = float(safe[DOF])
        return safe

    def estop(self, reason: str, measured: np.ndarray | None = None) -> None:
        """Latch the filter's e-stop: the arm holds until :meth:`clear_estop`."""
        with self._lock:
            self.filter.estop(reason, measured)

    def clear_estop(self) -> None:
        """Release the e-stop; the arm holds until a fresh command."""
        with self._lock:
            self.filter.clear_estop()

    def tick(self, measured: np.ndarray, steps: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The command for this robot packet, ``steps`` control periods after the previous one:
        (q, dq), each (7,), within the limits (else :class:`LimitViolation`)."""
        # The filter's command() (Cartesian checks, ~0.3 ms) runs in the caller's thread: never wait
        # for it here; the watchdog fires one tick later instead.
        goal = None
        if self._lock.acquire(blocking=False):
            try:
                was = self.filter.state
                goal = self.filter.tick(measured)
                if was == "active" and self.filter.state == "hold":
                    self.hold_events.append((self.filter.last_fresh, self.filter.clock()))
            finally:
                self._lock.release()
        if goal is not None and not self._braking:
            goal = goal[:DOF]
            if self._goal is None or not np.array_equal(goal, self._goal):
                self._goal = goal.copy()
                period = self._period if self.filter.state == "active" else None
                self.interp.set_target(goal, period)
        q, dq, _ = self.interp.step(steps)
        self._check(q, dq, steps)
        self._last = q
        return q, dq

    def brake(self) -> None:
        """Come to rest as fast as the stream's limits allow, ignoring targets until :meth:`reset`
        (the end of a motion)."""
        self._braking = True
        self.interp.brake()

    @property
    def at_rest(self) -> bool:
        """True when the stream stands still."""
        return self.interp.at_rest

    def _check(self, q: np.ndarray, dq: np.ndarray, steps: int) -> None:
        lim, tol = self.limits, 1e-9
        if not (np.isfinite(q).all() and np.isfinite(dq).all()):
            raise LimitViolation(f"non-finite command {q.tolist()}")
        if (q < lim.q_min - tol).any() or (q > lim.q_max + tol).any():
            raise LimitViolation(f"joint position out of range: {q.tolist()}")
        if (np.abs(dq) > lim.dq_max + tol).any():
            raise LimitViolation(f"joint velocity over the limit: {dq.tolist()}")
        if (
            self._last is not None
            and (np.abs(q - self._last) > lim.dq_max * self.dt * max(steps, 1) + 1e-7).any()
        ):
            raise LimitViolation(f"joint step over the velocity limit: {(q - self._last).tolist()}")
