"""The safety layer: limits from the cell config checked against the hardware, clamping, NaN/inf
rejection, workspace, watchdog and the e-stop latch (pure numpy; no sim needed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robolearn.config import ConfigError
from robolearn.deploy.cell import DEFAULT_CELL, load_cell
from robolearn.deploy.safety import SafetyFilter, SafetyLimits, forward_kinematics, load_hardware, load_safety

READY = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 1.95, 0.785, -1.0])


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make_filter(**kw) -> tuple[SafetyFilter, FakeClock]:
    clock = FakeClock()
    filt = SafetyFilter(load_cell().safety if not kw else SafetyLimits(**kw), period=0.05, clock=clock)
    filt.reset(READY)
    return filt, clock


def test_shipped_cell_loads_and_inherits_hardware_limits():
    cell = load_cell(DEFAULT_CELL)
    lim = cell.safety.resolve()
    hw = load_hardware("fr3")
    np.testing.assert_allclose(lim["dq_max"], [2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26])
    np.testing.assert_allclose(lim["q_max"], hw.q_max)
    assert lim["cartesian_v_max"] == 1.5


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("dq_max: [2.62, 2.62, 2.62, 3.0, 5.26, 4.18, 5.26]", "safety.dq_max[3]"),
        ("q_min: [-2.8, -1.7, -2.9, -3.0, -2.8, 0.6, -3.0]", "safety.q_min[0]"),
        ("cartesian_v_max: 3.5", "safety.cartesian_v_max"),
        ("ddq_max: [10, 10, 10, 10, 10, 10, 11]", "safety.ddq_max[6]"),
    ],
)
def test_config_beyond_hardware_is_an_error_naming_the_field(tmp_path, section, field):
    path = tmp_path / "cell.yaml"
    path.write_text(f"safety:\n  {section}\n")
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")) as err:
        load_safety(path)
    assert str(path) in str(err.value) and "fr3" in str(err.value)


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text("safety:\n  max_speed: 1\n")
    with pytest.raises(ConfigError, match="max_speed"):
        load_safety(path)


def test_fk_matches_the_embedded_sim():
    from robolearn.envs import make_env

    env = make_env("franka-lift")
    obs, _ = env.reset(seed=3)
    p, _ = forward_kinematics(load_hardware(), obs["observation.state"][:7].astype(float))
    np.testing.assert_allclose(p, obs["observation.state"][15:18], atol=1e-4)
    env.close()


def test_nan_is_rejected_and_the_last_safe_target_held():
    filt, _ = make_filter()
    good = filt.command(READY + 0.01)
    bad = READY.copy()
    bad[2] = np.nan
    assert np.array_equal(filt.command(bad), good)
    assert np.array_equal(filt.command(np.full(8, np.inf)), good)
    assert filt.counts["rejected"] == 2


def test_huge_targets_are_clamped_to_position_step_and_gripper_limits():
    filt, _ = make_filter()
    prev = READY.copy()
    for _ in range(40):
        out = filt.command(np.full(8, 1e9))
        assert filt.violations(out, prev) == []
        assert (np.abs(out[:7] - prev[:7]) <= filt.step_cap + 1e-12).all()
        prev = out
    assert out[7] == 1.0
    assert (out[:7] <= filt.lim["q_max"] + 1e-12).all()


def test_workspace_pulls_a_target_back_inside_the_box():
    filt, _ = make_filter(workspace_low=(0.3, -0.3, 0.1), workspace_high=(0.7, 0.3, 0.6))
    hw = filt.hardware
    q = READY.copy()
    for _ in range(60):  # drive joint 2 forward: the TCP dives toward the table
        q = filt.command(q + np.array([0, 0.2, 0, 0, 0, 0, 0, 0]))
        p, _ = forward_kinematics(hw, q[:7])
        assert 0.1 - 1e-6 <= p[2] and (p >= np.array([0.3, -0.3, 0.1]) - 1e-6).all()
    assert filt.counts["pulled_back"] > 0


def test_watchdog_holds_then_stops_and_needs_a_reset():
    filt, clock = make_filter()
    target = filt.command(READY + 0.05)
    clock.t += 0.05
    assert np.array_equal(filt.tick(READY + 0.02), target) and filt.state == "active"
    clock.t += 0.05  # 0.1 s since the command > watchdog_hold_s (0.075)
    held = filt.tick(READY + 0.03)
    assert filt.state == "hold"
    np.testing.assert_allclose(held[:7], (READY + 0.03)[:7])
    clock.t += 0.02
    resumed = filt.command(READY + 1.0)  # a fresh command resumes, capped from the hold posture
    assert filt.state == "active"
    assert (np.abs(resumed[:7] - held[:7]) <= filt.step_cap + 1e-12).all()
    clock.t += 2.0
    filt.tick(READY)
    assert filt.state == "stopped"
    assert filt.command(READY + 0.1) is None
    filt.reset(READY)
    assert filt.state == "active" and filt.command(READY + 0.01) is not None


def test_estop_latches_until_cleared():
    filt, clock = make_filter()
    filt.command(READY + 0.05)
    filt.estop("test", measured=READY + 0.04)
    for _ in range(3):
        clock.t += 0.01
        assert filt.command(READY + 0.5) is None
        np.testing.assert_allclose(filt.tick(READY)[:7], (READY + 0.04)[:7])
    filt.reset(READY)  # a reset does not clear an e-stop
    assert filt.state == "estop"
    filt.clear_estop()
    assert filt.state == "hold"
    assert filt.command(READY + 0.01) is not None and filt.state == "active"


def test_clearing_a_long_estop_holds_then_the_watchdog_counts_from_the_clear():
    filt, clock = make_filter()
    filt.command(READY + 0.05)
    filt.estop("test", measured=READY + 0.04)
    clock.t += 10 * filt.limits.watchdog_stop_s  # latched far longer than the watchdog's stop
    filt.tick(READY)
    filt.clear_estop()
    filt.tick(READY)
    assert filt.state == "hold"  # not stopped at once: the stop counts from the clear
    assert filt.command(READY + 0.01) is not None and filt.state == "active"
    filt.estop("again", measured=READY)
    filt.clear_estop()
    clock.t += filt.limits.watchdog_stop_s + 0.01  # no command after this clear
    filt.tick(READY)
    assert filt.state == "stopped" and filt.command(READY + 0.01) is None


finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e300, 0.0]),
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.lists(st.lists(finite_or_not, min_size=8, max_size=8), min_size=1, max_size=5))
def test_fuzzed_targets_never_leave_the_limits(targets):
    filt, clock = make_filter()
    prev = READY.copy()
    for t in targets:
        clock.t += 0.05
        out = filt.command(np.array(t))
        assert filt.violations(out, prev) == []
        prev = out
