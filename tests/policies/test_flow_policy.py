"""Flow-matching policy: K-step Euler chain, shortcut models, adaptive step count, clipping."""

from __future__ import annotations

import pytest
import torch

from robolearn.config import ConfigError


def _noise(fakes, b=2, seed=0):
    return torch.randn(b, fakes.H, fakes.DA, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k", [1, 3, 10])
def test_chain_is_the_euler_integration(fakes, k):
    policy = fakes.tiny_policy("flow").eval()
    obs = fakes.obs_of(fakes.make_batch(n=2))
    noise = _noise(fakes)
    out = policy.sample_chain(obs, noise, num_steps=k)
    assert out.chain.shape == (2, k + 1, fakes.H, fakes.DA)
    assert torch.allclose(out.times, torch.linspace(0, 1, k + 1))
    assert torch.equal(out.chain[:, 0], noise)
    # The chain can be re-evaluated with gradients (not inference tensors): x_{k+1} = x_k + dt·v(x_k, t_k).
    dt = 1.0 / k
    for i in range(k):
        v = policy.velocity(out.chain[:, i], out.times[i], out.cond)
        assert torch.allclose(out.chain[:, i + 1], out.chain[:, i] + dt * v, atol=1e-5)
    v.sum().backward()
    assert policy.denoiser.time_embed.net[1].weight.grad is not None
    # predict_action_chunk gives the same actions for the same noise and step count
    assert torch.allclose(out.actions, policy.predict_action_chunk(obs, noise=noise, num_steps=k), atol=1e-5)


def test_actions_clipped_to_normalized_range(fakes):
    policy = fakes.tiny_policy("flow").eval()
    obs = fakes.obs_of(fakes.make_batch(n=2))
    huge = 100 * _noise(fakes)
    actions = policy.predict_action_chunk(obs, noise=huge, num_steps=1)
    stats = policy.stats["action"]
    lo, hi = torch.tensor(stats["min"]).float(), torch.tensor(stats["max"]).float()
    assert (actions >= lo - 1e-4).all() and (actions <= hi + 1e-4).all()
    unclipped = fakes.tiny_policy("flow", clip_sample=False).eval()
    assert (unclipped.predict_action_chunk(obs, noise=huge, num_steps=1) > hi + 1).any()


def test_num_samples_use_given_noise(fakes):
    policy = fakes.tiny_policy("flow").eval()
    obs = fakes.obs_of(fakes.make_batch(n=2))
    noise = torch.randn(2, 3, fakes.H, fakes.DA)
    many = policy.predict_action_chunk(obs, noise=noise, num_samples=3)
    one = policy.predict_action_chunk({k: v[1:] for k, v in obs.items()}, noise=noise[1, 2:3])
    assert torch.allclose(many[1, 2], one[0], atol=1e-5)
    assert not torch.allclose(many[0, 0], many[0, 1])


def test_shortcut_model_trains_and_samples_in_1_2_4_steps(fakes):
    policy = fakes.tiny_policy("flow", shortcut=True, shortcut_max_steps=8, shortcut_bootstrap_fraction=0.25)
    batch = fakes.make_batch(n=16)
    loss, metrics = policy.compute_loss(batch)
    assert {"flow_loss", "shortcut_loss", "loss"} <= set(metrics)
    loss.backward()
    policy.eval()
    obs = fakes.obs_of(batch, n=2)
    noise = _noise(fakes)
    outs = {k: policy.predict_action_chunk(obs, noise=noise, num_steps=k) for k in (1, 2, 4)}
    assert all(o.shape == (2, fakes.H, fakes.DA) and torch.isfinite(o).all() for o in outs.values())
    # the step size is an input: the same state and time give different velocities for d = 1 and d = 1/8
    x = noise
    cond = policy.encode_obs(obs)
    assert not torch.allclose(policy.velocity(x, 0.0, cond, 1.0), policy.velocity(x, 0.0, cond, 0.125))


def test_shortcut_self_consistency_target(fakes):
    policy = fakes.tiny_policy("flow", shortcut=True, shortcut_max_steps=4)
    action = torch.rand(6, fakes.H, fakes.DA) * 2 - 1
    x0 = torch.randn_like(action)
    cond = policy.encode_obs(fakes.make_batch(n=6)).detach()
    torch.manual_seed(0)
    x_t, t, d, target = policy._shortcut_targets(action, x0, cond)
    assert set(d.tolist()) <= {1.0, 0.5}  # levels j in {0, 1} for M = 4; half-steps use 1/2 and 1/4
    assert torch.all(torch.remainder(t, d) == 0) and torch.all(t + d <= 1)
    v1 = policy.velocity(x_t, t, cond, d / 2)
    v2 = policy.velocity(x_t + (d / 2)[:, None, None] * v1, t + d / 2, cond, d / 2)
    assert torch.allclose(target, (v1 + v2) / 2, atol=1e-5)


def test_shortcut_max_steps_must_be_power_of_two(fakes):
    with pytest.raises(ConfigError, match="shortcut_max_steps"):
        fakes.tiny_config("flow", shortcut=True, shortcut_max_steps=12)


def test_adaptive_step_count(fakes):
    policy = fakes.tiny_policy("flow", adaptive_steps=True, num_inference_steps=4)
    batch = fakes.make_batch(n=8)
    loss, metrics = policy.compute_loss(batch)
    assert "variance_loss" in metrics
    loss.backward()
    policy.eval()
    obs = fakes.obs_of(batch, n=3)
    noise = _noise(fakes, b=3)
    policy.config.adaptive_threshold = float("inf")
    one = policy.predict_action_chunk(obs, noise=noise)
    assert policy.last_num_steps.tolist() == [1, 1, 1]
    assert torch.allclose(one, policy.predict_action_chunk(obs, noise=noise, num_steps=1), atol=1e-5)
    policy.config.adaptive_threshold = 0.0
    many = policy.predict_action_chunk(obs, noise=noise)
    assert policy.last_num_steps.tolist() == [4, 4, 4]
    assert torch.allclose(many, policy.predict_action_chunk(obs, noise=noise, adaptive=False), atol=1e-5)
    # a mixed batch takes each sample's own route
    cond = policy.encode_obs(obs)
    log_var = policy._log_variance(cond, torch.zeros(3))
    policy.config.adaptive_threshold = float(torch.exp(log_var.detach()).median())
    mixed = policy.predict_action_chunk(obs, noise=noise)
    steps = policy.last_num_steps
    assert sorted(steps.tolist()) == [1, 4, 4]
    assert torch.allclose(mixed[steps == 1], one[steps == 1], atol=1e-5)
    assert torch.allclose(mixed[steps == 4], many[steps == 4], atol=1e-5)


def test_noise_shape_is_checked(fakes):
    policy = fakes.tiny_policy("flow").eval()
    obs = fakes.obs_of(fakes.make_batch(n=2))
    with pytest.raises(ValueError, match=r"noise: expected shape \(2, 3, 8, 3\), found \(2, 8, 3\)"):
        policy.predict_action_chunk(obs, noise=torch.zeros(2, fakes.H, fakes.DA), num_samples=3)


def test_sample_prediction_velocity_and_final_step(fakes):
    """x-prediction: v = (â − x_t)/(1 − t), and the last Euler step lands exactly on â."""
    policy = fakes.tiny_policy("flow", prediction="sample", denoiser="mlp").eval()
    obs = fakes.obs_of(fakes.make_batch(n=2))
    cond = policy.encode_obs(obs)
    x, k = _noise(fakes), 4
    t = torch.full((2,), 0.5)
    clean = policy._network(x, t, cond, None)
    assert torch.allclose(policy.velocity(x, t, cond), (clean - x) / 0.5, atol=1e-5)
    out = policy.sample_chain(obs, x, num_steps=k)
    last = policy._network(out.chain[:, k - 1], out.times[k - 1], out.cond, None)
    assert torch.allclose(out.chain[:, k], last, atol=1e-5)


def test_sample_prediction_loss_falls(fakes):
    policy = fakes.tiny_policy("flow", prediction="sample", denoiser="mlp")
    batch = fakes.make_batch(n=32)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = policy.compute_loss(batch)[0].item()
    for _ in range(60):
        loss, _ = policy.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert policy.compute_loss(batch)[0].item() < 0.5 * first


def test_sample_prediction_rejects_shortcut(fakes):
    with pytest.raises(ConfigError, match="prediction: velocity"):
        fakes.tiny_config("flow", shortcut=True, prediction="sample")
