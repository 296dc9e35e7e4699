"""DPPO (Ren et al. 2024): PPO over the last k denoising steps of a diffusion policy's DDIM/DDPM chain.

The pretrained :class:`~robolearn.policies.diffusion.model.DiffusionPolicy` is wrapped, not copied:
its ``diffusers`` inference scheduler and timesteps define the chain, its frozen denoiser runs the
first K − k steps exactly as the pretrained sampler does, and a trainable copy of the denoiser runs
the last k. Each fine-tuned step is a Gaussian x_{t'} ~ N(μ(x_t, t), σ_t²):

- DDIM: μ = √ᾱ_{t'}·x̂_0 + √(1 − ᾱ_{t'} − σ_η²)·ε̂ with σ_η = η·√((1 − ᾱ_{t'})/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_{t'})),
  which is ``DDIMScheduler.step(..., eta=η)`` without its noise;
- DDPM: μ and σ² the posterior mean and variance of ``DDPMScheduler.step``;

with σ_t = max(σ, ``min_std``) (the σ floor, 0.1), for sampling and the log-probability alike.
Unlike ReinFlow's single ratio per sample, each fine-tuned step has its own PPO ratio (J = k), its
own clip (the per-step clip schedule) and a discounted advantage (the denoising discount).

The fine-tuned checkpoint is a plain diffusion checkpoint whose denoiser is the fine-tuned copy; it
runs every step with it, deterministically, as ``eval`` runs any diffusion policy.

Shapes: B batch, H horizon, Da action dim, K denoising steps, k = J fine-tuned steps.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import nn

from robolearn.policies.base import Batch
from robolearn.policies.diffusion.model import DiffusionPolicy
from robolearn.rl.reinflow import gaussian_log_prob

LOG_2PI_E = math.log(2 * math.pi * math.e)


class DPPODiffusion(nn.Module):
    """RL policy over the last ``ft_steps`` steps of a pretrained diffusion policy's sampler."""

    def __init__(self, policy: DiffusionPolicy, ft_steps: int = 0, eta: float = 1.0, min_std: float = 0.1,
                 clip_base: float = 0.001, clip_rate: float = 3.0, gamma_denoising: float = 0.99,
                 regularizer: str = "none"):  # fmt: skip
        super().__init__()
        if not isinstance(policy, DiffusionPolicy):
            raise TypeError(f"DPPO fine-tunes diffusion policies, found {type(policy).__name__}")
        self.policy = policy.eval().requires_grad_(False)
        self.timesteps = list(policy._timesteps)
        k_all = len(self.timesteps)
        if not 0 <= ft_steps <= k_all:
            raise ValueError(f"ft_denoising_steps: expected in [0, {k_all}], found {ft_steps}")
        self.ft_steps = ft_steps or k_all
        self.eta, self.min_std = eta, min_std
        self.clip_base, self.clip_rate, self.gamma_denoising = clip_base, clip_rate, gamma_denoising
        self.regularizer = regularizer
        self.ft_denoiser = copy.deepcopy(policy.denoiser).requires_grad_(True)
        sched = policy.infer_scheduler
        self.ddim = policy.config.inference_scheduler == "ddim"
        alphas = sched.alphas_cumprod.float()
        final = float(sched.final_alpha_cumprod) if self.ddim else 1.0
        prev = [self._prev(t) for t in self.timesteps]
        self.register_buffer("a_t", torch.stack([alphas[t] for t in self.timesteps]), persistent=False)
        self.register_buffer("a_prev", torch.tensor([float(alphas[p]) if p >= 0 else final for p in prev]),
                             persistent=False)  # fmt: skip

    def _prev(self, t: int) -> int:
        sched = self.policy.infer_scheduler
        if self.ddim:
            return t - sched.config.num_train_timesteps // sched.num_inference_steps
        return int(sched.previous_timestep(t))

    # ---------------------------------------------------------------------------- one step
    def _mean_std(self, net: nn.Module, x: torch.Tensor, idx: torch.Tensor, cond: torch.Tensor, eta: float):
        """Mean and (unfloored) std of step ``idx`` (N,) (positions in the timestep list) at x (N, H, Da)."""
        cfg = self.policy.config
        t = torch.tensor(self.timesteps, device=x.device)[idx]
        out = net(x, t.float(), cond)
        a_t, a_prev = self.a_t[idx][:, None, None], self.a_prev[idx][:, None, None]
        if cfg.prediction_type == "sample":
            x0 = out
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        else:
            eps = out
            x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if cfg.clip_sample:
            x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        if self.ddim:
            var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
            sigma = eta * var.clamp_min(0).sqrt()
            mean = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp_min(0).sqrt() * eps
            return mean, sigma.expand_as(mean)
        alpha = a_t / a_prev
        beta = 1 - alpha
        mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0 + (alpha.sqrt() * (1 - a_prev) / (1 - a_t)) * x
        var = ((1 - a_prev) / (1 - a_t) * beta).clamp_min(1e-20)
        return mean, var.sqrt().expand_as(mean)

    def _first_ft(self) -> int:
        return len(self.timesteps) - self.ft_steps

    @torch.no_grad()
    def sample(self, obs: Batch, generator: torch.Generator | None = None):
        """Run the chain: the pretrained sampler for the first K − k steps, then k floored-Gaussian
        steps of the fine-tuned denoiser. -> actions (B, H, Da) raw, chain (B, K+1, H, Da)
        normalized, log_prob (B, k)."""
        pol = self.policy
        cond = pol.encode_obs(obs)
        x = pol._noise(cond.shape[0], generator)
        chain, logps = [x], []
        for i in range(len(self.timesteps)):
            idx = torch.full((x.shape[0],), i, device=x.device)
            ft = i >= self._first_ft()
            mean, std = self._mean_std(self.ft_denoiser if ft else pol.denoiser, x, idx, cond,
                                       self.eta if ft else 0.0)  # fmt: skip
            if ft:
                std = std.clamp_min(self.min_std)
            elif self.ddim:
                std = torch.zeros_like(std)  # eta = 0: the pretrained DDIM sampler is deterministic
            eps = torch.randn(x.shape, generator=generator, device=x.device)
            x = mean + std * eps
            if ft:
                logps.append(gaussian_log_prob(x, mean, std).flatten(1).mean(-1))
            chain.append(x)
        actions = pol.normalizer.unnormalize("action", x)
        return actions, torch.stack(chain, dim=1), torch.stack(logps, dim=1)

    def log_prob(self, obs: Batch, chain: torch.Tensor) -> torch.Tensor:
        """Differentiable log-probability (B, k) of ``chain`` given ``obs`` (see :meth:`evaluate`)."""
        return self.evaluate(obs, chain)[0]

    def evaluate(self, obs: Batch, chain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Differentiable per-step log_prob (B, k) of ``chain`` (B, K+1, H, Da) (each normalized by
        H·Da), entropy (B,) (mean over steps and dims) and the regularizer (scalar). The k steps run as
        one batch of B·k."""
        b, k, first = chain.shape[0], self.ft_steps, self._first_ft()
        with torch.no_grad():
            cond = self.policy.encode_obs(obs)
        cond_k = cond.repeat_interleave(k, dim=0)
        idx = torch.arange(first, first + k, device=chain.device).repeat(b)
        x = chain[:, first : first + k].reshape(b * k, *chain.shape[2:])
        x_next = chain[:, first + 1 : first + k + 1].reshape_as(x)
        mean, std = self._mean_std(self.ft_denoiser, x, idx, cond_k, self.eta)
        std = std.clamp_min(self.min_std)
        logp = gaussian_log_prob(x_next, mean, std).view(b, k, -1).mean(-1)
        entropy = (std.log() + 0.5 * LOG_2PI_E).view(b, -1).mean(-1)
        return logp, entropy, self._regularizer(chain, x, idx, cond, cond_k)

    def _regularizer(self, chain, x, idx, cond, cond_k) -> torch.Tensor:
        if self.regularizer == "none":
            return torch.zeros((), device=chain.device)
        t = torch.tensor(self.timesteps, device=x.device)[idx].float()
        if self.regularizer == "bc":
            with torch.no_grad():
                ref = self.policy.denoiser(x, t, cond_k)
            return (self.ft_denoiser(x, t, cond_k) - ref).pow(2).mean()
        # w2: the deterministic (η = 0) chains of both denoisers from the same x_0, compared at the end.
        mine, theirs = chain[:, 0], chain[:, 0]
        for i in range(len(self.timesteps)):
            step = torch.full((chain.shape[0],), i, device=x.device)
            late = i >= self._first_ft()
            mine = self._mean_std(self.ft_denoiser if late else self.policy.denoiser, mine, step, cond, 0.0)[
                0
            ]
            with torch.no_grad():
                theirs = self._mean_std(self.policy.denoiser, theirs, step, cond, 0.0)[0]
        return (mine - theirs).pow(2).mean()

    # ---------------------------------------------------------------------------- training plumbing
    def clip_coefs(self, clip: float) -> torch.Tensor:
        """(k,) the per-step clip schedule, from ``clip_base`` at the first fine-tuned step to ``clip``
        at the last, exponentially with ``clip_rate``."""
        if self.ft_steps == 1:
            return torch.tensor([clip])
        u = torch.arange(self.ft_steps, dtype=torch.float32) / (self.ft_steps - 1)
        r = self.clip_rate
        return self.clip_base + (clip - self.clip_base) * (torch.exp(r * u) - 1) / (math.exp(r) - 1)

    def advantage_weights(self) -> torch.Tensor:
        """(k,) the denoising discount γ_d^(k−1−j): the last step (closest to the action) weighs 1."""
        j = torch.arange(self.ft_steps, dtype=torch.float32)
        return self.gamma_denoising ** (self.ft_steps - 1 - j)

    def param_groups(self, actor_lr: float, noise_lr: float) -> list[dict]:
        """Optimizer groups: the fine-tuned denoiser only (the std is scheduled, not learned)."""
        del noise_lr
        return [{"params": list(self.ft_denoiser.parameters()), "lr": actor_lr}]

    def features(self, obs: Batch) -> torch.Tensor:
        """(B, To·Do) observation features for the critic."""
        with torch.no_grad():
            return self.policy.encode_obs(obs).flatten(1)

    def save_policy(self, folder: str | Path) -> Path:
        """Write a plain diffusion checkpoint whose denoiser is the fine-tuned one."""
        out = copy.deepcopy(self.policy)
        out.denoiser.load_state_dict(self.ft_denoiser.state_dict())
        return out.save_pretrained(folder)


__all__ = ["DPPODiffusion"]
