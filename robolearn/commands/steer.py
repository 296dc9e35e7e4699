"""``robolearn steer``: evaluate a policy steered by a critic (V-GPS) next to the same policy unsteered.

Both runs use the same env seeds (``eval``'s), so the difference is the steering alone. Success is
reported both ways (first reached; still held ``--hold-steps`` later), with the policy latency per
chunk of each and the latency the K-sample scoring adds. ``--samples 1,4,10`` runs an ablation
over several K. The policy's weights are never changed (:mod:`robolearn.rl.steer`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from robolearn.errors import UserError

HELP = "evaluate a policy steered by a critic (V-GPS), against the same policy unsteered"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, type=Path, help="policy checkpoint folder")
    p.add_argument("--critic", required=True, type=Path, help="critic folder (robolearn train-critic)")
    p.add_argument("--samples", default="10", metavar="K[,K...]",
                   help="chunks sampled per step; several comma-separated values run an ablation (default 10)")  # fmt: skip
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="sample softmax(Q/T) instead of the argmax (default: argmax)")  # fmt: skip
    p.add_argument("--env", help="registered env (default: the checkpoint's)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--hold-steps", type=int, default=20, metavar="N",
                   help="run each episode N steps past its first success (as eval)")  # fmt: skip
    p.add_argument("--num-envs", type=int, default=4, help="env copies stepped together")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an env config field")  # fmt: skip
    p.add_argument("--no-baseline", action="store_true", help="skip the unsteered run")
    p.add_argument("--json", type=Path, help="write every run's figures here")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")


def parse_samples(text: str) -> list[int]:
    """``"1,4,10"`` -> [1, 4, 10]; a :class:`UserError` for anything but positive integers."""
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--samples: expected K or K,K,... (positive integers), found {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"--samples: expected K or K,K,... (positive integers), found {text!r}")
    return values


def steered(policy: Any, critic_path: Path, samples: int, temperature: float | None = None) -> Any:
    """``policy`` wrapped by the critic at ``critic_path`` (``--critic`` of eval, steer and serve);
    one-line :class:`UserError` for a missing, corrupt or mismatched critic."""
    from robolearn.policies import CheckpointError
    from robolearn.rl.critic import load_critic
    from robolearn.rl.steer import SteeredPolicy

    if samples < 1:
        raise UserError(f"--samples must be >= 1, found {samples}")
    try:
        critic = load_critic(critic_path, device=getattr(policy, "device", "cpu"))
        return SteeredPolicy(policy, critic, num_samples=samples, temperature=temperature)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:
        raise UserError(f"--critic {critic_path}: {exc}") from None


def _line(label: str, result: Any, hold: int) -> str:
    lo, hi = result.ci95
    hlo, hhi = result.held_ci95
    lat = result.latency_ms
    return (
        f"{label:>12}: first success {100 * result.success_rate:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]  "
        f"held {hold} steps {100 * result.held_success_rate:5.1f}% [{100 * hlo:.1f}, {100 * hhi:.1f}]  "
        f"latency/chunk p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from robolearn.commands.eval import resolve_envs
    from robolearn.config import ConfigError
    from robolearn.eval.evaluate import evaluate, policy_env_config
    from robolearn.policies import CheckpointError, FeatureMismatchError, load_policy

    torch.set_num_threads(args.threads)
    ks = parse_samples(args.samples)
    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, found {args.episodes}")
    if args.hold_steps < 0:
        raise UserError(f"--hold-steps must be >= 0, found {args.hold_steps}")
    try:
        policy = load_policy(args.checkpoint)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    envs = resolve_envs(args.checkpoint, args.env)
    if len(envs) != 1:
        raise UserError(f"--env: steer evaluates one env, found {', '.join(envs)}")
    env = envs[0]
    runs: list[tuple[str, int | None, Any]] = []
    if not args.no_baseline:
        runs.append(("unsteered", None, policy))
    runs += [(f"K={k}", k, steered(policy, args.critic, k, args.temperature)) for k in ks]
    results: dict[str, Any] = {}
    base_p50 = None
    print(f"{env}: {args.episodes} episodes each, same seeds, {torch.get_num_threads()} thread")
    for label, k, pol in runs:
        try:
            cfg = policy_env_config(pol, env, overrides=args.overrides)
            result = evaluate(pol, env, cfg, episodes=args.episodes, num_envs=args.num_envs,
                              hold_steps=args.hold_steps)  # fmt: skip
        except (ConfigError, KeyError, ValueError, FeatureMismatchError) as exc:
            raise UserError(str(exc).strip("'\"")) from None
        p50 = result.latency_ms["p50"]
        line = _line(label, result, args.hold_steps)
        if k is None:
            base_p50 = p50
        elif base_p50 is not None:
            line += f"  (+{p50 - base_p50:.1f} ms over unsteered)"
        print(line, flush=True)
        out = result.to_json()
        results[label] = {
            "samples": k,
            **{
                key: out[key]
                for key in ("success_rate", "ci95", "held_success_rate", "held_ci95", "latency_ms")
            },
            "added_latency_ms_p50": None if k is None or base_p50 is None else p50 - base_p50,
        }
    if args.json:
        data = {"env": env, "episodes": args.episodes, "hold_steps": args.hold_steps,
                "temperature": args.temperature, "runs": results}  # fmt: skip
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, args.json)
    return 0
