"""Generalized advantage estimation and running reward scaling (numpy; no torch).

Shapes: T chunk-steps per env, N envs.
"""

from __future__ import annotations

import numpy as np


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    done: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE(γ, λ) advantages and returns, each (T, N).

    ``rewards``, ``values`` (V(s_t)), ``terminated`` and ``done`` (terminated or truncated) are (T, N);
    ``next_values`` (T, N) is V of the observation after step t: the next step's observation, or the
    episode's last one where it was truncated (the bootstrap a step cap needs). A terminated step
    bootstraps nothing; the advantage recursion stops at every episode end:
    δ_t = r_t + γ·(1 − term_t)·V'_t − V_t and A_t = δ_t + γλ·(1 − done_t)·A_{t+1}.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    t_len = rewards.shape[0]
    adv = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[1:], dtype=np.float64)
    not_term = 1.0 - np.asarray(terminated, dtype=np.float64)
    not_done = 1.0 - np.asarray(done, dtype=np.float64)
    for t in reversed(range(t_len)):
        delta = rewards[t] + gamma * not_term[t] * next_values[t] - values[t]
        last = delta + gamma * lam * not_done[t] * last
        adv[t] = last
    return adv.astype(np.float32), (adv + values).astype(np.float32)


class RunningRewardScaler:
    """Divides rewards by the running std of the discounted return (as DPPO and cleanrl's
    ``NormalizeReward``): per env, R ← γR + r (zeroed at episode ends); the std is Welford's over
    every R seen. Its state is three numbers and R (N,), saved with the run for exact resume."""

    def __init__(self, num_envs: int, gamma: float, eps: float = 1e-8):
        self.gamma, self.eps = gamma, eps
        self.ret = np.zeros(num_envs, dtype=np.float64)
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Scaled rewards (N,) for one step's ``reward`` (N,), updating the statistics first."""
        self.ret = self.ret * self.gamma + reward
        for x in self.ret:
            self.count += 1
            d = x - self.mean
            self.mean += d / self.count
            self.m2 += d * (x - self.mean)
        self.ret[np.asarray(done, dtype=bool)] = 0.0
        return (reward / np.sqrt(self.var + self.eps)).astype(np.float32)

    @property
    def var(self) -> float:
        """Variance of the discounted returns seen (1 before two samples)."""
        return self.m2 / self.count if self.count > 1 else 1.0

    def state_dict(self) -> dict:
        """JSON-safe state."""
        return {"ret": self.ret.tolist(), "count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.ret = np.asarray(state["ret"], dtype=np.float64)
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


__all__ = ["RunningRewardScaler", "compute_gae"]
