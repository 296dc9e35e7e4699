"""ReinFlow's Markov chain: exact log-probability, one time grid, the PPO ratio at the start, σ bounds,
and a fine-tuned checkpoint that is a plain flow checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_tasks import tiny_flow_policy

from robolearn.policies import load_policy
from robolearn.policies.flow.model import FlowPolicy
from robolearn.rl.config import PPOConfig
from robolearn.rl.ppo import Batch, ValueCritic, ppo_update
from robolearn.rl.reinflow import ReinFlowPolicy


def _obs(b: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"observation.state": torch.rand(b, 1, 2, generator=g) * 2 - 1}


def _independent_log_prob(agent: ReinFlowPolicy, obs, chain: torch.Tensor) -> torch.Tensor:
    """The chain's log-density, step by step, with a diagonal MultivariateNormal per transition."""
    pol, k = agent.policy, agent.num_steps
    cond = pol.encode_obs(obs)
    total = torch.zeros(chain.shape[0], dtype=torch.float64)
    for i in range(k):
        t = torch.full((chain.shape[0],), i / k)
        mean = chain[:, i] + pol.velocity(chain[:, i], t, cond) / k
        std = agent.noise(cond, t)
        dist = torch.distributions.MultivariateNormal(mean.flatten(1).double(),
                                                      torch.diag_embed(std.flatten(1).double() ** 2))  # fmt: skip
        total += dist.log_prob(chain[:, i + 1].flatten(1).double())
    return total / (k * chain[0, 0].numel())


@pytest.mark.parametrize("denoiser", ["mlp", "unet"])
def test_log_prob_matches_an_independent_computation(denoiser):
    torch.manual_seed(0)
    agent = ReinFlowPolicy(tiny_flow_policy(num_steps=4, denoiser=denoiser), sigma_min=0.05, sigma_max=0.2)
    obs = _obs()
    actions, chain, logp = agent.sample(obs)
    assert chain.shape == (6, 5, 2, 1) and logp.shape == (6, 1)
    with torch.no_grad():
        ref = _independent_log_prob(agent, obs, chain)
        again, entropy, _ = agent.evaluate(obs, chain)
    np.testing.assert_allclose(logp[:, 0].double(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again[:, 0].double(), ref, rtol=1e-5, atol=1e-5)
    # The executed chunk is the policy's clipped last iterate, in raw units.
    pol = agent.policy
    torch.testing.assert_close(actions, pol.normalizer.unnormalize("action", pol._clip(chain[:, -1])))
    # Gaussian entropy per dimension: log σ + ½ log 2πe, between its values at the bounds.
    lo, hi = np.log(0.05) + 0.5 * np.log(2 * np.pi * np.e), np.log(0.2) + 0.5 * np.log(2 * np.pi * np.e)
    assert ((entropy >= lo - 1e-5) & (entropy <= hi + 1e-5)).all()


def test_unexecuted_chunk_steps_leave_the_last_step_log_prob():
    """H = 6 with To = 2 and 3 executed actions: the last transition counts only chunk steps 1-3; every
    earlier transition counts the whole chunk. Checked against a MultivariateNormal per transition over
    exactly those coordinates, and against the unmarginalized chain on the same samples."""
    torch.manual_seed(4)
    policy = tiny_flow_policy(num_steps=3, horizon=6, n_action_steps=3, n_obs_steps=2)
    agent = ReinFlowPolicy(policy, sigma_min=0.05, sigma_max=0.2)
    obs = {"observation.state": torch.rand(5, 2, 2) * 2 - 1}
    _, chain, logp = agent.sample(obs)
    pol, k = agent.policy, agent.num_steps
    cond = pol.encode_obs(obs)
    total, dims = torch.zeros(5, dtype=torch.float64), 0
    with torch.no_grad():
        for i in range(k):
            t = torch.full((5,), i / k)
            mean = chain[:, i] + pol.velocity(chain[:, i], t, cond) / k
            std = agent.noise(cond, t)
            rows = slice(1, 4) if i == k - 1 else slice(None)
            m, s, x = (v[:, rows].flatten(1).double() for v in (mean, std, chain[:, i + 1]))
            total += torch.distributions.MultivariateNormal(m, torch.diag_embed(s**2)).log_prob(x)
            dims += m.shape[1]
        again = agent.evaluate(obs, chain)[0]
        everything = ReinFlowPolicy(policy, sigma_min=0.05, sigma_max=0.2, marginalize_unexecuted=False)
        everything.noise.load_state_dict(agent.noise.state_dict())
        full = everything.evaluate(obs, chain)[0]
    assert dims == 2 * 6 + 3
    np.testing.assert_allclose(logp[:, 0].double(), total / dims, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again[:, 0].double(), total / dims, rtol=1e-5, atol=1e-5)
    assert (full - again).abs().max() > 1e-4


def test_ratio_is_one_before_the_first_update_with_several_steps():
    torch.manual_seed(1)
    agent = ReinFlowPolicy(tiny_flow_policy(num_steps=4), sigma_min=0.05, sigma_max=0.15)
    obs = _obs(32, seed=3)
    _, chain, logp = agent.sample(obs)
    critic = ValueCritic(2, (16,))
    opt = torch.optim.Adam([*agent.parameters(), *critic.parameters()], lr=1e-3)
    batch = Batch(obs, chain, logp, torch.randn(32), torch.randn(32))
    cfg = PPOConfig(update_epochs=2, minibatch_size=8)
    out = ppo_update(agent, critic, opt, batch, cfg, np.random.default_rng(0))
    assert out["ratio_first"] < 1e-6
    # The same row recomputed alone gives the same log-probability bit for bit (MLP denoiser).
    fresh = ReinFlowPolicy(tiny_flow_policy(num_steps=4), sigma_min=0.05, sigma_max=0.15)
    _, chain2, logp2 = fresh.sample(obs)
    with torch.no_grad():
        assert torch.equal(fresh.evaluate(obs, chain2)[0], logp2)


def test_per_step_ratios_are_each_transitions_log_density():
    """``per_step_ratio``: J = K columns, each one transition's per-dimension log-density (the last
    marginalized to the executed steps); weighted by their dimensions they average to the chain's
    log-prob. PPO gets K clips, and the ratio is still 1 before the first update."""
    torch.manual_seed(5)
    policy = tiny_flow_policy(num_steps=3, horizon=6, n_action_steps=3, n_obs_steps=2)
    agent = ReinFlowPolicy(policy, sigma_min=0.05, sigma_max=0.2, per_step_ratio=True)
    obs = {"observation.state": torch.rand(8, 2, 2) * 2 - 1}
    _, chain, logp = agent.sample(obs)
    assert logp.shape == (8, 3) and agent.clip_coefs(0.01).tolist() == pytest.approx([0.01] * 3)
    pol, k = agent.policy, agent.num_steps
    cond, dims = pol.encode_obs(obs), []
    with torch.no_grad():
        for i in range(k):
            t = torch.full((8,), i / k)
            mean = chain[:, i] + pol.velocity(chain[:, i], t, cond) / k
            rows = slice(1, 4) if i == k - 1 else slice(None)
            m, sd, x = (v[:, rows].flatten(1).double() for v in (mean, agent.noise(cond, t), chain[:, i + 1]))
            ref = torch.distributions.Normal(m, sd).log_prob(x).sum(-1) / m.shape[1]
            np.testing.assert_allclose(logp[:, i].double(), ref, rtol=1e-5, atol=1e-5)
            dims.append(m.shape[1])
        joint = ReinFlowPolicy(policy, sigma_min=0.05, sigma_max=0.2)
        joint.noise.load_state_dict(agent.noise.state_dict())
        w = torch.tensor(dims, dtype=torch.float64)
        np.testing.assert_allclose((logp.double() * w).sum(-1) / w.sum(), joint.evaluate(obs, chain)[0][:, 0].double(),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
    critic = ValueCritic(4, (16,))
    opt = torch.optim.Adam([*agent.parameters(), *critic.parameters()], lr=1e-3)
    batch = Batch(obs, chain, logp, torch.randn(8), torch.randn(8))
    out = ppo_update(
        agent, critic, opt, batch, PPOConfig(update_epochs=2, minibatch_size=4), np.random.default_rng(0)
    )
    assert out["ratio_first"] < 1e-6 and out["minibatches"] == 4


def test_a_second_time_grid_breaks_the_ratio():
    """What the one-grid rule prevents: evaluating the chain on the K-point grid linspace(0, 1, K)
    (the reference code's log-prob grid) instead of the sampling grid k/K moves the ratio off 1."""
    torch.manual_seed(2)
    agent = ReinFlowPolicy(tiny_flow_policy(num_steps=4), sigma_min=0.05, sigma_max=0.15)
    obs = _obs(16)
    _, chain, logp = agent.sample(obs)
    pol = agent.policy
    wrong = torch.linspace(0, 1, agent.num_steps)
    pol.time_grid = lambda k: torch.cat([wrong, torch.ones(1)])  # instance attribute shadows the method
    with torch.no_grad():
        moved = agent.evaluate(obs, chain)[0]
    assert (moved - logp).abs().max() > 1e-3


def test_noise_is_bounded_and_follows_the_schedule():
    agent = ReinFlowPolicy(tiny_flow_policy(), sigma_min=0.05, sigma_max=0.2)
    with torch.no_grad():
        for p in agent.noise.parameters():
            p.normal_(0, 10.0)  # extreme logits
        cond = torch.randn(64, 1, 2) * 10
        t = torch.rand(64)
        sigma = agent.noise(cond, t)
        assert sigma.min() >= 0.05 and sigma.max() <= 0.2
        agent.set_sigma_max(0.08)
        assert agent.noise(cond, t).max() <= 0.08


def test_noise_starts_mid_range_and_learns():
    # At a bound the sigmoid saturates: σ would barely move under the gradient that should train it.
    torch.manual_seed(0)
    agent = ReinFlowPolicy(tiny_flow_policy(), sigma_min=0.05, sigma_max=0.15)
    cond, t = torch.randn(32, 1, 2), torch.rand(32)
    with torch.no_grad():
        torch.testing.assert_close(agent.noise(cond, t), torch.full((32, 2, 1), 0.1))
    opt = torch.optim.Adam(agent.noise.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        (-agent.noise(cond, t).mean()).backward()
        opt.step()
    with torch.no_grad():
        assert agent.noise(cond, t).mean() > 0.13


def test_fine_tuned_checkpoint_is_a_plain_flow_checkpoint(tmp_path):
    torch.manual_seed(0)
    agent = ReinFlowPolicy(tiny_flow_policy(), regularizer="w2")
    agent.save_policy(tmp_path / "ck")
    loaded = load_policy(tmp_path / "ck")
    assert type(loaded) is FlowPolicy
    assert set(loaded.state_dict()) == set(tiny_flow_policy().state_dict())  # no noise-net weights
    obs, noise = _obs(4), torch.randn(4, 2, 1)
    torch.testing.assert_close(loaded.predict_action_chunk(obs, noise=noise),
                               agent.policy.eval().predict_action_chunk(obs, noise=noise))  # fmt: skip


def test_fine_tuned_checkpoint_runs_the_chain_it_was_tuned_on(tmp_path):
    # A 4-step policy fine-tuned through a 1-step chain is saved as a 1-step policy: its noise-free
    # chain from the same x_0 is the one PPO shaped, not 4 steps of velocities trained for 1.
    torch.manual_seed(0)
    policy = tiny_flow_policy(num_steps=4)
    agent = ReinFlowPolicy(policy, num_steps=1)
    agent.save_policy(tmp_path / "ck")
    loaded = load_policy(tmp_path / "ck")
    assert loaded.config.num_inference_steps == 1
    obs, noise = _obs(4), torch.randn(4, 2, 1)
    with torch.no_grad():
        one_step = agent._deterministic(agent.policy, obs, noise)
        four_steps = agent.policy.predict_action_chunk(obs, noise=noise, num_steps=4)
    expected = loaded.normalizer.unnormalize("action", loaded._clip(one_step))
    torch.testing.assert_close(loaded.predict_action_chunk(obs, noise=noise), expected)
    assert not torch.allclose(loaded.predict_action_chunk(obs, noise=noise), four_steps)


@pytest.mark.parametrize("kind", ["w2", "bc"])
def test_regularizer_is_zero_at_the_pretrained_policy_and_grows_away(kind):
    torch.manual_seed(0)
    agent = ReinFlowPolicy(tiny_flow_policy(), regularizer=kind)
    obs = _obs(8)
    _, chain, _ = agent.sample(obs)
    assert float(agent.evaluate(obs, chain)[2].detach()) == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        for p in agent.policy.denoiser.parameters():
            p.add_(0.1 * torch.randn_like(p))
    reg = agent.evaluate(obs, chain)[2]
    assert float(reg.detach()) > 1e-4 and reg.requires_grad
