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


class _Recording:
    """A policy that records every batch it is given and every chunk it returns."""

    def __init__(self, policy):
        self.policy, self.batches, self.chunks = policy, [], []

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def predict_action_chunk(self, batch):
        out = self.policy.predict_action_chunk(batch)
        self.batches.append(batch)
        self.chunks.append(out.clone())
        return out


def test_evaluate_seeds_the_policy_noise_and_restores_the_callers_rng(tiny_run):
    import torch

    from robolearn.policies import load_policy

    runs = []
    for _ in range(2):
        policy = _Recording(load_policy(tiny_run))
        torch.manual_seed(len(runs))  # a different caller state each time
        before = torch.get_rng_state()
        evaluate(policy, "franka-lift", episodes=2, num_envs=2, hold_steps=0, progress=False)
        assert torch.equal(torch.get_rng_state(), before)
        runs.append(policy)
    first, second = runs
    assert len(first.chunks) == len(second.chunks) > 0
    assert all(torch.equal(a, b) for a, b in zip(first.chunks, second.chunks, strict=True))
    # The policy does sample: the same observations, unseeded, give other chunks.
    again = first.policy.predict_action_chunk(first.batches[0])
    assert not torch.allclose(again, first.chunks[0])


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
