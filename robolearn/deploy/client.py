"""The robot-side policy client: websocket + msgpack (openpi's wire), inference off the control thread.

It depends on numpy, msgpack and websockets only (no torch, no mujoco), so it installs on a robot PC
as openpi's client package does::

    client = PolicyClient("ws://gpu-box:8000", api_key="...")
    meta = client.start()                    # waits for the server's metadata frame
    client.submit(request)                   # returns at once; a background thread sends it
    reply = client.poll()                    # None until the reply is in; never blocks
    client.infer(request)                    # or: block for the reply (with a timeout), as openpi's infer
    client.close()

Two daemon threads share one connection: the link thread connects (``Authorization: Api-Key``
header when a key is given), reads the metadata frame, then receives every reply, so a server that
dies is noticed the moment its socket closes; the sender thread sends queued requests, so the control
loop never waits on a socket. When the connection drops, the request in flight fails (its reply says
so) and the link thread reconnects every ``retry_s`` until :meth:`PolicyClient.close`. Every network
wait has a timeout: connect and handshake (``connect_timeout``), the metadata frame, :meth:`infer`.
A reply whose request took longer than the caller tolerates is the caller's to judge
(:attr:`PolicyClient.request_age`); :meth:`drop_connection` forces a reconnect.

:class:`ObservationWindow` turns robot observations into requests: it keeps the last ``n_obs_steps``
frames of each feature (the first frame repeated at an episode's start, as ``robolearn eval`` does)
and names them by their wire keys.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robolearn.deploy import protocol
from robolearn.deploy.keymap import KeyMap
from robolearn.deploy.wire import WireError, packb, unpackb
from robolearn.types import TASK, FeatureSpec, is_image_key

__all__ = ["ClientError", "ObservationWindow", "PolicyClient", "Reply", "ServerUnavailable"]

_REQUIRED_METADATA = ("features", "action_horizon", "action_dim", "n_action_steps", "n_obs_steps")


class ClientError(RuntimeError):
    """The server or the robot does not fit the other; the message names the key and both sides."""


class ServerUnavailable(ClientError):
    """No server answered at the URL within the timeout; the message carries the last error."""


@dataclass
class Reply:
    """The answer to one request: the chunk, or why there is none."""

    seq: int
    actions: np.ndarray | None = None
    """(H, Da) float32; None when ``error`` is set."""
    server_timing: dict[str, float] = field(default_factory=dict)
    obs_timestamp: float | None = None
    rtt_s: float = 0.0
    """Submit to reply, on this machine's monotonic clock."""
    error: str | None = None
    """The server's error reply (a bad request) or ``"disconnected: ..."`` (the link went down)."""
    disconnected: bool = False


def _check_metadata(meta: Any, url: str) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise ClientError(f"{url}: the first frame is not a metadata map (found {type(meta).__name__})")
    missing = [k for k in _REQUIRED_METADATA if k not in meta]
    if missing:
        raise ClientError(f"{url}: the metadata frame lacks {missing[0]!r} (is this a robolearn server?)")
    return meta


class PolicyClient:
    """A connection to a policy server at ``url`` (``ws://host:port``); see the module docstring."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        retry_s: float = 0.2,
        max_reply_bytes: int = 64 * 1024**2,
    ):
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"server URL must start with ws:// or wss://, found {url!r}")
        self.url = url
        self._headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self.connect_timeout = float(connect_timeout)
        self.retry_s = float(retry_s)
        self._max_reply = max_reply_bytes
        self.metadata: dict[str, Any] | None = None
        """The latest connection's metadata frame."""
        self.connects = 0
        """Connections made (1 after the first; more after reconnects)."""
        self.connected_at: float | None = None
        """``time.monotonic()`` when the latest connection came up."""
        self.last_error: str | None = None
        self._conn = None
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._outbox: queue.Queue = queue.Queue()
        self._replies: deque[Reply] = deque()
        self._reply_ready = threading.Condition(self._lock)
        self._in_flight: tuple[int, float] | None = None  # (seq, submit time)
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float | None = None) -> dict[str, Any]:
        """Start the threads and wait up to ``timeout`` (default ``connect_timeout``) for the first
        connection; returns its metadata. Raises :class:`ServerUnavailable` (the threads keep trying
        until :meth:`close`) or :class:`ClientError` for a server that is not a policy server."""
        if not self._threads:
            for target, name in ((self._link, "policy-client-link"), (self._send_loop, "policy-client-send")):
                t = threading.Thread(target=target, name=name, daemon=True)
                t.start()
                self._threads.append(t)
        if not self.wait_connected(self.connect_timeout if timeout is None else timeout):
            if self.last_error and self.last_error.startswith("fatal: "):
                raise ClientError(self.last_error[len("fatal: ") :])
            raise ServerUnavailable(
                f"{self.url}: no policy server answered ({self.last_error or 'timed out'})"
            )
        return dict(self.metadata or {})

    def wait_connected(self, timeout: float | None) -> bool:
        """Block until connected (True) or ``timeout`` seconds passed (False)."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        """Whether a connection is up now."""
        return self._connected.is_set()

    def close(self) -> None:
        """Close the connection and stop the threads (waits at most ~1 s for them)."""
        self._closed.set()
        self._outbox.put(None)
        self.drop_connection()
        for t in self._threads:
            t.join(timeout=1.0)

    def __enter__(self) -> PolicyClient:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def drop_connection(self) -> None:
        """Close the current connection (a stalled server): the request in flight fails, and the link
        thread reconnects."""
        with self._lock:
            conn = self._conn
        if conn is not None:
            self._link_down("dropped by the client")
            # close() waits (up to close_timeout) for a closing handshake a stalled server never sends.
            threading.Thread(target=conn.close, name="policy-client-close", daemon=True).start()

    # ------------------------------------------------------------------ requests
    @property
    def request_age(self) -> float | None:
        """Seconds since the request in flight was submitted (None when none is)."""
        with self._lock:
            return None if self._in_flight is None else time.monotonic() - self._in_flight[1]

    @property
    def busy(self) -> bool:
        """A request is in flight."""
        with self._lock:
            return self._in_flight is not None

    def submit(self, request: Mapping[str, Any], seq: int) -> None:
        """Queue ``request`` (an observation map, optional fields included) tagged ``seq``; it is packed
        here so a bad field fails in the caller. One request may be in flight at a time."""
        frame = packb({**request, protocol.SEQ: int(seq)})
        with self._lock:
            if self._in_flight is not None:
                raise RuntimeError(f"request {self._in_flight[0]} is still in flight")
            if not self._connected.is_set():
                self._replies.append(Reply(seq, error="disconnected: not connected", disconnected=True))
                self._reply_ready.notify_all()
                return
            self._in_flight = (int(seq), time.monotonic())
        self._outbox.put((int(seq), frame))

    def poll(self) -> Reply | None:
        """The next reply if one is in (never blocks)."""
        with self._lock:
            return self._replies.popleft() if self._replies else None

    def cancel(self) -> None:
        """Forget the request in flight: its reply, if it ever comes, is dropped."""
        with self._lock:
            self._in_flight = None

    def infer(self, request: Mapping[str, Any], timeout: float = 10.0, seq: int = 0) -> Reply:
        """Send ``request`` and block until its reply (or ``timeout``: :class:`TimeoutError`)."""
        self.submit(request, seq)
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._in_flight = None
                    raise TimeoutError(f"{self.url}: no reply within {timeout:.1f} s")
                self._reply_ready.wait(left)
            return self._replies.popleft()

    # ------------------------------------------------------------------ threads
    def _deliver(self, reply: Reply) -> None:
        with self._lock:
            if self._in_flight is None or self._in_flight[0] != reply.seq:
                return  # a reply to a cancelled request
            reply.rtt_s = time.monotonic() - self._in_flight[1]
            self._in_flight = None
            self._replies.append(reply)
            self._reply_ready.notify_all()

    def _fail_in_flight(self, why: str) -> None:
        with self._lock:
            seq = None if self._in_flight is None else self._in_flight[0]
        if seq is not None:
            self._deliver(Reply(seq, error=f"disconnected: {why}", disconnected=True))

    def _link(self) -> None:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        while not self._closed.is_set():
            try:
                with connect(
                    self.url, additional_headers=self._headers, open_timeout=self.connect_timeout,
                    close_timeout=1.0, compression=None, max_size=self._max_reply, proxy=None,
                ) as conn:  # fmt: skip
                    meta = _check_metadata(unpackb(conn.recv(timeout=self.connect_timeout)), self.url)
                    with self._lock:
                        self._conn, self.metadata = conn, meta
                        self.connects += 1
                        self.connected_at = time.monotonic()
                        self.last_error = None
                    self._connected.set()
                    self._receive(conn)
                    # Down before the closing handshake (up to close_timeout), not after it.
                    self._link_down(self.last_error or "connection closed")
            except InvalidURI as exc:
                self.last_error = f"fatal: {self.url}: {exc}"
                return
            except ClientError as exc:
                self.last_error = f"fatal: {exc}"
                return
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, WireError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._link_down(self.last_error or "connection closed")
            self._closed.wait(self.retry_s)

    def _link_down(self, why: str) -> None:
        self._connected.clear()
        with self._lock:
            self._conn = None
        self._fail_in_flight(why)

    def _receive(self, conn) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for frame in conn:
                with self._lock:
                    seq = None if self._in_flight is None else self._in_flight[0]
                if seq is None:
                    continue
                if isinstance(frame, str):  # the server's error reply names what was wrong
                    self._deliver(Reply(seq, error=frame))
                    continue
                self._deliver(self._parse_reply(frame, seq))
        except ConnectionClosed as exc:
            self.last_error = f"connection closed ({exc})"
        if self.last_error is None:
            self.last_error = "connection closed by the server"

    def _parse_reply(self, frame: bytes, seq: int) -> Reply:
        try:
            obj = unpackb(frame)
        except WireError as exc:
            return Reply(seq, error=f"malformed reply: {exc}")
        actions = obj.get(protocol.ACTIONS) if isinstance(obj, dict) else None
        if not isinstance(actions, np.ndarray) or actions.ndim != 2:
            return Reply(seq, error=f"reply without an (H, Da) {protocol.ACTIONS!r} array")
        got = obj.get(protocol.SEQ, seq)
        timing = obj.get(protocol.SERVER_TIMING) or {}
        return Reply(
            int(got) if isinstance(got, int) else seq,
            actions=np.array(actions, dtype=np.float32),
            server_timing={str(k): float(v) for k, v in timing.items() if isinstance(v, int | float)},
            obs_timestamp=obj.get(protocol.OBS_TIMESTAMP),
        )

    def _send_loop(self) -> None:
        from websockets.exceptions import ConnectionClosed

        while True:
            item = self._outbox.get()
            if item is None:
                return
            seq, frame = item
            with self._lock:
                conn = self._conn
            if conn is None:
                self._fail_in_flight("not connected")
                continue
            try:
                conn.send(frame)
            except (ConnectionClosed, OSError) as exc:
                self._fail_in_flight(f"send failed ({type(exc).__name__})")


class ObservationWindow:
    """The last ``n_obs_steps`` frames of each feature a server needs, as one request.

    ``metadata`` is the server's; ``robot_features`` what the robot observes (key -> spec);
    ``keymap`` names wire keys (default: the embedded Franka's, :data:`keymap.DEFAULT_KEYS`). Raises
    :class:`ClientError` when the robot lacks a feature the server needs or its shape differs.
    """

    def __init__(
        self,
        metadata: Mapping[str, Any],
        robot_features: Mapping[str, FeatureSpec],
        keymap: KeyMap | None = None,
    ):
        keymap = keymap or KeyMap()
        self.n_obs = int(metadata["n_obs_steps"])
        self._wire: list[tuple[str, str, np.dtype]] = []  # (wire key, robot key, dtype)
        for key, spec in dict(metadata["features"]).items():
            feature = keymap.to_feature(key)
            mine = robot_features.get(feature)
            want = tuple(int(n) for n in spec["shape"])
            if mine is None:
                have = ", ".join(sorted(robot_features))
                raise ClientError(
                    f"the server needs {key!r} ({feature}, shape {list(want)}); the robot has {have}"
                )
            if tuple(mine.shape) != want:
                raise ClientError(
                    f"{key!r} ({feature}): the server expects shape {list(want)}, the robot's is {list(mine.shape)}"
                )
            dtype = np.dtype(np.uint8 if is_image_key(feature) else np.float32)
            self._wire.append((key, feature, dtype))
        self.prompt_key = metadata.get("prompt_key")
        self._history: dict[str, deque] = {}
        self._task: Any = None

    def reset(self) -> None:
        """Forget the history (a new episode): the next frame fills the whole window."""
        self._history.clear()

    def push(self, obs: Mapping[str, Any]) -> None:
        """Add the frame of one robot observation."""
        for _, feature, dtype in self._wire:
            frame = np.asarray(obs[feature], dtype=dtype)
            hist = self._history.get(feature)
            if hist is None:
                self._history[feature] = deque([frame] * self.n_obs, maxlen=self.n_obs)
            else:
                hist.append(frame)
        self._task = obs.get(TASK)

    def request(self) -> dict[str, Any]:
        """The observation part of a request: each wire key's window ((To, ...) when To > 1, else one
        frame) and the prompt."""
        if not self._history:
            raise RuntimeError("push() an observation first")
        out: dict[str, Any] = {}
        for key, feature, _ in self._wire:
            hist = self._history[feature]
            out[key] = np.stack(hist) if self.n_obs > 1 else hist[-1]
        if self.prompt_key and self._task is not None:
            out[self.prompt_key] = str(self._task)
        return out
