"""DPPO over the diffusion policy's chain: each fine-tuned step against diffusers' own scheduler step,
the σ floor, per-step ratios of 1 at the start, the clip schedule and the denoising discount."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_tasks import tiny_diffusion_policy

from robolearn.policies import load_policy
from robolearn.policies.diffusion.model import DiffusionPolicy
from robolearn.rl.config import PPOConfig
from robolearn.rl.dppo import DPPODiffusion
from robolearn.rl.ppo import Batch, ValueCritic, ppo_update


def _obs(b: int = 5) -> dict[str, torch.Tensor]:
    return {"observation.state": torch.rand(b, 1, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1}


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_each_step_matches_diffusers_and_its_log_prob(scheduler):
    torch.manual_seed(0)
    agent = DPPODiffusion(tiny_diffusion_policy(num_steps=4, scheduler=scheduler), ft_steps=3, eta=1.0,
                          min_std=0.1)  # fmt: skip
    obs = _obs()
    _, chain, logp = agent.sample(obs)
    assert chain.shape == (5, 5, 2, 1) and logp.shape == (5, 3)
    pol = agent.policy
    sched = pol.infer_scheduler
    cond = pol.encode_obs(obs)
    expected = []
    with torch.no_grad():
        for i, t in enumerate(pol._timesteps):
            x = chain[:, i]
            out = agent.ft_denoiser(x, torch.full((5,), float(t)), cond) if i >= 1 else pol.denoiser(
                x, torch.full((5,), float(t)), cond)  # fmt: skip
            if scheduler == "ddim":
                eta = 1.0 if i >= 1 else 0.0
                mean = sched.step(out, t, x, eta=eta, variance_noise=torch.zeros_like(x)).prev_sample
                prev = t - sched.config.num_train_timesteps // sched.num_inference_steps
                a_t = sched.alphas_cumprod[t]
                a_prev = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
                std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
            else:
                gen = torch.Generator().manual_seed(7)
                sample = sched.step(out, t, x, generator=gen).prev_sample
                noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
                std = sched._get_variance(t).sqrt() if t > 0 else torch.tensor(0.0)
                mean = sample - std * noise
            if i == 0:  # the frozen first step runs the pretrained sampler (DDIM: deterministically)
                if scheduler == "ddim":
                    torch.testing.assert_close(chain[:, 1], mean, atol=1e-5, rtol=1e-5)
                continue
            std = torch.clamp(torch.as_tensor(std, dtype=torch.float32), min=0.1)
            dist = torch.distributions.Normal(mean, std.expand_as(mean))
            expected.append(dist.log_prob(chain[:, i + 1]).flatten(1).mean(-1))
        again = agent.evaluate(obs, chain)[0]
    expected = torch.stack(expected, dim=1)
    torch.testing.assert_close(logp, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=1e-5)


def test_std_floor_applies_where_the_scheduler_gives_less():
    torch.manual_seed(0)
    agent = DPPODiffusion(tiny_diffusion_policy(num_steps=4), eta=0.0, min_std=0.1)  # eta 0: DDIM std 0
    obs = _obs(200)
    _, chain, _ = agent.sample(obs)
    with torch.no_grad():
        cond = agent.policy.encode_obs(obs)
        idx = torch.full((200,), 3)
        mean, _ = agent._mean_std(agent.ft_denoiser, chain[:, 3], idx, cond, 0.0)
    spread = (chain[:, 4] - mean).std()
    assert 0.08 < float(spread) < 0.12  # the floor's 0.1, not the scheduler's 0


def test_per_step_ratios_start_at_one_and_the_schedules():
    torch.manual_seed(0)
    agent = DPPODiffusion(tiny_diffusion_policy(num_steps=4), clip_base=0.001, gamma_denoising=0.9)
    clips = agent.clip_coefs(0.01)
    assert clips[0] == pytest.approx(0.001) and clips[-1] == pytest.approx(0.01)
    assert (clips.diff() > 0).all()
    np.testing.assert_allclose(agent.advantage_weights().numpy(), [0.9**3, 0.9**2, 0.9, 1.0], rtol=1e-6)
    obs = _obs(24)
    _, chain, logp = agent.sample(obs)
    critic = ValueCritic(2, (16,))
    groups = agent.param_groups(1e-3, 0.0) + [{"params": list(critic.parameters()), "lr": 1e-3}]
    opt = torch.optim.Adam(groups)
    before = [p.clone() for p in agent.ft_denoiser.parameters()]
    frozen = [p.clone() for p in agent.policy.denoiser.parameters()]
    out = ppo_update(agent, critic, opt, Batch(obs, chain, logp, torch.randn(24), torch.randn(24)),
                     PPOConfig(update_epochs=2, minibatch_size=8), np.random.default_rng(0))  # fmt: skip
    assert out["ratio_first"] < 1e-5
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.ft_denoiser.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(frozen, agent.policy.denoiser.parameters(), strict=True))


def test_fine_tuned_checkpoint_is_a_plain_diffusion_checkpoint(tmp_path):
    torch.manual_seed(0)
    agent = DPPODiffusion(tiny_diffusion_policy())
    with torch.no_grad():
        for p in agent.ft_denoiser.parameters():
            p.add_(0.05)
    agent.save_policy(tmp_path / "ck")
    loaded = load_policy(tmp_path / "ck")
    assert type(loaded) is DiffusionPolicy
    for name, p in agent.ft_denoiser.state_dict().items():
        torch.testing.assert_close(loaded.denoiser.state_dict()[name], p)
