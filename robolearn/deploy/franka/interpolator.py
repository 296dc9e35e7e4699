"""Policy targets (10-30 Hz) into a smooth, jerk-limited 1 kHz joint stream, with ruckig.

:class:`JointInterpolator` keeps one time-optimal ruckig trajectory from the arm's commanded state to
the latest safe target and samples it every control tick. Velocity, acceleration and jerk stay within
the limits it is given (ruckig's guarantee). Ruckig's free edition has no position limits, so they
are kept here: a trajectory is taken only when it stays inside ``[q_min, q_max]`` (sampled every
10 ms, with the slack its bounded acceleration allows between samples). Until a new one qualifies,
the arm keeps following the last one that did, so the stream never leaves the limits. A target is reached with the velocity its step from the
previous target implies when that also stays in range. Otherwise it is reached at rest. When no
newer target comes, the arm brakes back onto it.

Only numpy and ruckig: this runs on the robot PC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ruckig import ControlInterface, InputParameter, Result, Ruckig, Synchronization, Trajectory

__all__ = ["DOF", "JointInterpolator", "KinematicLimits"]

DOF = 7
_OK = (Result.Working, Result.Finished)


@dataclass(frozen=True)
class KinematicLimits:
    """Per-joint limits (7,) of the 1 kHz stream: position range, velocity, acceleration, jerk."""

    q_min: np.ndarray
    q_max: np.ndarray
    dq_max: np.ndarray
    ddq_max: np.ndarray
    dddq_max: np.ndarray

    def scaled(self, velocity: float, acceleration: float, jerk: float) -> KinematicLimits:
        """The same range with the dynamics scaled by factors in (0, 1] (a margin below the limits)."""
        for name, f in (("velocity", velocity), ("acceleration", acceleration), ("jerk", jerk)):
            if not 0.0 < f <= 1.0:
                raise ValueError(f"{name} scale must lie in (0, 1], found {f}")
        return KinematicLimits(self.q_min, self.q_max, self.dq_max * velocity, self.ddq_max * acceleration,
                               self.dddq_max * jerk)  # fmt: skip


class JointInterpolator:
    """Samples a jerk-limited trajectory toward the latest target every ``dt`` seconds.

    ``limits``: the stream's limits; ``margin``: targets are kept this far (rad) inside the position
    range; ``dt``: the control period (1 ms for libfranka).
    """

    def __init__(self, limits: KinematicLimits, dt: float = 0.001, margin: float = 0.01):
        self.limits = limits
        self.dt = float(dt)
        self.lo = np.asarray(limits.q_min, float) + margin
        self.hi = np.asarray(limits.q_max, float) - margin
        if (self.lo >= self.hi).any():
            raise ValueError("the position margin leaves no range")
        self._otg = Ruckig(DOF, self.dt)
        self._inp = InputParameter(DOF)
        self._inp.max_velocity = limits.dq_max.tolist()
        self._inp.max_acceleration = limits.ddq_max.tolist()
        self._inp.max_jerk = limits.dddq_max.tolist()
        self.q = np.zeros(DOF)
        self.dq = np.zeros(DOF)
        self.ddq = np.zeros(DOF)
        self.target = np.zeros(DOF)
        self.rejected = 0
        """Targets whose trajectory would have left the position range (kept the previous one)."""
        self._traj: Trajectory | None = None
        self._t = 0.0
        self._pending: tuple[np.ndarray, float] | None = None

    # ------------------------------------------------------------------ state
    def reset(self, q: np.ndarray) -> None:
        """Start at rest at ``q`` (7,), the arm's commanded position; the target is ``q``."""
        q = np.asarray(q, float)
        if q.shape != (DOF,) or not np.isfinite(q).all():
            raise ValueError(f"reset: expected 7 finite joint positions, found {q.tolist()}")
        self.q, self.dq, self.ddq = q.copy(), np.zeros(DOF), np.zeros(DOF)
        self.target = np.clip(q, self.lo, self.hi)
        self._traj, self._t, self._pending = None, 0.0, None

    @property
    def at_rest(self) -> bool:
        """True when the stream stands still at its target."""
        return self._traj is None and not self.dq.any() and not self.ddq.any()

    # ------------------------------------------------------------------ targets
    def set_target(self, q: np.ndarray, period: float | None = None) -> bool:
        """Aim at ``q`` (7,), expected to be followed by the next target ``period`` s later (None:
        reach it at rest as soon as possible). Returns False when no trajectory to it stays in range
        yet (the previous one continues and ``q`` is retried at each :meth:`step`)."""
        q = np.asarray(q, float)
        if q.shape != (DOF,) or not np.isfinite(q).all():
            self.rejected += 1
            return False
        q = np.clip(q, self.lo, self.hi)
        if np.array_equal(q, self.target) and self._pending is None:
            return True
        if self._plan(q, period):
            self._pending = None
            return True
        self.rejected += 1
        self._pending = (q, period)
        return False

    def brake(self) -> None:
        """Come to rest as fast as the limits allow, then stay there (the target becomes that point)."""
        self._pending = None
        traj = self._calc(np.zeros(DOF), velocity=True)
        if traj is None:
            return
        end = np.asarray(traj.at_time(traj.duration)[0], float)
        self.target = np.clip(end, self.limits.q_min, self.limits.q_max)
        self._traj, self._t = traj, 0.0

    def _calc(self, target: np.ndarray, *, target_velocity: np.ndarray | None = None, velocity: bool = False,
              minimum_duration: float | None = None, start: tuple | None = None) -> Trajectory | None:  # fmt: skip
        inp = self._inp
        q, dq, ddq = start if start is not None else (self.q, self.dq, self.ddq)
        inp.current_position, inp.current_velocity, inp.current_acceleration = (
            q.tolist(),
            dq.tolist(),
            ddq.tolist(),
        )
        inp.control_interface = ControlInterface.Velocity if velocity else ControlInterface.Position
        # A brake stops every joint on its own shortest path (no joint stretched to wait for another),
        # so it ends before the point where any trajectory taken so far stops: inside the range.
        inp.synchronization = Synchronization.No if velocity else Synchronization.Time
        zeros = [0.0] * DOF
        if velocity:
            inp.target_velocity = target.tolist()
        else:
            inp.target_position = target.tolist()
            inp.target_velocity = zeros if target_velocity is None else target_velocity.tolist()
        inp.target_acceleration = zeros
        inp.minimum_duration = minimum_duration
        traj = Trajectory(DOF)
        try:
            res = self._otg.calculate(inp, traj)
        except RuntimeError:
            return None
        return traj if res in _OK else None

    def _in_range(self, traj: Trajectory) -> bool:
        # ruckig's own position_extrema were wrong here for time-synchronized profiles (a joint dipped
        # 0.04 rad below its reported minimum), so sample instead: every 10 ms plus the end. Between
        # samples an extremum has zero velocity, so it lies at most ddq_max * h^2 / 8 beyond them.
        h = 0.01
        n = int(np.ceil(traj.duration / h))
        ps = np.array([traj.at_time(min(k * h, traj.duration))[0] for k in range(n + 1)])
        slack = self.limits.ddq_max * h * h / 8
        return bool(
            (ps.min(0) >= self.limits.q_min + slack).all() and (ps.max(0) <= self.limits.q_max - slack).all()
        )

    def _plan(self, q: np.ndarray, period: float | None) -> bool:
        if period is not None and period > 0:
            # Pass through the target with the velocity of the step that led to it, if the brake back
            # onto it afterwards stays in range too.
            v = np.clip((q - self.target) / period, -self.limits.dq_max, self.limits.dq_max)
            traj = self._calc(q, target_velocity=v, minimum_duration=period) if v.any() else None
            if traj is not None and self._in_range(traj):
                back = self._calc(q, start=(q, v, np.zeros(DOF)))
                if back is not None and self._in_range(back):
                    self._traj, self._t, self.target = traj, 0.0, q
                    return True
        traj = self._calc(q, minimum_duration=period if period and period > 0 else None)
        if traj is None or not self._in_range(traj):
            return False
        self._traj, self._t, self.target = traj, 0.0, q
        return True

    # ------------------------------------------------------------------ stream
    def step(self, n: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance ``n`` control periods (more than one after a missed robot packet); returns the
        commanded (q, dq, ddq), each (7,)."""
        for _ in range(max(int(n), 0)):
            if self._pending is not None and self._plan(*self._pending):
                self._pending = None
            if self._traj is None:
                self.dq[:], self.ddq[:] = 0.0, 0.0
                continue
            self._t += self.dt
            dur = self._traj.duration
            if self._t < dur:
                self._sample(self._t)
                continue
            self._sample(dur)
            if np.abs(self.dq).max() <= 1e-9:
                self._traj = None
                self.dq[:], self.ddq[:] = 0.0, 0.0
                continue
            # Passed the target moving and no newer one came: brake back onto it (this leg was checked
            # in range when the target was taken), from the end state, keeping the time left over.
            left = self._t - dur
            back = self._calc(self.target)
            if back is None:
                self.brake()
                continue
            self._traj, self._t = back, left
            self._sample(min(left, back.duration))
        return self.q.copy(), self.dq.copy(), self.ddq.copy()

    def _sample(self, t: float) -> None:
        p, v, a = self._traj.at_time(t)[:3]
        self.q, self.dq, self.ddq = np.asarray(p, float), np.asarray(v, float), np.asarray(a, float)
