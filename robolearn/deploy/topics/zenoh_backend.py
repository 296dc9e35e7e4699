"""The Zenoh backend (``eclipse-zenoh``; extra ``zenoh``): peer sessions over loopback TCP.

Multicast scouting is off and every endpoint is explicit: the robot side listens on
``tcp/<host>:<port>``, a client connects there (and listens on an ephemeral port of the same host).
Topic ``/robolearn/joint_states`` is key expression ``robolearn/joint_states``; request/reply is a
queryable on ``<namespace>/srv/<service>`` answered with JSON.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from robolearn.deploy.topics.base import Backend, BridgeError, Handler, Subscription
from robolearn.deploy.topics.messages import Envelope, decode, encode

__all__ = ["ZenohBackend", "zenoh_config"]


def zenoh_config(host: str, port: int, role: str):
    """A peer config with multicast scouting off and explicit tcp endpoints on ``host``."""
    import zenoh  # the zenoh extra; the CLI names it when it is missing

    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("scouting/multicast/enabled", "false")
    conf.insert_json5("scouting/gossip/enabled", "false")
    if role == "robot":
        conf.insert_json5("listen/endpoints", json.dumps([f"tcp/{host}:{port}"]))
        conf.insert_json5("connect/endpoints", "[]")
    else:
        conf.insert_json5("listen/endpoints", json.dumps([f"tcp/{host}:0"]))
        conf.insert_json5("connect/endpoints", json.dumps([f"tcp/{host}:{port}"]))
    return conf


def _key(topic: str) -> str:
    return topic.strip("/")


class ZenohBackend(Backend):
    """Zenoh topics and services; ``role`` is ``robot`` (listens) or ``client`` (connects)."""

    name = "zenoh"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 7447, role: str = "client", namespace: str = "/robolearn"
    ):
        super().__init__()
        import zenoh

        if role not in ("robot", "client"):
            raise ValueError(f"role must be robot or client, found {role!r}")
        self._zenoh, self.role, self.namespace = zenoh, role, namespace
        try:
            self._session = zenoh.open(zenoh_config(host, port, role))
        except zenoh.ZError as exc:
            raise BridgeError(f"zenoh: cannot open a session on tcp/{host}:{port}: {exc}") from None
        self._pubs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._decls: list[Any] = []

    def _send(self, topic: str, env: Envelope) -> None:
        key = _key(topic)
        with self._lock:
            pub = self._pubs.get(key)
            if pub is None:
                pub = self._pubs[key] = self._session.declare_publisher(
                    key, congestion_control=self._zenoh.CongestionControl.DROP, express=True
                )
            pub.put(encode(env))

    def _subscribe(self, topic: str, msg_type: type, sub: Subscription) -> None:
        def on_sample(sample: Any) -> None:
            try:
                sub.deliver(decode(sample.payload.to_bytes()))
            except ValueError:
                pass  # not ours: a stray sample is dropped

        self._decls.append(self._session.declare_subscriber(_key(topic), on_sample))

    def _service_key(self, service: str) -> str:
        return f"{_key(self.namespace)}/srv/{service}"

    def serve(self, service: str, handler: Handler) -> None:
        def on_query(query: Any) -> None:
            raw = query.payload.to_bytes() if query.payload is not None else b"{}"
            query.reply(query.key_expr, self._answer(handler, raw))

        self._decls.append(self._session.declare_queryable(self._service_key(service), on_query))

    def request(self, service: str, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        raw = json.dumps(payload).encode()
        deadline = time.monotonic() + timeout
        # A queryable declared a moment ago may not have reached this peer yet: ask again until then.
        while (left := deadline - time.monotonic()) > 0:
            for reply in self._session.get(self._service_key(service), payload=raw, timeout=min(left, 1.0)):
                if reply.ok is not None:
                    return json.loads(reply.ok.payload.to_bytes())
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        raise BridgeError(f"zenoh: no reply to {service!r} within {timeout:g} s")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for decl in self._decls:
            try:
                decl.undeclare()
            except Exception:  # the session may already be going down
                pass
        self._session.close()
