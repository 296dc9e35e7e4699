"""``robolearn train --dataset A --dataset B``: one policy from several datasets with identical features."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from robolearn.cli import main
from robolearn.data.dataset_stats import compute_stats
from robolearn.data.errors import DatasetError
from robolearn.data.merge import merge_datasets
from robolearn.data.writer import LeRobotWriter
from robolearn.policies import load_policy
from robolearn.train.config import TrainConfig
from robolearn.train.logging import read_metrics
from robolearn.train.multi import combined_stats, load_training_data
from robolearn.train.trainer import Trainer
from robolearn.types import ACTION, OBS_ENV_STATE, OBS_STATE, FeatureSpec

TINY = {"denoiser": {"kind": "mlp", "mlp_dims": [32, 32]}, "horizon": 4, "n_action_steps": 2}
FEATURES = {
    OBS_STATE: FeatureSpec("float32", (3,), ("a", "b", "c")),
    OBS_ENV_STATE: FeatureSpec("float32", (2,)),
    ACTION: FeatureSpec("float32", (2,)),
}


def _dataset(root, lengths, offset: float, env: str, task: str, features=FEATURES, seed0: int = 0):
    """Episodes whose values are shifted by ``offset``, so the datasets' stats differ."""
    rng = np.random.default_rng(int(offset * 10))
    with LeRobotWriter(root, 10, features, env=env, env_config={"k": env}) as w:
        for k, n in enumerate(lengths):
            for _ in range(n):
                w.add_frame({key: (rng.normal(offset, 1.0 + offset, spec.shape)).astype(np.float32)
                             for key, spec in features.items()}, task=f"{task} {k % 2}")  # fmt: skip
            w.save_episode(seed=seed0 + k)
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def two(tmp_path):
    a = _dataset(tmp_path / "a", (12, 9, 15, 10), 0.0, "franka-lift-d2", "lift it")
    b = _dataset(tmp_path / "b", (20, 8, 11), 3.0, "franka-push-d2", "push it")
    return a, b


def test_trains_on_both_with_exactly_combined_stats(two, tmp_path):
    a, b = two
    cfg = TrainConfig(policy="flow", policy_config=TINY, steps=6, batch_size=16, save_every=6, log_every=1,
                      val_fraction=0.0, warmup_steps=1)  # fmt: skip
    run = tmp_path / "run"
    trainer = Trainer(cfg, [a, b], run, progress=False)
    assert trainer.data.envs == ("franka-lift-d2", "franka-push-d2")
    assert trainer.data.tasks == ["lift it 0", "lift it 1", "push it 0", "push it 1"]
    assert len(trainer.train_set) == 46 + 39
    sample = trainer.train_set[50]  # past the first dataset's 46 windows: a window of b
    assert int(sample["dataset_index"]) == 1 and sample["task"].startswith("push it")
    summary = trainer.fit()
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses) and math.isfinite(summary.final_loss)
    # The stats are those of one dataset holding every episode of both.
    merged = merge_datasets([a, b], tmp_path / "merged", progress=False)
    want = compute_stats(merged.out)
    got = combined_stats([a, b], trainer.data.train_episodes)
    stored = json.loads((run / "norm_stats.json").read_text())
    for key in (OBS_STATE, OBS_ENV_STATE, ACTION):
        for stat in ("mean", "std", "min", "max", "q01", "q99", "count"):
            np.testing.assert_allclose(got[key][stat], want[key][stat], rtol=1e-10, atol=1e-12)
        for stat, values in stored[key].items():
            np.testing.assert_allclose(values, want[key][stat], rtol=1e-6, atol=1e-7)
    # Not an average of the two datasets' means: b has fewer frames (39 against 46).
    means = [compute_stats(d)[ACTION]["mean"] for d in (a, b)]
    assert not np.allclose(got[ACTION]["mean"], (means[0] + means[1]) / 2)
    policy = load_policy(run)
    assert json.loads((run / "config.json").read_text())["source"] == {
        "envs": ["franka-lift-d2", "franka-push-d2"]
    }
    assert policy.predict_action_chunk(
        {OBS_STATE: torch.zeros(1, 2, 3), OBS_ENV_STATE: torch.zeros(1, 2, 2)}
    ).shape == (1, 4, 2)


def test_each_dataset_is_split_on_its_own(two):
    a, b = two
    data = load_training_data([a, b], val_fraction=0.3, seed=0)
    assert [len(t) + len(v) for t, v in zip(data.train_episodes, data.val_episodes, strict=True)] == [4, 3]
    assert all(len(v) >= 1 for v in data.val_episodes)
    with pytest.raises(ValueError, match="given twice"):
        load_training_data([a, a], 0.1, 0)


def test_different_features_name_the_dataset_and_feature(two, tmp_path, capsys):
    a, _ = two
    wide = {**FEATURES, OBS_ENV_STATE: FeatureSpec("float32", (5,))}
    c = _dataset(tmp_path / "c", (6, 6), 1.0, "franka-stack-d2", "stack it", features=wide)
    with pytest.raises(
        DatasetError,
        match=r"feature 'observation.environment_state' is float32 \[5\] in .*/c but float32 \[2\] in .*/a",
    ):
        load_training_data([a, c], 0.1, 0)
    rc = main(["train", "--policy", "flow", "--dataset", str(a), "--dataset", str(c), "--out", str(tmp_path / "run"),
               "--set", "steps=1"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "observation.environment_state" in err[0] and str(c) in err[0]
    assert not (tmp_path / "run").exists()


def test_command_line_takes_a_repeated_dataset(two, tmp_path, capsys):
    a, b = two
    run = tmp_path / "run"
    rc = main(["train", "--policy", "flow", "--dataset", str(a), "--dataset", str(b), "--out", str(run),
               "--set", "steps=2", "--set", "batch_size=8", "--set", "policy_config.denoiser.kind=mlp"])  # fmt: skip
    assert rc == 0 and (run / "model.safetensors").is_file()
    assert main(["train", "--dataset", str(a), "--dataset", str(a), "--out", str(tmp_path / "r2")]) == 2
    assert "given twice" in capsys.readouterr().err
