"""The safety layer: the last step before the arm, in the sim twin and in the robot-PC driver.

Nothing reaches an arm without passing a :class:`SafetyFilter`. Pure numpy (no torch, no mujoco)::

    from robolearn.deploy.safety import SafetyFilter, load_safety

    limits = load_safety("deploy/cells/franka-sim.yaml")   # the cell's `safety:` section, checked
    filt = SafetyFilter(limits, period=1 / 20)             # the command (policy) period, s
    filt.reset(q_measured)                                 # arm it at the measured joints (7,) [+ gripper]
    ...
    filt.command(target)            # a fresh policy target (7 joints [+ gripper in [-1, 1]]): filtered,
                                    # returns the safe target it stored (NaN/inf -> the last safe one)
    out = filt.tick(q_measured)     # every control tick (100 Hz twin, 1 kHz driver): what to send now
    filt.state                      # "active" | "hold" | "stopped" | "estop"
    filt.estop("e-stop topic")      # latches; only clear_estop() releases it (then it holds)

What :meth:`SafetyFilter.command` enforces on each target, relative to the last safe one:

- **finite**: a target with NaN or inf is rejected whole; the last safe target stays (``rejected``);
- **joint position**: each joint clamped into ``[q_min, q_max]``; the gripper into ``[-1, 1]``;
- **change per step**: each joint moves at most ``min(max_joint_step, dq_max * period)`` per command
  (the velocity limit over one command period);
- **workspace and Cartesian speed**: the TCP (forward kinematics of ``hardware/franka/<arm>.yaml``,
  robot base frame) stays inside ``[workspace_low, workspace_high]`` and moves at most
  ``cartesian_v_max * period`` m and ``cartesian_omega_max * period`` rad per command; a target that
  breaks either is pulled back along the segment from the last safe target (bisection), so the
  output always satisfies them (when the last safe target did).

:meth:`SafetyFilter.tick` runs the **watchdog**: with no fresh command for ``watchdog_hold_s`` the
output becomes the measured joint positions at that moment (``hold``: a fresh command resumes,
rate-capped from the hold posture); after ``watchdog_stop_s`` it is ``stopped`` (the driver ends the
motion; commands are ignored until :meth:`reset`). The **e-stop** latches the hold posture and
ignores commands until :meth:`clear_estop`, after which the filter holds until a fresh command.

Acceleration and jerk limits (``ddq_max``, ``dddq_max``) are checked against the hardware here but
are enforced by the robot side's 1 kHz interpolator (ruckig in the driver; the sim's servos in the
twin), which turns the safe targets into a smooth stream. A site config that asks for more than the
hardware's own limits (``hardware/franka/fr3.yaml``) is a :class:`~robolearn.config.ConfigError`
naming the field.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robolearn.config import ConfigError, from_dict, load_yaml

__all__ = [
    "HARDWARE_DIR",
    "HardwareLimits",
    "SafetyFilter",
    "SafetyLimits",
    "forward_kinematics",
    "load_hardware",
    "load_safety",
]

HARDWARE_DIR = Path(__file__).resolve().parents[2] / "hardware"
"""``hardware/`` of the source checkout: the arms' own limits (``franka/<name>.yaml``)."""

STATES = ("active", "hold", "stopped", "estop")


@dataclass(frozen=True)
class HardwareLimits:
    """An arm's own limits and kinematics, from ``hardware/franka/<name>.yaml``."""

    name: str
    path: str
    q_min: np.ndarray
    q_max: np.ndarray
    dq_max: np.ndarray
    ddq_max: np.ndarray
    dddq_max: np.ndarray
    cartesian_v_max: float
    cartesian_omega_max: float
    dh: np.ndarray
    """(7, 3) modified-DH rows [a, d, alpha]; theta = q_i."""
    flange_d: float
    tcp_d: float


def load_hardware(name: str = "fr3") -> HardwareLimits:
    """Read ``hardware/franka/<name>.yaml`` (errors name the file and the missing field)."""
    path = HARDWARE_DIR / "franka" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"hardware: no arm description {path}")
    raw = yaml.safe_load(path.read_text())
    try:
        j, c = raw["joints"], raw["cartesian"]
        hw = HardwareLimits(
            name=str(raw["name"]),
            path=str(path),
            q_min=np.asarray(j["q_min"], float),
            q_max=np.asarray(j["q_max"], float),
            dq_max=np.asarray(j["dq_max"], float),
            ddq_max=np.asarray(j["ddq_max"], float),
            dddq_max=np.asarray(j["dddq_max"], float),
            cartesian_v_max=float(c["v_max"]),
            cartesian_omega_max=float(c["omega_max"]),
            dh=np.asarray(raw["dh"], float),
            flange_d=float(raw["flange_d"]),
            tcp_d=float(raw["tcp_d"]),
        )
    except KeyError as exc:
        raise ConfigError(f"{path}: missing field {exc.args[0]!r}") from None
    for name_ in ("q_min", "q_max", "dq_max", "ddq_max", "dddq_max"):
        if getattr(hw, name_).shape != (7,):
            raise ConfigError(f"{path}: joints.{name_} must have 7 entries")
    return hw


def forward_kinematics(hw: HardwareLimits, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TCP position (3,) and rotation (3, 3) in the robot base frame for joints ``q`` (7,)."""
    rot, pos = np.eye(3), np.zeros(3)
    for (a, d, alpha), qi in zip(hw.dh, q, strict=True):
        # Craig's convention: Rx(alpha) Tx(a) Rz(q) Tz(d), i.e. a body offset, then Rx(alpha) Rz(q).
        ca, sa, cq, sq = np.cos(alpha), np.sin(alpha), np.cos(qi), np.sin(qi)
        pos = pos + rot @ np.array([a, -sa * d, ca * d])
        rx = np.array([[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]])
        rz = np.array([[cq, -sq, 0.0], [sq, cq, 0.0], [0.0, 0.0, 1.0]])
        rot = rot @ rx @ rz
    return pos + rot[:, 2] * (hw.flange_d + hw.tcp_d), rot


@dataclass
class SafetyLimits:
    """A robot cell's safety limits (the ``safety:`` section of its site config). A joint limit left
    unset (None) is the hardware's own; a value beyond the hardware's is an error."""

    hardware: str = "fr3"
    """Arm description in ``hardware/franka/<name>.yaml`` the limits are checked against."""
    q_min: tuple[float, ...] | None = None
    """Lower joint position limits (rad, 7)."""
    q_max: tuple[float, ...] | None = None
    """Upper joint position limits (rad, 7)."""
    dq_max: tuple[float, ...] | None = None
    """Joint velocity limits (rad/s, 7)."""
    ddq_max: tuple[float, ...] | None = None
    """Joint acceleration limits (rad/s^2, 7), for the robot side's interpolator."""
    dddq_max: tuple[float, ...] | None = None
    """Joint jerk limits (rad/s^3, 7), for the robot side's interpolator."""
    max_joint_step: float = 0.2
    """Cap on any joint's change per command (rad), whatever the command period."""
    workspace_low: tuple[float, float, float] | None = None
    """TCP box, lower corner (m, robot base frame); None: no box."""
    workspace_high: tuple[float, float, float] | None = None
    """TCP box, upper corner."""
    cartesian_v_max: float | None = None
    """TCP speed limit (m/s); None: the hardware's."""
    cartesian_omega_max: float | None = None
    """TCP angular speed limit (rad/s); None: the hardware's."""
    watchdog_hold_s: float = 0.075
    """No fresh command for this long: hold the measured position."""
    watchdog_stop_s: float = 1.0
    """No fresh command for this long: stop (commands are ignored until the filter is reset)."""
    _source: str = field(default="<safety>", repr=False, compare=False, init=False)

    def resolve(self, hw: HardwareLimits | None = None) -> dict[str, Any]:
        """The limits as arrays, with the hardware's in place of unset ones; a :class:`ConfigError`
        naming the field when one asks for more than the hardware allows."""
        hw = hw or load_hardware(self.hardware)
        src = self._source
        out: dict[str, Any] = {}
        for name in ("q_min", "q_max", "dq_max", "ddq_max", "dddq_max"):
            value = getattr(self, name)
            arr = getattr(hw, name) if value is None else np.asarray(value, float)
            if arr.shape != (7,):
                raise ConfigError(f"{src}: safety.{name}: expected 7 values, found {len(value)}")
            own = getattr(hw, name)
            worse = arr < own - 1e-12 if name == "q_min" else arr > own + 1e-12
            if name != "q_min" and name != "q_max" and (arr <= 0).any():
                raise ConfigError(f"{src}: safety.{name}: expected > 0, found {arr.tolist()}")
            if worse.any():
                i = int(np.argmax(worse))
                raise ConfigError(
                    f"{src}: safety.{name}[{i}] = {arr[i]:g} asks for more than the {hw.name} hardware "
                    f"allows ({own[i]:g}, {hw.path})"
                )
            out[name] = arr
        if (out["q_min"] >= out["q_max"]).any():
            raise ConfigError(f"{src}: safety.q_min must lie below safety.q_max")
        for name, own in (
            ("cartesian_v_max", hw.cartesian_v_max),
            ("cartesian_omega_max", hw.cartesian_omega_max),
        ):
            value = getattr(self, name)
            value = own if value is None else float(value)
            if not 0 < value <= own:
                raise ConfigError(
                    f"{src}: safety.{name} = {value:g} asks for more than the {hw.name} hardware "
                    f"allows ({own:g}, {hw.path})"
                    if value > own
                    else f"{src}: safety.{name}: expected > 0, found {value:g}"
                )
            out[name] = value
        if (self.workspace_low is None) != (self.workspace_high is None):
            raise ConfigError(f"{src}: safety.workspace_low and workspace_high come together")
        if self.workspace_low is not None:
            low, high = np.asarray(self.workspace_low, float), np.asarray(self.workspace_high, float)
            if (low >= high).any():
                raise ConfigError(f"{src}: safety.workspace_low must lie below workspace_high")
            out["workspace"] = (low, high)
        if self.max_joint_step <= 0:
            raise ConfigError(f"{src}: safety.max_joint_step: expected > 0, found {self.max_joint_step}")
        if not 0 < self.watchdog_hold_s <= self.watchdog_stop_s:
            raise ConfigError(f"{src}: safety: expected 0 < watchdog_hold_s <= watchdog_stop_s")
        return out


def load_safety(path: str | Path) -> SafetyLimits:
    """The ``safety:`` section of a site config (the whole file when it has none), checked against
    the hardware it names."""
    raw = load_yaml(path)
    section = raw.get("safety", raw) if isinstance(raw, dict) else raw
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: safety: expected a mapping")
    limits = from_dict(SafetyLimits, section, source=str(path), prefix="safety.")
    limits._source = str(path)
    limits.resolve()
    return limits


class SafetyFilter:
    """Enforces :class:`SafetyLimits` on every command and runs the watchdog and the e-stop latch;
    see the module docstring. ``period``: the nominal command period (s). ``clock``: monotonic s."""

    def __init__(
        self,
        limits: SafetyLimits,
        *,
        period: float,
        hardware: HardwareLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if period <= 0:
            raise ValueError(f"period must be > 0, found {period}")
        self.limits = limits
        self.hardware = hardware or load_hardware(limits.hardware)
        self.lim = limits.resolve(self.hardware)
        self.period = float(period)
        self.clock = clock
        self.step_cap = np.minimum(self.lim["dq_max"] * self.period, limits.max_joint_step)
        self.state = "stopped"
        """``active`` | ``hold`` | ``stopped`` | ``estop``; ``stopped`` until :meth:`reset`."""
        self.estop_reason = ""
        self.counts = {"commands": 0, "rejected": 0, "clamped": 0, "pulled_back": 0, "ignored": 0}
        self._safe: np.ndarray | None = None
        self._hold: np.ndarray | None = None
        self._last_fresh = 0.0

    @property
    def last_fresh(self) -> float:
        """When the last fresh command (or the reset) came, on the filter's clock."""
        return self._last_fresh

    # ------------------------------------------------------------------ lifecycle
    def reset(self, measured: np.ndarray) -> None:
        """Arm the filter at the measured joints (7,), or joints + gripper (8,): it outputs them
        until a fresh command. Clears the watchdog's stop, not an e-stop."""
        q = np.asarray(measured, float).copy()
        if q.shape not in ((7,), (8,)) or not np.isfinite(q).all():
            raise ValueError(f"SafetyFilter.reset: expected 7 or 8 finite values, found {q.tolist()}")
        self._safe, self._hold = q, None
        self._last_fresh = self.clock()
        if self.state != "estop":
            self.state = "active"

    def estop(self, reason: str = "e-stop", measured: np.ndarray | None = None) -> None:
        """Latch the e-stop: hold ``measured`` (or the last safe target) until :meth:`clear_estop`."""
        self.estop_reason = reason
        if self.state != "estop":
            self._hold = self._freeze(measured)
        self.state = "estop"

    def clear_estop(self) -> None:
        """Release the e-stop: the filter holds until the next fresh command, and the watchdog counts
        from now (a hold that gets no command within ``watchdog_stop_s`` stops, as after any command)."""
        if self.state == "estop":
            self.state = "hold" if self._safe is not None else "stopped"
            self.estop_reason = ""
            self._last_fresh = self.clock()

    # ------------------------------------------------------------------ commands
    def command(self, target: np.ndarray, now: float | None = None) -> np.ndarray | None:
        """Filter a fresh target (shape of :meth:`reset`'s). Returns the safe target now stored, or
        None when the filter ignores commands (e-stop, stopped, never reset)."""
        self.counts["commands"] += 1
        if self._safe is None or self.state in ("estop", "stopped"):
            self.counts["ignored"] += 1
            return None
        now = self.clock() if now is None else now
        self._last_fresh = now
        base = self._hold if self.state == "hold" and self._hold is not None else self._safe
        self.state = "active"
        self._hold = None
        arr = np.asarray(target, dtype=float).reshape(-1)
        if arr.shape != base.shape or not np.isfinite(arr).all():
            self.counts["rejected"] += 1
            self._safe = base.copy()
            return self._safe.copy()
        safe = self._clamp(arr, base)
        if not np.array_equal(safe, arr):
            self.counts["clamped"] += 1
        self._safe = self._cartesian(safe, base)
        return self._safe.copy()

    def _clamp(self, arr: np.ndarray, base: np.ndarray) -> np.ndarray:
        q = np.clip(arr[:7], self.lim["q_min"], self.lim["q_max"])
        q = base[:7] + np.clip(q - base[:7], -self.step_cap, self.step_cap)
        # The step is taken from an in-range base, so it stays in range; clip once more for rounding.
        q = np.clip(q, self.lim["q_min"], self.lim["q_max"])
        if arr.shape[0] == 8:
            return np.concatenate([q, [min(max(arr[7], -1.0), 1.0)]])
        return q

    def _cartesian(self, safe: np.ndarray, base: np.ndarray) -> np.ndarray:
        p0, r0 = forward_kinematics(self.hardware, base[:7])
        viol0 = self._box_violation(p0)
        if self._cartesian_ok(safe[:7], p0, r0, viol0):
            return safe
        self.counts["pulled_back"] += 1
        lo, hi = 0.0, 1.0
        for _ in range(14):
            mid = 0.5 * (lo + hi)
            if self._cartesian_ok(base[:7] + mid * (safe[:7] - base[:7]), p0, r0, viol0):
                lo = mid
            else:
                hi = mid
        out = safe.copy()
        out[:7] = base[:7] + lo * (safe[:7] - base[:7])
        return out

    def _cartesian_ok(self, q: np.ndarray, p0: np.ndarray, r0: np.ndarray, viol0: float) -> bool:
        p, r = forward_kinematics(self.hardware, q)
        if self._box_violation(p) > viol0 + 1e-9:
            return False
        if np.linalg.norm(p - p0) > self.lim["cartesian_v_max"] * self.period:
            return False
        cos = (np.trace(r0.T @ r) - 1.0) / 2.0
        return float(np.arccos(min(max(cos, -1.0), 1.0))) <= self.lim["cartesian_omega_max"] * self.period

    def _box_violation(self, p: np.ndarray) -> float:
        box = self.lim.get("workspace")
        if box is None:
            return 0.0
        low, high = box
        return float(np.linalg.norm(np.maximum(low - p, 0.0) + np.maximum(p - high, 0.0)))

    # ------------------------------------------------------------------ ticks
    def tick(self, measured: np.ndarray | None = None, now: float | None = None) -> np.ndarray | None:
        """The target to send to the arm this control tick (None before :meth:`reset`). Runs the
        watchdog: ``measured`` (the joints now) becomes the hold posture when it fires."""
        if self._safe is None:
            return None
        now = self.clock() if now is None else now
        since = now - self._last_fresh
        if self.state == "active" and since > self.limits.watchdog_hold_s:
            self.state, self._hold = "hold", self._freeze(measured)
        if self.state == "hold" and since > self.limits.watchdog_stop_s:
            self.state = "stopped"
        if self.state == "active":
            return self._safe.copy()
        return (self._hold if self._hold is not None else self._safe).copy()

    def _freeze(self, measured: np.ndarray | None) -> np.ndarray:
        ref = self._safe if self._safe is not None else None
        if measured is None:
            return ref.copy() if ref is not None else np.zeros(7)
        m = np.asarray(measured, float).reshape(-1)
        if ref is None:
            return m.copy()
        hold = ref.copy()
        n = min(7, m.shape[0])
        if np.isfinite(m[:n]).all():
            hold[:n] = np.clip(m[:n], self.lim["q_min"][:n], self.lim["q_max"][:n])
        return hold

    # ------------------------------------------------------------------ checks
    def violations(self, target: np.ndarray, previous: np.ndarray, tol: float = 1e-6) -> list[str]:
        """Which limits ``target`` breaks as the successor of ``previous`` (both as :meth:`command`
        returns them): an empty list when it is safe. For tests and benchmarks."""
        t, p = np.asarray(target, float), np.asarray(previous, float)
        out = []
        if not np.isfinite(t).all():
            return ["non-finite"]
        if (t[:7] < self.lim["q_min"] - tol).any() or (t[:7] > self.lim["q_max"] + tol).any():
            out.append("joint position")
        if (np.abs(t[:7] - p[:7]) > self.step_cap + tol).any():
            out.append("joint step")
        if t.shape[0] == 8 and abs(t[7]) > 1 + tol:
            out.append("gripper")
        pt, rt = forward_kinematics(self.hardware, t[:7])
        pp, rp = forward_kinematics(self.hardware, p[:7])
        if self._box_violation(pt) > self._box_violation(pp) + 1e-6:
            out.append("workspace")
        if np.linalg.norm(pt - pp) > self.lim["cartesian_v_max"] * self.period + tol:
            out.append("cartesian speed")
        cos = min(max((np.trace(rp.T @ rt) - 1.0) / 2.0, -1.0), 1.0)
        if float(np.arccos(cos)) > self.lim["cartesian_omega_max"] * self.period + 1e-4:
            out.append("cartesian angular speed")
        return out
