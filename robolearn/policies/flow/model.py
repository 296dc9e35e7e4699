"""Flow-matching policy: rectified flow over action chunks, K Euler steps, shortcut and adaptive options.

Convention: t = 0 is noise, t = 1 is data. x_t = t·a + (1−t)·x0, target velocity v = a − x0, and
sampling integrates x_{k+1} = x_k + Δ·v(x_k, t_k) on the grid t_k = k/K. With ``prediction:
sample`` the network outputs the clean chunk â and v = (â − x_t)/(1 − t). All in normalized units;
the final sample is clipped to [-clip_range, clip_range].

Shapes: B batch, To obs steps, Do obs features, H horizon, Da action dim, K Euler steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from robolearn.policies.base import Batch, Policy
from robolearn.policies.common.denoisers import build_denoiser
from robolearn.policies.common.layers import masked_mse, mlp, per_sample_mse
from robolearn.policies.flow.config import FlowConfig

TIME_SCALE = 1000.0
"""t and d in [0, 1] are multiplied by this before the sinusoidal embedding."""


@dataclass
class FlowSample:
    """One batched sampling run with its full Euler chain (what ReinFlow-style fine-tuning needs)."""

    actions: torch.Tensor
    """(B, H, Da) raw units, from the clipped final sample."""
    chain: torch.Tensor
    """(B, K+1, H, Da) normalized: x_0 (noise) ... x_K (unclipped)."""
    times: torch.Tensor
    """(K+1,) the time grid t_k = k/K used for every step."""
    cond: torch.Tensor
    """(B, To, Do) observation features the velocities were conditioned on."""


class FlowPolicy(Policy):
    """Rectified-flow policy. See :class:`FlowConfig` for the options."""

    name = "flow"
    config: FlowConfig

    def __init__(
        self, config: FlowConfig, features: Any = None, stats: Any = None, *, load_pretrained: bool = True
    ) -> None:
        super().__init__(config, features, stats, load_pretrained=load_pretrained)
        cfg = self.config
        self.denoiser = build_denoiser(
            cfg.denoiser,
            cfg.action_dim,
            self.obs_encoder.out_dim,
            cfg.horizon,
            cfg.n_obs_steps,
            step_size_cond=cfg.shortcut,
        )
        if cfg.adaptive_steps:
            # Predicts log of the per-dimension flow-matching error at time t; at t = 0 that is the
            # variance of the action chunk given the observation (AdaFlow).
            self.variance_head = mlp(cfg.n_obs_steps * self.obs_encoder.out_dim + 1, (256, 256), 1)
        self._grids: dict[tuple[int, str], torch.Tensor] = {}
        self.last_num_steps: torch.Tensor | None = None
        """(B,) steps each sample of the last adaptive prediction took."""

    # ------------------------------------------------------------------------------ network
    def velocity(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        cond: torch.Tensor,
        d: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """v(x_t, t | obs): x (N, H, Da), t scalar or (N,) in [0, 1], cond (N, To, Do), d the step
        size (shortcut models; None uses the finest trained size) -> (N, H, Da)."""
        out = self._network(x, t, cond, d)
        if self.config.prediction == "sample":
            t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
            return (out - x) / (1 - t).clamp_min(self.config.sample_t_floor)[:, None, None]
        return out

    def _network(
        self, x: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor, d: torch.Tensor | float | None
    ) -> torch.Tensor:
        """The denoiser's raw output: a velocity, or a clean chunk with ``prediction: sample``."""
        n = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(n)
        if self.config.shortcut:
            d = 1.0 / self.config.shortcut_max_steps if d is None else d
            d = torch.as_tensor(d, dtype=x.dtype, device=x.device).expand(n) * TIME_SCALE
        else:
            d = None
        return self.denoiser(x, t * TIME_SCALE, cond, d)

    def time_grid(self, num_steps: int) -> torch.Tensor:
        """(K+1,) times 0, 1/K, ..., 1 shared by sampling and any log-probability of the chain."""
        key = (num_steps, str(self.device))
        grid = self._grids.get(key)
        if grid is None:
            grid = self._grids[key] = torch.linspace(0.0, 1.0, num_steps + 1, device=self.device)
        return grid

    # ------------------------------------------------------------------------------ training
    def _sample_times(self, n: int, device: torch.device) -> torch.Tensor:
        if self.config.time_sampling == "logit_normal":
            return torch.sigmoid(torch.randn(n, device=device))
        return torch.rand(n, device=device)

    def compute_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Flow-matching MSE on the velocity (+ shortcut self-consistency, + variance head)."""
        cfg = self.config
        action, is_pad = self._normalized_action(batch)
        cond = self.encode_obs(batch)
        b = action.shape[0]
        x0 = torch.randn_like(action)
        n_boot = int(b * cfg.shortcut_bootstrap_fraction) if cfg.shortcut else 0
        n_flow = b - n_boot
        t = self._sample_times(n_flow, action.device)
        tt = t[:, None, None]
        x_t = tt * action[:n_flow] + (1 - tt) * x0[:n_flow]
        sample_pred = cfg.prediction == "sample"
        target = action[:n_flow] if sample_pred else action[:n_flow] - x0[:n_flow]
        d = torch.full((n_flow,), 1.0 / cfg.shortcut_max_steps, device=action.device)
        if n_boot:
            xb, tb, db, vb = self._shortcut_targets(action[n_flow:], x0[n_flow:], cond[n_flow:].detach())
            x_t, t, d = torch.cat([x_t, xb]), torch.cat([t, tb]), torch.cat([d, db])
            target = torch.cat([target, vb])
        pred = self._network(x_t, t, cond, d if cfg.shortcut else None)
        flow_loss = masked_mse(pred[:n_flow], target[:n_flow], None if is_pad is None else is_pad[:n_flow])
        metrics = {"flow_loss": flow_loss.item()}
        loss = flow_loss
        if n_boot:
            boot_loss = masked_mse(
                pred[n_flow:], target[n_flow:], None if is_pad is None else is_pad[n_flow:]
            )
            loss = (n_flow * flow_loss + n_boot * boot_loss) / b
            metrics["shortcut_loss"] = boot_loss.item()
        if cfg.adaptive_steps:
            err = per_sample_mse(
                pred[:n_flow].detach(), target[:n_flow], None if is_pad is None else is_pad[:n_flow]
            )
            log_var = self._log_variance(cond[:n_flow].detach(), t[:n_flow])
            # Gaussian NLL in the variance: minimized at exp(log_var) = E[err | obs, t].
            var_loss = (err * torch.exp(-log_var) + log_var).mean()
            loss = loss + var_loss
            metrics["variance_loss"] = var_loss.item()
        metrics["loss"] = loss.item()
        return loss, metrics

    @torch.no_grad()
    def _shortcut_targets(
        self, action: torch.Tensor, x0: torch.Tensor, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-consistency targets: two steps of d/2 from the current network define the step d.

        d = 2^-j with j uniform in {0, ..., log2(M) - 1}; t on the grid of multiples of d.
        Returns x_t (n, H, Da), t (n,), d (n,), target (n, H, Da).
        """
        n, device = action.shape[0], action.device
        levels = int(math.log2(self.config.shortcut_max_steps))
        j = torch.randint(0, levels, (n,), device=device)
        sections = torch.pow(2.0, j.float())
        d = 1.0 / sections
        t = torch.floor(torch.rand(n, device=device) * sections) / sections
        tt = t[:, None, None]
        x_t = tt * action + (1 - tt) * x0
        half = d / 2
        v1 = self.velocity(x_t, t, cond, half)
        x_mid = x_t + half[:, None, None] * v1
        v2 = self.velocity(x_mid, t + half, cond, half)
        return x_t, t, d, (v1 + v2) / 2

    def _log_variance(self, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N,) predicted log per-dimension flow-matching error at time t (clamped for stability)."""
        out = self.variance_head(torch.cat([cond.flatten(1), t[:, None]], dim=-1)).squeeze(-1)
        return out.clamp(-12.0, 6.0)

    # ------------------------------------------------------------------------------ sampling
    def _integrate(
        self, cond: torch.Tensor, x: torch.Tensor, num_steps: int, chain: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        grid = self.time_grid(num_steps)
        dt = 1.0 / num_steps
        d = dt if self.config.shortcut else None
        for k in range(num_steps):
            x = x + dt * self.velocity(x, grid[k], cond, d)
            if chain is not None:
                chain.append(x)
        return x

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        r = self.config.clip_range
        return x.clamp(-r, r) if self.config.clip_sample else x

    def _sample(
        self,
        cond: torch.Tensor,
        noise: torch.Tensor | None,
        num_steps: int | None = None,
        adaptive: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(N, To, Do) -> normalized chunks (N, H, Da). ``adaptive`` defaults to the config."""
        k = num_steps or self.config.num_inference_steps
        x0 = self._noise(cond.shape[0], generator) if noise is None else noise
        use_adaptive = self.config.adaptive_steps if adaptive is None else adaptive
        if not use_adaptive or k == 1:
            return self._clip(self._integrate(cond, x0, k))
        t0 = torch.zeros(cond.shape[0], device=cond.device)
        per_dim_var = torch.exp(self._log_variance(cond, t0))
        one = per_dim_var < self.config.adaptive_threshold
        self.last_num_steps = torch.where(one, 1, k)
        out = torch.empty_like(x0)
        if one.any():
            out[one] = self._integrate(cond[one], x0[one], 1)
        if not one.all():
            out[~one] = self._integrate(cond[~one], x0[~one], k)
        return self._clip(out)

    @torch.no_grad()
    def sample_chain(
        self,
        obs: Batch,
        noise: torch.Tensor | None = None,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> FlowSample:
        """Sample with the fixed K-step grid and return every Euler iterate.

        ``obs`` each (B, To, ...); ``noise`` (B, H, Da) normalized. Runs under ``no_grad`` (not
        inference mode), so the returned tensors can feed a later differentiable log-probability.
        """
        cond = self.encode_obs(obs)
        k = num_steps or self.config.num_inference_steps
        x0 = self._noise(cond.shape[0], generator) if noise is None else noise
        chain = [x0]
        x = self._integrate(cond, x0, k, chain)
        actions = self.normalizer.unnormalize("action", self._clip(x))
        return FlowSample(actions, torch.stack(chain, dim=1), self.time_grid(k), cond)


def build(
    config: FlowConfig, features: Any = None, stats: Any = None, *, load_pretrained: bool = True
) -> FlowPolicy:
    """Registry builder for ``flow``."""
    return FlowPolicy(config, features, stats, load_pretrained=load_pretrained)
