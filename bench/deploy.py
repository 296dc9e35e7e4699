"""``robolearn bench deploy``: the policy server's wire, the control loop, RTC and async chunking, a soak.

Figures, each with its peer measured in the same run:

- **round trip**: an openpi-style observation (two 224x224x3 uint8 images and an 8-D state) sent to
  :class:`robolearn.deploy.server.PolicyServer` over loopback, a 50x8 float32 chunk back, from a
  policy that takes no time (so the figure excludes model time: wire, validation, batching, the
  server's conversions). The peer is a plain ``websockets`` server that answers each frame with
  the same reply bytes without decoding anything (the raw transport), and a literal echo of the
  request bytes. Both are driven by the same client (``websockets.sync``, no compression, as
  openpi's client), in paired rounds that alternate which goes first; ratio of p50 and p99
  (goal <= 1.5x raw, p99 <= 10 ms).
- **control loop at 100 Hz**: :class:`robolearn.deploy.loop.RateLoop` (absolute deadlines, sleep
  then spin) running a chunk-queue tick, jitter p50/p99/max of the period error (goal p99 <= 2 ms),
  against the usual ``time.sleep(period - elapsed)`` loop, in alternating halves.
- **RTC and async** (``bench/deploy_modes.py``): the sim robot in real time, the server in this
  process with an injected server-side sleep of 0, 100 and 300 ms per request, a trained
  franka-lift state flow checkpoint (``--checkpoint``; default ``/work/measure/run_flow`` when it
  exists): success and time to first success for synchronous chunking, async latest-only, and RTC.
- **bridges** (``bench/deploy_bridges.py``): per backend (ZeroMQ, Zenoh, ROS 1) JointState at 100 Hz
  and a 224x224 image at 30 Hz over loopback, p50/p99 (goal ROS 1 JointState p99 <= 2 ms); the
  twin's watchdog hold after the last command (goal <= 2 control periods); 10,000 fuzzed policy
  outputs through the twin's safety layer (goal 0 limit violations).
- **soak** (only with ``--soak-minutes M``): ``robolearn serve`` in a subprocess, one client at
  30 Hz for M minutes; the server's RSS growth after warm-up (goal < 10%) and the latency spread.

All torch work runs with ``torch.set_num_threads(1)``. The machine's load average is recorded:
the loop and round-trip figures are sensitive to other processes. Run: ``robolearn bench deploy
[--quick] [--json OUT] [--checkpoint RUN] [--episodes N] [--soak-minutes M]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CHECKPOINT = Path("/work/measure/run_flow")
IMAGE_HW, STATE_DIM, CHUNK, ACTION_DIM = 224, 8, 50, 8
THREADS = "torch.set_num_threads(1)"


def _pcts(ms: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    if not len(a):
        return {"n": 0}
    return {"n": int(len(a)), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}  # fmt: skip


def _missing(exc: ModuleNotFoundError) -> str:
    from robolearn.extras import missing_module_message

    return (
        missing_module_message(exc)
        or f"no module {exc.name!r}: reinstall robolearn's core dependencies (pip install -e .)"
    )


# ---------------------------------------------------------------------------------------- round trip
def _zero_time_policy():
    """A flow policy whose ``predict_action_chunk`` returns zeros at once: the server's work around
    the model (decode, validate, convert, batch, encode) is all that is timed."""
    import torch

    import robolearn.policies  # noqa: F401
    from robolearn.policies.common.config import DenoiserConfig, ImageEncoderConfig, ObsEncoderConfig
    from robolearn.registry import POLICIES
    from robolearn.types import ACTION, OBS_STATE, FeatureSpec, image_key

    feats = {OBS_STATE: FeatureSpec("float32", (STATE_DIM,)), ACTION: FeatureSpec("float32", (ACTION_DIM,))}
    for cam in ("front", "wrist"):
        feats[image_key(cam)] = FeatureSpec("video", (IMAGE_HW, IMAGE_HW, 3))
    cfg = POLICIES.get("flow").default_config(
        horizon=CHUNK, n_obs_steps=1, n_action_steps=CHUNK, num_inference_steps=1,
        denoiser=DenoiserConfig(kind="mlp", mlp_dims=(8,)),
        obs_encoder=ObsEncoderConfig(image=ImageEncoderConfig(backbone="resnet_tiny", feature_dim=8, num_keypoints=4)),
    )  # fmt: skip
    policy = POLICIES.build("flow", cfg, features=feats, stats=None, load_pretrained=False).eval()

    def zero_chunk(obs, noise=None, num_samples=None, **kwargs):
        b = next(iter(obs.values())).shape[0]
        return torch.zeros(b, CHUNK, ACTION_DIM)

    policy.predict_action_chunk = zero_chunk  # the instance attribute shadows the method
    return policy


def _roundtrip_obs(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    img = lambda: rng.integers(0, 256, (IMAGE_HW, IMAGE_HW, 3), dtype=np.uint8)  # noqa: E731
    return {"observation/image": img(), "observation/wrist_image": img(),
            "observation/state": rng.standard_normal(STATE_DIM).astype(np.float32), "prompt": "lift the cube"}  # fmt: skip


class _RawPeer:
    """A plain websockets server in a thread: metadata frame, then each frame answered with fixed
    bytes (``reply``) or echoed back (``reply=None``)."""

    def __init__(self, metadata: bytes, reply: bytes | None):
        self.metadata, self.reply = metadata, reply
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._stop: asyncio.Future | None = None

    async def _handler(self, ws) -> None:
        await ws.send(self.metadata)
        async for msg in ws:
            await ws.send(msg if self.reply is None else self.reply)

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with serve(self._handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop

    def start(self) -> _RawPeer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)


def _timed_requests(ws, make_frame, n: int, decode) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        ws.send(make_frame())
        decode(ws.recv())
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def bench_roundtrip(rounds: int = 20, per_round: int = 50, warmup: int = 20) -> dict:
    """Paired rounds: robolearn's server vs the raw-reply and echo peers, same client, same bytes."""
    import torch
    from websockets.sync.client import connect

    from robolearn.deploy import wire
    from robolearn.deploy.keymap import KeyMap
    from robolearn.deploy.server import PolicyServer

    torch.set_num_threads(1)
    obs = _roundtrip_obs()
    request = wire.packb(obs)
    with contextlib.ExitStack() as stack:
        server = PolicyServer(_zero_time_policy(), KeyMap()).start()
        stack.callback(server.stop)
        ws = stack.enter_context(connect(server.url, compression=None, max_size=None))
        metadata = ws.recv()
        ws.send(request)
        reply_bytes = ws.recv()
        if isinstance(reply_bytes, str):
            raise RuntimeError(f"the server refused the benchmark's observation: {reply_bytes}")
        shape = tuple(wire.unpackb(reply_bytes)["actions"].shape)
        cases = {"robolearn": (ws, lambda: wire.packb(obs), wire.unpackb)}
        for name, answer in (("raw", reply_bytes), ("echo", None)):
            peer = _RawPeer(metadata, answer).start()
            stack.callback(peer.stop)
            conn = stack.enter_context(
                connect(f"ws://127.0.0.1:{peer.port}", compression=None, max_size=None)
            )
            conn.recv()
            cases[name] = (conn, lambda: request, lambda b: b)
        for conn, make, dec in cases.values():
            _timed_requests(conn, make, warmup, dec)
        times: dict[str, list[float]] = {k: [] for k in cases}
        order = list(cases)
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                conn, make, dec = cases[name]
                times[name] += _timed_requests(conn, make, per_round, dec)
        ws.send(request)
        timing = wire.unpackb(ws.recv()).get("server_timing", {})
    codec = []
    for _ in range(max(10, rounds)):
        t0 = time.perf_counter()
        wire.unpackb(reply_bytes), wire.packb(obs)
        codec.append((time.perf_counter() - t0) * 1e3)
    out = {k: _pcts(v) for k, v in times.items()}
    ours, raw = out["robolearn"], out["raw"]
    out.update(
        request_bytes=len(request), reply_bytes=len(reply_bytes), reply_shape=list(shape), server_timing=timing,
        client_codec_p50_ms=float(np.median(codec)),
        ratio_p50=ours["p50_ms"] / raw["p50_ms"], ratio_p99=ours["p99_ms"] / raw["p99_ms"],
        echo_ratio_p50=ours["p50_ms"] / out["echo"]["p50_ms"], echo_ratio_p99=ours["p99_ms"] / out["echo"]["p99_ms"],
        goal="robolearn <= 1.5x a raw echo of the same bytes, p99 <= 10 ms",
    )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------- control loop
def bench_loop(hz: float = 100.0, seconds: float = 10.0, halves: int = 4) -> dict:
    """RateLoop (D2's control loop) vs a relative-sleep loop, each running a chunk-queue tick, in
    ``halves`` alternating runs sharing ``seconds`` per loop; percentiles over the pooled ticks."""
    from robolearn.deploy.chunks import ChunkQueue
    from robolearn.deploy.loop import RateLoop, jitter_samples, summarize_jitter

    queue = ChunkQueue(n_action_steps=8)
    chunk = np.zeros((16, 7), np.float32)
    sink = np.zeros(7, np.float32)

    def body(_tick: int) -> None:
        if queue.needs_refill():
            queue.request()
            queue.receive(chunk)
        a = queue.pop()
        if a is not None:
            sink[:] = a

    def sleep_loop(ticks: int) -> tuple[np.ndarray, np.ndarray]:
        period, wake, due = 1.0 / hz, [], []
        start = last = time.monotonic()
        for k in range(ticks):
            time.sleep(max(0.0, period - (time.monotonic() - last)))
            last = time.monotonic()
            wake.append(last)
            due.append(start + (k + 1) * period)
            body(k)
        return jitter_samples(wake, due)

    ticks = max(2, int(hz * seconds / halves))
    ours: list[tuple[np.ndarray, np.ndarray]] = []
    theirs: list[tuple[np.ndarray, np.ndarray]] = []
    missed = 0
    for _ in range(halves):
        loop = RateLoop(hz)
        loop.run(body, ticks=ticks)
        ours.append(loop.samples())
        missed += loop.missed
        theirs.append(sleep_loop(ticks))

    def pooled(samples: list[tuple[np.ndarray, np.ndarray]], missed: int) -> dict:
        late, period = (np.concatenate([s[i] for s in samples]) for i in (0, 1))
        return summarize_jitter(late, period, hz, missed).to_json()

    out = {
        "hz": hz,
        "robolearn": pooled(ours, missed),
        "sleep_loop": pooled(theirs, 0),
        "goal": "period p99 <= 2 ms",
    }
    out["ratio_p99"] = out["robolearn"]["period_p99_ms"] / max(out["sleep_loop"]["period_p99_ms"], 1e-9)
    out["note"] = (
        "the sleep loop has no deadlines: its lateness drifts by design, its period error is the figure"
    )
    return out


# ---------------------------------------------------------------------------------------- soak
def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(proc: subprocess.Popen, port: int, log, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.seek(0)
            raise RuntimeError(f"robolearn serve did not start: {log.read().decode(errors='replace')[-400:]}")
        time.sleep(0.2)


def bench_soak(checkpoint: Path, minutes: float, hz: float = 30.0) -> dict:
    """``robolearn serve`` in a subprocess, one client at ``hz`` for ``minutes``; server RSS growth from
    the end of warm-up (the first tenth, at least 10 s) to the end."""
    from websockets.sync.client import connect

    from robolearn.deploy import wire

    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "robolearn.cli",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--port",
        str(port),
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        _wait_listening(proc, port, log)
        with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
            meta = wire.unpackb(ws.recv())
            rng = np.random.default_rng(0)
            frame = {k: (rng.integers(0, 256, f["shape"], dtype=np.uint8) if f["dtype"] == "uint8"
                         else rng.standard_normal(f["shape"]).astype(np.float32)) for k, f in meta["features"].items()}  # fmt: skip
            total, warm = minutes * 60.0, max(10.0, minutes * 6.0)
            lat, rss, errors = [], [], 0
            rtc, prev = bool(meta.get("supports_rtc")), None
            start = time.monotonic()
            next_t, next_rss, k = start, start, 0
            while (now := time.monotonic()) - start < total:
                if now >= next_rss:
                    rss.append((now - start, _rss_kb(proc.pid)))
                    next_rss += 5.0
                msg = {**frame, "seq": k}
                if rtc and prev is not None:  # every other request guided: both paths soak
                    msg.update(rtc=True, prev_actions=prev, inference_delay=min(2, len(prev)))
                t0 = time.perf_counter()
                ws.send(wire.packb(msg))
                reply = ws.recv()
                lat.append((time.perf_counter() - t0) * 1e3)
                errors += isinstance(reply, str)
                prev = (
                    None if isinstance(reply, str) or prev is not None else wire.unpackb(reply)["actions"][4:]
                )
                k += 1
                next_t += 1.0 / hz
                time.sleep(max(0.0, next_t - time.monotonic()))
            rss.append((time.monotonic() - start, _rss_kb(proc.pid)))
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    base = next(kb for t, kb in rss if t >= warm) if any(t >= warm for t, _ in rss) else rss[0][1]
    growth = (rss[-1][1] - base) / base
    return {"minutes": minutes, "hz": hz, "requests": k, "error_replies": errors, "latency": _pcts(lat),
            "rss_warm_mb": base / 1024, "rss_end_mb": rss[-1][1] / 1024, "rss_peak_mb": max(kb for _, kb in rss) / 1024,
            "rss_growth": growth, "goal": "growth < 10%", "checkpoint": str(checkpoint),
            "rtc_every_other_request": rtc}  # fmt: skip


# ---------------------------------------------------------------------------------------- report
def run(
    json_out: str | None = None,
    quick: bool = False,
    checkpoint: str | None = None,
    episodes: int | None = None,
    delays_ms: tuple[float, ...] | None = None,
    soak_minutes: float = 0.0,
    seconds: float | None = None,
) -> dict:
    """Measure the figures in the module docstring; print them; optionally write JSON."""
    if checkpoint and not (Path(checkpoint) / "config.json").is_file():
        from robolearn.errors import UserError

        raise UserError(f"--checkpoint {checkpoint}: no config.json there (expected a training run's folder)")
    report: dict[str, Any] = {"threads": THREADS, "load_avg": list(os.getloadavg()), "cpus": os.cpu_count(),
                              "quick": quick, "skipped": {}}  # fmt: skip
    try:
        import websockets  # noqa: F401

        from robolearn.deploy import server  # noqa: F401
    except ModuleNotFoundError as exc:
        report["skipped"]["all"] = _missing(exc)
        _finish(report, json_out)
        return report
    report["roundtrip"] = bench_roundtrip(
        rounds=4 if quick else 20, per_round=10 if quick else 50, warmup=3 if quick else 20
    )
    report["loop"] = bench_loop(seconds=seconds or (1.0 if quick else 10.0))
    ckpt = Path(checkpoint) if checkpoint else (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_dir() else None)
    if ckpt is None:
        report["skipped"]["modes"] = (
            f"no checkpoint: pass --checkpoint RUN (a franka-lift state flow run; {DEFAULT_CHECKPOINT} is absent)"
        )
    else:
        from robolearn.commands.bench import load_bench

        modes = load_bench("deploy_modes")
        report["modes"] = modes.bench_modes(
            ckpt, episodes=episodes or (1 if quick else 10),
            delays_ms=delays_ms or ((0.0, 300.0) if quick else (0.0, 100.0, 300.0)), quick=quick,
        )  # fmt: skip
    from robolearn.commands.bench import load_bench as _load

    report["bridges"] = _load("deploy_bridges").run_bridges(quick=quick)  # bench/deploy_bridges.py
    if soak_minutes > 0:
        report["soak"] = bench_soak(ckpt, soak_minutes) if ckpt else None
        if ckpt is None:
            report["skipped"]["soak"] = report["skipped"]["modes"]
    report["load_avg_end"] = list(os.getloadavg())
    _finish(report, json_out)
    return report


def _finish(report: dict, json_out: str | None) -> None:
    _print(report)
    if json_out:
        path = Path(json_out)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str))
        tmp.replace(path)


def _print(r: dict) -> None:
    la = r["load_avg"]
    print(
        f"robolearn bench deploy  ({r['threads']}, {r['cpus']} CPUs, load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f})"
    )
    for what, why in r["skipped"].items():
        print(f"  {what}: skipped: {why}")
    if r.get("roundtrip"):
        rt = r["roundtrip"]
        print(f"  round trip  {rt['request_bytes'] / 1e3:.0f} KB obs -> {rt['reply_shape'][0]}x{rt['reply_shape'][1]} chunk "
              f"({rt['reply_bytes']} B), loopback, zero-time policy, {rt['robolearn']['n']} paired requests")  # fmt: skip
        for name, label in (("robolearn", "robolearn server"), ("raw", "raw websocket, same reply bytes"),
                            ("echo", "raw websocket echo of the request")):  # fmt: skip
            f = rt[name]
            print(
                f"    {label:<34} p50 {f['p50_ms']:6.2f} ms  p99 {f['p99_ms']:6.2f} ms  max {f['max_ms']:6.2f} ms"
            )
        print(
            f"    -> robolearn / echo: p50 {rt['echo_ratio_p50']:.2f}x, p99 {rt['echo_ratio_p99']:.2f}x  "
            f"(goal {rt['goal']}); robolearn / same-reply peer (stricter: it sends no 301 KB back): "
            f"p50 {rt['ratio_p50']:.2f}x, p99 {rt['ratio_p99']:.2f}x"
        )
        print(
            f"    robolearn's own share: the client's pack + unpack {rt['client_codec_p50_ms']:.3f} ms, the server's frame in ->"
            f" reply packed {rt['server_timing'].get('server_ms', float('nan')):.3f} ms"
        )
    if r.get("loop"):
        lp = r["loop"]
        for name, label in (("robolearn", "RateLoop"), ("sleep_loop", "sleep(period - elapsed) loop")):
            f = lp[name]
            print(f"  loop {lp['hz']:.0f} Hz {label:<29} period error p50 {f['period_p50_ms']:.3f} p99 "
                  f"{f['period_p99_ms']:.3f} max {f['period_max_ms']:.3f} ms, missed {f['missed']}/{f['ticks']}")  # fmt: skip
        print(f"    -> p99 RateLoop / sleep loop: {lp['ratio_p99']:.2f}x  (goal {lp['goal']})")
    if r.get("modes"):
        from robolearn.commands.bench import load_bench

        load_bench("deploy_modes").print_modes(r["modes"])
    if r.get("bridges"):
        from robolearn.commands.bench import load_bench

        load_bench("deploy_bridges").print_bridges(r["bridges"])
    if r.get("soak"):
        s = r["soak"]
        print(f"  soak {s['minutes']:.1f} min at {s['hz']:.0f} Hz: {s['requests']} requests, {s['error_replies']} errors, "
              f"latency p50 {s['latency']['p50_ms']:.2f} p99 {s['latency']['p99_ms']:.2f} ms; server RSS "
              f"{s['rss_warm_mb']:.1f} -> {s['rss_end_mb']:.1f} MB ({100 * s['rss_growth']:+.1f}%, goal {s['goal']})")  # fmt: skip


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--checkpoint")
    p.add_argument("--episodes", type=int)
    p.add_argument("--soak-minutes", type=float, default=0.0)
    a = p.parse_args()
    run(a.json, a.quick, a.checkpoint, a.episodes, None, a.soak_minutes)
