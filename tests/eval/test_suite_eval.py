"""Per-task evaluation on a suite or a list of envs: both figures per task, per instruction template,
and on average, with Wilson intervals, in ``--json`` too."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robolearn.cli import main
from robolearn.eval.evaluate import EpisodeResult, EvalResult
from robolearn.eval.metrics import wilson_interval
from robolearn.eval.suite import Rates, evaluate_suite, report_lines, summarize
from robolearn.types import ACTION, OBS_ENV_STATE, OBS_STATE, FeatureSpec

LANGUAGE = ["franka-lift-d2", "franka-push-d2", "franka-pick-place-d2", "franka-stack-d2"]


def _result(wins: int, held: int, n: int, task: str) -> EvalResult:
    eps = [EpisodeResult(seed=i, success=i < wins, ret=0.0, length=10, task=f"{task} {i % 2}",
                         first_success_step=5 if i < wins else None, held=i < held) for i in range(n)]  # fmt: skip
    return EvalResult(wins / n, wilson_interval(wins, n), held / n, wilson_interval(held, n), 20, n, 0.0,
                      {"p50": 1.0, "p99": 2.0, "mean": 1.0}, eps)  # fmt: skip


def test_summary_per_task_template_and_average():
    results = {"franka-lift": _result(7, 5, 10, "lift"), "franka-lift-d2": _result(3, 3, 10, "lift"),
               "franka-push-d2": _result(5, 4, 5, "push")}  # fmt: skip
    templates = {"franka-lift": "lift the {colour} cube", "franka-lift-d2": "lift the {colour} cube",
                 "franka-push-d2": "push the {cube} cube to the {goal} circle"}  # fmt: skip
    res = summarize(list(results), results, templates, hold_steps=20)
    lift = res.templates["lift the {colour} cube"]
    assert lift["envs"] == ["franka-lift", "franka-lift-d2"]
    assert lift["rates"] == Rates(20, 0.5, wilson_interval(10, 20), 0.4, wilson_interval(8, 20))
    assert res.average["success_rate"] == pytest.approx((0.7 + 0.3 + 1.0) / 3)
    assert res.average["held_success_rate"] == pytest.approx((0.5 + 0.3 + 0.8) / 3)
    assert res.average["pooled"] == Rates(
        25, 15 / 25, wilson_interval(15, 25), 12 / 25, wilson_interval(12, 25)
    )
    assert res.per_instruction["lift 0"] == {"episodes": 10, "successes": 6, "held": 5}
    out = res.to_json()
    assert out["tasks"]["franka-lift-d2"]["template"] == "lift the {colour} cube"
    assert out["templates"]["lift the {colour} cube"]["rates"]["ci95"] == list(wilson_interval(10, 20))
    assert len(out["per_episode"]) == 25 and {e["env"] for e in out["per_episode"]} == set(results)
    json.dumps(out)  # plain JSON types
    text = "\n".join(report_lines(res))
    assert "franka-lift-d2" in text and "per instruction template" in text and "mean of the 3 tasks" in text


def _tiny_policy(folder, env_state_dim: int = 52):
    """A randomly initialised state-only flow policy for the distractor envs' features."""
    from robolearn.policies import DenoiserConfig, FlowConfig
    from robolearn.registry import POLICIES

    features = {OBS_STATE: FeatureSpec("float32", (22,)), OBS_ENV_STATE: FeatureSpec("float32", (env_state_dim,)),
                ACTION: FeatureSpec("float32", (7,))}  # fmt: skip
    stats = {k: {"mean": np.zeros(s.shape), "std": np.ones(s.shape), "min": -np.ones(s.shape),
                 "max": np.ones(s.shape)} for k, s in features.items()}  # fmt: skip
    torch.manual_seed(0)
    cfg = FlowConfig(horizon=8, n_obs_steps=2, n_action_steps=4, num_inference_steps=2,
                     denoiser=DenoiserConfig(kind="mlp", mlp_dims=(32, 32)))  # fmt: skip
    return POLICIES.build("flow", cfg, features=features, stats=stats).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    return _tiny_policy(tmp_path_factory.mktemp("ckpt") / "tiny")


def test_evaluate_suite_reports_every_task(tiny):
    from robolearn.policies import load_policy

    res = evaluate_suite(load_policy(tiny), ["franka-lift-d2", "franka-push-d2"], episodes=3, num_envs=2,
                         overrides=["max_episode_steps=6"], hold_steps=2, progress=False)  # fmt: skip
    assert list(res.tasks) == ["franka-lift-d2", "franka-push-d2"]
    for env, r in res.tasks.items():
        assert r.episodes == 3 and [e.seed for e in r.per_episode] == [1_000_000, 1_000_001, 1_000_002]
        assert all(e.length <= 6 for e in r.per_episode), env
    for rates in [g["rates"] for g in res.templates.values()] + [res.average["pooled"]]:
        assert 0.0 <= rates.ci95[0] <= rates.success_rate <= rates.ci95[1] <= 1.0
        assert 0.0 <= rates.held_ci95[0] <= rates.held_success_rate <= rates.held_ci95[1] <= 1.0
        assert rates.held_success_rate <= rates.success_rate
    assert set(res.templates) == {"lift the {colour} cube", "push the {cube} cube to the {goal} circle"}


def test_eval_command_on_the_language_suite(tiny, tmp_path, capsys):
    js = tmp_path / "suite.json"
    rc = main(["eval", "--checkpoint", str(tiny), "--env", "franka-language", "--episodes", "2", "--num-envs", "2",
               "--hold-steps", "0", "--set", "max_episode_steps=4", "--json", str(js)])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    for env in LANGUAGE:
        assert f"\n{env} " in f"\n{out}"
    assert "average" in out
    data = json.loads(js.read_text())
    assert data["envs"] == LANGUAGE and sorted(data["tasks"]) == sorted(LANGUAGE)
    for env in LANGUAGE:
        task = data["tasks"][env]
        lo, hi = task["ci95"]
        assert task["episodes"] == 2 and 0.0 <= lo <= task["success_rate"] <= hi <= 1.0
        assert {"held_success_rate", "held_ci95", "template", "latency_ms"} <= set(task)
    assert len(data["templates"]) == 4 and data["average"]["pooled"]["episodes"] == 8
    assert sum(r["episodes"] for r in data["per_instruction"].values()) == 8
    assert len(data["per_episode"]) == 8 and data["hold_steps"] == 0


def test_envs_that_do_not_fit_fail_before_any_episode(tiny, tmp_path, capsys, monkeypatch):
    import robolearn.eval.suite as S

    ran = []
    monkeypatch.setattr(S, "evaluate", lambda *a, **k: ran.append(a[1]))
    rc = main(["eval", "--checkpoint", str(tiny), "--env", "franka-lift-d2,franka-lift", "--episodes", "1"])
    assert rc == 2 and ran == []
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "env franka-lift" in err
    assert (
        main(["eval", "--checkpoint", str(tiny), "--env", "franka-lift-d2,franka-nope", "--episodes", "1"])
        == 2
    )
    assert "unknown env 'franka-nope'" in capsys.readouterr().err
