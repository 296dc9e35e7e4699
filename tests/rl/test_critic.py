"""The V-GPS critic: chunk transitions, Cal-QL's lower bound, ranking on a toy task, save/load, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robolearn.data.writer import LeRobotWriter
from robolearn.rl.critic import ChunkCritic, CriticConfig, load_critic
from robolearn.rl.critic_train import (
    CriticTrainer,
    episode_transitions,
    load_transitions,
    train_critic,
    transition_stats,
)
from robolearn.types import FeatureSpec

ROOT = Path(__file__).resolve().parents[2]
TOY_FEATURES = {
    "observation.state": FeatureSpec("float32", (2,)),
    "action": FeatureSpec("float32", (1,)),
    "next.reward": FeatureSpec("float32", (1,)),
    "next.done": FeatureSpec("bool", (1,)),
    "next.success": FeatureSpec("bool", (1,)),
}


def write_toy(root: Path, episodes: int = 24, length: int = 12, seed: int = 0) -> Path:
    """A 1-D reach task: x_{t+1} = x_t + 0.1 a_t, success while x >= 0.5. Half the episodes push
    (a = +1) and reach it; the other half pull (a = -1) and never do."""
    rng = np.random.default_rng(seed)
    with LeRobotWriter(root, fps=10, features=TOY_FEATURES) as writer:
        for ep in range(episodes):
            x, a = float(rng.uniform(-0.2, 0.2)), (1.0 if ep % 2 == 0 else -1.0)
            for t in range(length):
                nx = x + 0.1 * a
                writer.add_frame(
                    {
                        "observation.state": np.array([x, 1.0], np.float32),
                        "action": np.array([a], np.float32),
                        "next.reward": np.array([float(nx >= 0.5)], np.float32),
                        "next.done": np.array([t == length - 1]),
                        "next.success": np.array([nx >= 0.5]),
                    },
                    task="reach",
                )
                x = nx
            writer.save_episode(seed=ep)
    return root


def test_episode_transitions_first_success_by_hand():
    obs = np.arange(6, dtype=np.float32)[:, None]
    acts = np.arange(6, dtype=np.float32)[:, None] * 10
    success = np.array([0, 0, 0, 1, 1, 0], bool)
    tr = episode_transitions(obs, acts, success, chunk=2, gamma=0.5, reward="first_success")
    np.testing.assert_allclose(tr["obs"][:, 0], [0, 1, 2, 3])
    np.testing.assert_allclose(tr["actions"][:, :, 0], [[0, 10], [10, 20], [20, 30], [30, 40]])
    np.testing.assert_allclose(tr["reward"], [0, 0, 0.5, 1.0])
    np.testing.assert_allclose(tr["done"], [0, 0, 1, 1])
    np.testing.assert_allclose(tr["next_obs"][:2, 0], [2, 3])
    np.testing.assert_allclose(tr["mc_return"], [0.125, 0.25, 0.5, 1.0])
    fail = episode_transitions(obs, acts, np.zeros(6, bool), chunk=2, gamma=0.5, reward="first_success")
    np.testing.assert_allclose(fail["obs"][:, 0], [0, 1, 2, 3])  # chunks whose next state is recorded
    np.testing.assert_allclose(fail["next_obs"][:, 0], [2, 3, 4, 5])
    assert not fail["reward"].any() and not fail["done"].any() and not fail["mc_return"].any()


def test_episode_transitions_success_reward_by_hand():
    obs = np.arange(6, dtype=np.float32)[:, None]
    success = np.array([0, 0, 1, 1, 0, 1], bool)
    tr = episode_transitions(obs, obs, success, chunk=2, gamma=0.5, reward="success")
    np.testing.assert_allclose(tr["reward"], [0, 0.5, 1.5, 1.0])
    assert not tr["done"].any()
    np.testing.assert_allclose(tr["mc_return"], [0.40625, 0.8125, 1.625, 1.25])


def test_calql_lower_bound_raises_the_regularizer(tmp_path):
    """Same seed, same batch: bounding the policy-sampled Q values below by the MC return can only
    raise the logsumexp term, and does while Q is still under the returns."""
    data, cfg = load_transitions(
        [write_toy(tmp_path / "toy")], CriticConfig(chunk=2, hidden_dims=(32,), batch_size=64)
    )
    out = {}
    for calql in (True, False):
        torch.manual_seed(0)
        cfg.calql = calql
        critic = ChunkCritic(cfg, transition_stats(data))
        out[calql] = CriticTrainer(critic, data).step()
    assert out[True]["bound_rate"] > 0
    assert out[True]["cql"] > out[False]["cql"]


@pytest.mark.parametrize("algo", ["calql", "iql"])
def test_critic_ranks_a_successful_chunk_above_a_failing_one(tmp_path, algo):
    torch.manual_seed(0)
    ds = write_toy(tmp_path / "toy")
    cfg = CriticConfig(algo=algo, chunk=2, hidden_dims=(64, 64), steps=400, batch_size=64, discount=0.9)
    critic, summary = train_critic([ds], cfg, progress=False)
    assert summary["q_success_episodes"] > summary["q_failed_episodes"]
    for x in (-0.1, 0.0, 0.1, 0.3):
        obs = {"observation.state": torch.tensor([[x, 1.0]])}
        chunks = torch.tensor([[[[1.0], [1.0]], [[-1.0], [-1.0]]]])  # (B=1, K=2, C=2, Da=1)
        push, pull = critic.score(obs, chunks)[0].tolist()
        assert push > pull + 0.05, (x, push, pull)


def test_critic_save_load_round_trip_gives_identical_scores(tmp_path):
    ds = write_toy(tmp_path / "toy")
    critic, _ = train_critic(
        [ds], CriticConfig(algo="iql", chunk=3, hidden_dims=(16,), steps=5), progress=False
    )
    critic.save_pretrained(tmp_path / "critic")
    assert sorted(p.name for p in (tmp_path / "critic").iterdir()) == [
        "config.json", "model.safetensors", "norm_stats.json",
    ]  # fmt: skip
    loaded = load_critic(tmp_path / "critic")
    obs = {"observation.state": torch.randn(4, 2, 2)}  # windows (B, To, D): the last frame is scored
    chunks = torch.randn(4, 5, 8, 1)
    assert torch.equal(critic.score(obs, chunks), loaded.score(obs, chunks))
    assert loaded.config == critic.config
    meta = json.loads((tmp_path / "critic" / "config.json").read_text())
    assert meta["type"] == "chunk_critic" and meta["config"]["action_key"] == "action"


def test_load_critic_rejects_a_policy_checkpoint(tmp_path):
    from robolearn.policies import CheckpointError
    from robolearn.policies.checkpoint import write_checkpoint

    write_checkpoint(tmp_path / "pol", "flow", {}, {}, {})
    with pytest.raises(CheckpointError, match="not a critic"):
        load_critic(tmp_path / "pol")


def test_train_critic_cli_end_to_end(tmp_path):
    ds, out = write_toy(tmp_path / "toy"), tmp_path / "critic"
    cmd = [sys.executable, "-m", "robolearn.cli", "train-critic", "--dataset", str(ds), "--dataset", str(ds),
           "--out", str(out), "--set", "steps=6", "--set", "chunk=2", "--json", str(tmp_path / "s.json")]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "chunk transitions from 48 episodes" in res.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["episodes"] == 48 and summary["transitions"] > 0
    assert load_critic(out).config.chunk == 2
    for args, message in [
        (["--dataset", str(ds), "--out", str(out), "--set", "chunks=2"], "unknown key 'chunks'"),
        (["--dataset", str(tmp_path), "--out", str(out)], "not a dataset"),
        (["--dataset", str(ds), "--out", str(out), "--set", "reward=dense"], "reward"),
    ]:
        res = subprocess.run([*cmd[:4], *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and message in lines[-1] and "Traceback" not in res.stderr, res.stderr
