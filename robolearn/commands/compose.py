"""``robolearn compose``: mix two flow (or two diffusion) checkpoints at every denoising step (GPC)
and search the mixing weight in closed loop.

Each weight w runs ``ComposedPolicy(A, B, w)`` (:mod:`robolearn.rl.compose`): w = 1 is checkpoint A
alone, w = 0 checkpoint B alone. Every weight runs on the same env seeds with the same noise stream;
success is reported both ways (first reached; still held ``--hold-steps`` later) with 95% Wilson
intervals, and the best weight is the one with the highest held success (then first success).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from robolearn.errors import UserError

HELP = "compose two flow or two diffusion checkpoints (GPC) and search the mixing weight in closed loop"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", action="append", required=True, type=Path, metavar="RUN",
                   help="a checkpoint folder; give it twice: A (weight w) then B (weight 1 - w)")  # fmt: skip
    p.add_argument("--weights", default="0,0.25,0.5,0.75,1", metavar="W[,W...]",
                   help="weights of A in [0, 1] (default 0,0.25,0.5,0.75,1)")  # fmt: skip
    p.add_argument("--env", help="registered env (default: checkpoint A's)")
    p.add_argument("--episodes", type=int, default=50, help="episodes per weight")
    p.add_argument("--hold-steps", type=int, default=20, metavar="N",
                   help="run each episode N steps past its first success (as eval)")  # fmt: skip
    p.add_argument("--num-envs", type=int, default=4, help="env copies stepped together")
    p.add_argument("--seed", type=int, default=None, help="first env seed (default: eval's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an env config field")  # fmt: skip
    p.add_argument("--json", type=Path, help="write every weight's figures and the best here")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")


def parse_weights(text: str) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0]; a :class:`UserError` for anything outside [0, 1]."""
    try:
        values = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--weights: expected W or W,W,... (numbers in [0, 1]), found {text!r}") from None
    if not values:
        raise UserError(f"--weights: expected W or W,W,... (numbers in [0, 1]), found {text!r}")
    for w in values:
        if not 0.0 <= w <= 1.0:
            raise UserError(f"--weights: each weight must be in [0, 1], found {w:g}")
    return values


def _load(path: Path) -> Any:
    from robolearn.policies import CheckpointError, load_policy
    from robolearn.rl.compose import KINDS

    try:
        policy = load_policy(path)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    if policy.name not in KINDS:
        raise UserError(
            f"--checkpoint {path}: type {policy.name!r} cannot be composed (expected flow or diffusion)"
        )
    return policy


def _pct(rate: float, ci: tuple[float, float]) -> str:
    return f"{100 * rate:5.1f}% [{100 * ci[0]:5.1f}, {100 * ci[1]:5.1f}]"


def _row(w: float, r: Any) -> str:
    return (
        f"{w:6.2f}  {_pct(r.success_rate, r.ci95)}  {_pct(r.held_success_rate, r.held_ci95)}  "
        f"{r.mean_return:11.3f}  {r.latency_ms['p50']:8.1f} ms"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from robolearn.commands.eval import resolve_envs
    from robolearn.config import ConfigError
    from robolearn.eval.evaluate import policy_env_config
    from robolearn.policies import FeatureMismatchError
    from robolearn.rl.compose import ComposedPolicy, search_weights

    torch.set_num_threads(args.threads)
    if len(args.checkpoint) != 2:
        raise UserError(f"--checkpoint: give exactly two (A then B), found {len(args.checkpoint)}")
    weights = parse_weights(args.weights)
    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, found {args.episodes}")
    if args.hold_steps < 0:
        raise UserError(f"--hold-steps must be >= 0, found {args.hold_steps}")
    path_a, path_b = args.checkpoint
    policy_a, policy_b = _load(path_a), _load(path_b)
    try:
        probe = ComposedPolicy(policy_a, policy_b, weights[0])
    except ValueError as exc:
        raise UserError(f"--checkpoint {path_b} does not compose with {path_a}: {exc}") from None
    envs = resolve_envs(path_a, args.env)
    if len(envs) != 1:
        raise UserError(f"--env: compose evaluates one env, found {', '.join(envs)}")
    env = envs[0]
    print(f"{env}: {args.episodes} episodes per weight, same seeds and noise; w weighs A = {path_a}, "
          f"1 - w weighs B = {path_b}")  # fmt: skip
    print(f"{'w':>6}  {'first success':<21}  {'held ' + str(args.hold_steps) + ' steps':<21}  "
          f"{'mean return':>11}  {'p50/chunk':>11}", flush=True)  # fmt: skip
    try:
        cfg = policy_env_config(probe, env, overrides=args.overrides)
        found = search_weights(policy_a, policy_b, env, weights, env_config=cfg, episodes=args.episodes,
                               hold_steps=args.hold_steps, num_envs=args.num_envs, seed=args.seed,
                               on_result=lambda w, r: print(_row(w, r), flush=True))  # fmt: skip
    except (ConfigError, KeyError, ValueError, FeatureMismatchError) as exc:
        raise UserError(str(exc).strip("'\"")) from None
    best = found.results[found.best]
    print(f"best: w = {found.best_weight:g} (held {_pct(best.held_success_rate, best.held_ci95).strip()}, "
          f"first {_pct(best.success_rate, best.ci95).strip()})")  # fmt: skip
    if args.json:
        data = {"env": env, "checkpoints": [str(path_a), str(path_b)], "kind": probe.kind,
                "episodes": args.episodes, "hold_steps": args.hold_steps, **found.to_json()}  # fmt: skip
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, args.json)
    return 0
