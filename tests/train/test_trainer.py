"""The trainer: loss falls, exact resume, NaN stop, feature checks before work, checkpoint layout."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from robolearn.policies import FeatureMismatchError, load_policy
from robolearn.train.config import TrainConfig
from robolearn.train.logging import read_metrics
from robolearn.train.trainer import StepBatchSampler, Trainer, TrainingDiverged

SMALL = {"n_obs_steps": 2, "horizon": 16, "n_action_steps": 8,
         "denoiser": {"kind": "mlp", "mlp_dims": [64, 64]}}  # fmt: skip


def _cfg(**kw):
    base = dict(policy="flow", policy_config=SMALL, steps=12, batch_size=16, lr=1e-3, warmup_steps=2, log_every=1,
                save_every=6, val_fraction=0.2, seed=3)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _losses(run):
    return [r["loss"] for r in read_metrics(run) if "loss" in r]


def test_fit_writes_checkpoints_and_loss_falls(lift_dataset, tmp_path):
    run = tmp_path / "run"
    # The MLP baseline's MSE falls cleanly in a few steps (flow losses are noisier; see tests/policies).
    cfg = _cfg(policy="mlp", policy_config={"hidden_dims": [64, 64]}, steps=40, save_every=20)
    summary = Trainer(cfg, lift_dataset, run, progress=False).fit()
    assert summary.steps == 40
    for name in ("config.json", "model.safetensors", "norm_stats.json"):
        assert (run / name).is_file() and (run / "checkpoints" / "20" / name).is_file()
    assert (run / "checkpoints" / "40" / "training_state" / "optimizer.safetensors").is_file()
    losses = _losses(run)
    assert len(losses) == 40
    assert sum(losses[-5:]) < 0.85 * sum(losses[:5])
    assert any("val_loss" in r for r in read_metrics(run))
    policy = load_policy(run)
    assert policy.input_features["observation.state"] == (22,)
    assert json.loads((run / "train_config.json").read_text())["steps"] == 40


def test_resume_continues_the_same_loss_curve(lift_dataset, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    Trainer(_cfg(), lift_dataset, straight, progress=False).fit()
    # Same run interrupted after its step-6 checkpoint: keep only that, then resume.
    Trainer(_cfg(), lift_dataset, resumed, progress=False).fit()
    shutil.rmtree(resumed / "checkpoints" / "12")
    Trainer(_cfg(), lift_dataset, resumed, resume=True, progress=False).fit()
    a, b = _losses(straight), _losses(resumed)
    assert len(a) == len(b) == 12
    assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    wa = load_policy(straight).state_dict()
    wb = load_policy(resumed).state_dict()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k])


def test_existing_run_needs_resume(lift_dataset, tmp_path):
    run = tmp_path / "run"
    Trainer(_cfg(steps=2, save_every=2), lift_dataset, run, progress=False).fit()
    with pytest.raises(FileExistsError, match="pass --resume"):
        Trainer(_cfg(steps=2), lift_dataset, run, progress=False)


def test_nan_loss_stops_with_step_and_batch_and_keeps_checkpoint(lift_dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    trainer = Trainer(_cfg(steps=10, save_every=3), lift_dataset, run, progress=False)
    original = trainer.policy.compute_loss
    calls = {"n": 0}

    def poisoned(batch):
        calls["n"] += trainer.policy.training  # validation batches (eval mode) don't count
        loss, metrics = original(batch)
        return (loss * float("nan") if calls["n"] == 5 else loss), metrics

    monkeypatch.setattr(trainer.policy, "compute_loss", poisoned)
    with pytest.raises(
        TrainingDiverged, match=r"step 5: loss is nan on the batch of frames \[.*episodes"
    ) as err:
        trainer.fit()
    assert "checkpoints/3" in str(err.value)
    assert (run / "checkpoints" / "3" / "model.safetensors").is_file()
    load_policy(run / "checkpoints" / "3")


def test_missing_feature_fails_before_work(lift_dataset, tmp_path):
    cfg = _cfg(policy_config={**SMALL, "obs_keys": ["observation.state", "observation.images.front"]})
    with pytest.raises((FeatureMismatchError, KeyError), match="observation.images.front"):
        Trainer(cfg, lift_dataset, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_policy_field_names_key_and_source(lift_dataset, tmp_path):
    from robolearn.config import ConfigError

    with pytest.raises(ConfigError, match=r"recipe.yaml: unknown key 'policy_config.horizn'"):
        Trainer(
            _cfg(policy_config={"horizn": 3}),
            lift_dataset,
            tmp_path / "r",
            source="recipe.yaml",
            progress=False,
        )


def test_step_batch_sampler_is_a_pure_function_of_step():
    full = StepBatchSampler(50, 8, seed=1, start=0, total=20)
    tail = StepBatchSampler(50, 8, seed=1, start=13, total=20)
    assert list(full)[13:] == list(tail)
    ranks = [StepBatchSampler(50, 4, 1, 0, 20, rank=r, world=2).indices(7) for r in (0, 1)]
    assert ranks[0] + ranks[1] == full.indices(7)
    epoch = [i for s in range(50 // 8 * 8 // 8) for i in full.indices(s)]
    assert len(set(epoch)) == len(epoch)
