"""The ZeroMQ backend (``pyzmq``; extra ``zmq``): brokerless, two roles.

The robot side binds three TCP ports on ``host``: ``port`` (PUB: states, images), ``port + 1``
(ROUTER: requests) and ``port + 2`` (SUB: commands from any number of clients). A client connects
the matching sockets. Topic frames are ``[topic, envelope bytes]``; requests are
``[request id, JSON]`` over DEALER/ROUTER, so a reply that comes after its timeout is simply ignored
(no REQ/REP lock-step to wedge). Send high-water marks are small: a slow subscriber loses old
messages rather than building a queue.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from typing import Any

from robolearn.deploy.topics.base import Backend, BridgeError, Handler, Subscription
from robolearn.deploy.topics.messages import Envelope, decode, encode

__all__ = ["ZmqBackend"]


class ZmqBackend(Backend):
    """ZeroMQ topics and services; ``role`` is ``robot`` (binds) or ``client`` (connects)."""

    name = "zmq"

    def __init__(self, host: str = "127.0.0.1", port: int = 7447, role: str = "client"):
        super().__init__()
        import zmq  # the zmq extra; the CLI names it when it is missing

        if role not in ("robot", "client"):
            raise ValueError(f"role must be robot or client, found {role!r}")
        self._zmq, self.role = zmq, role
        self._ctx = zmq.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._sub = self._ctx.socket(zmq.SUB)
        self._rpc = self._ctx.socket(zmq.ROUTER if role == "robot" else zmq.DEALER)
        for s in (self._pub, self._sub, self._rpc):
            s.setsockopt(zmq.LINGER, 0)
        self._pub.setsockopt(zmq.SNDHWM, 64)
        self._sub.setsockopt(zmq.RCVHWM, 64)
        ep = [f"tcp://{host}:{port + i}" for i in range(3)]
        try:
            if role == "robot":
                self._pub.bind(ep[0])
                self._rpc.bind(ep[1])
                self._sub.bind(ep[2])
            else:
                self._sub.connect(ep[0])
                self._rpc.connect(ep[1])
                self._pub.connect(ep[2])
        except zmq.ZMQError as exc:
            self._ctx.destroy(linger=0)
            raise BridgeError(f"zmq: cannot {'bind' if role == 'robot' else 'connect'} {ep}: {exc}") from None
        self._pub_lock = threading.Lock()
        self._rpc_lock = threading.Lock()
        self._subs: dict[str, list[Subscription]] = {}
        self._handlers: dict[str, Handler] = {}
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._new_topics: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._recv_loop, name="zmq-bridge", daemon=True)
        self._thread.start()

    def _send(self, topic: str, env: Envelope) -> None:
        with self._pub_lock:
            self._pub.send_multipart([topic.encode(), encode(env)], copy=False)

    def _subscribe(self, topic: str, msg_type: type, sub: Subscription) -> None:
        # A zmq socket belongs to one thread: the receive thread, which polls the SUB socket, sets the
        # subscription itself (a setsockopt from here while it polls crashed the process).
        self._subs.setdefault(topic, []).append(sub)
        self._new_topics.put(topic.encode())

    def _recv_loop(self) -> None:
        zmq = self._zmq
        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        if self.role == "robot":
            poller.register(self._rpc, zmq.POLLIN)
        while not self._stop.is_set():
            while True:
                try:
                    self._sub.setsockopt(zmq.SUBSCRIBE, self._new_topics.get_nowait())
                except queue.Empty:
                    break
            try:
                ready = dict(poller.poll(20))
            except zmq.ZMQError:
                return
            if self._sub in ready:
                while True:
                    try:
                        topic, data = self._sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    subs = self._subs.get(topic.decode(), ())
                    # A prefix subscription also matches longer topics: deliver to exact matches only.
                    for sub in subs:
                        try:
                            sub.deliver(decode(data))
                        except ValueError:
                            pass  # not ours: a stray or corrupt frame is dropped
            if self._rpc in ready:
                ident, rid, service, raw = self._rpc.recv_multipart()
                handler = self._handlers.get(service.decode())
                if handler is None:
                    reply = json.dumps({"error": f"no service {service.decode()!r}"}).encode()
                else:
                    reply = self._answer(handler, raw)
                self._rpc.send_multipart([ident, rid, reply])

    def serve(self, service: str, handler: Handler) -> None:
        if self.role != "robot":
            raise BridgeError("zmq: only the robot side serves requests")
        self._handlers[service] = handler

    def request(self, service: str, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        if self.role != "client":
            raise BridgeError("zmq: only a client sends requests")
        rid = str(next(self._ids)).encode()
        with self._rpc_lock:
            self._rpc.send_multipart([rid, service.encode(), json.dumps(payload).encode()])
            deadline = _now() + timeout
            while (left := deadline - _now()) > 0:
                if not self._rpc.poll(int(left * 1000) + 1):
                    break
                got, raw = self._rpc.recv_multipart()
                if got == rid:
                    return json.loads(raw)
        raise BridgeError(f"zmq: no reply to {service!r} within {timeout:g} s")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        self._thread.join(timeout=5.0)
        if self._thread.is_alive():  # destroying sockets under a live poll would crash the process
            raise BridgeError("zmq: the receive thread did not stop within 5 s")
        self._ctx.destroy(linger=0)


def _now() -> float:
    return time.monotonic()
