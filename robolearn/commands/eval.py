"""``robolearn eval``: closed-loop success rate of a checkpoint in a simulated env."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robolearn.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="checkpoint folder (a RUN or RUN/checkpoints/STEP)"
    )
    p.add_argument("--env", default="franka-lift", help="registered env name")
    p.add_argument("--episodes", type=int, default=50)
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


def run(args: argparse.Namespace) -> int:
    import torch

    from robolearn.config import ConfigError
    from robolearn.envs import env_config
    from robolearn.eval.evaluate import evaluate
    from robolearn.policies import CheckpointError, FeatureMismatchError, load_policy
    from robolearn.types import OBS_IMAGE_PREFIX

    torch.set_num_threads(args.threads)
    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, found {args.episodes}")
    try:
        policy = load_policy(args.checkpoint)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    image_keys = [k for k in policy.input_features if k.startswith(OBS_IMAGE_PREFIX)]
    cams = (
        tuple(c for c in args.cameras.split(",") if c)
        if args.cameras
        else tuple(k[len(OBS_IMAGE_PREFIX) :] for k in image_keys)
    )
    fields = {"cameras": cams}
    if image_keys:
        c, h, w = policy.input_features[image_keys[0]]
        fields["image_size"] = (h, w)
    try:
        cfg = env_config(args.env, overrides=args.overrides, **fields)
        result = evaluate(
            policy, args.env, cfg, episodes=args.episodes, num_envs=args.num_envs, video_dir=args.video,
            video_episodes=args.video_episodes if args.video else 0, temporal_ensemble=args.temporal_ensemble,
        )  # fmt: skip
    except (ConfigError, KeyError, FeatureMismatchError) as exc:
        raise UserError(str(exc).strip("'\"")) from None
    out = result.to_json()
    summary = {k: out[k] for k in ("success_rate", "ci95", "episodes", "mean_return", "latency_ms")}
    if args.json:
        args.json.write_text(
            json.dumps({**summary, "per_episode": out["per_episode"], "videos": out["videos"]}, indent=2)
        )
    lo, hi = result.ci95
    print(
        f"{args.env}: success {100 * result.success_rate:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] over {result.episodes} "
        f"episodes, mean return {result.mean_return:.2f}, policy latency p50 {result.latency_ms['p50']:.1f} ms "
        f"p99 {result.latency_ms['p99']:.1f} ms ({torch.get_num_threads()} thread)"
    )
    return 0
