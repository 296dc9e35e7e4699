"""Closed-loop evaluation: metrics, seeds, feature checks, videos, the CLI's JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robolearn.cli import main
from robolearn.eval.evaluate import evaluate
from robolearn.eval.metrics import latency_summary, wilson_interval
from robolearn.policies import FeatureMismatchError
from robolearn.train.config import TrainConfig
from robolearn.train.trainer import Trainer


@pytest.fixture(scope="module")
def tiny_run(lift_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    cfg = TrainConfig(policy="flow", policy_config={"denoiser": {"kind": "mlp", "mlp_dims": [32, 32]}},
                      steps=3, batch_size=8, save_every=3, log_every=1)  # fmt: skip
    Trainer(cfg, lift_dataset, run, progress=False).fit()
    return run


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(190, 200)
    assert lo == pytest.approx(0.9103, abs=1e-3) and hi == pytest.approx(0.9727, abs=1e-3)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0, abs=1e-12)
    assert wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-3)
    lat = latency_summary([0.001] * 99 + [0.1])
    assert lat["p50"] == pytest.approx(1.0) and lat["p99"] > 1.0


def test_evaluate_counts_seeds_and_writes_videos(tiny_run, tmp_path):
    from robolearn.policies import load_policy

    policy = load_policy(tiny_run)
    res = evaluate(policy, "franka-lift", episodes=3, num_envs=2, video_dir=tmp_path, video_episodes=1,
                   progress=False)  # fmt: skip
    assert res.episodes == 3 and 0.0 <= res.success_rate <= 1.0
    assert [r.seed for r in res.per_episode] == [1_000_000, 1_000_001, 1_000_002]
    assert all(r.length > 0 for r in res.per_episode)
    assert res.latency_ms["p50"] > 0 and res.policy_calls > 0
    assert len(res.videos) == 1
    import av

    with av.open(res.videos[0]) as c:
        assert c.streams.video[0].frames >= 10


def test_temporal_ensembling_runs(tiny_run):
    from robolearn.policies import load_policy

    res = evaluate(
        load_policy(tiny_run), "franka-lift", episodes=1, num_envs=1, temporal_ensemble=0.1, progress=False
    )
    assert res.policy_calls == res.per_episode[0].length  # one query per step


def test_env_feature_mismatch_fails_before_rollout(tiny_run):
    from robolearn.policies import load_policy

    with pytest.raises(FeatureMismatchError, match=r"observation.environment_state.*\(7,\).*\(10,\)"):
        evaluate(load_policy(tiny_run), "franka-push", episodes=1, progress=False)


def test_eval_cli_json(tiny_run, tmp_path):
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tiny_run),
                "--env",
                "franka-lift",
                "--episodes",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert set(data) >= {"success_rate", "ci95", "episodes", "mean_return", "latency_ms"}
    assert data["episodes"] == 2 and set(data["latency_ms"]) >= {"p50", "p99"}
    assert np.isfinite(data["mean_return"])


def test_eval_cli_reports_corrupt_checkpoint(tiny_run, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    (bad / "model.safetensors").write_bytes(b"\x00" * 10)
    assert main(["eval", "--checkpoint", str(bad), "--episodes", "1"]) == 2
    assert "model.safetensors" in capsys.readouterr().err
