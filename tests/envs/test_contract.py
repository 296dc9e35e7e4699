"""Contract tests over every registered embedded env (dm_control suite_test style)."""

from __future__ import annotations

import numpy as np
import pytest

from robolearn import types
from robolearn.envs import ENVS, env_config, make_env
from robolearn.envs.experts import make_expert

FRANKA = [n for n in ENVS.names() if n.startswith("franka-")]


def test_all_five_tasks_and_their_distractor_variants_registered():
    base = {"franka-reach", "franka-lift", "franka-push", "franka-stack", "franka-pick-place"}
    variants = {f"franka-{t}-d2" for t in ("lift", "push", "pick-place", "stack")}
    assert set(FRANKA) == base | variants


@pytest.fixture(params=FRANKA)
def env_name(request):
    return request.param


def _check_obs(env, obs):
    assert env.observation_space.contains(obs), {k: getattr(v, "shape", v) for k, v in obs.items()}
    for key, value in obs.items():
        if key != types.TASK:
            assert np.all(np.isfinite(value)), key


def test_create_reset_step_spaces(env_name):
    env = make_env(env_name)
    obs, info = env.reset(seed=3)
    _check_obs(env, obs)
    assert info["is_success"] is False
    assert isinstance(obs[types.TASK], str) and obs[types.TASK]
    rng = np.random.default_rng(0)
    for _ in range(15):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        _check_obs(env, obs)
        assert np.isfinite(reward)
        assert isinstance(info["is_success"], bool)
    # The TCP stays inside the workspace box (the target is clipped to it every step).
    cfg = env.config
    tcp = obs[types.OBS_STATE][15:18]
    assert np.all(tcp > np.array(cfg.workspace_low) - 0.03) and np.all(
        tcp < np.array(cfg.workspace_high) + 0.03
    )
    del rng
    env.close()


def test_declared_element_names_match_the_spaces(env_name):
    env = make_env(env_name)
    names = env.config.feature_names()
    assert len(names[types.OBS_ENV_STATE]) == env.observation_space[types.OBS_ENV_STATE].shape[0]
    assert len(names[types.OBS_STATE]) == env.observation_space[types.OBS_STATE].shape[0]
    assert len(names[types.ACTION]) == env.action_space.shape[0]
    env.close()


def test_seeded_determinism(env_name):
    def run(seed):
        env = make_env(env_name)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        trace = [obs[types.OBS_ENV_STATE].copy()]
        for _ in range(10):
            obs, r, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            trace.append(np.concatenate([obs[types.OBS_STATE], obs[types.OBS_ENV_STATE], [r]]))
        env.close()
        return obs[types.TASK], trace

    task_a, a = run(11)
    task_b, b = run(11)
    task_c, c = run(12)
    assert task_a == task_b
    for x, y in zip(a, b, strict=False):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]), "different seeds must randomize the scene"


def test_joint_and_velocity_limits_hold_under_random_actions(env_name):
    env = make_env(env_name)
    env.reset(seed=0)
    arm = env.arm
    rng = np.random.default_rng(1)
    for _ in range(60):
        obs, *_ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        q, dq = obs[types.OBS_STATE][:7], obs[types.OBS_STATE][7:14]
        assert np.all(q >= arm.q_min - 1e-3) and np.all(q <= arm.q_max + 1e-3)
        assert np.all(np.abs(dq) <= arm.dq_max * 1.1), (dq, arm.dq_max)
    env.close()


def test_expert_reaches_success(env_name):
    cfg = env_config(env_name)
    env, expert = make_env(env_name, cfg), make_expert(cfg)
    wins = 0
    for seed in range(3):
        obs, _ = env.reset(seed=500 + seed)
        expert.reset()
        for _ in range(env.max_episode_steps):
            obs, _, terminated, truncated, info = env.step(expert(obs))
            if terminated or truncated:
                break
        wins += info["is_success"]
    assert wins == 3
    env.close()
