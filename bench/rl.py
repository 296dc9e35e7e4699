"""``robolearn bench rl``: RL fine-tuning throughput, and ReinFlow's wall time per iteration against DPPO's.

In one run, on one task (``franka-lift``, state observations):

- **raw env rate**: ``bench sim``'s figure, env steps/s of one env under random actions in this process;
- **rollout rate**: env steps/s while ``finetune`` collects rollouts (policy sampling, value estimates,
  one env worker process per core holding 2 envs each, chunked steps), and its ratio to the raw rate (goal ≥ 50%);
- **update time** per iteration (the PPO epochs), and the whole iteration;
- **ReinFlow vs DPPO**: the recipes ``policies/reinflow_lift.yaml`` and ``policies/dppo_lift.yaml`` on
  the same env budget per iteration (their ``n_steps``, env count, epochs and minibatches), with the
  policies' recipe networks (``policies/flow_state.yaml``: 4 Euler steps; ``diffusion_state.yaml``:
  DDIM-10, all 10 fine-tuned); goal: ReinFlow ≥ 4× faster per iteration;
- **DPPO at its paper's setting** for state-based robomimic (Ren et al. 2024: DDPM with 20 denoising
  steps, the last 10 fine-tuned), the same network and env budget: the peer as its authors run it.

The policies are untrained (time per iteration does not depend on the weights); the two algorithms'
iterations alternate, so that the load of a shared machine weighs on both alike; the first iteration
of each is a warm-up and not counted. torch runs one thread in the learner (``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")


PAPER_DPPO = {"inference_scheduler": "ddpm", "num_train_timesteps": 20, "num_inference_steps": 20}
"""DPPO's robomimic state-task sampler: DDPM-20 (its ``ft_denoising_steps`` is 10)."""
ALGORITHMS = {"reinflow": ("reinflow", {}, []), "dppo": ("dppo", {}, []),
              "dppo_paper": ("dppo", PAPER_DPPO, ["dppo.ft_denoising_steps=10"])}  # fmt: skip
"""Measured variants: name -> (algorithm, policy_config overrides, fine-tuning overrides)."""


def _policy(kind: str, env_name: str, policy_overrides: dict[str, Any] | None = None):
    from robolearn.config import load_yaml
    from robolearn.envs import make_env
    from robolearn.eval.evaluate import env_feature_shapes
    from robolearn.train.config import TrainConfig
    from robolearn.train.recipes import POLICIES_DIR
    from robolearn.train.trainer import build_policy

    env = make_env(env_name)
    feats = env_feature_shapes(env)
    env.close()
    data = load_yaml(POLICIES_DIR / f"{kind}_state.yaml")
    cfg = TrainConfig(policy=kind, policy_config={**data["policy_config"], **(policy_overrides or {})})
    return build_policy(cfg, feats, None, f"policies/{kind}_state.yaml")


def _tuner(name: str, env_name: str, iterations: int, n_steps: int | None, run: Path):
    """A fine-tuning run of an untrained recipe policy with variant ``name`` of :data:`ALGORITHMS`
    (its algorithm's lift recipe)."""
    from robolearn.config import load_config
    from robolearn.rl.config import FinetuneConfig
    from robolearn.rl.runner import FineTuner
    from robolearn.train.recipes import POLICIES_DIR

    algorithm, policy_overrides, extra = ALGORITHMS[name]
    overrides = [f"iterations={iterations}", "ppo.critic_warmup_iterations=0", "ppo.target_kl=0", *extra]
    if n_steps:
        overrides.append(f"n_steps={n_steps}")
    cfg = load_config(FinetuneConfig, POLICIES_DIR / f"{algorithm}_lift.yaml", overrides)
    policy = _policy("flow" if algorithm == "reinflow" else "diffusion", env_name, policy_overrides)
    return FineTuner(cfg, policy, env_name, run, backend="process", progress=False)


def _summary(tuner, rows: list[dict[str, Any]]) -> dict[str, Any]:
    timed = rows[1:] if len(rows) > 1 else rows
    mean = {
        k: sum(r[k] for r in timed) / len(timed) for k in ("rollout_s", "policy_s", "update_s", "iteration_s")
    }
    steps = sum(r["env_steps"] for r in timed)
    return {
        "algorithm": tuner.cfg.algorithm,
        "iterations_timed": len(timed),
        "num_envs": tuner.num_envs,
        "n_steps": tuner.cfg.n_steps,
        "update_epochs": tuner.cfg.ppo.update_epochs,
        "minibatch_size": tuner.cfg.ppo.minibatch_size,
        "env_steps_per_iteration": steps / len(timed),
        "rollout_env_steps_per_s": steps / sum(r["rollout_s"] for r in timed),
        "policy_s_per_iteration": mean["policy_s"],
        "rollout_s_per_iteration": mean["rollout_s"],
        "update_s_per_iteration": mean["update_s"],
        "iteration_s": mean["iteration_s"],
    }


def measure_algorithms(env_name: str, iterations: int, n_steps: int | None) -> dict[str, dict[str, Any]]:
    """The variants' iterations interleaved (A B C A B C ...), so that a change in the machine's load
    during the run weighs on all alike; each has its own env workers."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tuners = {a: _tuner(a, env_name, iterations, n_steps, Path(tmp) / a) for a in ALGORITHMS}
        envs = {a: t.make_envs() for a, t in tuners.items()}
        rows: dict[str, list[dict[str, Any]]] = {a: [] for a in tuners}
        try:
            for _ in range(iterations):
                for a, t in tuners.items():
                    rows[a].append(t.iterate(envs[a]))
        finally:
            for e in envs.values():
                e.close()
    return {a: _summary(t, rows[a]) for a, t in tuners.items()}


def run(
    json_out: str | None = None, quick: bool = False, seconds: float = 2.0, task: str = "franka-lift"
) -> dict:
    """Measure and print the figures in the module docstring; optionally write them as JSON."""
    from robolearn.commands.bench import load_bench
    from robolearn.envs import make_env

    sim = load_bench("sim")
    env = make_env(task)
    raw = sim._rate(env, 0.3 if quick else seconds)
    env.close()
    iterations, n_steps = (2, 8) if quick else (4, None)
    report: dict[str, Any] = {"task": task, "threads": "OMP_NUM_THREADS=1, torch.set_num_threads(1)",
                              "raw_env_steps_per_s": raw}  # fmt: skip
    report.update(measure_algorithms(task, iterations, n_steps))
    rf = report["reinflow"]
    report["rollout_fraction_of_raw"] = rf["rollout_env_steps_per_s"] / raw
    for name in ("dppo", "dppo_paper"):
        dp = report[name]
        report[f"{name}_over_reinflow_iteration_time"] = dp["iteration_s"] / rf["iteration_s"]
        report[f"{name}_over_reinflow_update_time"] = (
            dp["update_s_per_iteration"] / rf["update_s_per_iteration"]
        )
    _print(report, quick)
    if json_out:
        tmp = Path(json_out).with_name(f".{Path(json_out).name}.tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, json_out)
    return report


def _print(r: dict, quick: bool) -> None:
    print(
        f"robolearn bench rl  ({r['task']}, state obs, {r['threads']}{'; --quick: noisy' if quick else ''})"
    )
    print(f"  raw env rate (bench sim, one process, random actions): {r['raw_env_steps_per_s']:8.0f} steps/s")
    for name in ALGORITHMS:
        a = r[name]
        print(f"  {name:<10} rollouts {a['rollout_env_steps_per_s']:7.0f} env steps/s ({a['num_envs']} envs in {min(a['num_envs'], os.cpu_count() or 1)} worker processes, "
              f"policy {a['policy_s_per_iteration']:.2f}s of {a['rollout_s_per_iteration']:.2f}s)"
              f" | update {a['update_s_per_iteration']:.2f}s | iteration {a['iteration_s']:.2f}s"
              f" for {a['env_steps_per_iteration']:.0f} env steps")  # fmt: skip
    print(
        f"  ReinFlow rollouts reach {100 * r['rollout_fraction_of_raw']:.0f}% of the raw env rate (goal >= 50%)"
    )
    for name, what in (
        ("dppo", "recipe, DDIM-10"),
        ("dppo_paper", "paper setting, DDPM-20, last 10 fine-tuned"),
    ):
        print(f"  DPPO ({what}) / ReinFlow wall time per iteration: {r[f'{name}_over_reinflow_iteration_time']:.1f}x "
              f"(update only: {r[f'{name}_over_reinflow_update_time']:.1f}x; goal >= 4x)")  # fmt: skip


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    run(args.json, args.quick)
