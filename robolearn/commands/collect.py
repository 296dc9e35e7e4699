"""``robolearn collect``: record scripted-expert, user-expert or keyboard-teleop episodes as a LeRobot v3.0 dataset.

Experts: the env's shipped scripted expert where one exists (the embedded Franka tasks, Meta-World's
own policies, gym-hil PickCube); ``--expert package.module:callable`` plugs in your own (contract in
:mod:`robolearn.envs.expert_plugin`). robosuite ships none, so it needs ``--expert``.

Seeds: the run's k-th attempt starts from ``reset(seed=first + k)`` (an attempt the expert failed
uses up its seed too), and every saved episode records its seed (the ``seed`` column of
``meta/episodes``). A new dataset starts at seed 0; ``--out`` on an existing dataset continues after
its largest recorded seed, so a collection killed mid-way and rerun with the same command never
records an episode twice. ``--seed N`` sets the first seed; a seed already in the dataset is an
error naming its episode. Appending needs the env and env config that ``info.json`` records
(``robolearn.env``, ``robolearn.env_config``): with them, a seed names one episode exactly.

``--env`` may also name a suite (``franka-language``) or several envs (``franka-lift,franka-push``):
then ``--episodes`` are collected for each env, one after the other, into one dataset
(:mod:`robolearn.commands.collect_suite`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from robolearn.cli import UserError
from robolearn.commands.collect_sources import check_policy, expert_stream, teleop_stream, with_sim_state

EPILOG = """\
--expert package.module:callable
  callable(env) is called with the built env and returns the policy: any callable
  policy(obs) -> action (the env's action shape). If the policy has reset(), it is called
  after every env.reset(seed=...). The module is imported by name with the working directory
  on sys.path, so my_expert.py here is my_expert:make. It is called once to check it and once
  in each collecting process (--workers), so define it at module level.

seeds
  A new dataset starts at seed 0; --out on an existing one continues after its largest
  recorded seed (a killed run, rerun, duplicates nothing). --seed N sets the first seed.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--env", default="franka-lift",
                   help="registered env name (list them: robolearn envs), a suite such as franka-language, or "
                        "several envs comma-separated: --episodes each, into one dataset")  # fmt: skip
    p.add_argument(
        "--episodes", type=int, default=10, help="episodes to record (successful ones for experts)"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="dataset folder (LeRobot v3.0); appends if it exists"
    )
    p.add_argument(
        "--cameras", default="", help="comma-separated cameras to record as video, e.g. front,wrist"
    )
    p.add_argument("--image-size", default="96x96", help="HxW of every camera (default 96x96)")
    p.add_argument("--preset", type=Path, help="env preset YAML (e.g. envs/franka-lift.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an env config field (repeatable), e.g. max_episode_steps=100")  # fmt: skip
    p.add_argument("--seed", type=int, default=None,
                   help="first episode seed (default: 0, or after the largest seed already in --out)")  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="parallel expert processes")
    p.add_argument(
        "--expert",
        metavar="MODULE:CALLABLE",
        help="your scripted policy instead of the env's shipped expert (contract below)",
    )
    p.add_argument(
        "--expert-noise",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="DART: execute expert actions plus N(0, SIGMA^2) (gripper excluded) but record the clean "
        "expert action as 'action' (the executed one as 'action.executed'), so demos show recoveries "
        "from drift (default 0; the push and stack recipes use 0.2)",
    )
    p.add_argument(
        "--post-success-steps",
        type=int,
        default=25,
        metavar="N",
        help="expert episodes run on past their first success and end N steps after it (or at the env's "
        "cap), so demos show what to do once the task is done; an episode counts as a success, and is "
        "saved, only if success still holds at its last frame (default 25; eval holds 20)",
    )
    p.add_argument("--keep-failed", action="store_true", help="also save episodes the expert failed")
    p.add_argument("--record-sim-state", action="store_true",
                   help="also record observation.sim_state, the MuJoCo full physics state of every frame "
                        "(float64; the robomimic export's 'states'); MuJoCo envs, one env per run")  # fmt: skip
    p.add_argument(
        "--teleop",
        choices=["keyboard"],
        help="drive the arm from the keyboard instead of an expert (envs with a 7-D ee_delta action)",
    )
    p.add_argument("--json", type=Path, help='write {"episodes", "frames", "success_rate", "seeds"} here')


def default_args(**fields: Any) -> argparse.Namespace:
    """The arguments of ``robolearn collect --out OUT`` with ``fields`` set, for calling :func:`run`."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", str(fields.get("out", "."))])
    unknown = sorted(set(fields) - set(vars(args)))
    if unknown:
        raise TypeError(f"unknown collect argument {unknown[0]!r}")
    vars(args).update(fields)
    return args


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
    except (ConfigError, KeyError, ValueError) as exc:
        raise UserError(str(exc).strip("'\"")) from None


# --------------------------------------------------------------------------- the dataset
def _open_dataset(args: argparse.Namespace, config, features: dict, fps: float):
    """A writer on ``--out``: a new dataset labelled with the env, or the existing one if it matches."""
    from robolearn.config import to_dict
    from robolearn.data.errors import DatasetError
    from robolearn.data.writer import LeRobotWriter
    from robolearn.envs.catalog import robot_type

    env_cfg = json.loads(json.dumps(to_dict(config)))
    out = args.out
    if not (out.exists() and any(out.iterdir())):
        return LeRobotWriter(out, fps=int(round(fps)), features=features, robot_type=robot_type(config),
                             env=args.env, env_config=env_cfg)  # fmt: skip
    try:
        writer = LeRobotWriter.open(out)
    except (DatasetError, FileNotFoundError) as exc:
        raise UserError(f"{out}: cannot append to it ({exc}); choose a new --out") from None
    source = writer.info.get("robolearn") or {}
    if source.get("env") != args.env:
        found = (
            f"env {source['env']!r}" if source.get("env") else "no source env (not made by robolearn collect)"
        )
        raise UserError(f"{out}: the dataset records {found}, this run is {args.env!r}; choose a new --out")
    recorded = source.get("env_config", {})
    for key in sorted(set(recorded) | set(env_cfg)):
        if recorded.get(key) != env_cfg.get(key):
            raise UserError(
                f"{out}: recorded with env config {key}={recorded.get(key)!r}, this run has "
                f"{env_cfg.get(key)!r}; collect with the same settings or into a new --out"
            )
    for key in sorted(set(writer.features) | set(features)):
        old, new = writer.features.get(key), features.get(key)
        if old is None or new is None or (old.dtype, tuple(old.shape)) != (new.dtype, tuple(new.shape)):
            raise UserError(
                f"{out}: feature {key!r} is {_spec_text(old)} there, {_spec_text(new)} here; choose a new --out"
            )
    if writer.seeds is None:
        raise UserError(
            f"{out}: its episodes record no seeds, so resuming could repeat them; choose a new --out"
        )
    return writer


def _spec_text(spec) -> str:
    return "absent" if spec is None else f"{spec.dtype} {list(spec.shape)}"


def _first_seed(args: argparse.Namespace, taken: dict[int, int]) -> int:
    if args.seed is None:
        return max(taken) + 1 if taken else 0
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, found {args.seed}")
    clash = sorted(s for s in taken if args.seed <= s < args.seed + args.episodes)
    if clash:
        raise UserError(_clash_message(args.out, clash[0], taken))
    return args.seed


def _clash_message(out: Path, seed: int, taken: dict[int, int]) -> str:
    return (
        f"{out}: seed {seed} is already in the dataset (episode {taken[seed]}); omit --seed to "
        f"continue after seed {max(taken)}"
    )


def run(args: argparse.Namespace) -> int:
    from robolearn.envs import make_env
    from robolearn.envs.catalog import feature_names, is_ee_delta
    from robolearn.envs.recording import env_features

    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, found {args.episodes}")
    if not 0.0 <= args.expert_noise <= 1.0:
        raise UserError(f"--expert-noise must be in [0, 1], found {args.expert_noise}")
    if args.post_success_steps < 0:
        raise UserError(f"--post-success-steps must be >= 0, found {args.post_success_steps}")
    if args.teleop and args.expert:
        raise UserError("--teleop and --expert exclude each other: choose who drives the arm")
    from robolearn.envs import SUITES

    try:
        names = SUITES.expand(args.env)
    except KeyError as exc:
        raise UserError(str(exc).strip("'\"")) from None
    if names != (args.env,) and args.record_sim_state:
        raise UserError(f"--record-sim-state records one env per run; {args.env!r} names {len(names)}")
    if names != (args.env,):
        from robolearn.commands.collect_suite import run_many

        return run_many(args, names)
    config = _config(args)
    if args.expert:
        from robolearn.envs.expert_plugin import ExpertSpecError, load_factory

        try:  # a bad spec fails before any env is built
            load_factory(args.expert)
        except ExpertSpecError as exc:
            raise UserError(str(exc)) from None
    env = with_sim_state(make_env(args.env, config), args.record_sim_state)
    try:
        fps = float((env.metadata or {}).get("render_fps") or getattr(config, "control_hz", 0) or 0)
        if fps <= 0:
            raise UserError(f"{args.env}: the env reports no control rate (metadata['render_fps'])")
        if args.teleop and not is_ee_delta(env):
            names = feature_names(env).get("action")
            raise UserError(
                f"--teleop keyboard drives a 7-D ee_delta action (dx dy dz droll dpitch dyaw gripper); "
                f"{args.env}'s action is {tuple(env.action_space.shape)}"
                + (f" ({' '.join(names)})" if names else "")
            )
        if not args.teleop:
            check_policy(env, config, args)
        writer = _open_dataset(args, config, env_features(env, executed_action=args.expert_noise > 0), fps)
        taken = writer.seeds or {}
        first = _first_seed(args, taken)
        if args.teleop:
            stream = teleop_stream(env, first, fps)
        else:
            stream = expert_stream(env, args, config, first)
        summary = _record(args, writer, stream, taken)
    finally:
        env.close()
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    saved, attempts, rate = summary["episodes"], summary["attempts"], summary["success_rate"]
    seeds = summary["seeds"]
    span = f", seeds {seeds[0]}..{seeds[-1]}" if seeds else ""
    print(
        f"collected {saved} episodes, {summary['frames']} frames from {args.env} into {args.out}{span} "
        f"(expert success {100 * rate:.1f}% over {attempts} attempts, {summary['seconds']:.1f}s)"
    )
    if saved < args.episodes and not args.teleop:
        print(
            f"warning: only {saved}/{args.episodes} successful episodes after {attempts} attempts",
            file=sys.stderr,
        )
        return 1
    return 0


def _record(
    args: argparse.Namespace, writer, stream: Iterator, taken: dict[int, int], env: str | None = None
) -> dict:
    """Save the stream's episodes (successful ones unless ``--keep-failed``) until enough are in;
    ``env``: record it as each episode's source env (a dataset of several envs)."""
    from robolearn.progress import progress

    saved_seeds: list[int] = []
    frames = attempts = successes = 0
    max_attempts = 3 * args.episodes + 20
    start = time.perf_counter()
    bar = progress(total=args.episodes, desc=f"collect {args.env}", unit="ep")
    try:
        with writer:
            for episode in stream:
                attempts += 1
                successes += episode.success
                if episode.success or args.keep_failed or args.teleop:
                    if episode.seed in taken:
                        raise UserError(_clash_message(args.out, episode.seed, taken))
                    for frame in episode.frames:
                        writer.add_frame(frame, task=episode.task)
                    writer.save_episode(seed=episode.seed, env=env)
                    saved_seeds.append(episode.seed)
                    frames += len(episode)
                    bar.update(1)
                if len(saved_seeds) >= args.episodes or attempts >= max_attempts:
                    break
    finally:
        bar.close()
        if hasattr(stream, "close"):
            stream.close()
    return {
        "episodes": len(saved_seeds),
        "frames": frames,
        "success_rate": successes / attempts if attempts else 0.0,
        "attempts": attempts,
        "seeds": saved_seeds,
        "seconds": time.perf_counter() - start,
    }
