"""The fixed-rate loop's accounting on a fake clock: absolute deadlines, skips, jitter statistics."""

from __future__ import annotations

import numpy as np
import pytest

from robolearn.deploy.loop import RateLoop, jitter_stats


class FakeClock:
    """Monotonic time that moves 1 us per reading (so spinning ends) and by what ``sleep`` is asked
    plus a scripted oversleep."""

    def __init__(self, oversleep: list[float] | None = None):
        self.now = 100.0
        self.oversleep = list(oversleep or [])
        self.sleeps: list[float] = []

    def clock(self) -> float:
        self.now += 1e-6
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s + (self.oversleep.pop(0) if self.oversleep else 0.0)


def test_jitter_stats_exact():
    due = [0.0, 0.01, 0.02, 0.03, 0.04]
    wake = [0.0005, 0.0101, 0.0230, 0.0300, 0.0400]
    s = jitter_stats(wake, due, hz=100.0, missed=2)
    late = np.array([0.5, 0.1, 3.0, 0.0, 0.0])
    period = np.array([0.4, 2.9, 3.0, 0.0])
    assert (s.ticks, s.missed, s.hz) == (5, 2, 100.0)
    assert s.late_p50_ms == pytest.approx(np.percentile(late, 50))
    assert s.late_p99_ms == pytest.approx(np.percentile(late, 99))
    assert s.late_max_ms == pytest.approx(3.0)
    assert s.period_p50_ms == pytest.approx(np.percentile(period, 50))
    assert s.period_p99_ms == pytest.approx(np.percentile(period, 99))
    assert s.period_max_ms == pytest.approx(3.0)
    assert set(s.to_json()) >= {"period_p99_ms", "late_max_ms", "missed"}


def test_jitter_stats_edge_cases():
    assert jitter_stats([], [], 10.0).ticks == 0
    with pytest.raises(ValueError, match="differ in length"):
        jitter_stats([0.0], [0.0, 1.0], 10.0)


def test_deadlines_are_absolute_and_the_sleep_stops_short_to_spin():
    fake = FakeClock(oversleep=[0.0, 0.003, 0.0, 0.0])
    loop = RateLoop(100.0, spin_s=0.001, clock=fake.clock, sleep=fake.sleep)
    loop.start(at=fake.now + 0.01)
    wakes = [loop.wait() for _ in range(4)]
    due = [loop.deadline(k) for k in range(4)]
    late = [w - d for w, d in zip(wakes, due, strict=True)]
    assert all(x >= 0 for x in late)
    # The 3 ms oversleep of tick 1 lands it 2 ms late (1 ms spin budget); tick 2 is back on the grid.
    assert late[1] == pytest.approx(0.002, abs=1e-5)
    assert late[0] < 1e-5 and late[2] < 1e-5 and late[3] < 1e-5
    # Each sleep ends spin_s early: after the on-time tick 0 it is 10 ms - 1 ms.
    assert fake.sleeps[0] == pytest.approx(0.009, abs=1e-5)
    s = loop.stats()
    assert s.ticks == 4 and s.missed == 0
    assert s.late_max_ms == pytest.approx(2.0, abs=0.01)
    assert s.period_max_ms == pytest.approx(2.0, abs=0.01)


def test_an_overrun_skips_deadlines_without_drift():
    fake = FakeClock()
    loop = RateLoop(10.0, clock=fake.clock, sleep=fake.sleep)
    loop.start(at=fake.now)
    ran: list[int] = []

    def body(k: int) -> bool:
        ran.append(k)
        if k == 1:
            fake.now += 0.25  # tick 1's work ends at 100.35 s: past deadline 2 (100.2) and 3 (100.3)
        return k >= 4

    stats = loop.run(body)
    # Deadline 2 is skipped; deadline 3 runs at once, 50 ms late; deadline 4 is on time again.
    assert ran == [0, 1, 3, 4]
    assert stats.missed == 1 and stats.ticks == 4
    assert stats.late_max_ms == pytest.approx(50.0, abs=0.01)
    assert loop.deadline(5) == pytest.approx(100.0 + 0.5)  # the grid never moved


def test_run_stops_after_ticks():
    fake = FakeClock()
    loop = RateLoop(50.0, clock=fake.clock, sleep=fake.sleep)
    seen: list[int] = []
    loop.run(seen.append, ticks=5)
    assert seen == [0, 1, 2, 3, 4]


def test_bad_rate():
    with pytest.raises(ValueError, match="rate must be > 0"):
        RateLoop(0.0)


def test_realtime_priority_is_restored():
    import os
    import threading

    from robolearn.deploy.loop import realtime_priority

    with realtime_priority(None) as granted:
        assert granted is False
    if not hasattr(os, "sched_getscheduler"):
        pytest.skip("no POSIX scheduling on this platform")
    release = threading.Event()
    helper = threading.Thread(target=release.wait, daemon=True)
    helper.start()
    before = os.sched_getscheduler(0)
    try:
        with realtime_priority(10) as granted:
            # Granted or not (that depends on the account's rights), the threads run on either way.
            fifo = os.SCHED_FIFO if granted else before
            assert os.sched_getscheduler(0) == fifo
            assert os.sched_getscheduler(helper.native_id) == fifo  # the GIL holder must not be preempted
            if granted:
                assert os.sched_getparam(helper.native_id).sched_priority == 9
            late = threading.Thread(target=release.wait, daemon=True)
            late.start()  # inherits the real-time policy ...
        assert os.sched_getscheduler(0) == before
        assert os.sched_getscheduler(helper.native_id) == before
        assert os.sched_getscheduler(late.native_id) == os.SCHED_OTHER  # ... and loses it after
    finally:
        release.set()
