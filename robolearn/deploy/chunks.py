"""The robot-side action-chunk queue: asynchronous refills, inference-delay accounting, chunk merging.

Time is counted in control steps ``t`` (one :meth:`ChunkQueue.pop` per tick). A chunk is an array
(L, Da) whose row 0 is the action for the step at which its observation was taken (``obs_step``).

- **Refill.** The queue asks for the next chunk when the current one is half empty: ``ceil(L / 2)``
  steps after its observation (L its length as sent), or sooner where the policy was trained to
  execute fewer actions per chunk (``n_action_steps``), and at once when nothing is left to execute.
  The current chunk keeps executing meanwhile; at most one request is in flight. With a reply that
  takes one step this replans at the cadence ``robolearn eval`` executes chunks at, and the unused
  half is a reserve that covers a slow reply.
- **Delay.** The steps executed while the request was in flight, ``d = t_arrival - obs_step``, are
  dropped from the new chunk's head: those moments are already past. The measured ``d`` of recent
  replies gives :attr:`ChunkQueue.inference_delay`, sent with the next request (RTC freezes that many
  actions); :meth:`ChunkQueue.leftover` is what will execute from a step on if nothing changes.
- **Merge** of the new chunk N with the old plan O over the steps both cover:

  - ``latest``: N replaces O;
  - ``weighted``: over the k overlapping steps, ``a_i = (1 - w_i) O_i + w_i N_i`` with
    ``w_i = (i + 1) / (k + 1)``, i = 0 for the first overlapping step: the plan slides from the old
    chunk to the new one instead of jumping; after the overlap, N;
  - ``ensemble``: ACT's temporal ensembling: every stored chunk that covers step t votes, with weight
    ``exp(-m j)``, j = 0 for the oldest, as ``robolearn eval --temporal-ensemble m`` does.

Only numpy is imported here.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["MERGE_MODES", "ChunkQueue", "Request"]

MERGE_MODES = ("latest", "weighted", "ensemble")


@dataclass(frozen=True)
class Request:
    """A chunk request in flight: the step its observation was taken at, and what the server is told."""

    obs_step: int
    inference_delay: int
    """Estimated steps that will execute before the reply can take over (from recent replies)."""
    prev_actions: np.ndarray
    """(n, Da) float32: the plan from ``obs_step`` on, as it stands (what executes if nothing changes)."""


class ChunkQueue:
    """Plans the action for each control step from the chunks a policy server returns.

    ``n_action_steps``: the policy's execution horizon (it caps the refill step, see the module docstring).
    ``merge``: ``latest``, ``weighted`` or ``ensemble``; ``ensemble_m``: ACT's m (0.01 in ACT).
    ``delay_window``: replies over which the inference delay estimate takes its maximum.
    """

    def __init__(
        self, n_action_steps: int, merge: str = "latest", ensemble_m: float = 0.01, delay_window: int = 5
    ):
        if n_action_steps < 1:
            raise ValueError(f"n_action_steps must be >= 1, found {n_action_steps}")
        if merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {', '.join(MERGE_MODES)}, found {merge!r}")
        if delay_window < 1:
            raise ValueError(f"delay_window must be >= 1, found {delay_window}")
        self.n_action_steps = n_action_steps
        self.merge = merge
        self.ensemble_m = float(ensemble_m)
        self.refill_after = n_action_steps
        """Steps after the current chunk's observation at which the next is asked for."""
        self._delays: deque[int] = deque(maxlen=delay_window)
        self.clear()

    # ------------------------------------------------------------------ state
    def clear(self) -> None:
        """Start over for a new episode: :meth:`drop`, and the step counter restarts at 0. Measured
        delays are kept: they describe the link, not the episode."""
        self.t = 0
        """The step whose action :meth:`pop` returns next."""
        self.drop()

    def drop(self) -> None:
        """Forget every planned action and the request in flight (a fault: the link went down);
        the step counter goes on."""
        self._plan: np.ndarray | None = None  # latest/weighted: (m, Da) for steps _plan_start..
        self._plan_start = 0
        self._chunks: list[tuple[int, np.ndarray]] = []  # ensemble: (first step, (L, Da)), oldest first
        self._current_obs_step: int | None = None
        self.pending: Request | None = None
        """The request in flight, if any."""

    @property
    def remaining(self) -> int:
        """Planned actions left from step :attr:`t` on."""
        if self.merge == "ensemble":
            return max((s + len(c) - self.t for s, c in self._chunks), default=0)
        if self._plan is None:
            return 0
        return max(0, self._plan_start + len(self._plan) - self.t)

    @property
    def inference_delay(self) -> int:
        """Estimated delay in steps: the largest measured over the last few replies (0 before any)."""
        return max(self._delays, default=0)

    @property
    def measured_delays(self) -> list[int]:
        """The measured delays (steps) of the most recent replies, oldest first."""
        return list(self._delays)

    def needs_refill(self) -> bool:
        """Whether to send a request now: none is in flight, and the current chunk is half empty."""
        if self.pending is not None:
            return False
        if self.remaining == 0 or self._current_obs_step is None:
            return True
        return self.t - self._current_obs_step >= self.refill_after

    # ------------------------------------------------------------------ requests
    def request(self) -> Request:
        """Mark a request for an observation taken now (at step :attr:`t`) as in flight."""
        if self.pending is not None:
            raise RuntimeError(f"a request for step {self.pending.obs_step} is still in flight")
        self.pending = Request(self.t, self.inference_delay, self.leftover(self.t))
        return self.pending

    def cancel(self) -> None:
        """Drop the request in flight (its reply will never come: the link went down)."""
        self.pending = None

    def receive(self, actions: np.ndarray, obs_step: int | None = None) -> int:
        """Merge the chunk answering the observation of step ``obs_step`` (default: the pending
        request's). Returns the delay d in steps. The chunk's first rows are the actions for the
        steps since the observation; those the old plan executed meanwhile are dropped, and only
        those: steps the robot held still (the plan had run out, or there was none yet, as at the
        start of an episode) left the state where the chunk found it, so the chunk goes on from
        there. A chunk too old to reach the present is dropped whole (the delay is still recorded)."""
        chunk = np.asarray(actions, dtype=np.float32)
        if chunk.ndim != 2 or len(chunk) == 0:
            raise ValueError(f"a chunk must be (L, Da) with L >= 1, found shape {chunk.shape}")
        if obs_step is None:
            if self.pending is None:
                raise RuntimeError("receive() without obs_step needs a request in flight")
            obs_step = self.pending.obs_step
        planned = None  # actions the plan held from obs_step on, when the request is known
        if self.pending is not None and self.pending.obs_step == obs_step:
            planned = len(self.pending.prev_actions)
            self.pending = None
        if obs_step > self.t:
            raise ValueError(
                f"a chunk for step {obs_step} arrived at step {self.t}: it cannot be from the future"
            )
        delay = self.t - obs_step
        self._delays.append(delay)
        executed = delay if planned is None else min(delay, planned)
        if executed >= len(chunk):
            return delay
        self._current_obs_step = obs_step
        self.refill_after = max(1, min(self.n_action_steps, math.ceil(len(chunk) / 2)))
        fresh = chunk[executed:]
        if self.merge == "ensemble":
            self._chunks.append((self.t, fresh))
            return delay
        old = self._plan_from(self.t)
        if self.merge == "weighted" and old is not None and len(old):
            k = min(len(old), len(fresh))
            w = (np.arange(1, k + 1, dtype=np.float64) / (k + 1))[:, None]
            fresh = fresh.copy()
            fresh[:k] = ((1.0 - w) * old[:k] + w * fresh[:k]).astype(np.float32)
        self._plan, self._plan_start = fresh, self.t
        return delay

    # ------------------------------------------------------------------ execution
    def pop(self) -> np.ndarray | None:
        """The action for step :attr:`t` (None when nothing is planned: hold), and advance to t + 1.
        Call it once per control tick, whether or not an action comes out: time passes either way."""
        action = self._action_at(self.t)
        self.t += 1
        if self.merge == "ensemble":
            self._chunks = [(s, c) for s, c in self._chunks if s + len(c) > self.t]
        return action

    def leftover(self, step: int) -> np.ndarray:
        """(n, Da) float32: the planned actions from ``step`` on (empty (0, 0) when none are)."""
        if self.merge == "ensemble":
            end = max((s + len(c) for s, c in self._chunks), default=step)
            rows = [self._action_at(k) for k in range(step, end)]
            rows = [r for r in rows if r is not None]
            return np.stack(rows) if rows else np.zeros((0, 0), np.float32)
        plan = self._plan_from(step)
        return plan.copy() if plan is not None and len(plan) else np.zeros((0, 0), np.float32)

    def _plan_from(self, step: int) -> np.ndarray | None:
        if self._plan is None:
            return None
        return self._plan[max(0, step - self._plan_start) :]

    def _action_at(self, step: int) -> np.ndarray | None:
        if self.merge != "ensemble":
            plan = self._plan
            i = step - self._plan_start
            return plan[i].copy() if plan is not None and 0 <= i < len(plan) else None
        preds = [c[step - s] for s, c in self._chunks if s <= step < s + len(c)]
        if not preds:
            return None
        weights = np.array([math.exp(-self.ensemble_m * j) for j in range(len(preds))])
        weights /= weights.sum()
        return (np.stack(preds).astype(np.float64) * weights[:, None]).sum(0).astype(np.float32)
