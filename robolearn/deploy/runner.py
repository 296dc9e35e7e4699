"""Drive a robot from a policy server: the control loop, the chunk queue and the link, with faults handled.

One tick of :class:`Runner` (at the loop's rate, on absolute deadlines)::

    observe -> take in a reply if one came (merge it, dropping the steps that ran meanwhile)
            -> if the link is down or the reply is overdue: hold (and stop the robot once)
            -> if the chunk is half empty and none is in flight: send the next request
            -> send the planned action for this step, or the hold action if none is planned

Faults: when the server dies (its socket closes) or stalls (no reply within ``request_timeout`` s),
the queued actions are dropped, the robot is stopped (:meth:`Robot.stop`) and it holds position
from the next tick: within 2 control periods of the socket closing. A stalled connection is dropped;
the client reconnects when the server is back, and the run continues from a fresh chunk. A slow
reply is no fault: the current chunk keeps executing, and when its actions run out the robot holds
until the reply comes. A reconnect to a server whose action shape differs is refused (:class:`RunError`).

The loop starts half a period after the stamp of the episode's first observation, so a robot with
its own control clock (:class:`~robolearn.deploy.sim_robot.SimRobot`) is observed mid-tick and each
action lands on the next tick. Only numpy is imported here (the robot side).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robolearn.deploy import protocol
from robolearn.deploy.chunks import ChunkQueue
from robolearn.deploy.client import ObservationWindow, PolicyClient
from robolearn.deploy.keymap import KeyMap
from robolearn.deploy.loop import JitterStats, RateLoop, realtime_priority, summarize_jitter
from robolearn.deploy.robot import TIMESTAMP_KEY, Robot

__all__ = ["EpisodeReport", "RunError", "Runner"]


class RunError(RuntimeError):
    """The run cannot go on (the server refused a request, or came back with another action shape)."""


@dataclass
class EpisodeReport:
    """What one episode did, as the robot and the link saw it."""

    seed: int | None
    task: str = ""
    ticks: int = 0
    """Control ticks the loop ran."""
    success: bool = False
    """Success reached on some step (robots that report it: the sim)."""
    held: bool = False
    """Success on the episode's last step."""
    steps: int = 0
    """Steps the robot executed (its own count; the sim's episode length)."""
    first_success_step: int | None = None
    ret: float = 0.0
    policy_actions: int = 0
    """Ticks that sent a planned action."""
    holds: int = 0
    """Ticks that sent the hold action (no chunk yet, the plan ran dry, or a fault)."""
    faults: int = 0
    """Times the link was lost or a reply overdue."""
    requests: int = 0
    rtt_ms: list[float] = field(default_factory=list)
    """Round trip of every reply (submit to reply, model time included)."""
    infer_ms: list[float] = field(default_factory=list)
    """The server's ``infer_ms`` of every reply."""
    delays: list[int] = field(default_factory=list)
    """Measured inference delay (steps) of every reply."""
    jitter: JitterStats | None = None
    interrupted: bool = False


class Runner:
    """Run episodes of ``robot`` driven by the policy behind ``client`` (started: metadata known).

    ``rate``: control rate (default: the robot's). ``merge``: ``latest``, ``weighted`` or
    ``ensemble`` (see :mod:`robolearn.deploy.chunks`). ``rtc``: ask the server for real-time chunking.
    ``request_timeout``: seconds after which a reply is overdue (the server stalled).
    ``rt_priority``: run the loop's thread under ``SCHED_FIFO`` at this priority where the OS allows
    it (:func:`~robolearn.deploy.loop.realtime_priority`; None: never). ``stop``: set it to end the
    current episode at the next tick.
    """

    def __init__(
        self,
        robot: Robot,
        client: PolicyClient,
        *,
        rate: float | None = None,
        merge: str = "latest",
        rtc: bool = False,
        ensemble_m: float = 0.01,
        request_timeout: float = 1.0,
        rt_priority: int | None = 50,
        keymap: KeyMap | None = None,
        stop: threading.Event | None = None,
        on_tick: Callable[[Runner, int], None] | None = None,
    ):
        meta = client.metadata
        if meta is None:
            raise RuntimeError("Runner needs a started client (client.start())")
        self.robot, self.client = robot, client
        self.metadata = dict(meta)
        self._check_action_shape(meta)
        if rtc and not meta.get("supports_rtc"):
            raise RunError(
                f"--rtc: the server's {meta.get('policy_type')} policy does not support real-time chunking"
            )
        self.rate = float(rate or robot.control_hz)
        self.rtc = rtc
        self.request_timeout = float(request_timeout)
        self.rt_priority = rt_priority
        self.window = ObservationWindow(meta, robot.observation_features, keymap)
        self.queue = ChunkQueue(int(meta["n_action_steps"]), merge=merge, ensemble_m=ensemble_m)
        self.stop_event = stop or threading.Event()
        self.on_tick = on_tick
        self._connects = client.connects
        self._seq = 0
        self._holding = False
        self._late: list[np.ndarray] = []
        self._period: list[np.ndarray] = []
        self._missed = 0
        self._realtime: list[bool] = []
        self.last_report: EpisodeReport | None = None
        """The report of the latest episode (also of one cut short by Ctrl-C)."""

    def jitter(self) -> JitterStats:
        """Loop jitter pooled over every episode run so far."""
        late = np.concatenate(self._late) if self._late else np.zeros(0)
        period = np.concatenate(self._period) if self._period else np.zeros(0)
        stats = summarize_jitter(late, period, self.rate, self._missed)
        return dataclasses.replace(stats, realtime=bool(self._realtime) and all(self._realtime))

    def _check_action_shape(self, meta: dict[str, Any]) -> None:
        want = tuple(self.robot.action_feature.shape)
        got = (int(meta["action_dim"]),)
        if got != want:
            raise RunError(
                f"the server's policy outputs actions of shape {got}, the robot {self.robot.name} takes {want}"
            )

    # ------------------------------------------------------------------ episodes
    def run_episode(self, seed: int | None = None, max_ticks: int | None = None) -> EpisodeReport:
        """One episode: reset the robot (``seed``; robots with ``reset``), run until the robot's
        episode is done, ``max_ticks`` ran or :attr:`stop_event` is set. Ctrl-C stops the robot and
        propagates (the report of the partial episode is in :attr:`last_report`)."""
        reset = getattr(self.robot, "reset", None)
        obs = reset(seed) if callable(reset) else self.robot.get_observation()
        report = EpisodeReport(seed=seed, task=str(obs.get("task", "")))
        self.last_report = report
        self.window.reset()
        self.queue.clear()
        self.client.cancel()
        while self.client.poll() is not None:  # replies to the previous episode
            pass
        self._holding = False
        loop = RateLoop(self.rate)
        loop.start(at=float(obs.get(TIMESTAMP_KEY, time.monotonic())) + 0.5 / self.rate)
        try:
            with realtime_priority(self.rt_priority) as granted:
                loop.realtime = granted
                while not self.stop_event.is_set() and (max_ticks is None or report.ticks < max_ticks):
                    loop.wait()
                    if self._tick(report):
                        break
        except KeyboardInterrupt:
            report.interrupted = True
            raise
        finally:
            self._realtime.append(loop.realtime)
            report.jitter = loop.stats()
            late, period = loop.samples()
            self._late.append(late)
            self._period.append(period)
            self._missed += loop.missed
            self._finish(report)
        return report

    def _finish(self, report: EpisodeReport) -> None:
        self.client.cancel()
        try:
            self.robot.stop()
        finally:
            ep = getattr(self.robot, "episode", None)
            if ep is not None:
                report.steps, report.ret = ep.steps, ep.ret
                report.first_success_step = ep.first_success_step
                report.success, report.held = ep.first_success_step is not None, bool(ep.held)

    def _tick(self, report: EpisodeReport) -> bool:
        """One control tick; True when the robot's episode is over."""
        robot, q = self.robot, self.queue
        obs = robot.get_observation()
        ep = getattr(robot, "episode", None)
        if ep is not None and ep.done:
            return True
        report.ticks += 1
        self.window.push(obs)
        self._take_reply(report)
        if self._link_fault():
            if not self._holding:
                report.faults += 1
                q.drop()
                self.client.cancel()
                robot.stop()
                self._holding = True
        elif q.needs_refill():
            self._send_request(obs, report)
        action = q.pop()
        if action is None:
            robot.send_action(robot.hold_action())
            report.holds += 1
        else:
            robot.send_action(action)
            report.policy_actions += 1
        if self.on_tick is not None:
            self.on_tick(self, report.ticks)
        return False

    # ------------------------------------------------------------------ link
    def _link_fault(self) -> bool:
        client = self.client
        if not client.connected:
            return True
        if client.connects != self._connects:  # a fresh connection: check it serves the same policy
            self._check_action_shape(client.metadata or {})
            self._connects = client.connects
        age = client.request_age
        if age is not None and age > self.request_timeout:
            client.drop_connection()  # stalled: reconnect
            return True
        if self._holding:
            self._holding = False  # the link is back: plan afresh
        return False

    def _take_reply(self, report: EpisodeReport) -> None:
        reply = self.client.poll()
        if reply is None:
            return
        if reply.error is not None:
            if reply.disconnected:
                self.queue.cancel()
                return
            raise RunError(f"the server refused a request: {reply.error}")
        pending = self.queue.pending
        if pending is None or reply.seq != self._seq:
            return
        delay = self.queue.receive(reply.actions, pending.obs_step)
        report.rtt_ms.append(1e3 * reply.rtt_s)
        if "infer_ms" in reply.server_timing:
            report.infer_ms.append(reply.server_timing["infer_ms"])
        report.delays.append(delay)

    def _send_request(self, obs: dict[str, Any], report: EpisodeReport) -> None:
        req = self.queue.request()
        horizon = int(self.metadata["action_horizon"])
        payload = self.window.request()
        payload[protocol.OBS_TIMESTAMP] = float(obs.get(TIMESTAMP_KEY, time.monotonic()))
        payload[protocol.INFERENCE_DELAY] = min(req.inference_delay, horizon)
        prev = req.prev_actions
        if prev.size:
            payload[protocol.PREV_ACTIONS] = np.ascontiguousarray(prev[:horizon], dtype=np.float32)
        if self.rtc:
            payload[protocol.RTC] = bool(prev.size)  # the first chunk has nothing to agree with
        self._seq += 1
        self.client.submit(payload, self._seq)
        report.requests += 1
