"""The :class:`~robolearn.deploy.franka.arm.Arm` of a real Franka (or franky-sim) through pylibfranka.

pylibfranka is Franka Robotics' own binding of libfranka (``pip install pylibfranka``; the ``franka``
extra). It is imported when an arm is connected, so the rest of the driver imports without it.
``realtime="ignore"`` runs without a real-time kernel (franky-sim, a desktop); a robot PC with a
PREEMPT_RT kernel should use ``enforce``. The hand, when there is one, is driven from a helper
process: pylibfranka's ``Gripper.move`` blocks until the fingers arrive *holding the GIL* (1.5 s for
a full close here), which would stall the 1 kHz loop in a thread of this process.
"""

from __future__ import annotations

import multiprocessing as mp
import threading

import numpy as np

from robolearn.deploy.franka.arm import MODES, Arm, ArmFault, ArmState

__all__ = ["LibfrankaArm"]


def _franka():
    import pylibfranka  # the franka extra; the CLI names it when missing

    return pylibfranka


class LibfrankaArm(Arm):
    """A Franka arm at ``ip`` (``gripper``: also drive the Franka Hand; ``realtime``: ``enforce`` |
    ``ignore``)."""

    name = "franka"

    def __init__(
        self, ip: str, *, gripper: bool = True, realtime: str = "ignore", gripper_speed: float = 0.1
    ):
        if realtime not in ("enforce", "ignore"):
            raise ValueError(f"realtime must be enforce or ignore, found {realtime!r}")
        self.ip, self.use_gripper, self.realtime, self.gripper_speed = ip, gripper, realtime, gripper_speed
        self._robot = None
        self._ctrl = None
        self._mode = "position"
        self._hand = None
        self._conn = None
        self._width = float("nan")
        self._reader: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Connect to the robot (and its hand)."""
        pf = _franka()
        cfg = pf.RealtimeConfig.kEnforce if self.realtime == "enforce" else pf.RealtimeConfig.kIgnore
        self._robot = self._call(lambda: pf.Robot(self.ip, cfg))
        if self.use_gripper:
            ctx = mp.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._hand = ctx.Process(target=_hand_process, args=(self.ip, self.gripper_speed, child),
                                     name="franka-hand", daemon=True)  # fmt: skip
            self._hand.start()
            child.close()
            kind, value = self._conn.recv() if self._conn.poll(60.0) else ("error", "no answer in 60 s")
            if kind != "width":
                self.close()
                raise ArmFault("NetworkException", f"the Franka Hand at {self.ip}: {value}")
            self._width = float(value)
            self._reader = threading.Thread(target=self._read_hand, name="franka-hand-reader", daemon=True)
            self._reader.start()

    def close(self) -> None:
        """Release the robot and the hand."""
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
        if self._hand is not None:
            self._hand.join(timeout=10.0)
            if self._hand.is_alive():
                self._hand.terminate()
                self._hand.join(timeout=5.0)
            self._hand = None
        if self._reader is not None:
            self._reader.join(timeout=5.0)
            self._reader = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._ctrl = None
        self._robot = None

    # ------------------------------------------------------------------ motion
    def read_state(self) -> ArmState:
        """One state read while no motion runs."""
        return self._state(self._call(self._robot.read_once))

    def start(self, mode: str) -> ArmState:
        """Begin a joint position or velocity motion in joint impedance."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, found {mode!r}")
        pf = _franka()
        self._mode = mode
        starter = (
            self._robot.start_joint_position_control
            if mode == "position"
            else self._robot.start_joint_velocity_control
        )
        self._ctrl = self._call(lambda: starter(pf.ControllerMode.JointImpedance))
        state, _ = self._call(self._ctrl.readOnce)
        # readOnce consumed a packet: answer it with the state's own command before handing over.
        self._call(lambda: self._ctrl.writeOnce(self._command(np.asarray(state.q_d), np.zeros(7), False)))
        return self._state(state)

    def read(self) -> tuple[ArmState, float]:
        """Block for the next packet: (state, robot seconds since the previous one)."""
        state, dur = self._call(self._ctrl.readOnce)
        return self._state(state), float(dur.to_sec())

    def write(self, q: np.ndarray, dq: np.ndarray, finished: bool = False) -> None:
        """This packet's command; ``finished`` ends the motion."""
        self._call(lambda: self._ctrl.writeOnce(self._command(q, dq, finished)))
        if finished:
            self._ctrl = None

    def _command(self, q: np.ndarray, dq: np.ndarray, finished: bool):
        pf = _franka()
        cmd = pf.JointPositions(q.tolist()) if self._mode == "position" else pf.JointVelocities(dq.tolist())
        cmd.motion_finished = bool(finished)
        return cmd

    def recover(self) -> None:
        """libfranka's automatic error recovery."""
        self._ctrl = None
        self._call(self._robot.automatic_error_recovery)

    # ------------------------------------------------------------------ hand
    def set_gripper(self, width: float) -> None:
        """Ask for a finger opening (m); the hand's process moves it (the newest request wins)."""
        if self._conn is not None:
            try:
                self._conn.send(float(width))
            except OSError:
                self._width = float("nan")

    def _read_hand(self) -> None:
        while True:
            try:
                kind, value = self._conn.recv()
            except (EOFError, OSError):
                return
            self._width = float(value) if kind == "width" else float("nan")

    # ------------------------------------------------------------------ helpers
    def _state(self, s) -> ArmState:
        return ArmState(
            q=np.asarray(s.q, float), dq=np.asarray(s.dq, float), q_d=np.asarray(s.q_d, float),
            O_T_EE=np.asarray(s.O_T_EE, float), time=float(s.time.to_sec()), mode=s.robot_mode.name,
            errors=str(s.current_errors), success_rate=float(s.control_command_success_rate),
            gripper_width=self._width,
        )  # fmt: skip

    def _call(self, fn):
        pf = _franka()
        try:
            return fn()
        except (pf.ControlException, pf.CommandException, pf.NetworkException, pf.RealtimeException,
                pf.InvalidOperationException, pf.FrankaException) as exc:  # fmt: skip
            errors = ""
            if self._robot is not None and not isinstance(exc, pf.NetworkException):
                try:
                    errors = str(self._robot.read_once().last_motion_errors)
                except Exception:  # noqa: BLE001  (the connection may be gone too)
                    errors = ""
            self._ctrl = None
            raise ArmFault(type(exc).__name__, str(exc), errors) from exc


def _hand_process(ip: str, speed: float, conn) -> None:
    """The Franka Hand's own process: moves to each requested width (the newest one when several
    queued up) and answers ("width", m) after each move, ("error", text) when one fails."""
    import pylibfranka as pf

    try:
        hand = pf.Gripper(ip)
        conn.send(("width", float(hand.read_once().width)))
    except Exception as exc:  # noqa: BLE001  (reported to the parent, which raises ArmFault)
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            want = conn.recv()
            while want is not None and conn.poll():
                want = conn.recv()
        except (EOFError, OSError):
            return
        if want is None:
            return
        try:
            hand.move(want, speed)
            conn.send(("width", float(hand.read_once().width)))
        except Exception as exc:  # noqa: BLE001  (a failed hand move is reported, not fatal)
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
