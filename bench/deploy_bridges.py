"""``robolearn bench deploy``, the bridges part: per-backend latency, the watchdog, fuzzed limits.

- **latency**, per backend (zmq, zenoh, ros1 against a rosmaster started here), over loopback: a
  publisher *process* (the robot side) sends ``JointState`` (9 joints) at 100 Hz and a 224x224 rgb8
  ``Image`` at 30 Hz at the same time; this process subscribes (queue of 1, as a control loop does)
  and measures each message's one-way latency, receipt minus the source stamp (both ``time.time()``
  on this machine): p50 / p99 / max, and each backend's p99 against ROS 1's (the standard peer).
  Goal: ROS 1 JointState p99 <= 2 ms.
- **watchdog**, per backend: ``robolearn sim-robot`` behind the bridge, commands at 20 Hz for 1 s,
  then none; the time from the last command to the tick at which the twin holds (its
  ``hold_after_s``), in control periods (goal <= 2).
- **fuzzed limits**: 10,000 policy outputs (NaN, inf, huge values, random) through the twin's command
  path and safety filter into the sim; how many targets broke a limit (goal 0) and outputs/s.

Run: ``robolearn bench deploy [--quick]`` (this part: ``python bench/deploy_bridges.py [--quick]``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BACKENDS = ("zmq", "zenoh", "ros1")
ROOT = Path(__file__).resolve().parents[1]


def _pcts(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    if not len(a):
        return {"n": 0}
    return {"n": int(len(a)), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}  # fmt: skip


def _free_port(span: int = 3) -> int:
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ok = True
        for i in range(1, span):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + i))
                except OSError:
                    ok = False
        if ok:
            return port


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def _rosmaster() -> tuple[subprocess.Popen, int]:
    import rosgraph

    port = _free_port(1)
    env = {**os.environ, "ROS_IP": "127.0.0.1", "ROS_MASTER_URI": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen(["/usr/bin/rosmaster", "--core", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while not rosgraph.is_master_online(f"http://127.0.0.1:{port}"):
        if time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError("rosmaster did not come up")
        time.sleep(0.1)
    return proc, port


# ---------------------------------------------------------------------------------------- latency
def publish(kind: str, port: int, seconds: float) -> None:
    """The robot side of the latency figure (run in its own process): JointState at 100 Hz and a
    224x224 image at 30 Hz on one absolute-deadline loop at 300 Hz."""
    from robolearn.deploy.loop import RateLoop, realtime_priority
    from robolearn.deploy.topics import Header, Image, JointState, make_backend

    bus = make_backend(kind, role="robot", port=port, node_name="bench_publisher")
    img = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    names = [f"fr3_joint{i}" for i in range(1, 10)]
    loop = RateLoop(300.0)
    loop.start()
    end = time.monotonic() + seconds
    k = 0
    with realtime_priority(50):
        while time.monotonic() < end:
            loop.wait()
            if k % 3 == 0:
                q = np.full(9, k / 300.0)
                bus.publish("/bench/joint_states", JointState(Header(time.time()), names, q, q, q))
            if k % 10 == 0:
                bus.publish("/bench/image", Image.from_array(img, Header(time.time())))
            k += 1
    bus.close()


def bench_latency(kind: str, port: int, seconds: float, warmup: float = 1.0) -> dict:
    """One backend's JointState and Image latency (the publisher in a subprocess); ``port``: the
    rosmaster's for ros1 (rospy ties this process to one master), else a free one."""
    from robolearn.deploy.loop import realtime_priority
    from robolearn.deploy.topics import Image, JointState, make_backend

    pub = None
    try:
        pub = subprocess.Popen([sys.executable, __file__, "publish", kind, str(port), str(seconds + warmup + 1)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        bus = make_backend(kind, role="client", port=port, node_name="bench_subscriber")
        lat: dict[str, list[float]] = {"joint_states": [], "image": []}
        subs = {"joint_states": bus.subscribe("/bench/joint_states", JointState, 1),
                "image": bus.subscribe("/bench/image", Image, 1)}  # fmt: skip
        start = time.monotonic()
        while subs["joint_states"].received == 0 and time.monotonic() - start < 30:
            time.sleep(0.01)
        t0 = time.monotonic()
        # Both sides under SCHED_FIFO where the OS allows it, as a robot stack runs (the twin does).
        with realtime_priority(50) as realtime:
            while time.monotonic() - t0 < seconds + warmup and pub.poll() is None:
                for name, sub in subs.items():
                    env = sub.get(timeout=0.0)
                    if env is not None and time.monotonic() - t0 > warmup:
                        lat[name].append(1e3 * (env.receive_time - env.source_time))
                time.sleep(0.0005)
        dropped = {n: s.dropped + s.lost for n, s in subs.items()}
        bus.close()
    finally:
        _stop(pub)
    return {"joint_states": _pcts(lat["joint_states"]), "image": _pcts(lat["image"]), "shed": dropped,
            "realtime": realtime}  # fmt: skip


# ---------------------------------------------------------------------------------------- watchdog
def bench_watchdog(kind: str, port: int, trials: int) -> dict:
    """Last command -> the twin's hold, over ``trials`` command bursts, in seconds and periods."""
    from robolearn.deploy.bridge_robot import BridgeRobot

    twin = None
    holds: list[float] = []
    try:
        twin = subprocess.Popen([sys.executable, "-m", "robolearn.cli", "sim-robot", "--bridge", kind, "--port",
                                 str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        while "ready" not in (line := twin.stdout.readline()):
            if not line:
                raise RuntimeError("sim-robot did not start")
        with BridgeRobot(kind, port=port, timeout=30) as robot:
            robot.reset(0)
            period = 1.0 / robot.control_hz
            for _ in range(trials):
                for _ in range(int(robot.control_hz)):
                    robot.get_observation()
                    robot.send_action(np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0], np.float32))
                    time.sleep(period)
                sent = time.time()
                time.sleep(0.3)
                sub = robot._subs["status"]
                while (env := sub.get(timeout=2.0)) is not None and env.source_time < sent + 0.2:
                    pass
                status = json.loads(env.msg.data) if env is not None else {}
                if status.get("state") == "hold" and status.get("hold_after_s") is not None:
                    holds.append(float(status["hold_after_s"]))
    finally:
        _stop(twin)
    arr = np.asarray(holds)
    return {"trials": trials, "held": len(holds), "period_s": period,
            "hold_after_p50_periods": float(np.median(arr) / period) if len(arr) else float("nan"),
            "hold_after_max_periods": float(arr.max() / period) if len(arr) else float("nan"), "goal": "<= 2"}  # fmt: skip


# ---------------------------------------------------------------------------------------- fuzz
def bench_fuzz(n: int = 10_000, seed: int = 0) -> dict:
    """``n`` hostile policy outputs through the twin (no network): limit violations and outputs/s."""
    from robolearn.deploy.cell import load_cell
    from robolearn.deploy.safety import forward_kinematics
    from robolearn.deploy.sim_twin import SimTwin

    rng = np.random.default_rng(seed)
    twin = SimTwin(None, "franka-lift", safety=load_cell().safety)
    filt = twin.filter
    low, high = filt.lim["workspace"]
    specials = np.array([np.nan, np.inf, -np.inf, 1e308, -1e308, 1e6, -1e6])
    bad = 0
    start = time.perf_counter()
    prev = twin.tick(now=0.0)
    for i in range(n):
        if i % 200 == 0:
            twin.reset(int(rng.integers(0, 1000)))
            prev = twin.tick(now=0.05 * i)
        mode = "ee_delta" if i % 2 else "joint_position"
        out = rng.normal(0.0, 3.0, 7 if mode == "ee_delta" else 8)
        mask = rng.random(out.shape) < 0.2
        out[mask] = rng.choice(specials, int(mask.sum()))
        twin.command(mode, out, now=0.05 * (i + 1))
        target = twin.tick(now=0.05 * (i + 1))
        p, _ = forward_kinematics(filt.hardware, target[:7])
        if filt.violations(target, prev) or (p < low - 1e-6).any() or (p > high + 1e-6).any():
            bad += 1
        prev = target
    elapsed = time.perf_counter() - start
    twin.close()
    return {
        "outputs": n,
        "violations": bad,
        "outputs_per_s": n / elapsed,
        "counts": dict(filt.counts),
        "goal": 0,
    }


# ---------------------------------------------------------------------------------------- report
def _measure(kind: str, ports: tuple[int, int], quick: bool) -> tuple[dict, dict]:
    return (bench_latency(kind, ports[0], seconds=1.5 if quick else 10.0),
            bench_watchdog(kind, ports[1], trials=1 if quick else 5))  # fmt: skip


def _measure_in_child(kind: str, ports: tuple[int, int], quick: bool) -> tuple[dict, dict]:
    """:func:`_measure` in a fresh interpreter, so that this process never holds a rospy node (it could
    not follow a later rosmaster: a second bench run, or a caller with its own master, would hang)."""
    args = [sys.executable, __file__, "measure", kind, str(ports[0]), str(ports[1]), "1" if quick else "0"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        if "ModuleNotFoundError" in last:
            raise ModuleNotFoundError(
                last.split(": ", 1)[-1], name=last.split("'")[1] if "'" in last else None
            )
        raise RuntimeError(f"bridge {kind}: measuring process failed: {last}")
    lat, dog = json.loads(res.stdout.strip().splitlines()[-1])
    return lat, dog


def run_bridges(quick: bool = False) -> dict:
    """Every figure of the module docstring (``quick``: shorter runs)."""
    out: dict = {"latency": {}, "watchdog": {}, "skipped": {}}
    master = None
    try:
        for kind in BACKENDS:
            try:
                if kind == "ros1":
                    master, port = _rosmaster()
                    ports = (port, port)
                else:
                    ports = (_free_port(), _free_port())
                if kind == "ros1":  # rospy binds a process to one master for good: measure in a child
                    lat, dog = _measure_in_child(kind, ports, quick)
                else:
                    lat, dog = _measure(kind, ports, quick)
                out["latency"][kind], out["watchdog"][kind] = lat, dog
            except ModuleNotFoundError as exc:
                from robolearn.extras import missing_module_message

                out["skipped"][kind] = missing_module_message(exc) or str(exc)
    finally:
        _stop(master)
    ros = out["latency"].get("ros1")
    if ros:
        for fig in out["latency"].values():
            fig["p99_vs_ros1"] = {n: fig[n]["p99_ms"] / ros[n]["p99_ms"] for n in ("joint_states", "image")
                                  if fig[n].get("n") and ros[n].get("n")}  # fmt: skip
        out["ros1_goal"] = {"joint_states_p99_ms": ros["joint_states"].get("p99_ms"), "goal": "<= 2 ms"}
    out["fuzz"] = bench_fuzz(500 if quick else 10_000)
    return out


def print_bridges(r: dict) -> None:
    """The figures as lines of ``robolearn bench deploy``'s report."""
    for kind, why in r["skipped"].items():
        print(f"  bridge {kind}: skipped: {why}")
    for kind, fig in r["latency"].items():
        for name, label in (("joint_states", "JointState 100 Hz"), ("image", "Image 224x224 30 Hz")):
            f = fig[name]
            if not f.get("n"):
                print(f"  bridge {kind:<5} {label:<20} no messages")
                continue
            ratio = fig.get("p99_vs_ros1", {}).get(name)
            vs = f"  p99 {ratio:.2f}x ROS 1" if ratio is not None and kind != "ros1" else ""
            print(f"  bridge {kind:<5} {label:<20} p50 {f['p50_ms']:6.3f} ms  p99 {f['p99_ms']:6.3f} ms  "
                  f"max {f['max_ms']:7.3f} ms  ({f['n']} msgs{', SCHED_FIFO' if fig.get('realtime') else ''}){vs}")  # fmt: skip
    if r.get("ros1_goal", {}).get("joint_states_p99_ms") is not None:
        print(f"    -> ROS 1 JointState p99 {r['ros1_goal']['joint_states_p99_ms']:.3f} ms (goal <= 2 ms)")
    for kind, w in r["watchdog"].items():
        print(f"  watchdog {kind:<5} held {w['held']}/{w['trials']}: last command -> hold p50 "
              f"{w['hold_after_p50_periods']:.2f} max {w['hold_after_max_periods']:.2f} control periods (goal <= 2)")  # fmt: skip
    fz = r["fuzz"]
    print(f"  fuzzed limits: {fz['outputs']} outputs (NaN, inf, huge) through the twin -> {fz['violations']} "
          f"limit violations (goal 0), {fz['outputs_per_s']:.0f} outputs/s; filter {fz['counts']}")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        publish(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "measure":
        figures = _measure(sys.argv[2], (int(sys.argv[3]), int(sys.argv[4])), sys.argv[5] == "1")
        print(json.dumps(figures), flush=True)
    else:
        report = run_bridges(quick="--quick" in sys.argv)
        print_bridges(report)
