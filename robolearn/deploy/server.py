"""The policy server: any robolearn policy behind openpi's websocket protocol.

Wire and fields: :mod:`robolearn.deploy.protocol`. One asyncio loop (in a background thread) talks
to every client; requests are parsed and validated on the loop (cheap: arrays are views of the
frame) and queued; a batcher takes what arrived within ``batch_window_ms`` of the first request
(or goes at once when every connected client is waiting) and runs ONE ``predict_action_chunk``
(or, for ``rtc`` requests, one :func:`robolearn.policies.flow.rtc.guided_chunk`) per group of requests
with the same keys and shapes, on a single worker thread, so the loop keeps answering
(metadata, ``/healthz``, error replies, pings) while the model runs. A bad frame gets a text error
reply and the connection stays open; a failed policy call answers its own requests with an error.

``server_timing`` (floats, milliseconds unless named otherwise): ``decode_ms`` (unpack + validate),
``queue_ms`` (validated -> policy call starts), ``infer_ms`` (the batched policy call), ``batch_size``,
``server_ms`` (frame received -> reply packed), ``prev_total_ms`` (the previous request on this
connection, frame received -> reply sent; as openpi reports it).

This module imports torch (the server side only).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import http
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response

from robolearn.deploy.keymap import KeyMap
from robolearn.deploy.protocol import ProtocolError, Request, ServerSpec, make_reply, parse_request
from robolearn.deploy.wire import WireError, packb, unpackb
from robolearn.types import TASK

__all__ = ["PolicyServer", "is_flow_policy", "spec_for_policy"]

log = logging.getLogger(__name__)
_MIN_FRAME_BYTES = 16 * 2**20


def is_flow_policy(policy: Any) -> bool:
    """True when ``policy`` exposes the velocity field and time grid that RTC guidance needs."""
    return callable(getattr(policy, "velocity", None)) and callable(getattr(policy, "time_grid", None))


def spec_for_policy(
    policy: Any, keymap: KeyMap | None = None, fps: float | None = None, site: str = ""
) -> ServerSpec:
    """What a server for ``policy`` declares: its input features on the wire, horizons, RTC support."""
    cfg = policy.config
    return ServerSpec.for_policy(
        cfg.input_features,
        keymap or KeyMap(),
        n_obs_steps=cfg.n_obs_steps,
        horizon=cfg.horizon,
        exec_start=cfg.exec_start,
        action_dim=cfg.action_dim,
        n_action_steps=cfg.n_action_steps,
        policy_type=str(getattr(policy, "name", "") or type(policy).__name__),
        supports_rtc=is_flow_policy(policy),
        fps=fps,
        site=site,
    )


@dataclass
class _Pending:
    request: Request
    future: asyncio.Future
    received: float
    validated: float


class PolicyServer:
    """Serve ``policy`` over websocket on ``host:port`` (port 0: a free one, see :attr:`port`).

    ``keymap``: the site's wire-key map. ``api_key``: when set, clients must send the header
    ``Authorization: Api-Key <key>`` (others get HTTP 401; ``/healthz`` stays open). ``fps``:
    announced in the metadata. ``batch_window_ms`` and ``max_batch``: request batching.
    ``rtc_options``: extra keyword arguments for ``guided_chunk`` (``beta``, ``num_steps`` ...).
    ``max_frame_bytes``: larger frames close their connection (websocket code 1009); default
    4x the largest valid request, at least 16 MiB. ``ping_interval``: seconds between keepalive
    pings that drop dead clients (None: no pings).
    """

    def __init__(
        self,
        policy: Any,
        keymap: KeyMap | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        batch_window_ms: float = 2.0,
        max_batch: int = 16,
        fps: float | None = None,
        site: str = "",
        rtc_options: dict[str, Any] | None = None,
        max_frame_bytes: int | None = None,
        ping_interval: float | None = 20.0,
    ) -> None:
        if isinstance(policy, torch.nn.Module):
            policy.eval()  # training mode crops images at random
        self.policy = policy
        self.spec = spec_for_policy(policy, keymap, fps, site)
        self.metadata = self.spec.metadata()
        self.host = host
        self._port = port
        self._api_key = api_key or None
        self.batch_window_s = max(0.0, batch_window_ms) / 1000.0
        self.max_batch = max(1, int(max_batch))
        self.rtc_options = dict(rtc_options or {})
        self.max_frame_bytes = max_frame_bytes or max(_MIN_FRAME_BYTES, 4 * self.spec.max_request_bytes())
        self.ping_interval = ping_interval
        self._exec_start = int(policy.config.exec_start)
        self._metadata_frame = packb(self.metadata)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._connections = 0
        self._outstanding: set[asyncio.Future] = set()
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="robolearn-infer")
        self.calls = 0
        """Policy calls made so far (one per batch)."""

    # ----------------------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        """The port listened on (the real one once started with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """``ws://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    def start(self) -> PolicyServer:
        """Listen in a background thread; returns once the socket is bound (raises if it cannot be)."""
        if self._thread is not None:
            raise RuntimeError("PolicyServer.start: already started")
        self._thread = threading.Thread(target=self._run, name="robolearn-serve", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error
        return self

    def warm_up(self) -> dict[str, float]:
        """Call the policy once on a blank observation window (and once more through RTC guidance
        when the policy supports it), on the worker thread the requests use, so the first client's
        request does not pay torch's first-call costs. Returns the milliseconds of each call
        (``predict``, ``rtc``); raises RuntimeError when a call fails. :attr:`calls` does not count them.

        Measured on this 2-core machine: the first RTC request of a fresh server took 0.55 s under
        load, against 11 ms for the later ones; over the run client's 1 s limit it is a fault.
        """
        spec = self.spec
        prompt = "" if spec.prompt_key else None
        windows = {
            f.feature: np.zeros((spec.n_obs_steps, *f.shape), np.uint8 if f.is_image else np.float32)
            for f in spec.features
        }
        requests = [Request(windows, prompt=prompt)]
        if spec.supports_rtc:
            prev = np.zeros((spec.n_action_steps, spec.action_dim), np.float32)
            requests.append(Request(windows, prompt=prompt, inference_delay=1, prev_actions=prev, rtc=True))
        took: dict[str, float] = {}
        calls = self.calls
        for request in requests:
            start = time.perf_counter()
            result = self._worker.submit(self._infer, [request]).result()[0]
            name = "rtc" if request.rtc else "predict"
            if isinstance(result, str):
                raise RuntimeError(f"warm-up ({name} on a blank observation window): {result}")
            took[name] = (time.perf_counter() - start) * 1e3
        self.calls = calls
        return took

    def stop(self) -> None:
        """Close every connection, stop listening and join the threads (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive() and self._stop is not None:
            loop.call_soon_threadsafe(self._stop.set)
            thread.join(timeout=30)
        self._worker.shutdown(wait=True, cancel_futures=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (or ``timeout`` seconds pass); True when it has stopped."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001  (reported to start() or logged)
            if not self._ready.is_set():
                self._startup_error = exc
            else:
                log.exception("policy server stopped on an error")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._queue = asyncio.Queue()
        async with serve(
            self._handle,
            self.host,
            self._port,
            process_request=self._process_request,
            compression=None,
            max_size=self.max_frame_bytes,
            ping_interval=self.ping_interval,
        ) as server:
            self._port = server.sockets[0].getsockname()[1]
            batcher = asyncio.create_task(self._batcher())
            self._ready.set()
            await self._stop.wait()
            batcher.cancel()
            for future in self._outstanding:  # handlers waiting on a reply must finish for the close
                if not future.done():
                    future.set_result("robolearn serve: the server is stopping")
            server.close()
            await server.wait_closed()

    # ----------------------------------------------------------------------------- HTTP side
    def _process_request(self, connection: ServerConnection, request: HttpRequest) -> Response | None:
        if request.path.split("?")[0] == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if self._api_key is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self._api_key}".encode()):
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
        return None

    # ----------------------------------------------------------------------------- connections
    async def _handle(self, ws: ServerConnection) -> None:
        self._connections += 1
        log.info("connection from %s opened", ws.remote_address)
        prev_total_ms: float | None = None
        try:
            await ws.send(self._metadata_frame)
            async for message in ws:
                received = time.perf_counter()
                try:
                    request = parse_request(unpackb(message), self.spec)  # a text frame is a WireError
                except (WireError, ProtocolError) as exc:
                    await ws.send(f"robolearn serve: bad request: {exc}")
                    continue
                except Exception as exc:  # a validator bug must cost one reply, not the connection
                    log.exception("validating a request failed")
                    await ws.send(
                        f"robolearn serve: bad request: cannot validate it: {type(exc).__name__}: {exc}"
                    )
                    continue
                pending = _Pending(request, self._loop.create_future(), received, time.perf_counter())
                self._queue.put_nowait(pending)
                self._outstanding.add(pending.future)
                try:
                    reply = await pending.future
                finally:
                    self._outstanding.discard(pending.future)
                if isinstance(reply, str):
                    await ws.send(reply)
                    continue
                timing = reply["server_timing"]
                timing["decode_ms"] = (pending.validated - received) * 1e3
                if prev_total_ms is not None:
                    timing["prev_total_ms"] = prev_total_ms
                timing["server_ms"] = (time.perf_counter() - received) * 1e3
                await ws.send(packb(reply))
                prev_total_ms = (time.perf_counter() - received) * 1e3
        except ConnectionClosed:
            pass
        finally:
            self._connections -= 1
            log.info("connection from %s closed", ws.remote_address)

    # ----------------------------------------------------------------------------- batching
    async def _batcher(self) -> None:
        """Collect requests into batches forever (cancelled by stop)."""
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            items = [await queue.get()]
            deadline = loop.time() + self.batch_window_s
            while len(items) < self.max_batch:
                if not queue.empty():
                    items.append(queue.get_nowait())
                    continue
                # Each connection has at most one request in flight: when all are here, waiting is useless.
                timeout = deadline - loop.time()
                if len(items) >= self._connections or timeout <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(queue.get(), timeout))
                except TimeoutError:
                    break
            groups: dict[tuple, list[_Pending]] = {}
            for item in items:
                if not item.future.done():
                    groups.setdefault(item.request.signature(), []).append(item)
            for group in groups.values():
                await self._serve_group(group)

    async def _serve_group(self, group: list[_Pending]) -> None:
        """Run one policy call for ``group`` off the loop and resolve each request's future."""
        start = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._worker, self._infer, [p.request for p in group]
            )
        except Exception as exc:  # noqa: BLE001  (the executor itself failed, e.g. while shutting down)
            results = [f"robolearn serve: policy call failed: {type(exc).__name__}: {exc}"] * len(group)
        for pending, result in zip(group, results, strict=True):
            if isinstance(result, str):
                out: dict | str = result
            else:
                actions, infer_ms = result
                timing = {
                    "queue_ms": (start - pending.validated) * 1e3,
                    "infer_ms": infer_ms,
                    "batch_size": float(len(group)),
                }
                out = make_reply(actions, pending.request, timing)
            if not pending.future.done():
                pending.future.set_result(out)

    def _batch(self, requests: Sequence[Request]) -> dict[str, Any]:
        """Stack the requests' windows into the policy's batch: (B, To, ...) tensors, images (B, To, 3, H, W)."""
        device = getattr(self.policy, "device", torch.device("cpu"))
        batch: dict[str, Any] = {}
        for feature in requests[0].windows:
            x = torch.from_numpy(np.stack([r.windows[feature] for r in requests]))
            if x.dtype == torch.uint8:  # wire images are (H, W, 3); policies take (3, H, W)
                x = x.permute(0, 1, 4, 2, 3)
            batch[feature] = x.to(device)
        prompts = [r.prompt for r in requests]
        if any(p is not None for p in prompts):
            batch[TASK] = [p or "" for p in prompts]
        return batch

    def _infer(self, requests: Sequence[Request]) -> list[tuple[np.ndarray, float] | str]:
        """One policy call for ``requests`` (worker thread): per request (actions (H, Da), infer_ms) or an error."""
        try:
            batch = self._batch(requests)
            start = time.perf_counter()
            if requests[0].rtc:
                from robolearn.policies.flow.rtc import guided_chunk

                chunk = guided_chunk(
                    self.policy,
                    batch,
                    [r.prev_actions for r in requests],
                    [r.inference_delay for r in requests],
                    **self.rtc_options,
                )
            else:
                chunk = self.policy.predict_action_chunk(batch)
            actions = chunk.detach().float().cpu().numpy()
            infer_ms = (time.perf_counter() - start) * 1e3
            self.calls += 1
        except Exception as exc:  # one failed call answers its own requests; the server keeps serving
            log.exception("policy call failed")
            return [f"robolearn serve: policy call failed: {type(exc).__name__}: {exc}"[:2000]] * len(
                requests
            )
        expected = (len(requests), self.spec.action_horizon + self._exec_start, self.spec.action_dim)
        if actions.shape != expected:
            return [
                f"robolearn serve: the policy returned shape {list(actions.shape)}, expected {list(expected)}"
            ] * len(requests)
        return [(a[self._exec_start :], infer_ms) for a in actions]
