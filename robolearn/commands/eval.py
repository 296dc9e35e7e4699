"""``robolearn eval``: closed-loop success rate of a checkpoint in a simulated env.

Two figures, each with a 95% Wilson interval: *first success* (success reached on some step) and
*held* (success still true on the final step, ``--hold-steps`` past the first success). See
:mod:`robolearn.eval.evaluate` for what episode length and return count.

``--env`` may name a suite (``franka-language``) or several envs (``franka-lift,franka-push``), and a
checkpoint trained on several envs evaluates on all of them by default: ``--episodes`` each, then
both figures per task, per instruction template and on average (:mod:`robolearn.eval.suite`).

``--ray auto|ADDRESS`` runs the env copies on Ray actors (:mod:`robolearn.rl.ray_envs`) with the
policy still in this process; the episodes and figures are the same as without it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from robolearn.errors import UserError

QUOTES = "'\""
"""Stripped from ``KeyError`` messages, which ``str()`` wraps in quotes."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="checkpoint folder (a RUN or RUN/checkpoints/STEP)"
    )
    p.add_argument(
        "--env",
        help="registered env, suite (franka-language) or comma-separated envs (default: "
        "the env(s) the checkpoint's datasets came from)",
    )
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--hold-steps", type=int, default=20, metavar="N",
                   help="run each episode N steps past its first success and report whether success still "
                        "holds on the last step; episode length and return include those steps "
                        "(0: stop at the first success, the held figure then equals the first)")  # fmt: skip
    p.add_argument(
        "--num-envs", type=int, default=4, help="env copies stepped together (one batched policy call)"
    )
    p.add_argument("--cameras", help="comma-separated cameras (default: those the policy consumes)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an env config field")  # fmt: skip
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument(
        "--video", type=Path, metavar="DIR", help="write MP4s of the first --video-episodes episodes here"
    )
    p.add_argument("--video-episodes", type=int, default=2)
    p.add_argument("--temporal-ensemble", type=float, metavar="M",
                   help="query every step and average overlapping chunks with weights exp(-M*i)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--ray", metavar="auto|ADDRESS",
                   help="run the env copies on Ray actors (extra ray): auto joins the running cluster or "
                        "starts a local one; ADDRESS joins that cluster. The policy stays in this process")  # fmt: skip
    p.add_argument("--seed", type=int, metavar="N",
                   help="first episode seed (default 1000000, disjoint from demos); record critic data on "
                        "another range, so the seeds a steered policy is evaluated on stay unseen")  # fmt: skip
    p.add_argument("--record", type=Path, metavar="DIR",
                   help="write the rollouts as a LeRobot v3.0 dataset (executed action, next.reward, "
                        "next.success per frame): data for robolearn train-critic")  # fmt: skip
    p.add_argument("--critic", type=Path, metavar="C",
                   help="steer the policy with this critic (V-GPS: best of --samples chunks per step)")  # fmt: skip
    p.add_argument(
        "--samples", type=int, metavar="K", help="chunks sampled per step with --critic (default 10)"
    )
    p.add_argument("--temperature", type=float, metavar="T",
                   help="with --critic: sample softmax(Q/T) instead of the argmax")  # fmt: skip


def resolve_envs(checkpoint: Path, env: str | None) -> tuple[str, ...]:
    """The envs to evaluate on: ``env`` (an env, a suite or a comma-separated list) expanded, else the
    env(s) the checkpoint records; a :class:`UserError` otherwise."""
    from robolearn.envs import SUITES
    from robolearn.policies import CheckpointError, checkpoint_envs

    if env:
        try:
            return SUITES.expand(env)
        except KeyError as exc:
            raise UserError(f"--env: {str(exc).strip(QUOTES)}") from None
    try:
        recorded = checkpoint_envs(checkpoint)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None
    if recorded:
        return tuple(recorded)
    raise UserError(f"--env: required: {checkpoint / 'config.json'} records no source env; pass --env NAME")


def run(args: argparse.Namespace) -> int:
    if args.ray:
        from robolearn.rl.ray_envs import ray_session

        with ray_session(args.ray):
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    import torch

    from robolearn.config import ConfigError
    from robolearn.eval.evaluate import evaluate, policy_env_config
    from robolearn.policies import CheckpointError, FeatureMismatchError, load_policy

    torch.set_num_threads(args.threads)
    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, found {args.episodes}")
    if args.hold_steps < 0:
        raise UserError(f"--hold-steps must be >= 0, found {args.hold_steps}")
    try:
        policy = load_policy(args.checkpoint)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    if args.critic is not None:
        from robolearn.commands.steer import steered

        policy = steered(policy, args.critic, 10 if args.samples is None else args.samples, args.temperature)
    elif args.samples is not None or args.temperature is not None:
        raise UserError("--samples and --temperature steer with a critic: pass --critic C")
    envs = resolve_envs(args.checkpoint, args.env)
    cams = tuple(c for c in args.cameras.split(",") if c) if args.cameras else None
    if len(envs) > 1 or (args.env and envs != (args.env,)):
        if args.record is not None:
            raise UserError(f"--record: records one env, found {', '.join(envs)}")
        return _run_suite(args, policy, envs, cams)
    env = envs[0]
    seed = {} if args.seed is None else {"seed_base": args.seed}
    try:
        cfg = policy_env_config(policy, env, overrides=args.overrides, cameras=cams)
        result = evaluate(
            policy, env, cfg, episodes=args.episodes, num_envs=args.num_envs, video_dir=args.video,
            video_episodes=args.video_episodes if args.video else 0, temporal_ensemble=args.temporal_ensemble,
            hold_steps=args.hold_steps, record_dir=args.record, **seed, ray_address=args.ray,
        )  # fmt: skip
    except (ConfigError, KeyError, ValueError, FeatureMismatchError) as exc:
        raise UserError(str(exc).strip("'\"")) from None
    out = result.to_json()
    keys = ("success_rate", "ci95", "held_success_rate", "held_ci95", "hold_steps", "episodes", "mean_return",
            "latency_ms")  # fmt: skip
    if args.json:
        data = {
            "env": env,
            **{k: out[k] for k in keys},
            "per_episode": out["per_episode"],
            "videos": out["videos"],
        }
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, args.json)
    lo, hi = result.ci95
    hlo, hhi = result.held_ci95
    print(
        f"{env}: first success {100 * result.success_rate:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}], held "
        f"{args.hold_steps} steps {100 * result.held_success_rate:.1f}% [{100 * hlo:.1f}, {100 * hhi:.1f}] over "
        f"{result.episodes} episodes, mean return {result.mean_return:.2f}, policy latency p50 "
        f"{result.latency_ms['p50']:.1f} ms p99 {result.latency_ms['p99']:.1f} ms ({torch.get_num_threads()} thread)"
    )
    return 0


def _run_suite(args: argparse.Namespace, policy, envs: tuple[str, ...], cams) -> int:
    """Several envs: per-task, per-template and average figures (``--json``: the suite report)."""
    import torch

    from robolearn.config import ConfigError
    from robolearn.eval.suite import evaluate_suite, report_lines
    from robolearn.policies import FeatureMismatchError

    try:
        result = evaluate_suite(
            policy, envs, args.episodes, overrides=args.overrides, cameras=cams, num_envs=args.num_envs,
            hold_steps=args.hold_steps, video_dir=args.video, video_episodes=args.video_episodes,
            temporal_ensemble=args.temporal_ensemble, ray_address=args.ray,
        )  # fmt: skip
    except (ConfigError, KeyError, ValueError, FeatureMismatchError) as exc:
        raise UserError(str(exc).strip(QUOTES)) from None
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(result.to_json(), indent=2))
        os.replace(tmp, args.json)
    print("\n".join(report_lines(result)))
    print(f"({args.episodes} episodes per task, {torch.get_num_threads()} thread)")
    return 0
