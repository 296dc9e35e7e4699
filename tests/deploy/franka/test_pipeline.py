"""The driver's interpolation + safety pipeline on its own: 1 kHz output within the limits, always.

The fuzz test feeds 10,000 policy outputs drawn by hypothesis (NaN, inf, huge and ordinary values,
7 or 8 wide) to :class:`MotionPipeline` at 20 Hz and checks every 1 kHz sample it emits: joint
positions within the cell's range, and the finite-difference velocity, acceleration and jerk within
the cell's limits. No arm and no franky-sim are involved.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robolearn.deploy.cell import load_cell
from robolearn.deploy.franka.pipeline import MotionPipeline

pytest.importorskip("ruckig")

HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
TICKS_PER_COMMAND = 50  # 20 Hz targets into the 1 kHz stream
DT = 1e-3


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _pipeline(clock) -> MotionPipeline:
    pipe = MotionPipeline(load_cell().safety, policy_hz=20.0, clock=clock)
    pipe.reset(HOME)
    return pipe


def _check_stream(pipe: MotionPipeline, qs: np.ndarray) -> None:
    lim, tol = pipe.limits, 1e-6
    assert np.isfinite(qs).all()
    assert (qs >= lim.q_min - 1e-9).all() and (qs <= lim.q_max + 1e-9).all(), "joint position"
    v = np.diff(qs, axis=0) / DT
    a = np.diff(v, axis=0) / DT
    j = np.diff(a, axis=0) / DT
    assert (np.abs(v) <= lim.dq_max * (1 + tol)).all(), f"velocity {np.abs(v).max(0) / lim.dq_max}"
    assert (np.abs(a) <= lim.ddq_max * (1 + tol) + 1e-6).all(), (
        f"acceleration {np.abs(a).max(0) / lim.ddq_max}"
    )
    assert (np.abs(j) <= lim.dddq_max * (1 + tol) + 1e-3).all(), f"jerk {np.abs(j).max(0) / lim.dddq_max}"


ordinary = st.floats(-3.5, 3.5, allow_nan=False)
wild = st.one_of(ordinary, st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")),
                 st.floats(-1e12, 1e12), st.floats(allow_nan=True, allow_infinity=True))  # fmt: skip
targets = st.lists(st.lists(wild, min_size=7, max_size=8), min_size=20, max_size=20)
STATE: dict = {}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(targets)
def _fuzz_case(batch):
    # One pipeline and clock across examples, all outputs into one
    # continuous stream (500 examples x 20 = 10,000 outputs), so a bad target can never hide behind a fresh reset.
    pipe, clock, stream = STATE["pipe"], STATE["clock"], STATE["stream"]
    for target in batch:
        pipe.command(np.array(target))
        STATE["n"] += 1
        for _ in range(TICKS_PER_COMMAND):
            clock.t += DT
            q, _ = pipe.tick(stream[-1])
            stream.append(q)


def test_fuzzed_policy_outputs_never_leave_the_limits():
    clock = FakeClock()
    pipe = _pipeline(clock)
    STATE.update(pipe=pipe, clock=clock, stream=[HOME.copy()], n=0)
    _fuzz_case()
    assert STATE["n"] >= 10_000
    qs = np.asarray(STATE["stream"])
    _check_stream(pipe, qs)
    counts = pipe.filter.counts
    assert counts["rejected"] > 0 and counts["clamped"] > 0  # the filter saw NaN/inf and huge values
    assert np.ptp(qs, axis=0).max() > 0.5  # and the arm really moved


def test_targets_are_reached_smoothly_and_held():
    clock = FakeClock()
    pipe = _pipeline(clock)
    goal = HOME + np.array([0.3, -0.2, 0.25, 0.3, -0.4, 0.3, 0.5])
    stream = [HOME.copy()]
    for k in range(40):  # 2 s of 20 Hz targets walking to the goal, then nothing
        safe = pipe.command(HOME + (goal - HOME) * min(1.0, (k + 1) / 20))
        for _ in range(TICKS_PER_COMMAND):
            clock.t += DT
            stream.append(pipe.tick(stream[-1])[0])
    qs = np.asarray(stream)
    _check_stream(pipe, qs)
    # The stream ends at rest on the filter's last safe target (the cell's workspace box and TCP speed
    # may have pulled the goal back), which moved well away from home.
    assert np.abs(qs[-1] - safe[:7]).max() < 1e-6 and pipe.at_rest
    assert np.abs(qs[-1] - HOME).max() > 0.2
    # The watchdog: no command for 1 s -> the filter stops; the stream stays at rest where it was.
    for _ in range(1200):
        clock.t += DT
        stream.append(pipe.tick(stream[-1])[0])
    assert pipe.state == "stopped" and np.abs(np.asarray(stream[-1]) - safe[:7]).max() < 1e-6


def test_a_target_beyond_the_joint_range_is_approached_without_overshoot():
    clock = FakeClock()
    pipe = _pipeline(clock)
    stream = [HOME.copy()]
    far = HOME.copy()
    far[6] = 50.0  # the wrist (it leaves the TCP box alone): clamped to q_max, braked before, never past
    for _ in range(80):
        pipe.command(far)
        for _ in range(TICKS_PER_COMMAND):
            clock.t += DT
            stream.append(pipe.tick(stream[-1])[0])
    qs = np.asarray(stream)
    _check_stream(pipe, qs)
    assert qs[:, 6].max() <= pipe.limits.q_max[6] and qs[-1, 6] > pipe.limits.q_max[6] - 0.02
