"""Closed-loop evaluation of one policy on several envs (a suite such as ``franka-language``, or a list).

Each env runs :func:`robolearn.eval.evaluate.evaluate` on its own (same episodes, seeds, hold
protocol and batching), and the results are reported three ways, each with both figures (first
success and held, see :mod:`robolearn.eval.evaluate`) and 95% Wilson intervals:

- **per task**: one entry per env;
- **per instruction template**: episodes grouped by the env's instruction with its per-episode
  parts as placeholders (``"push the {cube} cube to the {goal} circle"``; envs whose config gives
  no template use the instruction itself), so two envs sharing a template pool their episodes;
- **average**: the mean of the per-task rates (every task weighs the same), next to the pooled rate
  over all episodes with its Wilson interval (equal when every task ran the same episodes).

``per_instruction`` counts episodes and successes per exact instruction (e.g. per target colour).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.eval.evaluate import EvalResult, evaluate, policy_env_config
from robolearn.eval.metrics import wilson_interval


@dataclass
class Rates:
    """Both success figures of a group of episodes, with 95% Wilson intervals."""

    episodes: int
    success_rate: float
    ci95: tuple[float, float]
    held_success_rate: float
    held_ci95: tuple[float, float]

    @classmethod
    def of(cls, wins: int, held: int, n: int) -> Rates:
        """Rates of ``wins`` first successes and ``held`` held ones among ``n`` episodes."""
        if n <= 0:
            raise ValueError("no episodes to rate")
        return cls(n, wins / n, wilson_interval(wins, n), held / n, wilson_interval(held, n))

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ci95": list(self.ci95), "held_ci95": list(self.held_ci95)}


@dataclass
class SuiteResult:
    """Per-task results, per-template and average rates; see the module docstring."""

    envs: list[str]
    hold_steps: int
    tasks: dict[str, EvalResult]
    templates: dict[str, dict[str, Any]]
    """Template -> ``{"envs": [...], **Rates}``."""
    average: dict[str, Any]
    """``success_rate`` / ``held_success_rate``: mean over tasks; ``pooled``: :class:`Rates` over all episodes."""
    per_instruction: dict[str, dict[str, int]] = field(default_factory=dict)
    """Instruction -> ``{"episodes", "successes", "held"}``."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: per task the single-env summary (no per-episode list) and its template."""
        tasks = {}
        for env, res in self.tasks.items():
            out = res.to_json()
            tasks[env] = {k: out[k] for k in ("success_rate", "ci95", "held_success_rate", "held_ci95",
                                              "episodes", "mean_return", "latency_ms")}  # fmt: skip
            tasks[env]["template"] = next(t for t, g in self.templates.items() if env in g["envs"])
        per_episode = [
            {"env": env, **ep} for env, res in self.tasks.items() for ep in res.to_json()["per_episode"]
        ]
        return {
            "envs": list(self.envs),
            "hold_steps": self.hold_steps,
            "average": {**self.average, "pooled": self.average["pooled"].to_json()},
            "tasks": tasks,
            "templates": {t: {**g, "rates": g["rates"].to_json()} for t, g in self.templates.items()},
            "per_instruction": self.per_instruction,
            "per_episode": per_episode,
            "videos": [v for res in self.tasks.values() for v in res.videos],
        }


def instruction_template(config: Any, example: str) -> str:
    """The config's ``instruction_template()`` when it has one, else ``example`` (an instruction)."""
    method = getattr(config, "instruction_template", None)
    return str(method()) if callable(method) else example


def summarize(envs: Sequence[str], results: dict[str, EvalResult], templates: dict[str, str],
              hold_steps: int) -> SuiteResult:  # fmt: skip
    """Group per-env results into per-template and average rates (``templates``: env -> template)."""
    groups: dict[str, dict[str, Any]] = {}
    for env in envs:
        res = results[env]
        g = groups.setdefault(templates[env], {"envs": [], "wins": 0, "held": 0, "n": 0})
        g["envs"].append(env)
        g["wins"] += sum(r.success for r in res.per_episode)
        g["held"] += sum(r.held for r in res.per_episode)
        g["n"] += len(res.per_episode)
    by_template = {
        t: {"envs": g["envs"], "rates": Rates.of(g["wins"], g["held"], g["n"])} for t, g in groups.items()
    }
    per_instruction: dict[str, dict[str, int]] = {}
    for env in envs:
        for r in results[env].per_episode:
            row = per_instruction.setdefault(r.task, {"episodes": 0, "successes": 0, "held": 0})
            row["episodes"] += 1
            row["successes"] += int(r.success)
            row["held"] += int(r.held)
    wins = sum(g["wins"] for g in groups.values())
    held = sum(g["held"] for g in groups.values())
    n = sum(g["n"] for g in groups.values())
    average = {
        "success_rate": float(np.mean([results[e].success_rate for e in envs])),
        "held_success_rate": float(np.mean([results[e].held_success_rate for e in envs])),
        "pooled": Rates.of(wins, held, n),
    }
    return SuiteResult(list(envs), hold_steps, {e: results[e] for e in envs}, by_template, average,
                       dict(sorted(per_instruction.items())))  # fmt: skip


def evaluate_suite(
    policy,
    envs: Sequence[str],
    episodes: int = 50,
    *,
    overrides: Iterable[str] = (),
    cameras: Iterable[str] | None = None,
    num_envs: int = 4,
    hold_steps: int = 20,
    video_dir: str | Path | None = None,
    video_episodes: int = 2,
    temporal_ensemble: float | None = None,
    progress: bool = True,
    ray_address: str | None = None,
) -> SuiteResult:
    """Evaluate ``policy`` for ``episodes`` episodes on each env in ``envs``; see the module docstring.

    ``overrides`` and ``cameras`` apply to every env's config (:func:`policy_env_config`);
    ``ray_address`` runs each env's copies on Ray actors (:func:`evaluate`). Raises
    what :func:`evaluate` raises, before any rollout of the env concerned."""
    from robolearn.envs import make_env
    from robolearn.eval.evaluate import env_feature_shapes

    if not envs:
        raise ValueError("evaluate_suite: no envs given")
    results: dict[str, EvalResult] = {}
    templates: dict[str, str] = {}
    cams = tuple(cameras) if cameras is not None else None
    overrides = list(overrides)
    configs = {
        env: policy_env_config(policy, env, overrides=overrides, cameras=cams) for env in dict.fromkeys(envs)
    }
    for env, cfg in configs.items():  # every env fits the policy, or nothing runs
        probe = make_env(env, cfg)
        try:
            policy.check_features(env_feature_shapes(probe), source=f"env {env}")
        finally:
            probe.close()
    for env, cfg in configs.items():
        results[env] = evaluate(policy, env, cfg, episodes=episodes, num_envs=num_envs, hold_steps=hold_steps,
                                video_dir=video_dir, video_episodes=video_episodes if video_dir else 0,
                                temporal_ensemble=temporal_ensemble, progress=progress,
                                ray_address=ray_address)  # fmt: skip
        example = results[env].per_episode[0].task if results[env].per_episode else env
        templates[env] = instruction_template(cfg, example)
    return summarize(list(results), results, templates, hold_steps)


def report_lines(result: SuiteResult) -> list[str]:
    """The human-readable table: one line per task, per template (when templates are shared), and the average."""

    def fig(rate: float, ci: tuple[float, float]) -> str:
        return f"{100 * rate:5.1f}% [{100 * ci[0]:5.1f}, {100 * ci[1]:5.1f}]"

    width = max(len(e) for e in result.envs)
    lines = [f"{'task':<{width}}  episodes  first success          held {result.hold_steps} steps"]
    for env, res in result.tasks.items():
        lines.append(f"{env:<{width}}  {res.episodes:>8}  {fig(res.success_rate, res.ci95)}  "
                     f"{fig(res.held_success_rate, res.held_ci95)}")  # fmt: skip
    if any(len(g["envs"]) > 1 for g in result.templates.values()):
        lines.append("per instruction template:")
        for template, g in result.templates.items():
            r = g["rates"]
            lines.append(f"  {template!r} ({', '.join(g['envs'])}): {r.episodes} episodes, first "
                         f"{fig(r.success_rate, r.ci95)}, held {fig(r.held_success_rate, r.held_ci95)}")  # fmt: skip
    pooled = result.average["pooled"]
    lines.append(
        f"{'average':<{width}}  {pooled.episodes:>8}  {100 * result.average['success_rate']:5.1f}%"
        f"{'':16}  {100 * result.average['held_success_rate']:5.1f}%   (mean of the {len(result.envs)} tasks; "
        f"pooled: first {fig(pooled.success_rate, pooled.ci95)}, held {fig(pooled.held_success_rate, pooled.held_ci95)})"
    )
    return lines
