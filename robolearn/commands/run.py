"""``robolearn run``: drive a robot from a policy server (``robolearn serve``, or any openpi-wire server).

The robot side only: no torch here. ``--robot sim`` runs the embedded env ``--task`` in real time in
this process (:class:`robolearn.deploy.sim_robot.SimRobot`), with the cameras the server asks for.
Episodes follow ``robolearn eval``'s protocol, seeds included (the first is ``--seed``, by default
eval's :data:`robolearn.eval.EVAL_SEED_BASE`), so the two figures compare directly: *first success*
and *held* (success still true ``--hold-steps`` after the first). The report adds what only a
deployed policy has: loop jitter, round-trip latency, ticks held and faults (server lost or late:
the robot holds, then stops, within 2 control periods, and the run goes on once the server is back).
``--record DIR`` writes every episode run (failed ones too) into a new LeRobot v3.0 dataset labelled
with the env, its config and each episode's seed. Ctrl-C stops the robot, keeps the episodes
already recorded and exits with status 130.

``--robot ros1|zenoh|zmq`` drives the robot behind that bridge instead (``robolearn sim-robot``, or a
cell's ``robolearn franka-driver``; :class:`robolearn.deploy.bridge_robot.BridgeRobot`): the task,
the cameras and the hold steps are the robot side's, its episode counts give the success figures,
and recorded frames also hold ``action.joint_target``, what its safety layer let through.
``--teleop keyboard`` drives a bridged robot from the keyboard instead of a policy
(:mod:`robolearn.deploy.teleop_run`), recording the episodes saved with Enter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from robolearn.errors import UserError

ROBOTS = ("sim", "ros1", "zenoh", "zmq")
BRIDGED = ("ros1", "zenoh", "zmq")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", metavar="URL", help="policy server, e.g. ws://127.0.0.1:8000")
    p.add_argument("--teleop", choices=("keyboard",),
                   help="drive a bridged robot from the keyboard instead of a policy (keys as in collect "
                        "--teleop; with --record: the episodes saved with Enter)")  # fmt: skip
    p.add_argument("--robot", choices=ROBOTS, default="sim",
                   help="sim: the embedded env in this process; ros1|zenoh|zmq: the robot behind that bridge "
                        "(robolearn sim-robot, or a cell's driver) (default sim)")  # fmt: skip
    p.add_argument("--bridge-host", default="127.0.0.1", help="bridged robot: its host / the rosmaster's")
    p.add_argument(
        "--bridge-port", type=int, help="bridged robot: its port (zmq 5555, zenoh 7447, ros1 11311)"
    )
    p.add_argument(
        "--cell", type=Path, help="bridged robot: cell config (default deploy/cells/franka-sim.yaml)"
    )
    p.add_argument(
        "--task", default="franka-lift", help="registered env the sim robot runs (default franka-lift)"
    )
    p.add_argument(
        "--rate", type=float, help="control rate in Hz (default: the policy's fps, else the robot's)"
    )
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, help="first episode seed (default: eval's seed base, 1000000)")
    p.add_argument("--hold-steps", type=int, default=20, metavar="N",
                   help="run each episode N steps past its first success (as robolearn eval does)")  # fmt: skip
    p.add_argument("--merge", choices=("latest", "weighted", "ensemble"), default="latest",
                   help="how a new chunk joins the planned actions (default latest)")  # fmt: skip
    p.add_argument("--ensemble-m", type=float, default=0.01, metavar="M",
                   help="--merge ensemble: weights exp(-M*i), i = 0 for the oldest chunk (ACT)")  # fmt: skip
    p.add_argument(
        "--rtc", action="store_true", help="real-time chunking (flow policies; done by the server)"
    )
    p.add_argument(
        "--record", type=Path, metavar="DIR", help="write the episodes into a new LeRobot v3.0 dataset"
    )
    p.add_argument("--api-key", help="send 'Authorization: Api-Key KEY'")
    p.add_argument(
        "--site", type=Path, help="site config for the wire key map (default deploy/franka_sim.yaml)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sim env config field")  # fmt: skip
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the server at start (default 10)")  # fmt: skip
    p.add_argument("--request-timeout", type=float, default=1.0, metavar="S",
                   help="a reply later than this means the server stalled: hold, reconnect (default 1)")  # fmt: skip
    p.add_argument("--rt-priority", type=int, default=50, metavar="N",
                   help="run the control loop under SCHED_FIFO priority N where the OS allows it "
                        "(root or an rtprio limit); 0: never (default 50)")  # fmt: skip
    p.add_argument("--json", type=Path, help="write the results here")


def _check_args(args: argparse.Namespace) -> None:
    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, found {args.episodes}")
    if args.hold_steps < 0:
        raise UserError(f"--hold-steps must be >= 0, found {args.hold_steps}")
    if args.rate is not None and not args.rate > 0:
        raise UserError(f"--rate must be > 0 Hz, found {args.rate}")
    for name in ("connect_timeout", "request_timeout"):
        if not getattr(args, name) > 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, found {getattr(args, name)}")
    if not 0 <= args.rt_priority <= 99:
        raise UserError(f"--rt-priority must be in [0, 99], found {args.rt_priority}")
    if args.teleop is not None:
        if args.robot not in BRIDGED:
            raise UserError(
                "--teleop drives a bridged robot (--robot ros1|zenoh|zmq); for the sim use collect --teleop"
            )
        if args.server is not None:
            raise UserError("--teleop and --server exclude each other: choose who drives the arm")
    elif args.server is None:
        raise UserError("--server is required (or --teleop keyboard with a bridged --robot)")
    elif not args.server.startswith(("ws://", "wss://")):
        raise UserError(f"--server must be a ws:// or wss:// URL, found {args.server!r}")
    if args.record is not None and args.record.exists() and any(args.record.iterdir()):
        raise UserError(f"--record {args.record}: exists and is not empty; choose a new folder")


def _keymap(site: Path | None):
    from robolearn.config import ConfigError
    from robolearn.deploy.keymap import KeyMap, load_site

    try:
        return KeyMap(load_site(site).keys)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def _sim_robot(args: argparse.Namespace, meta: dict[str, Any], keymap, rate: float | None):
    """The sim robot with the cameras (and image size) the server's features ask for."""
    from robolearn import types
    from robolearn.config import ConfigError
    from robolearn.deploy.sim_robot import SimRobot
    from robolearn.envs import env_config

    cams, size = [], None
    for key, spec in dict(meta["features"]).items():
        feature = keymap.to_feature(key)
        if types.is_image_key(feature):
            cams.append(feature[len(types.OBS_IMAGE_PREFIX) :])
            size = tuple(int(n) for n in spec["shape"][:2])
    fields: dict[str, Any] = {"cameras": tuple(cams)}
    if size is not None:
        fields["image_size"] = size
    overrides = list(args.overrides)
    if rate is not None:
        overrides.append(f"control_hz={rate}")
    try:
        cfg = env_config(args.task, None, overrides, **fields)
        return SimRobot(args.task, config=cfg, hold_steps=args.hold_steps, record=args.record is not None)
    except KeyError as exc:
        raise UserError(f"--task: {str(exc).strip(chr(39) + chr(34))}") from None
    except (ConfigError, ValueError) as exc:
        raise UserError(str(exc)) from None


def _bridge_robot(args: argparse.Namespace):
    """The robot behind the bridge ``--robot`` (torch-free, mujoco-free)."""
    from robolearn.commands.sim_robot import DEFAULT_PORTS
    from robolearn.config import ConfigError
    from robolearn.deploy.bridge_robot import BridgeRobot
    from robolearn.deploy.cell import load_cell

    try:
        cell = load_cell(args.cell)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    port = args.bridge_port or (
        cell.bridge.port if cell.bridge.backend == args.robot else DEFAULT_PORTS[args.robot]
    )
    return BridgeRobot(args.robot, host=args.bridge_host, port=port, namespace=cell.bridge.namespace,
                       record=args.record is not None, timeout=args.connect_timeout)  # fmt: skip


def _open_writer(path: Path, robot) -> Any:
    from robolearn.config import to_dict
    from robolearn.data.writer import LeRobotWriter

    info = getattr(robot, "info", None)
    if info is not None:  # a bridged robot: what it described itself as
        return LeRobotWriter(path, fps=int(round(robot.control_hz)), features=robot.features,
                             robot_type=info.get("robot_type"), env=info["task"], env_config=info.get("env_config"))  # fmt: skip
    from robolearn.envs.catalog import robot_type
    from robolearn.envs.recording import env_features

    env_cfg = json.loads(json.dumps(to_dict(robot.config)))
    return LeRobotWriter(
        path, fps=int(round(robot.control_hz)), features=env_features(robot.env),
        robot_type=robot_type(robot.config), env=robot.task_name, env_config=env_cfg,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from robolearn.deploy.client import ClientError, PolicyClient, ServerUnavailable
    from robolearn.deploy.runner import RunError, Runner
    from robolearn.eval import EVAL_SEED_BASE
    from robolearn.progress import progress

    _check_args(args)
    if args.robot == "sim":
        from robolearn.envs import ENVS

        if args.task not in ENVS:  # before any network wait
            raise UserError(f"--task: unknown env {args.task!r}; registered: {', '.join(ENVS.names())}")
    if args.teleop is not None:
        return _teleop(args)
    keymap = _keymap(args.site)
    client = PolicyClient(args.server, api_key=args.api_key, connect_timeout=args.connect_timeout)
    writer = None
    try:
        try:
            meta = client.start()
        except (ServerUnavailable, ClientError) as exc:
            raise UserError(f"--server: {exc}") from None
        fps = meta.get("fps")
        rate = args.rate or (float(fps) if fps else None)
        if args.rate and fps and abs(args.rate - float(fps)) > 1e-6:
            print(
                f"robolearn run: warning: the policy runs at {fps:g} Hz, --rate is {args.rate:g}",
                file=sys.stderr,
            )
        robot = _bridge_robot(args) if args.robot in BRIDGED else _sim_robot(args, meta, keymap, rate)
        if args.robot in BRIDGED:
            from robolearn.deploy.robot import RobotError

            try:
                robot.connect()
            except RobotError as exc:
                raise UserError(f"--robot {args.robot}: {exc}") from None
        first = EVAL_SEED_BASE if args.seed is None else args.seed
        with robot:
            try:
                runner = Runner(robot, client, rate=rate, merge=args.merge, rtc=args.rtc, ensemble_m=args.ensemble_m,
                                request_timeout=args.request_timeout, rt_priority=args.rt_priority or None,
                                keymap=keymap)  # fmt: skip
            except (ClientError, RunError) as exc:
                raise UserError(str(exc)) from None
            if args.record is not None:
                writer = _open_writer(args.record, robot)
            if args.robot in BRIDGED:
                args.task, args.hold_steps = robot.info["task"], int(robot.info["hold_steps"])
            reports = []
            bar = progress(total=args.episodes, desc=f"run {args.task}", unit="ep")
            try:
                for i in range(args.episodes):
                    try:
                        rep = runner.run_episode(seed=first + i)
                    except RunError as exc:
                        raise UserError(str(exc)) from None
                    reports.append(rep)
                    if writer is not None:
                        for frame in robot.episode.frames:
                            writer.add_frame(frame, task=rep.task)
                        writer.save_episode(seed=rep.seed)
                    bar.set_postfix(success=f"{sum(r.success for r in reports)}/{len(reports)}")
                    bar.update(1)
            finally:
                bar.close()
    finally:
        if writer is not None:
            writer.finalize()
        client.close()
    summary = _summary(args, runner, reports, rate or robot.control_hz, meta)
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, args.json)
    _print(summary)
    return 0


def _teleop(args: argparse.Namespace) -> int:
    """Keyboard teleop of the bridged robot, recording the saved episodes with ``--record``."""
    from robolearn.deploy.robot import RobotError
    from robolearn.deploy.teleop_run import teleop_episodes
    from robolearn.envs.teleop import print_help, stream_keys

    robot = _bridge_robot(args)
    writer, saved = None, 0
    try:
        try:
            robot.connect()
        except RobotError as exc:
            raise UserError(f"--robot {args.robot}: {exc}") from None
        if args.record is not None:
            writer = _open_writer(args.record, robot)
        print_help()
        keys = stream_keys(sys.stdin, tick=1.0 / robot.control_hz)
        first = 0 if args.seed is None else args.seed
        for episode in teleop_episodes(robot, keys, first):
            if writer is not None:
                for frame in episode.frames:
                    writer.add_frame(frame, task=episode.task)
                writer.save_episode(seed=episode.seed)
            saved += 1
            print(f"episode seed {episode.seed} saved ({len(episode.frames)} frames, "
                  f"success={episode.success})", file=sys.stderr)  # fmt: skip
            if saved >= args.episodes:
                break
    finally:
        if writer is not None:
            writer.finalize()
        robot.disconnect()
    print(f"teleop {robot.info.get('task', '')} via {args.robot}: {saved} episodes kept"
          f"{f' in {args.record}' if args.record else ''}")  # fmt: skip
    return 0


def _summary(args, runner, reports: list, rate: float, meta: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    import numpy as np

    from robolearn.eval.metrics import latency_summary, wilson_interval

    n = len(reports)
    wins, kept = sum(r.success for r in reports), sum(r.held for r in reports)
    rtt = [x / 1e3 for r in reports for x in r.rtt_ms]
    infer = [x / 1e3 for r in reports for x in r.infer_ms]
    per_episode = []
    for r in reports:
        row = asdict(r)
        for key in ("rtt_ms", "infer_ms", "delays"):
            row.pop(key)
        row["jitter"] = r.jitter.to_json() if r.jitter else None
        per_episode.append(row)
    return {
        "server": args.server, "task": args.task, "policy_type": meta.get("policy_type"), "rate_hz": rate,
        "merge": args.merge, "rtc": args.rtc, "episodes": n,
        "success_rate": wins / n, "ci95": list(wilson_interval(wins, n)),
        "held_success_rate": kept / n, "held_ci95": list(wilson_interval(kept, n)), "hold_steps": args.hold_steps,
        "mean_length": float(np.mean([r.steps for r in reports])),
        "mean_return": float(np.mean([r.ret for r in reports])),
        "holds": sum(r.holds for r in reports), "faults": sum(r.faults for r in reports),
        "jitter": runner.jitter().to_json(), "rtt_ms": latency_summary(rtt), "server_infer_ms": latency_summary(infer),
        "delay_steps": _steps_summary([d for r in reports for d in r.delays]),
        "record": str(args.record) if args.record else None, "per_episode": per_episode,
    }  # fmt: skip


def _steps_summary(delays: list[int]) -> dict[str, float]:
    """p50 / p99 / max of the measured inference delays, in control steps."""
    import numpy as np

    if not delays:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    arr = np.asarray(delays, dtype=np.float64)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


def _print(s: dict[str, Any]) -> None:
    j, rtt = s["jitter"], s["rtt_ms"]
    lo, hi = s["ci95"]
    hlo, hhi = s["held_ci95"]
    print(
        f"{s['task']} via {s['server']}: first success {100 * s['success_rate']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}], "
        f"held {s['hold_steps']} steps {100 * s['held_success_rate']:.1f}% [{100 * hlo:.1f}, {100 * hhi:.1f}] over "
        f"{s['episodes']} episodes, mean length {s['mean_length']:.1f} steps; loop {s['rate_hz']:g} Hz jitter "
        f"p50 {j['period_p50_ms']:.2f} p99 {j['period_p99_ms']:.2f} max {j['period_max_ms']:.2f} ms "
        f"({j['missed']} missed{', SCHED_FIFO' if j['realtime'] else ''}); round trip p50 {rtt['p50']:.1f} p99 {rtt['p99']:.1f} ms; "
        f"{s['holds']} hold ticks, {s['faults']} faults"
    )
