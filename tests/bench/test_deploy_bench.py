"""bench/deploy.py: ``--quick`` runs every figure and prints its ratio; missing pieces are one line.

No timing is asserted: the figures are whatever this machine gives.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from robolearn.commands.bench import load_bench

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lift_flow_run(tmp_path_factory):
    """An untrained flow policy for franka-lift's state features, saved as a run (it fails the task;
    the benchmark's plumbing is what is tested)."""
    import robolearn.policies  # noqa: F401
    from robolearn.envs import make_env
    from robolearn.eval.evaluate import env_feature_shapes
    from robolearn.policies.common.config import DenoiserConfig
    from robolearn.registry import POLICIES

    env = make_env("franka-lift")
    shapes = env_feature_shapes(env)
    env.close()
    cfg = POLICIES.get("flow").default_config(
        horizon=8, n_obs_steps=2, n_action_steps=4, num_inference_steps=2,
        denoiser=DenoiserConfig(kind="mlp", mlp_dims=(32, 32)),
    )  # fmt: skip
    torch.manual_seed(0)
    policy = POLICIES.build("flow", cfg, features=shapes, stats=None)
    out = tmp_path_factory.mktemp("bench_deploy") / "run"
    policy.save_pretrained(out)
    return out


def test_quick_run_prints_every_figure_with_its_ratio(lift_flow_run, tmp_path, capsys):
    bench = load_bench("deploy")
    js = tmp_path / "deploy.json"
    report = bench.run(json_out=str(js), quick=True, checkpoint=str(lift_flow_run))
    out = capsys.readouterr().out
    assert json.loads(js.read_text())["roundtrip"]["reply_shape"] == [50, 8]
    rt = report["roundtrip"]
    assert rt["request_bytes"] > 2 * 224 * 224 * 3 and rt["ratio_p50"] > 0 and rt["ratio_p99"] > 0
    assert rt["robolearn"]["n"] == rt["raw"]["n"] == rt["echo"]["n"] > 0
    assert "robolearn / echo: p50" in out and "RateLoop / sleep loop" in out
    loop = report["loop"]
    assert loop["robolearn"]["ticks"] > 0 and loop["sleep_loop"]["ticks"] > 0
    results = report["modes"]["results"]
    assert sorted(results) == sorted(f"{m}@{d}ms" for m in ("sync", "async", "rtc") for d in (0, 300))
    for r in results.values():
        assert r["episodes"] == 1 and 0.0 <= r["success_rate"] <= 1.0
        assert r["per_episode"][0]["steps"] > 0
    # the injected 300 ms sleep is seen by the robot as a multi-tick delay (20 Hz: 50 ms a tick)
    assert results["async@300ms"]["delay_ticks_mean"] >= 5
    for mode in ("sync", "async", "rtc"):
        assert f"\n    {mode:<7}" in out
    assert "soak" not in report  # only when asked


def test_missing_checkpoint_and_missing_modules_are_one_line(monkeypatch, tmp_path, capsys):
    bench = load_bench("deploy")
    monkeypatch.setattr(bench, "DEFAULT_CHECKPOINT", tmp_path / "absent")
    monkeypatch.setattr(bench, "bench_roundtrip", lambda **kw: None)  # measured in the test above
    monkeypatch.setattr(bench, "bench_loop", lambda **kw: None)
    report = bench.run(quick=True)
    assert "no checkpoint: pass --checkpoint RUN" in report["skipped"]["modes"]
    assert "modes: skipped: no checkpoint" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "websockets", None)  # as if the core dependency were missing
    report = bench.run(quick=True, json_out=str(tmp_path / "d.json"))
    line = [x for x in capsys.readouterr().out.splitlines() if "skipped" in x]
    assert len(line) == 1 and "websockets" in line[0]
    assert json.loads((tmp_path / "d.json").read_text())["skipped"]["all"] == report["skipped"]["all"]


def test_soak_runs_the_real_serve_command(lift_flow_run):
    soak = load_bench("deploy").bench_soak(lift_flow_run, minutes=0.1)
    assert soak["requests"] > 0 and soak["error_replies"] == 0 and soak["rtc_every_other_request"]
    assert soak["rss_warm_mb"] > 0 and soak["rss_end_mb"] > 0 and soak["latency"]["n"] == soak["requests"]
