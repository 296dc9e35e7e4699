"""V-GPS steering: the wrapper executes the critic's best of K samples, leaves the policy untouched,
and plugs into eval (with --record), steer and serve."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robolearn.policies import DenoiserConfig, FlowConfig
from robolearn.registry import POLICIES
from robolearn.rl.critic import ChunkCritic, CriticConfig
from robolearn.rl.steer import SteeredPolicy

ROOT = Path(__file__).resolve().parents[2]
FEATURES = {"observation.state": (3,), "observation.environment_state": (2,), "action": (2,)}


def tiny_flow():
    cfg = FlowConfig(denoiser=DenoiserConfig(kind="mlp", mlp_dims=(16,)), horizon=8, n_action_steps=4)
    return POLICIES.build("flow", cfg, features=FEATURES).eval()


def tiny_critic(chunk=4, keys=("observation.state",)):
    torch.manual_seed(1)
    cfg = CriticConfig(
        chunk=chunk, hidden_dims=(8,), input_features={k: FEATURES[k] for k in keys}, action_dim=2
    )
    return ChunkCritic(cfg).eval()


def window(b=3):
    return {"observation.state": torch.randn(b, 2, 3), "observation.environment_state": torch.randn(b, 2, 2)}


def test_steering_executes_the_critics_best_sample():
    policy, critic = tiny_flow(), tiny_critic()
    steered = SteeredPolicy(policy, critic, num_samples=6)
    obs, noise = window(), torch.randn(3, 6, 8, 2)
    samples = policy.predict_action_chunk(obs, noise=noise, num_samples=6)  # (B, K, H, Da)
    scores = critic.score(obs, samples[:, :, policy.config.exec_start :])
    chosen = steered.predict_action_chunk(obs, noise=noise)
    best = scores.argmax(dim=1)
    assert chosen.shape == (3, 8, 2)
    assert torch.equal(steered.last_index, best) and torch.allclose(steered.last_scores, scores)
    assert torch.equal(chosen, samples[torch.arange(3), best])
    assert len(set(best.tolist())) > 1 or scores.std() > 0  # the candidates differ
    # M steered chunks at once: (B, M, H, Da), each the best of its own K.
    many = steered.predict_action_chunk(obs, num_samples=2)
    assert many.shape == (3, 2, 8, 2) and steered.last_index.shape == (3, 2)


def test_softmax_temperature_samples_among_the_candidates():
    gen = torch.Generator().manual_seed(0)
    policy, critic = tiny_flow(), tiny_critic()
    hot = SteeredPolicy(policy, critic, num_samples=5, temperature=1e6, generator=gen)
    obs, noise = window(1), torch.randn(1, 5, 8, 2)
    samples = policy.predict_action_chunk(obs, noise=noise, num_samples=5)
    picked = set()
    for _ in range(40):
        out = hot.predict_action_chunk(obs, noise=noise)
        i = int(hot.last_index[0])
        assert torch.equal(out[0], samples[0, i])
        picked.add(i)
    assert len(picked) >= 3  # near-uniform at a huge temperature
    cold = SteeredPolicy(policy, critic, num_samples=5, temperature=1e-6, generator=gen)
    cold.predict_action_chunk(obs, noise=noise)
    assert int(cold.last_index[0]) == int(cold.last_scores[0].argmax())


def test_policy_weights_are_never_touched_and_the_interface_matches():
    policy, critic = tiny_flow(), tiny_critic(keys=("observation.state", "observation.environment_state"))
    before = copy.deepcopy(policy.state_dict())
    steered = SteeredPolicy(policy, critic, num_samples=4)
    steered.reset()
    for _ in range(6):  # single frames: the wrapper keeps the window and the action queue
        action = steered.select_action({k: v[:, -1] for k, v in window(2).items()})
        assert action.shape == (2, 2)
    steered.predict_action_chunk(window())
    after = policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert steered.config.horizon == policy.config.horizon and steered.name == "flow"
    assert set(steered.input_features) == set(policy.input_features)
    with pytest.raises(ValueError, match="longer than the policy's executable chunk"):
        SteeredPolicy(policy, tiny_critic(chunk=8), num_samples=2)


@pytest.fixture(scope="module")
def lift_run(lift_dataset, tmp_path_factory):
    """A flow checkpoint trained 2 steps on the six-episode franka-lift dataset."""
    from robolearn.train.config import TrainConfig
    from robolearn.train.trainer import Trainer

    run = tmp_path_factory.mktemp("steer_flow") / "run"
    cfg = TrainConfig(policy="flow", policy_config={"denoiser": {"kind": "mlp", "mlp_dims": [32, 32]}}, steps=2,
                      batch_size=8, save_every=2, log_every=1)  # fmt: skip
    Trainer(cfg, lift_dataset, run, progress=False).fit()
    return run


def test_eval_record_writes_a_valid_dataset_of_the_executed_actions(lift_run, tmp_path):
    from robolearn.data.reader import LeRobotReader
    from robolearn.data.validate import validate
    from robolearn.envs import make_env
    from robolearn.eval.evaluate import evaluate, policy_env_config
    from robolearn.policies import load_policy

    policy = load_policy(lift_run)
    cfg = policy_env_config(policy, "franka-lift")
    rec = tmp_path / "rec"
    result = evaluate(policy, "franka-lift", cfg, episodes=3, num_envs=2, hold_steps=2, progress=False,
                      record_dir=rec)  # fmt: skip
    assert [p for p in validate(rec) if p.severity == "error"] == []
    with LeRobotReader(rec) as reader:
        assert {"action", "next.reward", "next.success", "next.done", "observation.state"} <= set(
            reader.features
        )
        assert reader.num_episodes == 3
        assert sorted(reader.episode_lengths.tolist()) == sorted(r.length for r in result.per_episode)
        ep = reader.episode_columns(0)
        seed = int(reader.episode_meta(0)["seed"])
    # Replaying the recorded actions from the recorded seed reproduces the recorded observations,
    # rewards and successes: the column holds what was executed.
    import dataclasses

    env = make_env("franka-lift", dataclasses.replace(cfg, terminate_on_success=False))
    obs, _ = env.reset(seed=seed)
    for t in range(len(ep["action"])):
        np.testing.assert_allclose(obs["observation.state"], ep["observation.state"][t], atol=1e-6)
        obs, reward, *_, info = env.step(ep["action"][t])
        assert reward == pytest.approx(float(ep["next.reward"][t]), abs=1e-6)
        assert bool(info["is_success"]) == bool(ep["next.success"][t])
    env.close()
    assert bool(ep["next.done"][-1]) and not ep["next.done"][:-1].any()
    with pytest.raises(ValueError, match="not empty"):
        evaluate(policy, "franka-lift", cfg, episodes=1, progress=False, record_dir=rec)


def _cli(*args, timeout=600):
    env = {"MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def lift_critic(lift_run, lift_dataset, tmp_path_factory):
    """A critic trained a few steps on the lift demos plus recorded rollouts of ``lift_run``."""
    tmp = tmp_path_factory.mktemp("steer_critic")
    res = _cli("eval", "--checkpoint", str(lift_run), "--episodes", "2", "--hold-steps", "2", "--seed", "5000000",
               "--record", str(tmp / "rollouts"))  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    res = _cli("train-critic", "--dataset", str(lift_dataset), "--dataset", str(tmp / "rollouts"), "--out",
               str(tmp / "critic"), "--set", "steps=3", "--set", "batch_size=16")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp / "critic"


def test_eval_and_steer_commands_with_a_critic(lift_run, lift_critic, tmp_path):
    res = _cli("eval", "--checkpoint", str(lift_run), "--episodes", "2", "--hold-steps", "0", "--critic",
               str(lift_critic), "--samples", "3", "--json", str(tmp_path / "e.json"))  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / "e.json").read_text())["episodes"] == 2
    res = _cli("steer", "--checkpoint", str(lift_run), "--critic", str(lift_critic), "--samples", "1,4",
               "--episodes", "2", "--hold-steps", "0", "--json", str(tmp_path / "s.json"))  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    runs = json.loads((tmp_path / "s.json").read_text())["runs"]
    assert set(runs) == {"unsteered", "K=1", "K=4"}
    assert runs["K=4"]["samples"] == 4 and runs["K=4"]["added_latency_ms_p50"] is not None
    assert "first success" in res.stdout and "held 0 steps" in res.stdout
    for args, message in [
        (("--samples", "0,4"), "--samples"),
        (("--critic", str(lift_run)), "not a critic"),
    ]:
        res = _cli(
            "steer", "--checkpoint", str(lift_run), "--critic", str(lift_critic), "--episodes", "1", *args
        )
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and message in lines[-1] and "Traceback" not in res.stderr, res.stderr


def test_serve_with_a_critic_answers_steered_chunks(lift_run, lift_critic):
    from websockets.sync.client import connect

    from robolearn.deploy.wire import packb, unpackb

    cmd = [sys.executable, "-m", "robolearn.cli", "serve", "--checkpoint", str(lift_run), "--port", "0", "--quiet",
           "--critic", str(lift_critic), "--samples", "4"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    try:
        url = next(
            (ln.split("listening on ", 1)[1].split()[0] for ln in proc.stdout if "listening on " in ln), None
        )
        assert url, proc.stderr.read()[-2000:]
        with connect(url, compression=None, max_size=None, open_timeout=30) as ws:
            md = unpackb(ws.recv(timeout=30))
            assert md["supports_rtc"] is False  # guidance would bypass the critic
            obs = {k: np.zeros(v["shape"], np.float32) for k, v in md["features"].items()}
            ws.send(packb(obs))
            reply = unpackb(ws.recv(timeout=60))
            assert reply["actions"].shape == (md["action_horizon"], md["action_dim"])
            assert np.isfinite(reply["actions"]).all()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
