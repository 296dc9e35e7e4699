"""A checkpoint remembers the env its dataset came from; eval and periodic evals default to it."""

from __future__ import annotations

import json
import shutil

import pytest

from robolearn.cli import main
from robolearn.config import ConfigError
from robolearn.policies import CheckpointError, checkpoint_env, checkpoint_envs, load_policy
from robolearn.policies.checkpoint import record_source
from robolearn.train.config import TrainConfig
from robolearn.train.logging import read_metrics
from robolearn.train.trainer import Trainer, dataset_envs

TINY = {"denoiser": {"kind": "mlp", "mlp_dims": [32, 32]}}


def _info(dataset):
    return dataset / "meta" / "info.json"


def _without_env_record(src, dst):
    """A copy of dataset ``src`` whose info.json records no env, as converted data."""
    shutil.copytree(src, dst)
    info = json.loads(_info(dst).read_text())
    info.pop("robolearn", None)
    _info(dst).write_text(json.dumps(info, indent=2))
    return dst


@pytest.fixture(scope="module")
def reach_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("reach") / "ds"
    assert main(["collect", "--env", "franka-reach", "--episodes", "3", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def reach_run(reach_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    cfg = TrainConfig(policy="flow", policy_config=TINY, steps=2, batch_size=8, save_every=2, log_every=1)
    Trainer(cfg, reach_dataset, run, progress=False).fit()
    return run


def test_dataset_envs_reads_info():
    assert dataset_envs({}) == ()
    assert dataset_envs({"robolearn": {"seeds": [0]}}) == ()
    assert dataset_envs({"robolearn": {"env": "franka-lift"}}) == ("franka-lift",)
    assert dataset_envs({"robolearn": {"env": ["franka-lift", "franka-push", "franka-lift"]}}) == (
        "franka-lift",
        "franka-push",
    )
    with pytest.raises(ConfigError, match=r"x/info.json: robolearn.env: expected .* found 3"):
        dataset_envs({"robolearn": {"env": 3}}, "x/info.json")


def test_collected_dataset_records_its_env(reach_dataset):
    assert dataset_envs(json.loads(_info(reach_dataset).read_text())) == ("franka-reach",)


def test_checkpoint_records_env_and_eval_defaults_to_it(reach_run, tmp_path, capsys):
    for folder in (reach_run, reach_run / "checkpoints" / "2"):
        assert checkpoint_env(folder) == "franka-reach"
        assert json.loads((folder / "config.json").read_text())["source"] == {"envs": ["franka-reach"]}
    load_policy(reach_run)  # strict loading accepts the record
    out = tmp_path / "eval.json"
    rc = main(["eval", "--checkpoint", str(reach_run), "--episodes", "1", "--num-envs", "1", "--hold-steps", "0",
               "--json", str(out)])  # fmt: skip
    assert rc == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("franka-reach: first success")
    assert json.loads(out.read_text())["env"] == "franka-reach"


def test_eval_without_env_on_checkpoint_without_record(reach_run, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(reach_run, old, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    meta = json.loads((old / "config.json").read_text())
    del meta["source"]  # as written before checkpoints recorded their env
    (old / "config.json").write_text(json.dumps(meta))
    assert checkpoint_envs(old) == () and checkpoint_env(old) is None
    load_policy(old)
    assert main(["eval", "--checkpoint", str(old), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--env" in err and "records no source env" in err


def test_several_envs_are_each_evaluated_once_all_fit(reach_run, tmp_path, capsys):
    multi = tmp_path / "multi"
    shutil.copytree(reach_run, multi, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    record_source(multi, ["franka-reach", "franka-lift"])
    assert checkpoint_envs(multi) == ("franka-reach", "franka-lift") and checkpoint_env(multi) is None
    # Without --env a checkpoint of several envs is evaluated on each (robolearn.eval.suite); the reach
    # policy does not fit franka-lift, and that is found before any episode runs.
    assert main(["eval", "--checkpoint", str(multi), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "env franka-lift" in err and "environment_state" in err
    record_source(multi, [])
    assert checkpoint_envs(multi) == ()


def test_malformed_source_is_a_checkpoint_error(reach_run, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(reach_run, bad, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    meta = json.loads((bad / "config.json").read_text())
    meta["source"] = {"envs": "franka-reach"}
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"bad/config.json: source: expected"):
        checkpoint_env(bad)
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint_env(tmp_path / "missing")


def test_periodic_eval_defaults_to_the_dataset_env(reach_dataset, tmp_path):
    cfg = TrainConfig(policy="flow", policy_config=TINY, steps=2, batch_size=8, save_every=2, log_every=1,
                      eval_every=2, eval_episodes=1)  # fmt: skip
    trainer = Trainer(cfg, reach_dataset, tmp_path / "run", progress=False)
    assert trainer.eval_env == "franka-reach"
    trainer.fit()
    (row,) = [r for r in read_metrics(tmp_path / "run") if "eval/success_rate" in r]
    assert row["step"] == 2
    assert 0.0 <= row["eval/held_success_rate"] <= row["eval/success_rate"] <= 1.0
    assert row["eval/held_ci95_low"] <= row["eval/held_success_rate"] <= row["eval/held_ci95_high"]


def test_periodic_eval_needs_an_env_when_the_dataset_records_none(reach_dataset, tmp_path):
    plain = _without_env_record(reach_dataset, tmp_path / "plain")
    cfg = TrainConfig(policy="flow", policy_config=TINY, steps=2, batch_size=8, eval_every=2)
    with pytest.raises(ConfigError, match=r"eval_env: required when eval_every > 0 .* records no env"):
        Trainer(cfg, plain, tmp_path / "run", progress=False)
    run = tmp_path / "run2"
    Trainer(TrainConfig(policy="flow", policy_config=TINY, steps=2, batch_size=8, save_every=2), plain, run,
            progress=False).fit()  # fmt: skip
    assert checkpoint_envs(run) == ()  # converted data: nothing to record, nothing invented
