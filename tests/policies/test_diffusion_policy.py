"""Diffusion policy: DDIM vs DDPM inference, prediction types, the denoising chain."""

from __future__ import annotations

import pytest
import torch

from robolearn.config import ConfigError
from robolearn.policies import load_policy


def test_ddim_and_ddpm_inference(fakes, tmp_path):
    policy = fakes.tiny_policy("diffusion", num_train_timesteps=20, num_inference_steps=5).eval()
    obs = fakes.obs_of(fakes.make_batch(n=2))
    noise = torch.randn(2, fakes.H, fakes.DA)
    assert len(policy._timesteps) == 5 and type(policy.infer_scheduler).__name__ == "DDIMScheduler"
    ddim_a = policy.predict_action_chunk(obs, noise=noise)
    ddim_b = policy.predict_action_chunk(obs, noise=noise)
    assert torch.equal(ddim_a, ddim_b)  # DDIM with eta = 0 is deterministic given the noise

    policy.set_inference_scheduler("ddpm")
    assert len(policy._timesteps) == 20 and type(policy.infer_scheduler).__name__ == "DDPMScheduler"
    gen = [torch.Generator().manual_seed(s) for s in (0, 0, 1)]
    ddpm = [policy.predict_action_chunk(obs, noise=noise, generator=g) for g in gen]
    assert torch.equal(ddpm[0], ddpm[1]) and not torch.equal(ddpm[0], ddpm[2])
    for out in (ddim_a, *ddpm):
        assert out.shape == (2, fakes.H, fakes.DA) and torch.isfinite(out).all()
    # the choice is part of the config and survives a checkpoint
    folder = policy.save_pretrained(tmp_path / "ckpt")
    loaded = load_policy(folder)
    assert loaded.config.inference_scheduler == "ddpm" and len(loaded._timesteps) == 20
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(
        policy.predict_action_chunk(obs, noise=noise, generator=g1),
        loaded.predict_action_chunk(obs, noise=noise, generator=g2),
    )


def test_ddpm_config_default_steps(fakes):
    policy = fakes.tiny_policy(
        "diffusion", num_train_timesteps=12, inference_scheduler="ddpm", num_inference_steps=0
    )
    assert policy._timesteps == list(range(11, -1, -1))
    with pytest.raises(ConfigError, match="num_inference_steps"):
        fakes.tiny_config("diffusion", num_train_timesteps=12, num_inference_steps=20)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_prediction_types_train(fakes, prediction_type):
    policy = fakes.tiny_policy("diffusion", prediction_type=prediction_type)
    loss, _ = policy.compute_loss(fakes.make_batch(n=8))
    loss.backward()
    out = policy.eval().predict_action_chunk(fakes.obs_of(fakes.make_batch(n=2)))
    assert torch.isfinite(out).all()


def test_sample_chain(fakes):
    policy = fakes.tiny_policy("diffusion", num_train_timesteps=20, num_inference_steps=4).eval()
    obs = fakes.obs_of(fakes.make_batch(n=2))
    noise = torch.randn(2, fakes.H, fakes.DA)
    out = policy.sample_chain(obs, noise)
    assert out.chain.shape == (2, 5, fakes.H, fakes.DA) and out.timesteps.tolist() == policy._timesteps
    assert torch.equal(out.chain[:, 0], noise)
    assert torch.allclose(out.actions, policy.predict_action_chunk(obs, noise=noise), atol=1e-5)
