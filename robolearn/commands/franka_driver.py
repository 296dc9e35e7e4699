"""``robolearn franka-driver``: the robot-PC driver of a real Franka arm behind a bridge.

``robolearn franka-driver --robot-ip IP --bridge ros1|zenoh|zmq [--cell deploy/cells/<cell>.yaml]``
connects to the arm through pylibfranka (the ``franka`` extra), serves the sim twin's topics
(:mod:`robolearn.deploy.franka.service`) and drives the arm at 1 kHz: policy targets pass the cell's
safety layer, then ruckig turns them into a jerk-limited stream within the cell's joint limits. Drive
it with ``robolearn run --robot <same bridge>``, as the twin. It prints one ``ready`` line when it
serves; a fault (reflex, libfranka error) is printed and the arm stays still until a ``recover``
request. Ctrl-C or SIGTERM brakes, ends the motion and exits. Tested against franky-sim.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from robolearn.errors import UserError

HELP = "drive a real Franka arm (pylibfranka, 1 kHz, ruckig) behind a ROS 1, Zenoh or ZeroMQ bridge"
BRIDGES = ("ros1", "zenoh", "zmq")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--robot-ip", required=True, help="the arm's address (franky-sim: its --hostname)")
    p.add_argument("--bridge", choices=BRIDGES, required=True, help="middleware to serve the topics on")
    p.add_argument("--cell", type=Path, help="cell config: safety limits, namespace (default deploy/cells/franka-sim.yaml)")  # fmt: skip
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind / of the rosmaster (default 127.0.0.1)"
    )
    p.add_argument(
        "--port", type=int, help="zmq 5555 (uses 3 ports), zenoh 7447, ros1: the rosmaster's 11311"
    )
    p.add_argument("--mode", choices=("position", "velocity"), default="position",
                   help="libfranka joint position or joint velocity control (default position)")  # fmt: skip
    p.add_argument("--command", choices=("joint_position", "ee_delta"), default="joint_position",
                   help="the command mode policies are told to use (both are accepted; default joint_position)")  # fmt: skip
    p.add_argument("--rate", type=float, default=20.0, help="policy command rate in Hz (default 20)")
    p.add_argument("--dynamics", type=float, nargs=3, default=(0.5, 0.5, 0.2), metavar=("V", "A", "J"),
                   help="fractions of the cell's velocity, acceleration, jerk limits (default 0.5 0.5 0.2)")  # fmt: skip
    p.add_argument(
        "--episode-steps", type=int, default=400, metavar="N", help="commands per episode (default 400)"
    )
    p.add_argument("--no-gripper", action="store_true", help="the arm has no Franka Hand")
    p.add_argument("--realtime", choices=("ignore", "enforce"), default="ignore",
                   help="libfranka's real-time check: enforce on a PREEMPT_RT robot PC (default ignore)")  # fmt: skip
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (default: run until stopped)"
    )


def _check(args: argparse.Namespace) -> None:
    if args.rate <= 0 or args.rate > 100:
        raise UserError(f"--rate must lie in (0, 100] Hz, found {args.rate:g}")
    if not all(0 < f <= 1 for f in args.dynamics):
        raise UserError(f"--dynamics: each factor must lie in (0, 1], found {list(args.dynamics)}")
    if args.episode_steps < 1:
        raise UserError(f"--episode-steps must be >= 1, found {args.episode_steps}")
    if args.duration is not None and args.duration <= 0:
        raise UserError(f"--duration must be > 0, found {args.duration}")


def run(args: argparse.Namespace) -> int:
    from robolearn.commands.sim_robot import DEFAULT_PORTS
    from robolearn.config import ConfigError
    from robolearn.deploy.cell import load_cell
    from robolearn.deploy.franka.arm import ArmFault
    from robolearn.deploy.franka.driver import FrankaDriver
    from robolearn.deploy.franka.libfranka import LibfrankaArm
    from robolearn.deploy.franka.service import DriverService
    from robolearn.deploy.topics import BridgeError, make_backend

    _check(args)
    try:
        cell = load_cell(args.cell)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    port = args.port or (
        cell.bridge.port if cell.bridge.backend == args.bridge else DEFAULT_PORTS[args.bridge]
    )
    stop = threading.Event()

    def on_fault(message: str) -> None:
        print(f"franka-driver: FAULT {message}; the arm stays still until a 'recover' request", file=sys.stderr,
              flush=True)  # fmt: skip

    arm = LibfrankaArm(args.robot_ip, gripper=not args.no_gripper, realtime=args.realtime)
    driver = FrankaDriver(arm, cell.safety, policy_hz=args.rate, mode=args.mode, dynamics=tuple(args.dynamics),
                          on_fault=on_fault)  # fmt: skip
    try:
        driver.connect()
    except ArmFault as exc:
        raise UserError(f"--robot-ip {args.robot_ip}: {exc}") from None
    bus = service = None
    try:
        try:
            bus = make_backend(args.bridge, role="robot", host=args.host, port=port,
                               namespace=cell.bridge.namespace, node_name="robolearn_franka_driver")  # fmt: skip
        except BridgeError as exc:
            raise UserError(f"--bridge {args.bridge}: {exc}") from None
        service = DriverService(driver, bus, namespace=cell.bridge.namespace, joint_state_hz=cell.bridge.joint_state_hz,
                                policy_hz=args.rate, episode_steps=args.episode_steps, policy_action=args.command)  # fmt: skip
        service.start()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        if args.duration is not None:
            timer = threading.Timer(args.duration, stop.set)
            timer.daemon = True
            timer.start()
        print(f"franka-driver: {args.robot_ip} ({args.mode} control) on {args.bridge} {args.host}:{port}"
              f"{cell.bridge.namespace} ({cell.bridge.joint_state_hz:g} Hz joint states, {args.rate:g} Hz policy) "
              "ready", flush=True)  # fmt: skip
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            stop.set()
    finally:
        if service is not None:
            service.stop()
        driver.close()
        if bus is not None:
            bus.close()
    s = driver.status()
    obs = driver.observe()
    final = "" if obs is None else f"; final q {[round(float(x), 4) for x in obs.q]}"
    print(f"franka-driver: stopped; {s['cycles']} cycles, command success rate {s['success_rate']:.4f}, "
          f"tracking |q - q_c| max {s['tracking_max']:.4f} rad (rms {s['tracking_rms']:.4f}); fault: {s['fault']}"
          f"{final}", file=sys.stderr)  # fmt: skip
    return 1 if s["fault"] else 0
