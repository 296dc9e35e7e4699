"""The robot-PC driver core: a 1 kHz control thread between policy targets and the arm.

::

    with FrankaDriver(LibfrankaArm("172.16.0.2"), cell.safety, policy_hz=20) as drv:
        drv.command(target)      # 7 joint targets (rad) [+ gripper in [-1, 1]], from any thread
        drv.observe()            # the latest ArmState
        drv.status()             # state, fault, filter state, success rate, tracking error
        drv.estop("why") / drv.clear_estop() / drv.recover()

States: ``idle`` (connected, no motion), ``running`` (the 1 kHz loop), ``estop`` (latched; commands
ignored until :meth:`~FrankaDriver.clear_estop`), ``fault`` (the arm stopped the motion: a reflex, a
libfranka ControlException, a lost connection). A fresh command starts a motion from ``idle``; the
watchdog's stop brakes and ends it (back to ``idle``). A fault is reported (:meth:`status`, the
``on_fault`` callback) and nothing moves again until :meth:`recover` is called: it runs the robot's
automatic error recovery and returns to ``idle``, with the old targets dropped, so only a new command
moves the arm.

The command success rate is counted here: commands written over robot packets elapsed (a packet the
loop missed counts against it); the tracking error is ``|q - q_c|`` per packet, the measured joints
against the position commanded for it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robolearn.deploy.franka.arm import MODES, Arm, ArmFault, ArmState
from robolearn.deploy.franka.pipeline import LimitViolation, MotionPipeline
from robolearn.deploy.safety import SafetyLimits

__all__ = ["DriverStats", "FrankaDriver"]

# A 1 kHz loop in Python shares the GIL with the bridge's threads; at the default 5 ms switch
# interval a busy thread made the loop miss up to 12% of the packets here, at 0.2 ms none.
SWITCH_INTERVAL_S = 0.0002


@dataclass
class DriverStats:
    """Counters over the driver's life (all motions)."""

    cycles: int = 0
    """Commands written."""
    packets: int = 0
    """Robot packets elapsed while a motion ran (1 ms each)."""
    motions: int = 0
    tracking_max: float = 0.0
    """Largest ``|q - q_c|`` over joints and packets (rad): measured joints against the position the
    stream commanded for that packet (in velocity control, the integral of the commanded velocity)."""
    tracking_sq: float = 0.0
    robot_success_min: float = 1.0
    """Lowest control_command_success_rate the robot itself reported."""

    @property
    def success_rate(self) -> float:
        """Commands written over robot packets elapsed (1.0 before any motion)."""
        return self.cycles / self.packets if self.packets else 1.0

    @property
    def tracking_rms(self) -> float:
        """Root mean square of ``|q - q_c|`` over joints and packets (rad)."""
        return float(np.sqrt(self.tracking_sq / (7 * self.cycles))) if self.cycles else 0.0


class FrankaDriver:
    """See the module docstring. ``mode``: ``position`` or ``velocity`` control; ``dynamics``: factors
    of the cell's velocity, acceleration and jerk limits for the stream; ``max_gripper_width``: the
    opening (m) of gripper command -1 (+1 is closed)."""

    def __init__(self, arm: Arm, limits: SafetyLimits, *, policy_hz: float = 20.0, mode: str = "position",
                 dynamics: tuple[float, float, float] = (0.5, 0.5, 0.2), max_gripper_width: float = 0.08,
                 on_fault: Callable[[str], None] | None = None):  # fmt: skip
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, found {mode!r}")
        self.arm, self.mode, self.on_fault = arm, mode, on_fault
        # The watchdog counts robot time: the robot's control periods are what it guards (the same as
        # wall time on a real arm; franky-sim runs slower than real time).
        self.pipeline = MotionPipeline(
            limits, policy_hz=policy_hz, dynamics=dynamics, clock=self._robot_clock
        )
        self.max_gripper_width = max_gripper_width
        self.stats = DriverStats()
        self.fault: str | None = None
        self._state = "idle"
        self._lock = threading.Lock()
        self._arm_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._obs: ArmState | None = None
        self._stop_req = threading.Event()
        self._connected = False
        self._gripper_sent: float | None = None
        self._switch: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Connect to the arm (it stays idle until the first command)."""
        if not self._connected:
            self.arm.connect()
            self._connected = True
            self._obs = self.arm.read_state()

    def close(self) -> None:
        """End any motion (braking), then release the arm."""
        self.stop()
        if self._connected:
            self.arm.close()
            self._connected = False

    def __enter__(self) -> FrankaDriver:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _robot_clock(self) -> float:
        obs = self._obs
        return obs.time if obs is not None else 0.0

    @property
    def state(self) -> str:
        """``idle`` | ``running`` | ``estop`` | ``fault``."""
        return self._state

    # ------------------------------------------------------------------ commands
    def command(self, target: np.ndarray) -> np.ndarray | None:
        """A fresh policy target (7 joint positions, or 8 with the gripper in [-1, 1]). Starts a motion
        when idle; ignored (None) in ``estop`` and ``fault``. Returns the safe target stored."""
        if self._state in ("estop", "fault") or not self._connected:
            return None
        if self._state == "idle":
            try:
                self._start_motion()
            except ArmFault as exc:
                self._set_fault(str(exc))
                return None
            if self._state != "running":
                return None
        safe = self.pipeline.command(target)
        if safe is not None:
            self._gripper(self.pipeline.gripper)
        return safe

    def _gripper(self, g: float) -> None:
        width = 0.5 * (1.0 - g) * self.max_gripper_width
        if self._gripper_sent is None or abs(width - self._gripper_sent) > 0.005:
            self._gripper_sent = width
            self.arm.set_gripper(width)

    def estop(self, reason: str = "e-stop") -> None:
        """Latch the e-stop: brake, end the motion, ignore commands until :meth:`clear_estop`."""
        obs = self._obs
        self.pipeline.estop(reason, None if obs is None else obs.q)
        with self._lock:
            if self._state != "fault":
                self._state = "estop"
        self._end_motion()

    def clear_estop(self) -> None:
        """Release the e-stop: idle; the next fresh command moves the arm."""
        self.pipeline.clear_estop()
        with self._lock:
            if self._state == "estop":
                self._state = "idle"

    def recover(self) -> None:
        """After a fault, on explicit request only: the robot's automatic error recovery, then idle."""
        self._end_motion()
        with self._arm_lock:
            self.arm.recover()
            self._obs = self.arm.read_state()
        with self._lock:
            self.fault = None
            if self._state == "fault":
                self._state = "idle"

    def stop(self) -> None:
        """Brake and end the running motion (idle afterwards)."""
        self._end_motion()

    # ------------------------------------------------------------------ reading
    def observe(self) -> ArmState | None:
        """The latest robot state (None before :meth:`connect`)."""
        # Between motions, read the arm directly; libfranka refuses a read while a motion runs, so
        # the arm lock (held while a motion starts) and a second look keep the two apart.
        if self._state in ("idle", "estop") and self._connected and self._arm_lock.acquire(blocking=False):
            try:
                if self._state in ("idle", "estop") and not self._motion_alive():
                    self._obs = self.arm.read_state()
            except ArmFault as exc:
                self._set_fault(str(exc))
            finally:
                self._arm_lock.release()
        return self._obs

    def _motion_alive(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def status(self) -> dict:
        """What the driver reports: its state, the fault (None: none), the safety filter's state and
        counters, and the stats."""
        s = self.stats
        return {
            "state": self._state, "fault": self.fault, "safety": self.pipeline.state,
            "safety_counts": dict(self.pipeline.filter.counts), "cycles": s.cycles, "packets": s.packets,
            "success_rate": s.success_rate, "robot_success_min": s.robot_success_min,
            "tracking_max": s.tracking_max, "tracking_rms": s.tracking_rms, "motions": s.motions,
        }  # fmt: skip

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no motion runs; True when that happened within ``timeout`` seconds."""
        t = self._thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    # ------------------------------------------------------------------ the loop
    def _start_motion(self) -> None:
        with self._arm_lock:
            old = self._thread
            if old is not None and old is not threading.current_thread():
                old.join()  # a motion that is ending (its last packets)
            with self._lock:
                if self._state != "idle":
                    return
            self._stop_req.clear()
            start = self.arm.start(self.mode)
            self._obs = start
            w = start.gripper_width
            self.pipeline.reset(start.q_d, 1.0 - 2.0 * w / self.max_gripper_width if np.isfinite(w) else -1.0)
            self.stats.motions += 1
            self._switch = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            with self._lock:
                self._state = "running"
            self._thread = threading.Thread(target=self._loop, name="franka-1khz", daemon=True)
            self._thread.start()

    def _end_motion(self) -> None:
        self._stop_req.set()
        with self._arm_lock:
            t = self._thread
            if t is not None and t is not threading.current_thread():
                t.join(timeout=30.0)
            self._thread = None

    def _set_fault(self, message: str) -> None:
        with self._lock:
            self.fault, self._state = message, "fault"
        if self.on_fault is not None:
            self.on_fault(message)

    def _loop(self) -> None:
        pipe, arm, stats = self.pipeline, self.arm, self.stats
        ending = False
        q_cmd = None
        try:
            while True:
                state, period = arm.read()
                self._obs = state
                steps = int(round(period / pipe.dt))
                stats.packets += max(steps, 1)
                err = np.abs(state.q - (state.q_d if q_cmd is None else q_cmd))
                stats.tracking_max = max(stats.tracking_max, float(err.max()))
                stats.tracking_sq += float(err @ err)
                stats.robot_success_min = min(stats.robot_success_min, float(state.success_rate))
                if not ending and (self._stop_req.is_set() or pipe.state in ("stopped", "estop")):
                    pipe.brake()
                    ending = True
                try:
                    q_cmd, dq_cmd = pipe.tick(state.q, steps)
                    finished = ending and pipe.at_rest
                except LimitViolation as exc:
                    # Never send it: repeat the last command and end the motion.
                    self._set_fault(f"LimitViolation: {exc}")
                    q_cmd = np.asarray(state.q_d) if q_cmd is None else q_cmd
                    dq_cmd, finished = np.zeros(7), True
                arm.write(q_cmd, dq_cmd, finished)
                stats.cycles += 1
                if finished:
                    break
        except ArmFault as exc:
            self._set_fault(str(exc))
        finally:
            if self._switch is not None:
                sys.setswitchinterval(self._switch)
            with self._lock:
                if self._state == "running":
                    self._state = "idle"
            if self._state != "fault":
                try:
                    self._obs = arm.read_state()
                except ArmFault as exc:
                    self._set_fault(str(exc))
