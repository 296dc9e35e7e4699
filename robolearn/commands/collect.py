"""``robolearn collect``: record scripted-expert or keyboard-teleop episodes as a LeRobot v3.0 dataset."""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from robolearn.cli import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default="franka-lift", help="registered env name (default: franka-lift)")
    p.add_argument(
        "--episodes", type=int, default=10, help="episodes to record (successful ones for experts)"
    )
    p.add_argument("--out", required=True, type=Path, help="dataset folder (LeRobot v3.0)")
    p.add_argument(
        "--cameras", default="", help="comma-separated cameras to record as video, e.g. front,wrist"
    )
    p.add_argument("--image-size", default="96x96", help="HxW of every camera (default 96x96)")
    p.add_argument("--preset", type=Path, help="env preset YAML (e.g. envs/franka-lift.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an env config field (repeatable)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="first episode seed; later episodes use seed+1, ...")
    p.add_argument("--workers", type=int, default=1, help="parallel expert processes")
    p.add_argument(
        "--expert-noise",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="DART: execute expert actions plus N(0, SIGMA^2) (gripper excluded) but record the clean "
        "expert action, so demos show recoveries from drift (default 0; the push and stack recipes use 0.2)",
    )
    p.add_argument("--keep-failed", action="store_true", help="also save episodes the expert failed")
    p.add_argument(
        "--teleop", choices=["keyboard"], help="drive the arm from the keyboard instead of the expert"
    )
    p.add_argument("--json", type=Path, help='write {"episodes", "frames", "success_rate"} here')


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--image-size: expected HxW such as 96x96, found {text!r}") from None
    return h, w


def _config(args: argparse.Namespace):
    from robolearn.config import ConfigError
    from robolearn.envs import env_config

    cams = tuple(c for c in args.cameras.split(",") if c)
    try:
        return env_config(
            args.env, args.preset, args.overrides, cameras=cams, image_size=_parse_size(args.image_size)
        )
    except (ConfigError, KeyError) as exc:
        raise UserError(str(exc).strip("'\"")) from None


# --------------------------------------------------------------------------- expert workers
_WORKER: dict = {}


def _worker_init(env_name: str, config, action_noise: float) -> None:
    from robolearn.envs import make_env
    from robolearn.envs.experts import make_expert

    _WORKER["env"] = make_env(env_name, config)
    _WORKER["expert"] = make_expert(config)
    _WORKER["action_noise"] = action_noise


def _worker_episode(seed: int):
    from robolearn.envs.recording import rollout

    expert = _WORKER["expert"]
    return rollout(_WORKER["env"], expert, seed, expert.reset, _WORKER["action_noise"])


def _expert_stream(
    env_name: str, config, first_seed: int, workers: int, action_noise: float = 0.0
) -> Iterator:
    seeds = itertools.count(first_seed)
    if workers <= 1:
        from robolearn.envs.recording import expert_episodes

        yield from expert_episodes(env_name, config, seeds, action_noise)
        return
    # spawn: a forked MuJoCo/EGL context is not safe to reuse in a child.
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_worker_init, initargs=(env_name, config, action_noise)) as pool:
        yield from pool.imap(_worker_episode, seeds, chunksize=1)


def _teleop_stream(env_name: str, config, first_seed: int) -> Iterator:
    from robolearn import types
    from robolearn.envs import make_env
    from robolearn.envs.recording import Episode, frame_from
    from robolearn.envs.teleop import KeyboardTeleop, print_help, stream_keys

    env = make_env(env_name, config)
    teleop = KeyboardTeleop()
    print_help()
    keys = stream_keys(sys.stdin, tick=1.0 / config.control_hz)
    try:
        for seed in itertools.count(first_seed):
            obs, _ = env.reset(seed=seed)
            teleop.reset()
            episode = Episode(seed=seed, task=str(obs[types.TASK]))
            print(f"episode seed {seed}: {episode.task}", file=sys.stderr)
            for ev in teleop.events(keys):
                if ev.command == "quit":
                    return
                if ev.command in ("save", "discard"):
                    if ev.command == "save" and episode.frames:
                        yield episode
                    break
                nxt, reward, terminated, truncated, info = env.step(ev.action)
                done = terminated or truncated
                episode.frames.append(frame_from(obs, ev.action, reward, done, bool(info["is_success"])))
                episode.success = episode.success or bool(info["is_success"])
                obs = nxt
                if done:
                    print(f"episode end: success={episode.success}", file=sys.stderr)
                    yield episode
                    break
            else:
                return  # keys ran out
    finally:
        env.close()


def run(args: argparse.Namespace) -> int:
    from robolearn.data.writer import LeRobotWriter
    from robolearn.envs import make_env
    from robolearn.envs.recording import env_features
    from robolearn.progress import progress

    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, found {args.episodes}")
    if not 0.0 <= args.expert_noise <= 1.0:
        raise UserError(f"--expert-noise must be in [0, 1], found {args.expert_noise}")
    config = _config(args)
    probe = make_env(args.env, config)
    features = env_features(probe)
    probe.close()
    fps = int(round(config.control_hz))
    if args.out.exists() and any(args.out.iterdir()):
        writer = LeRobotWriter.open(args.out)
        if writer.features != features:
            raise UserError(f"{args.out}: existing dataset has other features; choose a new --out")
    else:
        writer = LeRobotWriter(args.out, fps=fps, features=features, robot_type="franka_fr3")

    stream = (
        _teleop_stream(args.env, config, args.seed)
        if args.teleop
        else _expert_stream(args.env, config, args.seed, args.workers, args.expert_noise)
    )
    saved = frames = attempts = successes = 0
    max_attempts = 3 * args.episodes + 20
    start = time.perf_counter()
    bar = progress(total=args.episodes, desc=f"collect {args.env}", unit="ep")
    with writer:
        for episode in stream:
            attempts += 1
            successes += episode.success
            if episode.success or args.keep_failed or args.teleop:
                for frame in episode.frames:
                    writer.add_frame(frame, task=episode.task)
                writer.save_episode()
                saved += 1
                frames += len(episode)
                bar.update(1)
            if saved >= args.episodes or attempts >= max_attempts:
                break
    bar.close()
    if hasattr(stream, "close"):
        stream.close()
    rate = successes / attempts if attempts else 0.0
    summary = {"episodes": saved, "frames": frames, "success_rate": rate}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    print(
        f"collected {saved} episodes, {frames} frames from {args.env} into {args.out} "
        f"(expert success {100 * rate:.1f}% over {attempts} attempts, {time.perf_counter() - start:.1f}s)"
    )
    if saved < args.episodes and not args.teleop:
        print(
            f"warning: only {saved}/{args.episodes} successful episodes after {attempts} attempts",
            file=sys.stderr,
        )
        return 1
    return 0
