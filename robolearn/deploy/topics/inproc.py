"""The in-process backend: backends built with the same ``bus`` name share topics and services.

Messages go through the same codec as the network backends (so a test here proves the bytes round
trip), delivered on the publisher's thread. For tests and single-process setups.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from robolearn.deploy.topics.base import Backend, BridgeError, Handler, Subscription
from robolearn.deploy.topics.messages import Envelope, decode, encode

__all__ = ["InprocBackend"]

_BUSES: dict[str, dict[str, Any]] = {}
_LOCK = threading.Lock()


class InprocBackend(Backend):
    """Topics and services shared by every :class:`InprocBackend` with the same ``bus`` name."""

    name = "inproc"

    def __init__(self, bus: str = "default"):
        super().__init__()
        with _LOCK:
            self._bus = _BUSES.setdefault(bus, {"subs": {}, "services": {}})
        self._mine: list[tuple[str, Subscription]] = []
        self._services: list[str] = []

    def _send(self, topic: str, env: Envelope) -> None:
        data = encode(env)
        with _LOCK:
            subs = list(self._bus["subs"].get(topic, ()))
        for sub in subs:
            sub.deliver(decode(data))

    def _subscribe(self, topic: str, msg_type: type, sub: Subscription) -> None:
        with _LOCK:
            self._bus["subs"].setdefault(topic, []).append(sub)
        self._mine.append((topic, sub))

    def serve(self, service: str, handler: Handler) -> None:
        with _LOCK:
            self._bus["services"][service] = handler
        self._services.append(service)

    def request(self, service: str, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        with _LOCK:
            handler = self._bus["services"].get(service)
        if handler is None:
            raise BridgeError(f"inproc: no service {service!r}")
        return json.loads(self._answer(handler, json.dumps(payload).encode()))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with _LOCK:
            for topic, sub in self._mine:
                subs = self._bus["subs"].get(topic, [])
                if sub in subs:
                    subs.remove(sub)
            for service in self._services:
                self._bus["services"].pop(service, None)
