"""The action-chunk queue: half-empty refill, inference-delay drop, and the three merges, exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robolearn.deploy.chunks import ChunkQueue


def _chunk(base: float, n: int = 6) -> np.ndarray:
    """(n, 2): row i is [base + i, -(base + i)], so every value names its chunk and step."""
    col = base + np.arange(n, dtype=np.float32)
    return np.stack([col, -col], axis=1)


def _run_two_chunks(merge: str, **kw) -> tuple[ChunkQueue, list]:
    """Chunk A (0..5) for step 0 arrives at once; at the refill a request for step 2 is answered by
    chunk B (100..105) two steps later. Returns the queue and the first action column from step 0 to 7."""
    q = ChunkQueue(n_action_steps=2, merge=merge, **kw)
    assert q.needs_refill()
    req = q.request()
    assert (req.obs_step, req.inference_delay, req.prev_actions.shape) == (0, 0, (0, 0))
    assert not q.needs_refill()  # one request in flight at a time
    assert q.receive(_chunk(0.0)) == 0
    out = [q.pop(), q.pop()]
    assert q.needs_refill()  # the 2 steps the policy executes per chunk (fewer than half of 6) ran
    req = q.request()
    assert req.obs_step == 2
    if merge != "ensemble":
        np.testing.assert_array_equal(req.prev_actions, _chunk(0.0)[2:])
    out += [q.pop(), q.pop()]  # executed while the request is in flight
    assert q.receive(_chunk(100.0)) == 2
    assert q.inference_delay == 2
    out += [q.pop() for _ in range(4)]
    return q, [None if a is None else float(a[0]) for a in out]


def test_refill_when_half_empty_not_before():
    q = ChunkQueue(n_action_steps=12)
    q.request()
    q.receive(_chunk(0.0, 15))
    for _ in range(7):
        q.pop()
        assert not q.needs_refill()
    q.pop()  # 8 = ceil(15 / 2) steps have run
    assert q.needs_refill() and q.remaining == 7
    assert q.refill_after == 8


def test_refill_no_later_than_the_policys_execution_horizon():
    q = ChunkQueue(n_action_steps=3)
    q.request()
    q.receive(_chunk(0.0, 16))
    for _ in range(3):
        assert not q.needs_refill()
        q.pop()
    assert q.needs_refill() and q.refill_after == 3


def test_latest_drops_the_delay_and_replaces_the_plan():
    q, got = _run_two_chunks("latest")
    # steps 0-3 from A; B answered the obs of step 2 at step 4: B[0], B[1] are past, B[2:] takes over.
    assert got == [0.0, 1.0, 2.0, 3.0, 102.0, 103.0, 104.0, 105.0]
    assert q.pop() is None and q.t == 9  # nothing left: hold, and time still passes


def test_weighted_blends_the_overlap_linearly():
    _, got = _run_two_chunks("weighted")
    # overlap at steps 4, 5: old A4, A5 vs new B2, B3 with w = 1/3, 2/3.
    assert got[:4] == [0.0, 1.0, 2.0, 3.0]
    assert got[4] == pytest.approx(2 / 3 * 4 + 1 / 3 * 102, abs=1e-4)
    assert got[5] == pytest.approx(1 / 3 * 5 + 2 / 3 * 103, abs=1e-4)
    assert got[6:] == [104.0, 105.0]


def test_ensemble_weights_the_oldest_most():
    q, got = _run_two_chunks("ensemble", ensemble_m=math.log(2.0))  # weights 1, 1/2
    assert got[:4] == [0.0, 1.0, 2.0, 3.0]
    assert got[4] == pytest.approx((4 + 0.5 * 102) / 1.5, abs=1e-4)
    assert got[5] == pytest.approx((5 + 0.5 * 103) / 1.5, abs=1e-4)
    assert got[6:] == [104.0, 105.0]
    assert q.remaining == 0


def test_ensemble_leftover_is_the_voted_plan():
    q = ChunkQueue(n_action_steps=4, merge="ensemble", ensemble_m=math.log(2.0))
    q.request()
    q.receive(_chunk(0.0))
    q.pop()
    q.request()
    q.receive(_chunk(10.0))  # obs step 1, no delay: covers steps 1..6
    left = q.leftover(q.t)
    assert left[:, 0].tolist() == pytest.approx([(1 + 5) / 1.5, (2 + 5.5) / 1.5, (3 + 6) / 1.5,
                                                 (4 + 6.5) / 1.5, (5 + 7) / 1.5, 15.0])  # fmt: skip
    np.testing.assert_allclose(left[:, 1], -left[:, 0], rtol=1e-6)


def test_a_chunk_older_than_its_length_is_dropped_whole():
    q = ChunkQueue(n_action_steps=4)
    q.request()
    q.receive(_chunk(0.0))
    for _ in range(3):
        q.pop()
    q.request()  # obs at step 3; the plan has 3 actions left
    for _ in range(9):
        q.pop()  # 3 planned actions run, then 6 holds
    assert q.receive(_chunk(10.0)) == 9
    # The 3 steps the old plan executed are dropped; the 6 held steps left the state where the chunk
    # found it, so it goes on from its 4th row.
    assert q.pop()[0] == 13.0
    q2 = ChunkQueue(n_action_steps=4)
    q2.request()
    q2.receive(_chunk(0.0))
    q2.request()
    for _ in range(8):
        q2.pop()  # its 6 planned actions run (then 2 holds) while the reply is under way
    assert q2.receive(_chunk(10.0)) == 8  # every action of it is in the past
    assert q2.pop() is None and q2.pending is None


def test_nothing_executed_while_waiting_drops_nothing():
    """The first chunk of an episode: the robot held still during the wait, so the chunk starts at its
    first row whatever the delay (dropping the delay there skipped the start of the motion)."""
    q = ChunkQueue(n_action_steps=4)
    q.request()
    for _ in range(5):
        assert q.pop() is None
    assert q.receive(_chunk(0.0)) == 5
    assert [q.pop()[0] for _ in range(3)] == [0.0, 1.0, 2.0]


def test_delay_estimate_is_the_max_of_recent_replies():
    q = ChunkQueue(n_action_steps=2, delay_window=2)
    for delay in (3, 1, 0):
        q.request()
        for _ in range(delay):
            q.pop()
        q.receive(_chunk(0.0, 8))
    assert q.measured_delays == [1, 0]
    assert q.inference_delay == 1
    assert q.request().inference_delay == 1


def test_clear_forgets_plan_and_request():
    q = ChunkQueue(n_action_steps=4)
    q.request()
    q.receive(_chunk(0.0))
    q.pop()
    q.request()
    q.clear()
    assert (q.t, q.remaining, q.pending) == (0, 0, None)
    assert q.pop() is None and q.needs_refill()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="merge must be one of"):
        ChunkQueue(4, merge="mean")
    with pytest.raises(ValueError, match="n_action_steps"):
        ChunkQueue(0)
    q = ChunkQueue(4)
    with pytest.raises(ValueError, match=r"\(L, Da\)"):
        q.receive(np.zeros(3), obs_step=0)
    with pytest.raises(ValueError, match="future"):
        q.receive(np.zeros((3, 2)), obs_step=5)
