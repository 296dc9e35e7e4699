"""Rollout envs: chunked steps with observation windows, same-step autoreset, and the process backend
returning what the in-process one does."""

from __future__ import annotations

import numpy as np
import pytest
from toy_tasks import NAME, ToyConfig

from robolearn.rl.vector import make_rollout_envs, step_success


def test_chunked_env_windows_rewards_and_episode_end():
    envs = make_rollout_envs(NAME, ToyConfig(max_episode_steps=3), 2, backend="sync", obs_steps=2,
                             action_steps=2)  # fmt: skip
    obs, _ = envs.reset(seed=[0, 1])
    state = obs["observation.state"]
    assert state.shape == (2, 2, 2) and np.array_equal(state[:, 0], state[:, 1])  # first frame repeated
    assert list(obs["task"]) == ["reach the goal"] * 2
    x0 = state[:, -1, 0]
    obs, reward, term, trunc, info = envs.step(np.full((2, 2, 1), 0.5, np.float32))
    np.testing.assert_allclose(obs["observation.state"][:, -1, 0], x0 + 0.4, atol=1e-6)
    np.testing.assert_allclose(obs["observation.state"][:, 0, 0], x0 + 0.2, atol=1e-6)
    assert list(info["env_steps"]) == [2, 2]
    # The 3-step cap ends the episode inside the second chunk: one step of it runs, then a reset.
    obs, reward, term, trunc, info = envs.step(np.zeros((2, 2, 1), np.float32))
    assert trunc.all() and list(info["final_info"]["env_steps"]) == [1, 1]
    final = info["final_obs"][0]["observation.state"]
    assert final.shape == (2, 2) and not np.array_equal(final, obs["observation.state"][0])
    assert step_success(info, trunc | term).shape == (2,)
    envs.close()


def test_success_ends_the_episode_with_reward_and_flag():
    envs = make_rollout_envs(NAME, ToyConfig(max_episode_steps=20), 1, backend="sync", action_steps=2)
    obs, _ = envs.reset(seed=[5])
    done = False
    for _ in range(20):
        x, goal = obs["observation.state"][0, -1]
        a = np.clip((goal - x) / 0.4, -1, 1)
        obs, reward, term, trunc, info = envs.step(np.full((1, 2, 1), a, np.float32))
        if term[0] or trunc[0]:
            done = True
            break
    assert done and term[0] and reward[0] == 1.0
    assert info["final_info"]["episode_success"][0] and step_success(info, term | trunc)[0]
    envs.close()


def test_process_backend_matches_in_process():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (6, 2, 2, 1)).astype(np.float32)
    results = []
    for backend in ("sync", "process"):
        envs = make_rollout_envs(NAME, ToyConfig(max_episode_steps=4), 2, backend=backend, action_steps=2)
        obs, _ = envs.reset(seed=[3, 4])
        trace = [obs["observation.state"].copy()]
        for a in actions:
            obs, reward, term, trunc, _ = envs.step(a)
            trace += [obs["observation.state"].copy(), reward.copy(), term.copy(), trunc.copy()]
        envs.close()
        results.append(trace)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_backend_and_count():
    with pytest.raises(ValueError, match="backend"):
        make_rollout_envs(NAME, ToyConfig(), 2, backend="threads")
    with pytest.raises(ValueError, match="num_envs"):
        make_rollout_envs(NAME, ToyConfig(), 0)


def test_hold_mode_runs_to_the_cap_and_pays_every_held_step():
    from toy_tasks import tiny_flow_policy

    from robolearn.rl.config import FinetuneConfig
    from robolearn.rl.runner import rollout_env_config

    cfg = rollout_env_config(
        tiny_flow_policy(), NAME, FinetuneConfig(terminate_on_success=False, max_episode_steps=10)
    )
    assert cfg.terminate_on_success is False and cfg.reward_type == "sparse" and cfg.max_episode_steps == 10
    envs = make_rollout_envs(NAME, cfg, 1, backend="sync", action_steps=2)
    obs, _ = envs.reset(seed=[5])
    total = 0.0
    for _ in range(5):
        x, goal = obs["observation.state"][0, -1]
        a = np.clip((goal - x) / 0.4, -1, 1)
        obs, reward, term, trunc, info = envs.step(np.array([[[a], [0.0]]], np.float32))
        total += float(reward[0])
    assert trunc[0] and not term[0]  # the cap ended it, not the success
    assert info["final_info"]["is_success"][0] and total > 2  # reward on each step the goal held
    envs.close()


@pytest.mark.parametrize("terminate_on_success", [True, False])
def test_step_cap_bootstraps_only_when_episodes_end_at_success(terminate_on_success):
    """With episodes ending at success the step cap is a cut (GAE bootstraps V of the last observation
    there); when every held step pays, the cap ends the task and nothing is bootstrapped."""
    import torch
    from toy_tasks import tiny_flow_policy

    from robolearn.rl.config import FinetuneConfig
    from robolearn.rl.ppo import ValueCritic
    from robolearn.rl.reinflow import ReinFlowPolicy
    from robolearn.rl.rollout import collect, trunc_mask
    from robolearn.rl.runner import rollout_env_config

    torch.manual_seed(0)
    ft = FinetuneConfig(terminate_on_success=terminate_on_success, max_episode_steps=4)
    policy = tiny_flow_policy()
    agent = ReinFlowPolicy(policy, sigma_min=0.05, sigma_max=0.1)
    critic = ValueCritic(2, (8,))
    torch.nn.init.constant_(critic.net[-1].bias, 5.0)  # V ≈ 5 everywhere: a bootstrap is visible
    envs = make_rollout_envs(NAME, rollout_env_config(policy, NAME, ft), 2, backend="sync", action_steps=2)
    roll, _ = collect(agent, critic, envs, 6, [1, 2], bootstrap_step_cap=ft.bootstraps_step_cap)
    envs.close()
    cut = trunc_mask(roll.terminated, roll.done)
    assert roll.done.any()
    if terminate_on_success:
        assert cut.any() and (roll.next_values[cut] > 1).all()  # the cap bootstraps from V
    else:
        assert not cut.any() and roll.terminated[roll.done].all()  # the cap is terminal


def test_the_critic_sees_the_elapsed_fraction_of_the_step_cap():
    """V(s, t): each chunk-step records env steps elapsed / cap, back to 0 at every new episode."""
    import torch
    from toy_tasks import tiny_flow_policy

    from robolearn.rl.config import FinetuneConfig
    from robolearn.rl.ppo import ValueCritic
    from robolearn.rl.reinflow import ReinFlowPolicy
    from robolearn.rl.rollout import collect
    from robolearn.rl.runner import episode_step_cap, rollout_env_config

    torch.manual_seed(0)
    policy = tiny_flow_policy()
    env_cfg = rollout_env_config(policy, NAME, FinetuneConfig(max_episode_steps=8))
    assert episode_step_cap(NAME, env_cfg) == 8
    agent = ReinFlowPolicy(policy, sigma_min=0.05, sigma_max=0.1)
    critic = ValueCritic(2, (8,), time_input=True)
    envs = make_rollout_envs(NAME, env_cfg, 2, backend="sync", action_steps=2)
    roll, _ = collect(agent, critic, envs, 10, [3, 4], step_cap=8)
    envs.close()
    times = roll.time.view(10, 2).numpy()
    for i in range(2):
        expected, t = [], 0.0
        for step in range(10):
            expected.append(t)
            t = 0.0 if roll.done[step, i] else t + 2 / 8
        np.testing.assert_allclose(times[:, i], expected)
    assert roll.done.any() and times.max() == 0.75
    with pytest.raises(ValueError, match="elapsed-time input"):
        critic(torch.zeros(1, 2))
