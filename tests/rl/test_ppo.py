"""The PPO update's critic-only epochs: they fit V(s) to the returns without touching the actor."""

from __future__ import annotations

import numpy as np
import torch
from toy_tasks import tiny_flow_policy

from robolearn.rl.config import PPOConfig
from robolearn.rl.ppo import Batch, ValueCritic, ppo_update
from robolearn.rl.reinflow import ReinFlowPolicy


def test_critic_epochs_fit_the_value_and_leave_the_actor_alone():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    agent = ReinFlowPolicy(tiny_flow_policy(num_steps=2), sigma_min=0.05, sigma_max=0.15)
    obs = {"observation.state": torch.rand(64, 1, 2) * 2 - 1}
    _, chain, logp = agent.sample(obs)
    returns = 3.0 * obs["observation.state"][:, 0, 0]  # a value the critic can learn from the obs
    batch = Batch(obs, chain, logp, torch.randn(64), returns)
    critic = ValueCritic(2, (32,))
    opt = torch.optim.Adam([*agent.parameters(), *critic.parameters()], lr=3e-3)
    with torch.no_grad():
        before = 0.5 * (critic(agent.features(obs)) - returns).pow(2).mean().item()
    actor = [p.clone() for p in agent.policy.parameters()]
    cfg = PPOConfig(update_epochs=1, minibatch_size=16, critic_epochs=30)
    out = ppo_update(agent, critic, opt, batch, cfg, np.random.default_rng(0), train_actor=False)
    assert out["v_loss_fit"] < 0.2 * before
    assert all(torch.equal(a, p) for a, p in zip(actor, agent.policy.parameters(), strict=True))
