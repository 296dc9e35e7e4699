"""The RL stages of ``robolearn quickstart --stages all``: the report's "fine-tuned" and "steered" rows.

The main job's imitation policy already reaches about 100% on ``franka-lift``, which leaves RL nothing
to show, so both rows start from a deliberately under-trained flow policy: checkpoint
``--weak-checkpoint`` (500) of a separate short run of ``--weak-steps`` (600) steps on the same demos.
That is the start measured in the README's *Fine-tuning* table (49.0% first and held over 200
episodes); a short run of its own costs about two minutes and leaves the main run and its figures
untouched.

- **fine-tuned**: ReinFlow with the env's recipe (``policies/reinflow_lift.yaml``) for
  ``--finetune-iterations`` iterations (about 3,100 env steps each; the recipe's 300k env-step budget
  ends it near 98), ``robolearn finetune``'s code path.
- **steered**: the under-trained policy's rollouts are recorded on seeds from ``--record-seed``
  (disjoint from the evaluation seeds), an IQL critic trains on the demos plus those rollouts with
  reward on every step the goal holds (``reward=success``, the README's V-GPS recipe), and
  the policy steered with ``--samples`` K chunks per step (V-GPS) is evaluated.

"Before" is the under-trained policy evaluated once on the evaluation seeds; the fine-tuned and the
steered policies are evaluated on the same seeds, both figures each (first reached, held). Every
stage reuses its finished output in ``--out``, as the imitation stages do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robolearn.errors import UserError

STAGES = (
    "train an under-trained flow policy",
    "evaluate it (the start of both rows)",
    "fine-tune it with ReinFlow",
    "evaluate the fine-tuned policy",
    "record its rollouts for the critic",
    "train an IQL critic on demos + rollouts",
    "evaluate it steered by the critic",
)
"""Stage headers, in order (the quickstart numbers them after its own)."""
FIGURES = ("success_rate", "ci95", "held_success_rate", "held_ci95", "hold_steps", "episodes", "latency_ms")
"""The :class:`~robolearn.eval.evaluate.EvalResult` fields ``rl.json`` keeps for each evaluation."""
NUM_ENVS = 8
"""Env copies per evaluation, as the imitation stage's."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the RL stages (used with ``--stages all``)."""
    g = p.add_argument_group("RL stages (--stages all)")
    g.add_argument("--weak-steps", type=int, default=600, help="steps of the under-trained run")
    g.add_argument("--weak-checkpoint", type=int, default=500,
                   help="its checkpoint both rows start from (49%% first success measured)")  # fmt: skip
    g.add_argument("--rl-eval-episodes", type=int, default=100,
                   help="episodes of each RL evaluation (before, fine-tuned, steered; same seeds)")  # fmt: skip
    g.add_argument("--finetune-iterations", type=int, default=100,
                   help="ReinFlow iterations (about 3,100 env steps each; the recipe's 300k env-step budget "
                        "stops it near 98)")  # fmt: skip
    g.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the fine-tuning recipe, as finetune --set")  # fmt: skip
    g.add_argument("--record-episodes", type=int, default=300, help="rollouts recorded for the critic")
    g.add_argument("--record-seed", type=int, default=2_000_000,
                   help="first seed of the recorded rollouts (disjoint from the evaluation seeds)")  # fmt: skip
    g.add_argument("--critic-steps", type=int, default=6000, help="IQL critic gradient steps")
    g.add_argument(
        "--samples", type=int, default=10, metavar="K", help="chunks sampled per step when steering"
    )


@dataclass
class RLResults:
    """What the RL stages measured; :func:`rows` and :func:`summary_lines` render it."""

    data: dict[str, Any]
    """The content of ``OUT/rl.json``."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage."""
    results: dict[str, Any] = field(default_factory=dict)
    """``EvalResult`` of ``before``, ``fine-tuned`` and ``steered``."""


def check_args(args: argparse.Namespace) -> None:
    """One-line :class:`UserError` for RL-stage options out of range, before any stage runs."""
    from robolearn.eval import EVAL_SEED_BASE

    positive = ("weak_steps", "weak_checkpoint", "rl_eval_episodes", "finetune_iterations", "record_episodes",
                "critic_steps", "samples")  # fmt: skip
    for name in positive:
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, found {getattr(args, name)}")
    if args.weak_checkpoint > args.weak_steps:
        raise UserError(f"--weak-checkpoint {args.weak_checkpoint}: beyond --weak-steps {args.weak_steps}")
    evals = max(args.eval_episodes, args.rl_eval_episodes)
    lo, hi = args.record_seed, args.record_seed + args.record_episodes
    if lo < EVAL_SEED_BASE + evals and EVAL_SEED_BASE < hi:
        raise UserError(f"--record-seed {lo}: seeds {lo}-{hi - 1} overlap the evaluation seeds "
                        f"{EVAL_SEED_BASE}-{EVAL_SEED_BASE + evals - 1}")  # fmt: skip


def figures(result: Any) -> dict[str, Any]:
    """The figures ``rl.json`` keeps of an ``EvalResult``."""
    out = result.to_json()
    return {k: out[k] for k in FIGURES}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _evaluate(policy: Any, args: argparse.Namespace, out: Path, **kwargs: Any) -> Any:
    from robolearn.eval.evaluate import evaluate

    result = evaluate(policy, args.env, episodes=kwargs.pop("episodes", args.rl_eval_episodes),
                      num_envs=NUM_ENVS, **kwargs)  # fmt: skip
    _write_json(out, result.to_json())
    print(f"first success {100 * result.success_rate:.1f}%, held {result.hold_steps} steps "
          f"{100 * result.held_success_rate:.1f}% ({result.episodes} episodes); latency p50 "
          f"{result.latency_ms['p50']:.2f} ms -> {out}", flush=True)  # fmt: skip
    return result


def run_stages(args: argparse.Namespace, dataset: Path, stage: Callable[[str], float]) -> RLResults:
    """Run the RL stages on the quickstart's demos ``dataset``; ``stage(header)`` opens each stage and
    returns its start time. Writes ``OUT/rl.json`` and one ``OUT/eval_*.json`` per evaluation."""
    import torch

    from robolearn.commands import finetune as finetune_cmd
    from robolearn.commands import train_critic as critic_cmd
    from robolearn.commands.steer import steered
    from robolearn.commands.train import load_train_config
    from robolearn.data.reader import LeRobotReader
    from robolearn.policies import load_policy
    from robolearn.train.state import STATE_DIR, latest_checkpoint
    from robolearn.train.trainer import Trainer

    check_args(args)
    out, timings, results = args.out, {}, {}
    weak_dir, ft_dir, rollouts, critic_dir = out / "weak", out / "finetune", out / "rollouts", out / "critic"
    headers = iter(STAGES)

    t = stage(next(headers) + f" ({args.weak_steps} steps, start at checkpoint {args.weak_checkpoint})")
    weak_ckpt = weak_dir / "checkpoints" / str(args.weak_checkpoint)
    if (weak_ckpt / "model.safetensors").exists() and (weak_dir / "model.safetensors").exists():
        print(f"reusing the under-trained policy in {weak_ckpt}")
    else:
        torch.set_num_threads(args.threads)
        cfg = load_train_config(args.preset, [f"steps={args.weak_steps}", f"save_every={args.weak_checkpoint}"],
                                None)  # fmt: skip
        resume = (weak_dir / "checkpoints").exists()
        Trainer(cfg, dataset, weak_dir, resume=resume, source=str(args.preset)).fit()
    timings["weak train"] = time.perf_counter() - t

    t = stage(next(headers))
    torch.set_num_threads(1)
    weak = load_policy(weak_ckpt)
    results["before"] = _evaluate(weak, args, out / "eval_weak.json")
    timings["weak eval"] = time.perf_counter() - t

    t = stage(next(headers) + f" ({args.finetune_iterations} iterations)")
    recipe = finetune_cmd.default_preset("reinflow", args.env)
    ns = argparse.Namespace(algorithm="reinflow", checkpoint=weak_ckpt, env=args.env, out=ft_dir, preset=None,
                            overrides=[f"iterations={args.finetune_iterations}", *args.finetune_set], ray=None,
                            resume=(ft_dir / "checkpoints").exists(), threads=1)  # fmt: skip
    if finetune_cmd.run(ns) != 0:
        raise UserError(f"fine-tuning into {ft_dir} failed")
    last = latest_checkpoint(ft_dir)
    ft_iterations = int(last.name)
    ft_env_steps = int(json.loads((last / STATE_DIR / "rl_state.json").read_text())["env_steps"])
    timings["fine-tune"] = time.perf_counter() - t

    t = stage(next(headers))
    results["fine-tuned"] = _evaluate(load_policy(ft_dir), args, out / "eval_finetuned.json")
    timings["fine-tuned eval"] = time.perf_counter() - t

    t = stage(next(headers) + f" ({args.record_episodes} episodes from seed {args.record_seed})")
    info = rollouts / "meta" / "info.json"
    have = LeRobotReader(rollouts).num_episodes if info.exists() else 0
    if have == args.record_episodes:
        print(f"reusing {have} recorded rollouts in {rollouts}")
    else:
        # A partial recording: evaluate writes into an empty folder only.
        shutil.rmtree(rollouts, ignore_errors=True)
        _evaluate(weak, args, out / "eval_record.json", episodes=args.record_episodes, seed_base=args.record_seed,
                  record_dir=rollouts)  # fmt: skip
    timings["record"] = time.perf_counter() - t

    t = stage(next(headers) + f" ({args.critic_steps} steps)")
    critic_json = out / "critic.json"
    if (critic_dir / "model.safetensors").exists() and critic_json.exists():
        print(f"reusing the critic in {critic_dir}")
    else:
        ns = argparse.Namespace(dataset=[dataset, rollouts], out=critic_dir, algo="iql", json=critic_json,
                                overrides=[f"steps={args.critic_steps}", "reward=success"], threads=args.threads)  # fmt: skip
        if critic_cmd.run(ns) != 0:
            raise UserError(f"critic training into {critic_dir} failed")
    critic = json.loads(critic_json.read_text())
    # What the critic folder holds (a reused one may predate this run's options).
    critic_cfg = json.loads((critic_dir / "config.json").read_text())["config"]
    timings["critic"] = time.perf_counter() - t

    t = stage(next(headers) + f" (K={args.samples})")
    torch.set_num_threads(1)
    results["steered"] = _evaluate(steered(weak, critic_dir, args.samples), args, out / "eval_steered.json")
    timings["steered eval"] = time.perf_counter() - t

    before, tuned, steer = (figures(results[k]) for k in ("before", "fine-tuned", "steered"))
    data = {
        "env": args.env,
        "episodes": args.rl_eval_episodes,
        "start": {"run": str(weak_dir), "checkpoint": str(weak_ckpt), "steps": args.weak_checkpoint,
                  "run_steps": args.weak_steps},
        "fine-tuned": {"before": before, "after": tuned, "algorithm": "reinflow",
                       "recipe": str(recipe) if recipe else None, "overrides": list(args.finetune_set),
                       "iterations": ft_iterations, "env_steps": ft_env_steps,
                       "seconds": timings["fine-tune"], "checkpoint": str(ft_dir)},
        "steered": {"before": before, "after": steer, "samples": args.samples, "critic": str(critic_dir),
                    "critic_algo": critic_cfg["algo"], "critic_steps": critic_cfg["steps"],
                    "critic_transitions": critic.get("transitions"),
                    "q_success_episodes": critic.get("q_success_episodes"),
                    "q_failed_episodes": critic.get("q_failed_episodes"), "record_episodes": args.record_episodes,
                    "record_seed": args.record_seed,
                    "added_latency_ms_p50": steer["latency_ms"]["p50"] - before["latency_ms"]["p50"],
                    "seconds": timings["record"] + timings["critic"] + timings["steered eval"]},
        "timings": timings,
    }  # fmt: skip
    _write_json(out / "rl.json", data)
    return RLResults(data, timings, results)


def _pct(r: float) -> str:
    return f"{100 * r:.1f}%"


def change(row: dict[str, Any], key: str) -> str:
    """``"36.0% → 38.0%"``: ``key`` (``success_rate`` or ``held_success_rate``) before and after."""
    return f"{_pct(row['before'][key])} → {_pct(row['after'][key])}"


def rows(data: dict[str, Any]) -> list[list[str]]:
    """The report grid of ``rl.json``: a header, then the "fine-tuned" and "steered" rows."""
    ft, st = data["fine-tuned"], data["steered"]
    hold = ft["before"]["hold_steps"]
    return [
        ["row", "first success: before → after", f"held {hold} steps: before → after", "budget", "wall time"],
        ["fine-tuned", change(ft, "success_rate"), change(ft, "held_success_rate"),
         f"ReinFlow, {ft['iterations']} iterations, {ft['env_steps']:,} env steps", f"{ft['seconds']:.0f} s"],
        ["steered", change(st, "success_rate"), change(st, "held_success_rate"),
         f"K={st['samples']}, {st['critic_algo'].upper()} critic ({st['critic_steps']} steps) on demos + "
         f"{st['record_episodes']} rollouts; {st['added_latency_ms_p50']:+.2f} ms per chunk (p50)",
         f"{st['seconds']:.0f} s"],
    ]  # fmt: skip


def summary_lines(data: dict[str, Any]) -> list[str]:
    """The two lines the quickstart prints at the end for the RL rows."""
    ft, st = data["fine-tuned"], data["steered"]
    return [
        f"  fine-tuned (ReinFlow, {ft['iterations']} iterations, {ft['env_steps']:,} env steps, "
        f"{ft['seconds'] / 60:.1f} min): first {change(ft, 'success_rate')}, "
        f"held {change(ft, 'held_success_rate')}",
        f"  steered (K={st['samples']}, {st['critic_algo'].upper()} critic, "
        f"{st['added_latency_ms_p50']:+.2f} ms/chunk p50): first {change(st, 'success_rate')}, "
        f"held {change(st, 'held_success_rate')}",
    ]  # fmt: skip


def sections(rl: RLResults, report_dir: Path) -> list[Any]:
    """The report sections of the RL stages: the two rows with the stage timings, and a success plot."""
    from robolearn.eval import report as rep

    data, res = rl.data, rl.results
    n, hold = data["episodes"], data["fine-tuned"]["before"]["hold_steps"]
    labels, rates, cis = [], [], []
    # Short labels: six bars share the standard 5-inch plot.
    bars = (("start", "before"), ("tuned", "fine-tuned"), (f"K={data['steered']['samples']}", "steered"))
    for name, key in bars:
        r = res[key]
        labels += [f"{name}\nfirst", f"{name}\nheld"]
        rates += [r.success_rate, r.held_success_rate]
        cis += [r.ci95, r.held_ci95]
    plot = rep.plot_success(labels, rates, cis, report_dir / "rl_success.png",
                            f"Start, fine-tuned, steered ({n} episodes each)")  # fmt: skip
    text = (f"Both rows start from an under-trained flow policy (checkpoint {data['start']['steps']} of a "
            f"{data['start']['run_steps']}-step run on the same demos) and are evaluated on the same {n} seeds; "
            f"held: success still true {hold} steps past the first. The critic's rollouts use seeds from "
            f"{data['steered']['record_seed']}, disjoint from those. The added latency compares the p50 policy "
            f"call of the steered and unsteered evaluations (batches of up to {NUM_ENVS} envs).")  # fmt: skip
    table = {f"time: {k}": f"{v:.0f} s" for k, v in rl.timings.items()}
    return [rep.Section("RL: fine-tuned and steered on " + data["env"], text, images=[plot.name],
                        table=table, grid=rows(data))]  # fmt: skip


__all__ = [
    "STAGES",
    "RLResults",
    "add_arguments",
    "check_args",
    "rows",
    "run_stages",
    "sections",
    "summary_lines",
]
