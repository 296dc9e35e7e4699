"""``robolearn finetune reinflow|dppo``: RL fine-tuning of an imitation-learned policy in simulation.

ReinFlow fine-tunes flow checkpoints, DPPO diffusion checkpoints (:mod:`robolearn.rl`). Rollouts use
the sparse success reward; ``RUN2`` ends up holding a plain checkpoint that ``eval``, ``serve`` and
``steer`` load like any other. The recipe defaults to ``policies/<algorithm>_<task>.yaml`` for the
env (``policies/reinflow_lift.yaml`` for ``franka-lift``) when one exists, else the built-in
defaults of :class:`robolearn.rl.config.FinetuneConfig`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robolearn.errors import UserError

HELP = "RL fine-tuning (ReinFlow for flow, DPPO for diffusion checkpoints) with sparse rewards"
POLICY_OF = {"reinflow": "flow", "dppo": "diffusion"}
"""The policy type each algorithm fine-tunes."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "algorithm", choices=sorted(POLICY_OF), help="reinflow (flow checkpoints) or dppo (diffusion)"
    )
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="pretrained checkpoint (a RUN or RUN/checkpoints/STEP)"
    )
    p.add_argument("--env", help="registered env (default: the env the checkpoint's data came from)")
    p.add_argument("--out", required=True, type=Path, help="run folder for the fine-tuning run")
    p.add_argument(
        "--preset", type=Path, help="recipe YAML (default: policies/<algorithm>_<task>.yaml if present)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a FinetuneConfig field, e.g. iterations=20 or ppo.clip=0.02",
    )
    p.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        help="run the env workers as Ray actors (extra ray): auto, or a cluster address",
    )
    p.add_argument("--resume", action="store_true", help="continue from the latest RUN/checkpoints/ITER")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the learner (default 1)")  # fmt: skip


def default_preset(algorithm: str, env: str) -> Path | None:
    """``policies/<algorithm>_<task>.yaml`` for env ``franka-<task>`` (or ``<env>``), if it exists."""
    from robolearn.train.recipes import POLICIES_DIR

    task = env.removeprefix("franka-")
    path = POLICIES_DIR / f"{algorithm}_{task}.yaml"
    return path if path.is_file() else None


def run(args: argparse.Namespace) -> int:
    if args.ray:  # one Ray session for the run: joined (or started) here, left (or shut down) at the end
        from robolearn.rl.ray_envs import ray_session

        with ray_session(args.ray):
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    import torch

    from robolearn.commands.eval import resolve_envs
    from robolearn.config import ConfigError, load_config
    from robolearn.policies import CheckpointError, FeatureMismatchError, load_policy
    from robolearn.rl.config import FinetuneConfig
    from robolearn.rl.runner import FineTuner

    torch.set_num_threads(args.threads)
    envs = resolve_envs(args.checkpoint, args.env)
    if len(envs) != 1:
        raise UserError(f"--env: fine-tuning runs on one env, found {', '.join(envs)}")
    env = envs[0]
    preset = args.preset if args.preset is not None else default_preset(args.algorithm, env)
    try:
        cfg = load_config(FinetuneConfig, preset, [*args.overrides])
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if preset is not None and cfg.algorithm != args.algorithm:
        raise UserError(
            f"{preset}: algorithm: expected {args.algorithm!r} (the command's), found {cfg.algorithm!r}"
        )
    cfg.algorithm = args.algorithm
    try:
        policy = load_policy(args.checkpoint)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    want = POLICY_OF[args.algorithm]
    if policy.name != want:
        raise UserError(
            f"{args.checkpoint / 'config.json'}: {args.algorithm} fine-tunes {want} policies, found {policy.name!r}"
        )
    print(f"finetune {args.algorithm}: {args.checkpoint} on {env}, recipe {preset or 'built-in defaults'}",
          flush=True)  # fmt: skip
    backend = "ray" if args.ray else "process"
    try:
        tuner = FineTuner(
            cfg, policy, env, args.out, resume=args.resume, backend=backend, ray_address=args.ray
        )
        summary = tuner.fit()
    except (
        ConfigError,
        FeatureMismatchError,
        FileExistsError,
        FileNotFoundError,
        KeyError,
        ValueError,
    ) as exc:
        raise UserError(str(exc).strip("'\"")) from None
    last = summary.last
    tail = (f"; last iteration: success {last['success_rate']:.2f} (held {last['held_success_rate']:.2f}) "
            f"over {last['episodes']} episodes") if last else ""  # fmt: skip
    print(f"fine-tuned {policy.name} with {args.algorithm} for {summary.iterations} iterations, "
          f"{summary.env_steps} env steps in {summary.seconds:.0f}s{tail}; checkpoint: {summary.run}")  # fmt: skip
    return 0
