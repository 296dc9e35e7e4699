"""The backend interface every bridge transport implements, and the bounded subscription queue.

::

    with make_backend("zmq", role="client", port=7447) as bus:
        states = bus.subscribe("/robolearn/joint_states", JointState, queue_size=1)
        bus.publish("/robolearn/command/ee_delta", Float64MultiArray(data=a))
        env = states.get(timeout=0.1)         # oldest queued Envelope, or None
        reply = bus.request("describe", {})   # request/reply: JSON-able dicts

A subscription keeps at most ``queue_size`` messages and drops the oldest when a new one arrives
(a control loop wants the latest state, never a backlog). A message older than one already taken in
(a sequence number at or below the newest seen) is *late*: it is counted and dropped, so a reordered
delivery never moves a consumer back in time; a gap in the numbers is counted as *lost*. A sequence
number of 1 starts the count afresh (the publisher restarted).
"""

from __future__ import annotations

import collections
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from robolearn.deploy.topics.messages import Envelope

__all__ = ["Backend", "BridgeError", "Handler", "Subscription"]

Handler = Callable[[dict[str, Any]], dict[str, Any]]
"""A request/reply handler: JSON-able dict in, JSON-able dict out."""


class BridgeError(RuntimeError):
    """A bridge transport failed (no answer within the timeout, the peer or the master is gone)."""


class Subscription:
    """A bounded queue of received :class:`Envelope` s for one topic (see the module docstring)."""

    def __init__(self, topic: str, msg_type: type, queue_size: int = 1):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, found {queue_size}")
        self.topic, self.msg_type = topic, msg_type
        self._queue: collections.deque[Envelope] = collections.deque(maxlen=queue_size)
        self._cond = threading.Condition()
        self._latest: Envelope | None = None
        self._last_seq = 0
        self.received = 0
        """Messages taken in (late ones excluded)."""
        self.dropped = 0
        """Messages pushed out of the full queue before anyone took them."""
        self.late = 0
        """Messages that arrived after a newer one and were discarded."""
        self.lost = 0
        """Sequence numbers never seen (gaps)."""

    def deliver(self, env: Envelope) -> None:
        """Take in one message (called by the backend's receiving thread)."""
        if not env.receive_time:
            env.receive_time = time.time()
        if not isinstance(env.msg, self.msg_type):
            return
        with self._cond:
            if env.seq == 1 or self._last_seq == 0:
                self._last_seq = env.seq - 1
            if env.seq <= self._last_seq:
                self.late += 1
                return
            self.lost += env.seq - self._last_seq - 1
            self._last_seq = env.seq
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(env)
            self._latest = env
            self.received += 1
            self._cond.notify_all()

    def get(self, timeout: float | None = 0.0) -> Envelope | None:
        """The oldest queued message, waiting up to ``timeout`` s (None: forever); None if none came."""
        with self._cond:
            if not self._queue and timeout != 0.0:
                self._cond.wait_for(lambda: bool(self._queue), timeout)
            return self._queue.popleft() if self._queue else None

    def latest(self) -> Envelope | None:
        """The newest message ever taken in (it stays after :meth:`get` took it)."""
        with self._cond:
            return self._latest

    def drain(self) -> list[Envelope]:
        """Every queued message, oldest first; the queue is left empty."""
        with self._cond:
            out = list(self._queue)
            self._queue.clear()
            return out

    def wait_for(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``n`` messages were taken in since the subscription began; True if they were."""
        with self._cond:
            return self._cond.wait_for(lambda: self.received >= n, timeout)


class Backend(ABC):
    """One transport: publish, subscribe (bounded queues), request/reply. Thread-safe publish and
    request; handlers and deliveries run on the backend's own threads."""

    name = "backend"

    def __init__(self) -> None:
        self._seq: dict[str, int] = {}
        self._seq_lock = threading.Lock()
        self.closed = False

    # ------------------------------------------------------------------ publish
    def publish(self, topic: str, msg: Any, *, source_time: float | None = None) -> Envelope:
        """Send ``msg`` on ``topic``; ``source_time`` (``time.time()`` s): when its data was measured
        (default: now, or ``msg.header.stamp`` when set). Returns the envelope sent."""
        now = time.time()
        header = getattr(msg, "header", None)
        if source_time is None:
            source_time = header.stamp if header is not None and header.stamp else now
        if header is not None and not header.stamp:
            header.stamp = source_time
        with self._seq_lock:
            seq = self._seq.get(topic, 0) + 1
            self._seq[topic] = seq
        env = Envelope(msg, seq, now, float(source_time))
        self._send(topic, env)
        return env

    @abstractmethod
    def _send(self, topic: str, env: Envelope) -> None: ...

    # ------------------------------------------------------------------ subscribe
    def subscribe(self, topic: str, msg_type: type, queue_size: int = 1) -> Subscription:
        """A :class:`Subscription` to ``topic`` holding at most ``queue_size`` messages."""
        sub = Subscription(topic, msg_type, queue_size)
        self._subscribe(topic, msg_type, sub)
        return sub

    @abstractmethod
    def _subscribe(self, topic: str, msg_type: type, sub: Subscription) -> None: ...

    # ------------------------------------------------------------------ request/reply
    @abstractmethod
    def serve(self, service: str, handler: Handler) -> None:
        """Answer requests to ``service`` with ``handler`` (on the backend's thread)."""

    @abstractmethod
    def request(self, service: str, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send ``payload`` to ``service`` and wait for the reply; :class:`BridgeError` after
        ``timeout`` s without one."""

    @staticmethod
    def _answer(handler: Handler, raw: bytes) -> bytes:
        """Run ``handler`` on a JSON request; a handler exception becomes ``{"error": ...}``."""
        try:
            reply = handler(json.loads(raw))
        except Exception as exc:  # the requester gets the error, the serving loop goes on
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        return json.dumps(reply).encode()

    # ------------------------------------------------------------------ lifecycle
    @abstractmethod
    def close(self) -> None:
        """Release sockets and threads (safe to call twice)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
