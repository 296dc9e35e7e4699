"""``robolearn quickstart``: the main job, end to end on the embedded default.

1. collect scripted demos on ``franka-lift`` (state observations);
2. train a flow-matching policy (``policies/flow_state.yaml``);
3. evaluate it closed-loop on unseen seeds;
4. write ``report/index.html`` with the training curve, success rate and latency plots and a
   rollout video.

``--stages all`` adds the RL rows before the report: an under-trained policy fine-tuned with ReinFlow
("fine-tuned") and steered by an IQL critic ("steered"), success before and after
(:mod:`robolearn.commands.quickstart_rl`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from robolearn.commands import quickstart_rl
from robolearn.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default="franka-lift")
    p.add_argument("--episodes", type=int, default=100, help="expert demos to collect")
    p.add_argument(
        "--preset", type=Path, default=ROOT / "policies" / "flow_state.yaml", help="training preset"
    )
    p.add_argument("--train-steps", type=int, help="override the preset's steps")
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="work folder (dataset, run)")
    p.add_argument("--report", type=Path, default=Path("report"), help="report folder (index.html)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--stages", choices=("il", "all"), default="il",
                   help="il: the imitation job; all: also the fine-tuned and steered RL rows")  # fmt: skip
    quickstart_rl.add_arguments(p)


def _stage(name: str) -> float:
    print(f"\n== {name}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    import torch

    from robolearn.commands import collect as collect_cmd
    from robolearn.commands.train import load_train_config
    from robolearn.data.reader import LeRobotReader
    from robolearn.eval import report as rep
    from robolearn.eval.evaluate import evaluate
    from robolearn.policies import load_policy
    from robolearn.train.logging import read_metrics
    from robolearn.train.trainer import Trainer

    start = time.perf_counter()
    dataset, run_dir, report_dir = args.out / "dataset", args.out / "run", args.report
    timings: dict[str, float] = {}
    rl_stages = args.stages == "all"
    if rl_stages:
        quickstart_rl.check_args(args)
    n = 4 + (len(quickstart_rl.STAGES) if rl_stages else 0)

    t = _stage(f"1/{n} collect {args.episodes} scripted demos on {args.env}")
    have = LeRobotReader(dataset).num_episodes if (dataset / "meta" / "info.json").exists() else 0
    if have < args.episodes:
        # An interrupted collection resumes after the largest seed the dataset records.
        ns = collect_cmd.default_args(env=args.env, episodes=args.episodes - have, out=dataset,
                                      json=args.out / "collect.json")  # fmt: skip
        if collect_cmd.run(ns) != 0:
            raise UserError("the scripted expert failed to produce enough demos")
    else:
        print(f"reusing {have} episodes in {dataset}")
    timings["collect"] = time.perf_counter() - t

    t = _stage(f"2/{n} train a flow policy")
    torch.set_num_threads(args.threads)
    overrides = [f"steps={args.train_steps}"] if args.train_steps else []
    cfg = load_train_config(args.preset, overrides, None)
    resume = (run_dir / "checkpoints").exists()
    if resume and (run_dir / "model.safetensors").exists():
        print(f"reusing the trained policy in {run_dir}")
    else:
        summary = Trainer(cfg, dataset, run_dir, resume=resume, source=str(args.preset)).fit()
        print(f"trained {summary.steps} steps, final loss {summary.final_loss:.4f}")
    timings["train"] = time.perf_counter() - t

    t = _stage(f"3/{n} evaluate on {args.eval_episodes} unseen seeds")
    torch.set_num_threads(1)
    policy = load_policy(run_dir)
    videos = report_dir / "videos"
    result = evaluate(
        policy, args.env, episodes=args.eval_episodes, num_envs=8, video_dir=videos, video_episodes=1
    )
    (lo, hi), (hlo, hhi) = result.ci95, result.held_ci95
    print(f"first success {100 * result.success_rate:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}], held "
          f"{result.hold_steps} steps {100 * result.held_success_rate:.1f}% [{100 * hlo:.1f}, {100 * hhi:.1f}]  "
          f"latency p50 {result.latency_ms['p50']:.2f} ms p99 {result.latency_ms['p99']:.2f} ms")  # fmt: skip
    (args.out / "eval.json").write_text(json.dumps(result.to_json(), indent=2))
    timings["eval"] = time.perf_counter() - t

    rl = None
    if rl_stages:
        number = iter(range(4, n))
        rl = quickstart_rl.run_stages(args, dataset, lambda name: _stage(f"{next(number)}/{n} {name}"))

    t = _stage(f"{n}/{n} write the report")
    rows = read_metrics(run_dir)
    curve = rep.plot_training_curve(rows, report_dir / "training_curve.png")
    succ = rep.plot_eval_success(
        result, report_dir / "success_rate.png", f"{cfg.policy} on {args.env} (95% Wilson interval)"
    )
    lat = rep.plot_latency(
        result.latency_ms, report_dir / "latency.png", "Policy latency per call (1 thread)"
    )
    timings["report"] = time.perf_counter() - t
    total = time.perf_counter() - start
    total_key = "time: total" if rl is None else "time: total (imitation and RL stages)"
    sections = [
        rep.Section("Imitation: flow policy on " + args.env, f"{args.episodes} scripted demos, {cfg.steps} training steps.",
                    table={**rep.success_table(result),
                           "mean return": f"{result.mean_return:.2f}",
                           "latency p50 / p99": f"{result.latency_ms['p50']:.2f} / {result.latency_ms['p99']:.2f} ms",
                           **{f"time: {k}": f"{v:.0f} s" for k, v in timings.items()}, total_key: f"{total:.0f} s"}),
        rep.Section("Training curve", images=[curve.name]),
        rep.Section("Success rate", f"First success: success reached on some step. Held: success still true on "
                    f"the last step of an episode that runs {result.hold_steps} steps past its first success.",
                    images=[succ.name]),
        rep.Section("Latency", images=[lat.name]),
        rep.Section("Rollout", videos=[str(Path(v).relative_to(report_dir)) for v in result.videos]),
    ]  # fmt: skip
    if rl is not None:
        sections[1:1] = quickstart_rl.sections(rl, report_dir)
    index = rep.write_report(report_dir, "robolearn quickstart", sections)
    print(
        f"\nquickstart done in {total / 60:.1f} min: success {100 * result.success_rate:.1f}% first, "
        f"{100 * result.held_success_rate:.1f}% held — report: {index.resolve()}"
    )
    if rl is not None:
        print("\n".join(quickstart_rl.summary_lines(rl.data)))
    return 0
