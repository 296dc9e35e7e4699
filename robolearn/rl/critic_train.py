"""Offline training of the chunk critic (:mod:`robolearn.rl.critic`): Cal-QL or IQL on datasets.

Transitions are chunk-level (Shapes: N transitions, C chunk, Da action dim, Do observation):
``(s_t, a_{t:t+C}, R_t = sum_{k<C} gamma^k r_{t+k}, s_{t+C}, done)``; the Bellman target is
``R_t + gamma^C (1 - done) Q'(s_{t+C}, a')``. ``G_t``, the Monte-Carlo discounted return-to-go of the
episode from t, is Cal-QL's lower bound. The reward is sparse, from ``next.success``
(``CriticConfig.reward``). Chunks that would run past the recorded end of an episode without a
terminal are dropped (their next state is not in the data).

**Cal-QL** (Nakamoto et al., 2023), as V-GPS trains it: SAC-style twin Q with a tanh-Gaussian actor
over the normalized chunk and an auto-tuned entropy temperature; the CQL regularizer
``alpha * (logsumexp_a Q(s, a) - Q(s, a_data))`` over ``cql_n_actions`` uniform actions, actions
from pi(s) and from pi(s') (importance-weighted by their log densities), where the Q values of the
policy-sampled actions are first raised to at least ``G_t`` (``calql=True``): Q is pushed down only
where it exceeds the return the data itself achieved, which keeps it calibrated. The actor is only
a sampler for training; the critic folder does not keep it.

**IQL** (Kostrikov et al., 2022): V(s) fits an expectile of min Q'(s, a_data); Q fits
``R + gamma^C (1 - done) V(s')``. No actor, no out-of-distribution actions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robolearn import types
from robolearn.rl.critic import ACTION_STAT, OBS_STAT, ChunkCritic, CriticConfig, mlp

DEFAULT_OBS_KEYS = (types.OBS_STATE, types.OBS_ENV_STATE)


@dataclass
class Transitions:
    """Chunk-level transitions of one or more datasets (raw units)."""

    obs: np.ndarray
    """(N, Do)"""
    actions: np.ndarray
    """(N, C, Da)"""
    reward: np.ndarray
    """(N,) discounted reward sum over the chunk."""
    next_obs: np.ndarray
    """(N, Do)"""
    done: np.ndarray
    """(N,) 1.0 where the chunk reaches a terminal."""
    mc_return: np.ndarray
    """(N,) discounted return-to-go G_t of the episode from the chunk's first frame."""
    success: np.ndarray
    """(N,) whether the transition's episode ever reached success (for diagnostics)."""
    episodes: int = 0

    def __len__(self) -> int:
        return len(self.obs)


def episode_transitions(
    obs: np.ndarray, actions: np.ndarray, success: np.ndarray, chunk: int, gamma: float, reward: str
) -> dict[str, np.ndarray]:
    """The chunk transitions of one episode: ``obs`` (T, Do), ``actions`` (T, Da), ``success`` (T,)
    (``next.success`` of each frame); see the module docstring and ``CriticConfig.reward``."""
    n = len(obs)
    hits = np.flatnonzero(success)
    if reward == "first_success":
        first = int(hits[0]) if len(hits) else None
        r = np.zeros(n)
        if first is not None:
            r[first] = 1.0
        last_start = first if first is not None else n - 1 - chunk
    elif reward == "success":
        first = None
        r = success.astype(np.float64)
        last_start = n - 1 - chunk
    else:
        raise ValueError(f"reward: expected first_success or success, found {reward!r}")
    g = np.zeros(n + 1)
    end = first + 1 if first is not None else n
    for i in range(end - 1, -1, -1):
        g[i] = r[i] + gamma * g[i + 1]
    starts = np.arange(max(last_start + 1, 0))
    keep = []
    rows: dict[str, list] = {k: [] for k in ("obs", "actions", "reward", "next_obs", "done", "mc_return")}
    disc = gamma ** np.arange(chunk)
    for t in starts:
        done = first is not None and first < t + chunk
        if not done and t + chunk > n - 1:
            continue
        idx = np.minimum(np.arange(t, t + chunk), n - 1)  # past the end: repeat the last action
        steps = r[idx] * (np.arange(t, t + chunk) < (first + 1 if first is not None else n))
        rows["obs"].append(obs[t])
        rows["actions"].append(actions[idx])
        rows["reward"].append(float((disc * steps).sum()))
        rows["next_obs"].append(obs[min(t + chunk, n - 1)])
        rows["done"].append(float(done))
        rows["mc_return"].append(g[t])
        keep.append(t)
    if not keep:
        return {}
    return {k: np.asarray(v, dtype=np.float32) for k, v in rows.items()}


def load_transitions(
    datasets: Sequence[str | Path], config: CriticConfig
) -> tuple[Transitions, CriticConfig]:
    """Read every episode of ``datasets`` into chunk transitions; returns them and ``config`` with
    ``input_features``, ``action_dim`` and ``action_key`` filled. Raises ``ValueError`` naming the
    dataset whose features do not fit."""
    from robolearn.data.reader import LeRobotReader

    config = copy.deepcopy(config)
    parts: list[dict[str, np.ndarray]] = []
    wins: list[np.ndarray] = []
    episodes = 0
    for root in datasets:
        with LeRobotReader(root) as reader:
            feats = reader.features
            keys = list(config.obs_keys) or [k for k in DEFAULT_OBS_KEYS if k in feats]
            if not keys:
                raise ValueError(
                    f"{root}: no vector observation feature (expected one of {DEFAULT_OBS_KEYS})"
                )
            for k in (*keys, types.SUCCESS, types.ACTION):
                if k not in feats:
                    raise ValueError(f"{root}: feature {k!r} missing (found: {', '.join(sorted(feats))})")
            shapes = {k: tuple(int(d) for d in feats[k].shape) for k in keys}
            action_key = types.ACTION_EXECUTED if types.ACTION_EXECUTED in feats else types.ACTION
            da = int(feats[action_key].shape[0])
            if not config.input_features:
                config.input_features, config.action_dim = shapes, da
            elif shapes != config.input_features or da != config.action_dim:
                raise ValueError(
                    f"{root}: observation/action features {shapes}, Da={da} differ from the first dataset's "
                    f"{config.input_features}, Da={config.action_dim}"
                )
            if config.action_key != action_key and parts:
                config.action_key = "mixed"
            elif not parts:
                config.action_key = action_key
            for ep in range(reader.num_episodes):
                cols = reader.episode_columns(ep, [*keys, action_key, types.SUCCESS])
                obs = np.concatenate([cols[k].reshape(len(cols[k]), -1) for k in keys], axis=1)
                success = cols[types.SUCCESS].reshape(-1).astype(bool)
                acts = cols[action_key].reshape(len(obs), -1)  # (T,) when Da == 1, as LeRobot stores it
                part = episode_transitions(obs, acts, success, config.chunk, config.discount, config.reward)
                episodes += 1
                if part:
                    parts.append(part)
                    wins.append(np.full(len(part["obs"]), bool(success.any())))
    if not parts:
        raise ValueError(f"no chunk transitions in {', '.join(map(str, datasets))}: episodes shorter than "
                         f"chunk={config.chunk}?")  # fmt: skip
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Transitions(**cat, success=np.concatenate(wins), episodes=episodes), config


def transition_stats(data: Transitions) -> dict[str, dict[str, np.ndarray]]:
    """Observation mean/std and per-dimension action min/max of the transitions."""
    acts = data.actions.reshape(-1, data.actions.shape[-1])
    return {
        OBS_STAT: {"mean": data.obs.mean(0), "std": data.obs.std(0)},
        ACTION_STAT: {"min": acts.min(0), "max": acts.max(0)},
    }


class TanhGaussianActor(nn.Module):
    """pi(a | s) over the flat normalized chunk: a = tanh(u), u ~ N(mu(s), sigma(s)^2)."""

    def __init__(self, obs_dim: int, act_dim: int, dims: tuple[int, ...], layer_norm: bool) -> None:
        super().__init__()
        self.net = mlp(obs_dim, dims, 2 * act_dim, layer_norm)

    def forward(self, obs_n: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples per state: (B, Do) -> actions (B, n, A) in (-1, 1), log-probs (B, n)."""
        mean, log_std = self.net(obs_n).chunk(2, dim=-1)
        std = log_std.clamp(-5.0, 2.0).exp()
        u = mean.unsqueeze(1) + std.unsqueeze(1) * torch.randn(mean.shape[0], n, mean.shape[1])
        base = -0.5 * ((u - mean.unsqueeze(1)) / std.unsqueeze(1)).square() - std.log().unsqueeze(1)
        # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), stable for large |u|.
        log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        log_prob = (base - 0.5 * math.log(2 * math.pi) - log_det).sum(-1)
        return torch.tanh(u), log_prob


class CriticTrainer:
    """One gradient step at a time on :class:`Transitions` (Cal-QL or IQL; module docstring)."""

    def __init__(self, critic: ChunkCritic, data: Transitions) -> None:
        cfg = critic.config
        self.critic, self.cfg = critic, cfg
        self.target = copy.deepcopy(critic).requires_grad_(False)
        self.gen = np.random.default_rng(cfg.seed)
        with torch.no_grad():
            self.obs = critic.obs_vector({k: v for k, v in _split(data.obs, cfg).items()})
            self.next_obs = critic.obs_vector({k: v for k, v in _split(data.next_obs, cfg).items()})
            self.act = critic.normalize_actions(torch.from_numpy(data.actions)).clamp(-1.0, 1.0)
        self.reward = torch.from_numpy(data.reward)
        self.done = torch.from_numpy(data.done)
        self.mc = torch.from_numpy(data.mc_return)
        self.gamma_c = cfg.discount**cfg.chunk
        heads = [p for n, p in critic.named_parameters() if not n.startswith("v.")]
        self.q_opt = torch.optim.Adam(heads, lr=cfg.lr)
        if cfg.algo == "iql":
            self.v_opt = torch.optim.Adam(critic.v.parameters(), lr=cfg.lr)
        else:
            a = cfg.flat_action_dim
            self.actor = TanhGaussianActor(cfg.obs_dim, a, cfg.hidden_dims, cfg.layer_norm)
            self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
            self.log_alpha = torch.zeros((), requires_grad=True)
            self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.actor_lr)
            self.target_entropy = -float(a) if cfg.target_entropy is None else cfg.target_entropy

    def step(self) -> dict[str, float]:
        """One update on a random minibatch; returns its metrics."""
        idx = torch.from_numpy(self.gen.integers(0, len(self.obs), self.cfg.batch_size))
        batch = (
            self.obs[idx],
            self.act[idx],
            self.reward[idx],
            self.next_obs[idx],
            self.done[idx],
            self.mc[idx],
        )
        metrics = self._iql(*batch) if self.cfg.algo == "iql" else self._calql(*batch)
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.target.parameters(), strict=True):
                tp.lerp_(p, self.cfg.tau)
        return metrics

    def _iql(self, s, a, r, s2, d, mc) -> dict[str, float]:
        critic, cfg = self.critic, self.cfg
        with torch.no_grad():
            q_t = torch.minimum(*self.target.q_values(s, a.unsqueeze(1))).squeeze(1)
            target = r + self.gamma_c * (1.0 - d) * critic.value(s2)
        diff = q_t - critic.value(s)
        weight = torch.where(diff > 0, cfg.expectile, 1.0 - cfg.expectile)
        v_loss = (weight * diff.square()).mean()
        self.v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.v_opt.step()
        q1, q2 = critic.q_values(s, a.unsqueeze(1))
        q_loss = F.mse_loss(q1.squeeze(1), target) + F.mse_loss(q2.squeeze(1), target)
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        return {"q_loss": q_loss.item(), "v_loss": v_loss.item(), "q_data": q1.mean().item()}

    def _calql(self, s, a, r, s2, d, mc) -> dict[str, float]:
        critic, cfg, n = self.critic, self.cfg, self.cfg.cql_n_actions
        alpha = self.log_alpha.exp().detach()
        # ---- actor and temperature (SAC)
        a_new, logp_new = self.actor(s, 1)
        q_new = torch.minimum(*critic.q_values(s, a_new))
        actor_loss = (alpha * logp_new - q_new).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (logp_new.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        # ---- Bellman backup
        with torch.no_grad():
            k = n if cfg.max_target_backup else 1
            a2, _ = self.actor(s2, k)
            q_next = torch.minimum(*self.target.q_values(s2, a2)).max(dim=1).values
            target = r + self.gamma_c * (1.0 - d) * q_next
            a_rand = torch.empty(s.shape[0], n, a.shape[-1]).uniform_(-1.0, 1.0)
            a_pi, logp_pi = self.actor(s, n)
            a_pi2, logp_pi2 = self.actor(s2, n)
        q1, q2 = critic.q_values(s, a.unsqueeze(1))
        q1, q2 = q1.squeeze(1), q2.squeeze(1)
        bellman = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        cand = torch.cat([a_rand, a_pi, a_pi2], dim=1)
        c1, c2 = critic.q_values(s, cand)
        bound = mc.unsqueeze(1)
        bound_rate = float((c1[:, n:] < bound).float().mean())
        log_rand = a.shape[-1] * math.log(0.5)
        cql = 0.0
        for qc, qd in ((c1, q1), (c2, q2)):
            q_pi = qc[:, n:]
            if cfg.calql:
                q_pi = torch.maximum(q_pi, bound)
            if cfg.cql_importance_sample:
                cat = torch.cat([qc[:, :n] - log_rand, q_pi[:, :n] - logp_pi, q_pi[:, n:] - logp_pi2], dim=1)
            else:
                cat = torch.cat([qc[:, :n], qd.unsqueeze(1), q_pi], dim=1)
            ood = torch.logsumexp(cat / cfg.cql_temp, dim=1) * cfg.cql_temp
            cql = cql + (ood - qd).mean()
        q_loss = bellman + cfg.cql_alpha * cql
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        return {
            "q_loss": q_loss.item(), "bellman": bellman.item(), "cql": cql.item(), "q_data": q1.mean().item(),
            "alpha": float(alpha), "bound_rate": bound_rate, "actor_loss": actor_loss.item(),
        }  # fmt: skip


def _split(flat: np.ndarray, cfg: CriticConfig) -> dict[str, torch.Tensor]:
    """(N, Do) concatenated -> per-feature tensors, the layout :meth:`ChunkCritic.obs_vector` reads."""
    out, start = {}, 0
    for key, shape in cfg.input_features.items():
        size = int(np.prod(shape))
        out[key] = torch.from_numpy(flat[:, start : start + size]).reshape(-1, *shape)
        start += size
    return out


def ranking_summary(critic: ChunkCritic, data: Transitions, limit: int = 4096) -> dict[str, float]:
    """Mean min-Q of the data's chunks from episodes that reached success vs those that never did
    (a sanity check that the critic separates them), on up to ``limit`` transitions each."""
    out: dict[str, float] = {}
    with torch.no_grad():
        for name, mask in (("q_success_episodes", data.success), ("q_failed_episodes", ~data.success)):
            idx = np.flatnonzero(mask)[:limit]
            if len(idx) == 0:
                continue
            obs = _split(data.obs[idx], critic.config)
            out[name] = float(critic.score(obs, torch.from_numpy(data.actions[idx]).unsqueeze(1)).mean())
    return out


def train_critic(
    datasets: Sequence[str | Path], config: CriticConfig, out: str | Path | None = None, progress: bool = True
) -> tuple[ChunkCritic, dict[str, Any]]:
    """Train a critic on ``datasets`` and save it to ``out`` (when given); returns the critic and a
    summary (transitions, episodes, last metrics, :func:`ranking_summary`)."""
    from robolearn.progress import progress as show_progress

    torch.manual_seed(config.seed)
    data, config = load_transitions(datasets, config)
    critic = ChunkCritic(config, transition_stats(data))
    trainer = CriticTrainer(critic, data)
    metrics: dict[str, float] = {}
    bar = show_progress(total=config.steps, desc=f"train-critic {config.algo}", unit="step", enabled=progress)
    try:
        for i in range(config.steps):
            metrics = trainer.step()
            bar.update(1)
            if i % 50 == 0:
                bar.set_postfix(**{k: round(v, 3) for k, v in metrics.items() if k in ("q_loss", "q_data")})
    finally:
        bar.close()
    critic.eval()
    summary = {
        "transitions": len(data),
        "episodes": data.episodes,
        "success_transitions": int(data.success.sum()),
        "final": metrics,
        **ranking_summary(critic, data),
    }
    if out is not None:
        critic.save_pretrained(out)
    return critic, summary


__all__ = ["CriticTrainer", "Transitions", "episode_transitions", "load_transitions", "train_critic"]
