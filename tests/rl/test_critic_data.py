"""Critic data from DART collection: the executed (noisy) action is recorded next to the expert's label."""

from __future__ import annotations

import numpy as np

from robolearn.commands import collect
from robolearn.data.reader import LeRobotReader
from robolearn.data.validate import validate
from robolearn.envs import env_config, make_env


def test_dart_collection_records_the_executed_action_next_to_the_label(tmp_path):
    out = tmp_path / "dart"
    assert collect.run(collect.default_args(env="franka-reach", episodes=2, out=out, expert_noise=0.2)) == 0
    assert [p for p in validate(out) if p.severity == "error"] == []
    with LeRobotReader(out) as reader:
        assert reader.features["action.executed"].shape == reader.features["action"].shape
        ep = reader.episode_columns(0)
        seed = int(reader.episode_meta(0)["seed"])
    label, executed = ep["action"], ep["action.executed"]
    assert not np.allclose(label[:, :-1], executed[:, :-1])  # noise on the arm dimensions
    np.testing.assert_array_equal(label[:, -1], executed[:, -1])  # never on the gripper
    # Replaying the executed actions reproduces the recorded states; the labels would not.
    env = make_env("franka-reach", env_config("franka-reach"))
    obs, _ = env.reset(seed=seed)
    for t in range(len(executed)):
        np.testing.assert_allclose(obs["observation.state"], ep["observation.state"][t], atol=1e-6)
        obs, *_ = env.step(executed[t])
    env.close()


def test_noise_free_collection_has_no_executed_action_column(tmp_path):
    out = tmp_path / "clean"
    assert collect.run(collect.default_args(env="franka-reach", episodes=1, out=out)) == 0
    with LeRobotReader(out) as reader:
        assert "action.executed" not in reader.features
