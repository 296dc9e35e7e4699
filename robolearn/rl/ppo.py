"""PPO over denoising chains, one update for ReinFlow and DPPO alike, and the V(s) critic.

The chain policy (:class:`~robolearn.rl.reinflow.ReinFlowPolicy` or
:class:`~robolearn.rl.dppo.DPPODiffusion`) gives J log-probabilities per sample (ReinFlow: J = 1,
the whole chain; DPPO: one per fine-tuned denoising step), a clip per ratio and an advantage weight
per ratio. The clipped surrogate is averaged over samples and ratios:

    L = mean_{b,j} max(−A_b·w_j·r_bj, −A_b·w_j·clip(r_bj, 1 − ε_j, 1 + ε_j)),   r = exp(log π − log π_old)

plus ``vf_coef``·½(V(s) − R)², minus ``ent_coef``·entropy, plus ``reg_coef``·regularizer.
Advantages are normalized per minibatch.

Shapes: M samples in the buffer (T·N chunk-steps), J ratios per sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from robolearn.policies.common.layers import mlp
from robolearn.rl.config import PPOConfig


class ValueCritic(nn.Module):
    """V(s): an MLP over the policy's (detached) observation features (B, F) -> (B,). With
    ``time_input`` it also takes the episode's elapsed fraction of its step cap (B,): V(s, t), the value
    of a time-limited task, which the observation alone does not determine (Pardo et al. 2018)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...] = (256, 256), time_input: bool = False):
        super().__init__()
        self.time_input = time_input
        self.net = mlp(in_dim + int(time_input), hidden, 1)

    def forward(self, features: torch.Tensor, time: torch.Tensor | None = None) -> torch.Tensor:
        if self.time_input:
            if time is None:
                raise ValueError("ValueCritic(time_input=True): the elapsed-time input is missing")
            features = torch.cat([features, time.to(features.dtype)[:, None]], dim=-1)
        return self.net(features).squeeze(-1)


@dataclass
class Batch:
    """An iteration's PPO data, flattened over (T, N): every tensor has M rows."""

    obs: dict[str, torch.Tensor]
    """Observation windows (M, To, ...), as the policy takes them."""
    chain: torch.Tensor
    """(M, K+1, H, Da) normalized chains."""
    logp: torch.Tensor
    """(M, J) log-probabilities at sampling time."""
    advantages: torch.Tensor
    """(M,)"""
    returns: torch.Tensor
    """(M,) value targets."""
    time: torch.Tensor | None = None
    """(M,) the critic's elapsed-time input (None: a critic without one)."""

    def rows(self, idx: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor,
                                               torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """The minibatch at ``idx``: obs, chain, logp, advantages, returns, time."""
        obs = {k: v[idx] for k, v in self.obs.items()}
        time = self.time[idx] if self.time is not None else None
        return obs, self.chain[idx], self.logp[idx], self.advantages[idx], self.returns[idx], time


def ppo_update(
    agent: nn.Module,
    critic: ValueCritic,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    cfg: PPOConfig,
    rng: np.random.Generator,
    train_actor: bool = True,
    on_minibatch: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """``cfg.update_epochs`` epochs of minibatch PPO on ``batch``; returns mean metrics and
    ``ratio_first`` (max |r − 1| on the first minibatch, before any parameter moved: 0 up to float
    rounding when sampling and log-probability agree). ``train_actor=False`` trains the critic only
    (critic warm-up). ``cfg.critic_epochs`` more epochs then fit V alone (``v_loss_fit``: their last
    epoch's mean value loss)."""
    m = batch.chain.shape[0]
    clips = agent.clip_coefs(cfg.clip)[None]
    weights = agent.advantage_weights()[None]
    # The actor's and the critic's gradients are clipped apart (as DPPO does): one global norm would let
    # the value loss, whose gradients are far larger, shrink the policy's step.
    critic_ids = {id(p) for p in critic.parameters()}
    actor_params = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in critic_ids]
    critic_params = list(critic.parameters())
    sums: dict[str, float] = {}
    count, first, stop = 0, None, False
    for _ in range(cfg.update_epochs):
        perm = torch.from_numpy(rng.permutation(m))
        for start in range(0, m, cfg.minibatch_size):
            idx = perm[start : start + cfg.minibatch_size]
            obs, chain, old_logp, adv, ret, time = batch.rows(idx)
            logp, entropy, reg = agent.evaluate(obs, chain)
            log_ratio = logp - old_logp
            ratio = log_ratio.exp()
            if len(idx) > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            a = adv[:, None] * weights
            pg = torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - clips, 1 + clips)).mean()
            value = critic(agent.features(obs), time)
            v_loss = 0.5 * (value - ret).pow(2).mean()
            loss = cfg.vf_coef * v_loss
            if train_actor:
                loss = loss + pg - cfg.ent_coef * entropy.mean() + cfg.reg_coef * reg
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = None
            if cfg.max_grad_norm > 0:
                grad_norm = nn.utils.clip_grad_norm_(actor_params, cfg.max_grad_norm)
                nn.utils.clip_grad_norm_(critic_params, cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                approx_kl = float(((ratio - 1) - log_ratio).mean())
                row = {
                    "pg_loss": pg.item(), "v_loss": v_loss.item(), "entropy": entropy.mean().item(),
                    "reg": reg.item(), "approx_kl": approx_kl,
                    "clipfrac": float(((ratio - 1).abs() > clips).float().mean()),
                    "ratio_mean": float(ratio.mean()),
                    "grad_norm": float(grad_norm) if grad_norm is not None else 0.0,
                }  # fmt: skip
                if first is None:
                    first = float((ratio - 1).abs().max())
            for k, v in row.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if on_minibatch is not None:
                on_minibatch(row)
            if cfg.target_kl > 0 and approx_kl > cfg.target_kl:
                stop = True
                break
        if stop:
            break
    out: dict[str, Any] = {k: v / max(count, 1) for k, v in sums.items()}
    if cfg.critic_epochs > 0:
        out["v_loss_fit"] = _fit_critic(agent, critic, optimizer, batch, cfg, rng)
    out["ratio_first"] = first if first is not None else 0.0
    out["minibatches"] = count
    return out


def _fit_critic(agent, critic: ValueCritic, optimizer: torch.optim.Optimizer, batch: Batch, cfg: PPOConfig,
                rng: np.random.Generator) -> float:  # fmt: skip
    """``cfg.critic_epochs`` minibatch epochs of the value loss alone; returns the last epoch's mean."""
    features = agent.features(batch.obs)
    params = list(critic.parameters())
    m, losses = features.shape[0], []
    for _ in range(cfg.critic_epochs):
        losses = []
        perm = torch.from_numpy(rng.permutation(m))
        for start in range(0, m, cfg.minibatch_size):
            idx = perm[start : start + cfg.minibatch_size]
            time = batch.time[idx] if batch.time is not None else None
            v_loss = 0.5 * (critic(features[idx], time) - batch.returns[idx]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            (cfg.vf_coef * v_loss).backward()
            if cfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            losses.append(v_loss.item())
    return float(np.mean(losses))


__all__ = ["Batch", "ValueCritic", "ppo_update"]
