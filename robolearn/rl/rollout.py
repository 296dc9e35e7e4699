"""Vectorized rollouts of a chain policy in chunked envs (:func:`robolearn.rl.vector.make_rollout_envs`).

Each chunk-step samples one action chunk per env (one batched policy call), executes its
``n_action_steps`` actions from ``exec_start`` in the env workers and records what PPO needs: the
observation window, the chain, its log-probabilities, V(s), the summed (sparse) reward, and how the
episode ended. The end of the iteration bootstraps from V of the observation after it, and so does an
episode cut by its step cap when ``bootstrap_step_cap`` (a near miss gets V's credit); otherwise the
cap ends the episode like a success, as the task's horizon. Bootstrapping at the cap values last
observations, which no update trains V on; when every held step pays (``terminate_on_success:
false``) that made V's targets grow without bound (the value loss reached 1e9 in 60 iterations).

Shapes: T chunk-steps, N envs, To obs steps, K+1 chain states, H horizon, Da action dim, J ratios.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from robolearn import types


def to_policy_obs(obs: dict[str, Any], keys: list[str]) -> dict[str, torch.Tensor]:
    """Batched env observation windows (each (N, To, ...); images (N, To, H, W, 3) uint8) -> the
    policy's input tensors (images (N, To, 3, H, W) uint8, which the policy scales)."""
    out = {}
    for k in keys:
        x = torch.from_numpy(np.asarray(obs[k]))
        out[k] = x.permute(0, 1, 4, 2, 3).contiguous() if types.is_image_key(k) else x.float()
    return out


def _final(info: dict, done: np.ndarray, key: str, default: Any) -> np.ndarray:
    """``info[key]`` (N,) of the step just taken: from ``final_info`` where the env was reset."""
    n = len(done)
    vals = np.array(info.get(key, np.full(n, default)))
    final = info.get("final_info")
    if final is not None and key in final:
        mask = np.asarray(final.get(f"_{key}", done), dtype=bool) & done
        vals[mask] = np.asarray(final[key])[mask]
    return vals


@dataclass
class RolloutStats:
    """What one iteration's rollouts did: episodes finished inside it, env steps, time."""

    env_steps: int = 0
    seconds: float = 0.0
    policy_seconds: float = 0.0
    successes: list[bool] = field(default_factory=list)
    """First success reached, per finished episode."""
    held: list[bool] = field(default_factory=list)
    """Success on the episode's final step, per finished episode."""
    returns: list[float] = field(default_factory=list)
    """Unscaled return per finished episode."""

    def summary(self) -> dict[str, float]:
        """success_rate, held_success_rate, mean_return, episodes, env_steps, env_steps_per_s."""
        n = len(self.successes)
        return {
            "success_rate": float(np.mean(self.successes)) if n else float("nan"),
            "held_success_rate": float(np.mean(self.held)) if n else float("nan"),
            "mean_return": float(np.mean(self.returns)) if n else float("nan"),
            "episodes": n,
            "env_steps": self.env_steps,
            "env_steps_per_s": self.env_steps / max(self.seconds, 1e-9),
        }


@dataclass
class Rollout:
    """T chunk-steps from N envs (numpy arrays (T, N, ...) unless noted)."""

    obs: dict[str, torch.Tensor]
    """(T·N, To, ...) policy inputs, row t·N + i."""
    chain: torch.Tensor
    """(T·N, K+1, H, Da)"""
    logp: torch.Tensor
    """(T·N, J)"""
    time: torch.Tensor
    """(T·N,) elapsed fraction of the episode's step cap at each chunk-step (the critic's time input;
    zeros without one)."""
    rewards: np.ndarray
    values: np.ndarray
    next_values: np.ndarray
    terminated: np.ndarray
    done: np.ndarray


@torch.no_grad()
def collect(agent, critic, envs, n_steps: int, seeds: list[int], scaler=None,
            bootstrap_step_cap: bool = False, step_cap: int = 0) -> tuple[Rollout, RolloutStats]:  # fmt: skip
    """Reset ``envs`` with ``seeds`` (one per env) and collect ``n_steps`` chunk-steps. ``scaler``
    (a :class:`~robolearn.rl.gae.RunningRewardScaler`) scales the rewards PPO sees; the stats keep the
    raw ones. ``bootstrap_step_cap``: an episode cut by its step cap bootstraps from V of its last
    observation; without it the cap ends the episode as a terminal step (the task's horizon, as eval
    runs it). The iteration's own end always bootstraps. ``step_cap`` (env steps, > 0) gives the critic
    the episode's elapsed fraction of it as an input (:attr:`Rollout.time`); 0 gives none."""
    pol = agent.policy
    keys = list(pol.input_features)
    start, n_exec = pol.config.exec_start, pol.config.n_action_steps
    t0 = time.perf_counter()
    obs, _ = envs.reset(seed=list(seeds))
    n = envs.num_envs
    stats = RolloutStats()
    ep_ret = np.zeros(n)
    obs_rows: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    chains, logps = [], []
    rewards, values, next_values = (np.zeros((n_steps, n), np.float32) for _ in range(3))
    terminated, done = (np.zeros((n_steps, n), bool) for _ in range(2))
    elapsed = np.zeros(n, np.float32)  # env steps into each env's episode
    times = np.zeros((n_steps, n), np.float32)

    def value(batch: dict[str, torch.Tensor], steps: np.ndarray) -> np.ndarray:
        tf = torch.from_numpy(steps / step_cap) if step_cap else None
        return critic(agent.features(batch), tf).numpy()

    for t in range(n_steps):
        batch = to_policy_obs(obs, keys)
        p0 = time.perf_counter()
        actions, chain, logp = agent.sample(batch)
        times[t] = elapsed / step_cap if step_cap else 0.0
        values[t] = value(batch, elapsed)
        stats.policy_seconds += time.perf_counter() - p0
        for k in keys:
            obs_rows[k].append(batch[k])
        chains.append(chain)
        logps.append(logp)
        obs, reward, term, trunc, info = envs.step(actions[:, start : start + n_exec].numpy())
        term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
        d = term | trunc
        executed = _final(info, d, "env_steps", n_exec).astype(np.float32)
        elapsed += executed
        stats.env_steps += int(np.sum(executed))
        ep_ret += reward
        for i in np.flatnonzero(d):
            stats.successes.append(bool(_final(info, d, "episode_success", False)[i]))
            stats.held.append(bool(_final(info, d, "is_success", False)[i]))
            stats.returns.append(float(ep_ret[i]))
            ep_ret[i] = 0.0
        rewards[t] = scaler(reward, d) if scaler is not None else reward
        terminated[t], done[t] = (term, d) if bootstrap_step_cap else (d, d)
        cut = np.flatnonzero(trunc & ~term) if bootstrap_step_cap else []
        if len(cut):  # a step cap: bootstrap from the episode's last observation
            last = {k: np.stack([info["final_obs"][i][k] for i in cut]) for k in keys}
            next_values[t, cut] = value(to_policy_obs(last, keys), elapsed[cut])
        elapsed[d] = 0.0
    # The iteration's end truncates every episode in progress: bootstrap from the observation after it.
    final_v = value(to_policy_obs(obs, keys), elapsed)
    nxt = np.concatenate([values[1:], final_v[None]], axis=0)
    next_values = np.where(trunc_mask(terminated, done), next_values, nxt)
    stats.seconds = time.perf_counter() - t0
    rollout = Rollout(
        obs={k: torch.cat(v) for k, v in obs_rows.items()},
        chain=torch.cat(chains),
        logp=torch.cat(logps),
        time=torch.from_numpy(times.reshape(-1)),
        rewards=rewards,
        values=values,
        next_values=next_values.astype(np.float32),
        terminated=terminated,
        done=done,
    )
    return rollout, stats


def trunc_mask(terminated: np.ndarray, done: np.ndarray) -> np.ndarray:
    """(T, N) steps whose episode was truncated (done, not terminated): their bootstrap value was taken
    from the episode's own last observation."""
    return done & ~terminated


__all__ = ["Rollout", "RolloutStats", "collect", "to_policy_obs"]
