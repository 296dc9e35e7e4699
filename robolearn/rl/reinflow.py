"""ReinFlow (Zhang et al. 2025): fine-tune a flow policy with PPO through a noise-injected Euler chain.

The pretrained :class:`~robolearn.policies.flow.model.FlowPolicy` is wrapped, never copied: its
``velocity`` and ``time_grid`` drive the chain. A small noise network σ(s, t), bounded in
[σ_min, σ_max], adds Gaussian noise at each of the K Euler steps, so sampling becomes a Markov chain

    x_0 ~ N(0, I),   x_{k+1} ~ N(x_k + Δ·v(x_k, t_k | s), diag σ(s, t_k)²),   t_k = k/K, Δ = 1/K,

whose log-probability is exact: the sum of the K Gaussian transition log-densities (x_0's density
does not depend on the parameters and is left out), divided by the number of dimensions summed so that
the PPO ratio is a per-dimension one. With ``marginalize_unexecuted`` (the default) the last step's
densities on chunk steps that are never executed are left out: nothing downstream depends on those
coordinates of x_K, so they integrate out exactly, and they would only add noise to the ratio (with
H = 16 and 8 executed steps they are 1/8 of the chain's dimensions at K = 4). Without it all K·H·Da
dimensions count, as in the reference code, whose robomimic recipes execute the whole chunk. Sampling and the log-probability use the same grid, ``FlowPolicy.time_grid(K)``;
the reference implementation evaluates the log-probability on another grid when K > 1, which makes
the ratio differ from 1 before any update. The executed action is the policy's clipped x_K.

After fine-tuning the noise network is dropped: :meth:`ReinFlowPolicy.save_policy` writes the
wrapped flow policy as a plain flow checkpoint (deterministic Euler sampling, as ``eval`` runs it),
with ``num_inference_steps`` set to the K it was fine-tuned with.

Shapes: B batch, To obs steps, H horizon, Da action dim, K Euler steps, J ratios per sample (1, or K
with ``per_step_ratio``: DPPO's one ratio per transition, on the same chain).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import nn

from robolearn.policies.base import Batch
from robolearn.policies.common.layers import mlp
from robolearn.policies.flow.model import FlowPolicy

LOG_2PI_E = math.log(2 * math.pi * math.e)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, std²) (``torch.distributions.Normal.log_prob`` without its per-call
    validation, which costs more than the arithmetic at rollout batch sizes)."""
    return -0.5 * ((x - mean) / std).pow(2) - std.log() - HALF_LOG_2PI


def time_features(t: torch.Tensor, dim: int = 16) -> torch.Tensor:
    """(N,) times in [0, 1] -> (N, dim) sinusoidal features."""
    freqs = torch.exp(torch.linspace(0.0, math.log(100.0), dim // 2, device=t.device))
    angles = t[:, None] * freqs[None] * math.pi
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class NoiseNet(nn.Module):
    """σ(s, t) in [σ_min, σ_max]: an MLP over (observation features, time) -> (H, Da) stds."""

    def __init__(self, cond_dim: int, horizon: int, action_dim: int, hidden: tuple[int, ...], sigma_init: float,
                 sigma_min: float, sigma_max: float):  # fmt: skip
        super().__init__()
        self.shape = (horizon, action_dim)
        self.net = mlp(cond_dim + 16, hidden, horizon * action_dim)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        last = [m for m in self.net.modules() if isinstance(m, nn.Linear)][-1]
        # Start at sigma_init everywhere: zero weights, bias at the matching sigmoid logit.
        nn.init.zeros_(last.weight)
        u = (sigma_init - sigma_min) / max(sigma_max - sigma_min, 1e-8)
        u = min(max(u, 1e-3), 1 - 1e-3)
        nn.init.constant_(last.bias, math.log(u / (1 - u)))

    def forward(self, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``cond`` (N, To, Do), ``t`` (N,) -> σ (N, H, Da)."""
        z = self.net(torch.cat([cond.flatten(1), time_features(t)], dim=-1)).view(-1, *self.shape)
        return self.sigma_min + (self.sigma_max - self.sigma_min) * torch.sigmoid(z)


class ReinFlowPolicy(nn.Module):
    """RL policy over a pretrained flow policy's noisy Euler chain (see the module docstring).

    ``policy`` is trained in place (wrap a copy to keep the original). ``reference`` (a frozen copy of
    the pretrained policy) is kept when a regularizer needs it."""

    def __init__(self, policy: FlowPolicy, num_steps: int = 0, sigma_min: float = 0.05, sigma_max: float = 0.12,
                 noise_hidden: tuple[int, ...] = (128, 128), regularizer: str = "none",
                 marginalize_unexecuted: bool = True, per_step_ratio: bool = False):  # fmt: skip
        super().__init__()
        if not isinstance(policy, FlowPolicy):
            raise TypeError(f"ReinFlow fine-tunes flow policies, found {type(policy).__name__}")
        self.policy = policy.eval()
        self.num_steps = num_steps or policy.config.num_inference_steps
        cfg = policy.config
        # The policy runs the chain it is fine-tuned on: eval, serve and the saved checkpoint use K steps.
        cfg.num_inference_steps = self.num_steps
        cond_dim = cfg.n_obs_steps * policy.obs_encoder.out_dim
        # σ starts mid-range: at a bound the sigmoid saturates and the noise net would never learn.
        self.noise = NoiseNet(cond_dim, cfg.horizon, cfg.action_dim, tuple(noise_hidden),
                              0.5 * (sigma_min + sigma_max), sigma_min, sigma_max)  # fmt: skip
        self.regularizer = regularizer
        # (K, H, 1) weights of each transition density in the log-prob: the last step counts only the
        # executed chunk steps when marginalizing.
        weights = torch.ones(self.num_steps, cfg.horizon, 1)
        if marginalize_unexecuted:
            weights[-1] = 0.0
            weights[-1, cfg.exec_start : cfg.exec_start + cfg.n_action_steps] = 1.0
        self.register_buffer("lp_weights", weights, persistent=False)
        # (K,) the dimensions each transition counts (per-step ratios), and the chain's total.
        self.register_buffer("step_dims", weights.sum(dim=(1, 2)) * cfg.action_dim, persistent=False)
        self.lp_dims = float(self.step_dims.sum())
        self.per_step_ratio = per_step_ratio
        self.num_ratios = self.num_steps if per_step_ratio else 1
        """J: PPO ratios per sample."""
        self.reference = None
        if regularizer != "none":
            self.reference = copy.deepcopy(policy).eval().requires_grad_(False)

    # ---------------------------------------------------------------------------- the chain
    def set_sigma_max(self, value: float) -> None:
        """Move the upper bound of σ (the σ schedule; call between iterations, never inside one)."""
        self.noise.sigma_max = value

    def _step_size(self) -> float | None:
        return 1.0 / self.num_steps if self.policy.config.shortcut else None

    @torch.no_grad()
    def sample(self, obs: Batch, generator: torch.Generator | None = None):
        """Sample the noisy chain. ``obs`` each (B, To, ...) -> actions (B, H, Da) raw units, chain
        (B, K+1, H, Da) normalized (x_0 ... x_K, unclipped), log_prob (B, J) (see :meth:`_ratio_logp`)."""
        pol, k = self.policy, self.num_steps
        cond = pol.encode_obs(obs)
        grid, d = pol.time_grid(k), self._step_size()
        x = pol._noise(cond.shape[0], generator)
        chain, lps = [x], []
        for i in range(k):
            t = grid[i].expand(x.shape[0])
            mean = x + pol.velocity(x, t, cond, d) / k
            std = self.noise(cond, t)
            eps = torch.randn(x.shape, generator=generator, device=x.device)
            x = mean + std * eps
            lps.append(gaussian_log_prob(x, mean, std))
            chain.append(x)
        actions = pol.normalizer.unnormalize("action", pol._clip(x))
        return actions, torch.stack(chain, dim=1), self._ratio_logp(torch.stack(lps, dim=1))

    def _reduce(self, lp: torch.Tensor) -> torch.Tensor:
        """(B, K, H, Da) transition log-densities -> (B, 1) the chain's per-dimension log-prob."""
        return (lp * self.lp_weights).flatten(1).sum(-1, keepdim=True) / self.lp_dims

    def _ratio_logp(self, lp: torch.Tensor) -> torch.Tensor:
        """(B, K, H, Da) transition log-densities -> (B, J) the log-probs PPO takes ratios of: the
        chain's (J = 1), or each transition's per-dimension log-density (J = K, ``per_step_ratio``)."""
        if not self.per_step_ratio:
            return self._reduce(lp)
        return (lp * self.lp_weights).flatten(2).sum(-1) / self.step_dims

    def log_prob(self, obs: Batch, chain: torch.Tensor) -> torch.Tensor:
        """Differentiable log-probability (B, J) of ``chain`` given ``obs`` (see :meth:`evaluate`)."""
        return self.evaluate(obs, chain)[0]

    def evaluate(self, obs: Batch, chain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Differentiable log_prob (B, J) of ``chain`` (B, K+1, H, Da), entropy (B,) of its transitions
        (both per dimension, over the dimensions the log-prob counts) and the regularizer (a scalar; 0 without one). All K transitions
        run as one batch of B·K."""
        pol, k = self.policy, self.num_steps
        b = chain.shape[0]
        cond = pol.encode_obs(obs).repeat_interleave(k, dim=0)
        t = pol.time_grid(k)[:-1].repeat(b)
        xk = chain[:, :-1].reshape(b * k, *chain.shape[2:])
        v = pol.velocity(xk, t, cond, self._step_size())
        mean = xk + v / k
        std = self.noise(cond.detach(), t)
        lp = gaussian_log_prob(chain[:, 1:].reshape_as(xk), mean, std)
        logp = self._ratio_logp(lp.view(b, k, *chain.shape[2:]))
        entropy = self._reduce((std.log() + 0.5 * LOG_2PI_E).view(b, k, *chain.shape[2:]))[:, 0]
        return logp, entropy, self._regularizer(obs, chain, xk, t, v)

    def _regularizer(self, obs, chain, xk, t, v) -> torch.Tensor:
        if self.reference is None:
            return torch.zeros((), device=chain.device)
        ref, k = self.reference, self.num_steps
        if self.regularizer == "bc":
            with torch.no_grad():
                cond_ref = ref.encode_obs(obs).repeat_interleave(k, dim=0)
                v_ref = ref.velocity(xk, t, cond_ref, self._step_size())
            return (v - v_ref).pow(2).mean() / k**2
        # w2: the deterministic flows of both policies from the same x_0, compared at the end.
        x0 = chain[:, 0]
        mine = self._deterministic(self.policy, obs, x0)
        with torch.no_grad():
            theirs = self._deterministic(ref, obs, x0)
        return (mine - theirs).pow(2).mean()

    def _deterministic(self, pol: FlowPolicy, obs: Batch, x: torch.Tensor) -> torch.Tensor:
        cond, grid, d = pol.encode_obs(obs), pol.time_grid(self.num_steps), self._step_size()
        for i in range(self.num_steps):
            x = x + pol.velocity(x, grid[i].expand(x.shape[0]), cond, d) / self.num_steps
        return x

    # ---------------------------------------------------------------------------- training plumbing
    def clip_coefs(self, clip: float) -> torch.Tensor:
        """(J,) PPO clip per ratio: ReinFlow has one ratio per sample (K with ``per_step_ratio``)."""
        return torch.full((self.num_ratios,), clip)

    def advantage_weights(self) -> torch.Tensor:
        """(J,) advantage scale per ratio (the same advantage for every transition)."""
        return torch.ones(self.num_ratios)

    def param_groups(self, actor_lr: float, noise_lr: float) -> list[dict]:
        """Optimizer groups: the flow policy's weights and the noise network's."""
        return [{"params": [p for p in self.policy.parameters() if p.requires_grad], "lr": actor_lr},
                {"params": list(self.noise.parameters()), "lr": noise_lr}]  # fmt: skip

    def features(self, obs: Batch) -> torch.Tensor:
        """(B, To·Do) observation features for the critic (no gradient into the policy)."""
        with torch.no_grad():
            return self.policy.encode_obs(obs).flatten(1)

    def save_policy(self, folder: str | Path) -> Path:
        """Write the fine-tuned flow policy as a plain flow checkpoint (the noise network is dropped)."""
        return self.policy.save_pretrained(folder)


__all__ = ["NoiseNet", "ReinFlowPolicy", "time_features"]
