"""The documented Python API: the names the README and ``examples/own_env.py`` use, and the example
itself run as a user would."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import robolearn
from robolearn.data import LeRobotReader, record_episodes

ROOT = Path(__file__).resolve().parents[1]


def test_public_names_resolve_and_are_documented():
    for name in robolearn.__all__:
        obj = getattr(robolearn, name)
        if name != "__version__":
            assert obj.__doc__ and obj.__doc__.strip(), name
    data = importlib.import_module("robolearn.data")
    for name in (
        "record_episodes",
        "RecordSummary",
        "env_features",
        "rollout",
        "LeRobotWriter",
        "LeRobotReader",
    ):
        assert getattr(data, name).__doc__, name


def _reach_expert(obs):
    import numpy as np

    tcp, ball = obs["observation.state"][15:18], obs["observation.environment_state"][:3]
    action = np.zeros(7, dtype=np.float32)
    action[:3] = np.clip((ball - tcp) / 0.05, -1.0, 1.0)
    action[6] = -1.0
    return action


def test_record_episodes_appends_after_the_largest_seed_and_records_the_env(tmp_path):
    env = robolearn.make_env("franka-reach")
    out = tmp_path / "ds"
    first = record_episodes(env, _reach_expert, out, episodes=2, post_success_steps=3)
    assert first.episodes == 2 and first.seeds == [0, 1] and first.success_rate == 1.0
    again = record_episodes(env, _reach_expert, out, episodes=1, post_success_steps=3)
    assert again.seeds == [2]
    reader = LeRobotReader(out)
    assert reader.num_episodes == 3
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["robolearn"]["env"] == "franka-reach"
    # Each episode ends 3 frames after its first success, and the success still holds there.
    for ep in range(3):
        success = reader.episode_columns(ep)["next.success"].reshape(-1)
        assert success[-1] and success[-4] and not success[-5]
    with pytest.raises(ValueError, match="seed 1 is already in the dataset"):
        record_episodes(env, _reach_expert, out, episodes=1, seed=1)
    env.close()
    assert LeRobotReader(out).num_episodes == 3


def test_a_registered_callable_builder_is_used_by_name(tmp_path):
    from robolearn.envs import ENVS, FrankaTaskConfig
    from robolearn.envs.franka.env import FrankaEnv

    name = "test-api-reach"
    if name not in ENVS:
        robolearn.register_env(
            name, FrankaTaskConfig, FrankaEnv, {"task": "reach"}, "reach, registered by a test"
        )
    env = robolearn.make_env(name)
    assert env.unwrapped.registry_name == name
    summary = record_episodes(env, _reach_expert, tmp_path / "ds", episodes=1, post_success_steps=0)
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    assert summary.episodes == 1 and info["robolearn"]["env"] == name
    env.close()


@pytest.mark.slow
def test_the_own_env_example_records_trains_and_evaluates(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}
    cmd = [sys.executable, str(ROOT / "examples" / "own_env.py"), "--out", str(tmp_path / "ex"),
           "--episodes", "12", "--steps", "200", "--eval-episodes", "6"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "recorded 12 demos" in res.stdout and "demonstrator success 100%" in res.stdout
    assert "trained 200 steps" in res.stdout
    assert "first reached" in res.stdout and "held over 6 episodes" in res.stdout
    assert LeRobotReader(tmp_path / "ex" / "dataset").num_episodes == 12
    assert (tmp_path / "ex" / "run" / "model.safetensors").is_file()


def test_env_plugins_reach_the_cli(tmp_path):
    (tmp_path / "my_envs.py").write_text(
        "import robolearn\nfrom robolearn.envs import FrankaTaskConfig\n"
        "robolearn.register_env('plugin-reach', FrankaTaskConfig, 'robolearn.envs.franka.env:FrankaEnv',"
        " {'task': 'reach'}, 'a user plugin')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "ROBOLEARN_PLUGINS": "my_envs", "MUJOCO_GL": "egl"}
    cli = [sys.executable, "-m", "robolearn.cli"]
    res = subprocess.run([*cli, "envs", "plugin-reach"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0 and "a user plugin" in res.stdout, res.stderr
    out = tmp_path / "ds"
    res = subprocess.run([*cli, "collect", "--env", "plugin-reach", "--episodes", "2", "--workers", "2",
                          "--out", str(out)], capture_output=True, text=True, env=env, cwd=ROOT)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "meta" / "info.json").read_text())["robolearn"]["env"] == "plugin-reach"
    bad = {**env, "ROBOLEARN_PLUGINS": "no_such_module"}
    res = subprocess.run([*cli, "envs"], capture_output=True, text=True, env=bad, cwd=ROOT)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("robolearn envs: error: $ROBOLEARN_PLUGINS")
