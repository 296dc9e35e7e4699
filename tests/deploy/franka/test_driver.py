"""The driver core on an ideal in-memory arm: faults, recovery only on request, e-stop, watchdog."""

from __future__ import annotations

import time

import numpy as np
import pytest

from robolearn.deploy.cell import load_cell
from robolearn.deploy.franka.driver import FrankaDriver

pytest.importorskip("ruckig")


def _drive(drv, q0, n, step=0.01):
    for k in range(n):
        drv.command(np.append(q0 + step * (k + 1), -1.0))
        time.sleep(0.01)


def test_a_reflex_is_reported_and_nothing_moves_until_recover(ideal_arm):
    arm = ideal_arm(fault_at=150)
    faults = []
    drv = FrankaDriver(arm, load_cell().safety, policy_hz=20.0, on_fault=faults.append)
    with drv:
        q0 = drv.observe().q.copy()
        _drive(drv, q0, 10)
        assert drv.wait_idle(timeout=30.0)
        assert drv.state == "fault" and "reflex" in drv.status()["fault"] and len(faults) == 1
        sent = len(arm.sent)
        # Commands while faulted are ignored: no motion starts, nothing is sent.
        assert drv.command(np.append(q0, -1.0)) is None
        time.sleep(0.1)
        assert len(arm.sent) == sent and drv.state == "fault" and arm.recovered == 0
        drv.recover()  # the explicit request
        assert arm.recovered == 1 and drv.state == "idle" and drv.status()["fault"] is None
        time.sleep(0.1)
        assert len(arm.sent) == sent  # recovery alone moves nothing
        q1 = drv.observe().q.copy()
        _drive(drv, q1, 5)  # a fresh command starts a new motion from where the arm is
        assert drv.state == "running" and drv.stats.motions == 2
    assert arm.finished >= 1 and not arm.connected


def test_estop_latches_until_cleared(ideal_arm):
    arm = ideal_arm()
    drv = FrankaDriver(arm, load_cell().safety, policy_hz=20.0)
    with drv:
        q0 = drv.observe().q.copy()
        _drive(drv, q0, 5)
        drv.estop("operator")
        assert drv.state == "estop" and drv.pipeline.state == "estop" and arm.finished == 1
        stopped_at = arm.q.copy()
        assert drv.command(np.append(q0 + 0.3, -1.0)) is None
        time.sleep(0.1)
        assert np.array_equal(arm.q, stopped_at)
        drv.clear_estop()
        assert drv.state == "idle"
        _drive(drv, arm.q.copy(), 3)
        assert drv.state == "running"


def test_watchdog_brakes_and_ends_the_motion(ideal_arm):
    arm = ideal_arm()
    drv = FrankaDriver(arm, load_cell().safety, policy_hz=20.0)
    with drv:
        q0 = drv.observe().q.copy()
        _drive(drv, q0, 20)
        # No more commands: hold after watchdog_hold_s, stop after watchdog_stop_s (robot time).
        assert drv.wait_idle(timeout=60.0)
        status = drv.status()
        assert drv.state == "idle" and status["safety"] == "stopped" and status["fault"] is None
        assert arm.finished == 1 and status["success_rate"] == 1.0
        # The hold took effect within 2 policy periods of the last command, on the robot's clock.
        fresh, held = drv.pipeline.hold_events[-1]
        assert 0 < held - fresh <= 2 * drv.pipeline.filter.period
        sent = np.asarray(arm.sent)
        v = np.diff(sent, axis=0) / 1e-3
        assert (np.abs(v) <= drv.pipeline.limits.dq_max + 1e-6).all()
        assert np.abs(np.diff(sent[-20:], axis=0)).max() < 1e-9  # at rest when it ended
