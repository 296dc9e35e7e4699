"""Diffusion policy (Chi et al. 2023) with ``diffusers`` schedulers.

Training: DDPM forward noising over ``num_train_timesteps``; the denoiser predicts the noise (or
the clean chunk). Inference: DDIM (deterministic, eta = 0) or DDPM steps from Gaussian noise.

Shapes: B batch, To obs steps, Do obs features, H horizon, Da action dim, K denoising steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from robolearn.policies.base import Batch, Policy
from robolearn.policies.common.denoisers import build_denoiser
from robolearn.policies.common.layers import masked_mse
from robolearn.policies.diffusion.config import DiffusionConfig


@dataclass
class DiffusionSample:
    """One batched sampling run with its denoising chain (what DPPO-style fine-tuning needs)."""

    actions: torch.Tensor
    """(B, H, Da) raw units."""
    chain: torch.Tensor
    """(B, K+1, H, Da) normalized: the initial noise, then the sample after each step."""
    timesteps: torch.Tensor
    """(K,) scheduler timesteps, in the order they were applied."""
    cond: torch.Tensor
    """(B, To, Do) observation features."""


class DiffusionPolicy(Policy):
    """Diffusion policy with a UNet / transformer / MLP denoiser. See :class:`DiffusionConfig`."""

    name = "diffusion"
    config: DiffusionConfig

    def __init__(
        self,
        config: DiffusionConfig,
        features: Any = None,
        stats: Any = None,
        *,
        load_pretrained: bool = True,
    ) -> None:
        super().__init__(config, features, stats, load_pretrained=load_pretrained)
        cfg = self.config
        self.denoiser = build_denoiser(
            cfg.denoiser, cfg.action_dim, self.obs_encoder.out_dim, cfg.horizon, cfg.n_obs_steps
        )
        self.noise_scheduler = DDPMScheduler(**self._scheduler_kwargs())
        self.set_inference_scheduler(cfg.inference_scheduler, cfg.num_inference_steps)

    def _scheduler_kwargs(self) -> dict[str, Any]:
        cfg = self.config
        return dict(
            num_train_timesteps=cfg.num_train_timesteps,
            beta_start=cfg.beta_start,
            beta_end=cfg.beta_end,
            beta_schedule=cfg.beta_schedule,
            clip_sample=cfg.clip_sample,
            clip_sample_range=cfg.clip_sample_range,
            prediction_type=cfg.prediction_type,
        )

    def set_inference_scheduler(self, kind: str, num_steps: int = 0) -> None:
        """Switch the sampler (``"ddim"`` or ``"ddpm"``) and its step count (0: all training steps)
        without retraining; also updates the config so checkpoints record it."""
        if kind not in ("ddim", "ddpm"):
            raise ValueError(f"inference_scheduler: expected 'ddim' or 'ddpm', found {kind!r}")
        steps = num_steps or self.config.num_train_timesteps
        scheduler = (DDIMScheduler if kind == "ddim" else DDPMScheduler)(**self._scheduler_kwargs())
        scheduler.set_timesteps(steps)
        self.config.inference_scheduler = kind
        self.config.num_inference_steps = num_steps
        self.infer_scheduler = scheduler
        self._timesteps = [int(t) for t in scheduler.timesteps]

    # ------------------------------------------------------------------------------ training
    def compute_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE between the denoiser output and the noise (or clean chunk) at a random timestep."""
        action, is_pad = self._normalized_action(batch)
        cond = self.encode_obs(batch)
        noise = torch.randn_like(action)
        t = torch.randint(0, self.config.num_train_timesteps, (action.shape[0],), device=action.device)
        noisy = self.noise_scheduler.add_noise(action, noise, t)
        pred = self.denoiser(noisy, t.float(), cond)
        target = noise if self.config.prediction_type == "epsilon" else action
        loss = masked_mse(pred, target, is_pad)
        return loss, {"loss": loss.item()}

    # ------------------------------------------------------------------------------ sampling
    def _denoise(
        self,
        cond: torch.Tensor,
        x: torch.Tensor,
        generator: torch.Generator | None,
        chain: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        n = x.shape[0]
        scheduler = self.infer_scheduler
        for t in self._timesteps:
            out = self.denoiser(x, torch.full((n,), float(t), device=x.device), cond)
            x = scheduler.step(out, t, x, generator=generator, return_dict=False)[0]
            if chain is not None:
                chain.append(x)
        return x

    def _sample(
        self, cond: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        x = self._noise(cond.shape[0], generator) if noise is None else noise
        return self._denoise(cond, x, generator)

    @torch.no_grad()
    def sample_chain(
        self, obs: Batch, noise: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> DiffusionSample:
        """Sample and return every intermediate x_k (under ``no_grad``, not inference mode)."""
        cond = self.encode_obs(obs)
        x0 = self._noise(cond.shape[0], generator) if noise is None else noise
        chain = [x0]
        x = self._denoise(cond, x0, generator, chain)
        return DiffusionSample(
            self.normalizer.unnormalize("action", x),
            torch.stack(chain, dim=1),
            torch.tensor(self._timesteps),
            cond,
        )


def build(
    config: DiffusionConfig, features: Any = None, stats: Any = None, *, load_pretrained: bool = True
) -> DiffusionPolicy:
    """Registry builder for ``diffusion``."""
    return DiffusionPolicy(config, features, stats, load_pretrained=load_pretrained)
