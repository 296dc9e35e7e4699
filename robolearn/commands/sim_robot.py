"""``robolearn sim-robot``: the embedded sim in real time behind a bridge (the sim twin).

``robolearn sim-robot --task franka-lift --bridge ros1|zenoh|zmq`` serves the twin's topics
(:mod:`robolearn.deploy.sim_twin`): joint states and the TCP pose at ``--joint-state-hz`` (100),
camera images at the policy rate, end-effector or joint-position commands in, the cell's safety
layer (``--cell``, default ``deploy/cells/franka-sim.yaml``) as the last step before the sim. Drive
it with ``robolearn run --robot <same bridge>``. ROS 1 needs a running ``rosmaster --core -p PORT``
(``--start-rosmaster`` starts one as a child, stopped by its PID on exit). It prints one ``ready``
line when it serves; Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from robolearn.errors import UserError

HELP = "the embedded sim in real time behind a ROS 1, Zenoh or ZeroMQ bridge (the sim twin)"
BRIDGES = ("ros1", "zenoh", "zmq")
DEFAULT_PORTS = {"zmq": 5555, "zenoh": 7447, "ros1": 11311}
"""Default ports: zmq PUB (REQ +1, commands +2), zenoh listen, rosmaster."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="franka-lift", help="embedded Franka env to run (default franka-lift)")
    p.add_argument("--bridge", choices=BRIDGES, required=True, help="middleware to serve the topics on")
    p.add_argument("--cell", type=Path, help="cell config: safety limits, namespace (default deploy/cells/franka-sim.yaml)")  # fmt: skip
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind / of the rosmaster (default 127.0.0.1)"
    )
    p.add_argument(
        "--port", type=int, help="zmq 5555 (uses 3 ports), zenoh 7447, ros1: the rosmaster's 11311"
    )
    p.add_argument(
        "--start-rosmaster", action="store_true", help="ros1: start `rosmaster --core` on --port first"
    )
    p.add_argument("--cameras", default="", help="comma-separated cameras to publish (front, wrist)")
    p.add_argument(
        "--image-size", type=int, default=96, metavar="PX", help="square camera images (default 96)"
    )
    p.add_argument("--rate", type=float, help="policy rate in Hz (default: the task's, 20)")
    p.add_argument(
        "--joint-state-hz", type=float, help="physics and joint-state rate (default: the cell's, 100)"
    )
    p.add_argument("--hold-steps", type=int, default=20, metavar="N",
                   help="end an episode N policy steps after its first success, as eval does (default 20)")  # fmt: skip
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (default: run until stopped)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an env config field")  # fmt: skip


def _start_rosmaster(host: str, port: int) -> subprocess.Popen:
    """``rosmaster --core -p port`` with ``ROS_IP=host``; waits until it answers."""
    exe = "/usr/bin/rosmaster"
    if not os.path.exists(exe):
        raise UserError("--start-rosmaster: no /usr/bin/rosmaster (apt-get install python3-rosmaster)")
    env = {**os.environ, "ROS_IP": host, "ROS_MASTER_URI": f"http://{host}:{port}"}
    proc = subprocess.Popen([exe, "--core", "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    import rosgraph

    deadline = time.monotonic() + 15.0
    while not rosgraph.is_master_online(f"http://{host}:{port}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise UserError(f"--start-rosmaster: rosmaster on port {port} did not come up")
        time.sleep(0.1)
    return proc


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def run(args: argparse.Namespace) -> int:
    from robolearn.config import ConfigError
    from robolearn.deploy.cell import load_cell
    from robolearn.deploy.topics import BridgeError, make_backend

    try:
        cell = load_cell(args.cell)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if args.hold_steps < 0:
        raise UserError(f"--hold-steps must be >= 0, found {args.hold_steps}")
    if args.duration is not None and args.duration <= 0:
        raise UserError(f"--duration must be > 0, found {args.duration}")
    cams = tuple(c for c in args.cameras.split(",") if c)
    port = args.port or (
        cell.bridge.port if cell.bridge.backend == args.bridge else DEFAULT_PORTS[args.bridge]
    )
    master = _start_rosmaster(args.host, port) if args.start_rosmaster and args.bridge == "ros1" else None
    bus = twin = None
    stop = threading.Event()
    try:
        try:
            bus = make_backend(args.bridge, role="robot", host=args.host, port=port,
                               namespace=cell.bridge.namespace, node_name="robolearn_sim_robot")  # fmt: skip
        except BridgeError as exc:
            raise UserError(f"--bridge {args.bridge}: {exc}") from None
        from robolearn.deploy.sim_twin import SimTwin

        try:
            twin = SimTwin(
                bus, args.task, safety=cell.safety, cameras=cams, image_size=(args.image_size, args.image_size),
                joint_state_hz=args.joint_state_hz or cell.bridge.joint_state_hz, policy_hz=args.rate,
                hold_steps=args.hold_steps, namespace=cell.bridge.namespace, overrides=tuple(args.overrides),
            )  # fmt: skip
        except KeyError as exc:
            raise UserError(f"--task: {str(exc).strip(chr(39) + chr(34))}") from None
        except (ConfigError, ValueError) as exc:
            raise UserError(str(exc)) from None
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        if args.duration is not None:
            timer = threading.Timer(args.duration, stop.set)
            timer.daemon = True
            timer.start()
        print(f"sim-robot: {args.task} on {args.bridge} {args.host}:{port}{cell.bridge.namespace} "
              f"({twin.joint_state_hz:g} Hz joint states, {twin.policy_hz:g} Hz policy) ready", flush=True)  # fmt: skip
        try:
            twin.serve(stop)
        except KeyboardInterrupt:
            stop.set()
        print(f"sim-robot: stopped after {twin.ticks} ticks of the last episode; safety {twin.filter.counts}, "
              f"{len(twin.hold_events)} watchdog holds",
              file=sys.stderr)  # fmt: skip
    finally:
        stop.set()
        if twin is not None:
            twin.close()
        if bus is not None:
            bus.close()
        _stop(master)
    return 0
