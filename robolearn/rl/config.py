"""Typed config of one RL fine-tuning run (light: no torch). Recipes in ``policies/reinflow_*.yaml`` and
``policies/dppo_*.yaml`` load into it strictly: an unknown key is an error naming the file.

Time scales: an *iteration* collects ``n_steps`` chunk-steps from each of ``num_envs`` envs, then
runs ``update_epochs`` PPO epochs over them. A *chunk-step* executes ``n_action_steps`` env steps of
one sampled action chunk (the PPO action); its reward is the sum of theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from robolearn.config import ConfigError


@dataclass
class ReinFlowConfig:
    """ReinFlow (Zhang et al. 2025): a learned noise σ(s, t) turns the flow's Euler sampler into a
    Markov chain x_{k+1} ~ N(x_k + Δ·v(x_k, t_k | s), σ(s, t_k)²) with an exact log-probability."""

    num_steps: int = 0
    """K: Euler steps of the chain; 0 takes the checkpoint's ``num_inference_steps``."""
    sigma_min: float = 0.05
    """Lower bound of the noise std (normalized action units)."""
    sigma_max: float = 0.12
    """Upper bound of the noise std at the first iteration."""
    sigma_max_end: float = 0.12
    """Upper bound at ``sigma_decay_iterations`` and after (the σ schedule: linear in iterations)."""
    sigma_decay_iterations: int = 0
    """Iterations over which the upper bound moves from ``sigma_max`` to ``sigma_max_end`` (0: fixed)."""
    noise_hidden: tuple[int, ...] = (128, 128)
    """Hidden sizes of the noise network (input: observation features and the step's time)."""
    noise_lr: float = 3e-4
    """Learning rate of the noise network."""
    marginalize_unexecuted: bool = True
    """Leave the last Euler step's densities on never-executed chunk steps out of the log-prob (they
    integrate out exactly and only add noise to the ratio). False counts all K·H·Da dimensions."""
    per_step_ratio: bool = False
    """One PPO ratio and clip per Euler transition (J = K, DPPO's structure on ReinFlow's chain) in
    place of the paper's one ratio of the whole chain; each is normalized by its own dimensions."""


@dataclass
class DPPOConfig:
    """DPPO (Ren et al. 2024): PPO over the last ``ft_denoising_steps`` steps of the DDIM/DDPM chain,
    each step a Gaussian with its std floored, one PPO ratio per step."""

    ft_denoising_steps: int = 0
    """k: the last k denoising steps are fine-tuned and stochastic (0: all of them)."""
    ddim_eta: float = 1.0
    """DDIM η of the fine-tuned steps (their std before the floor); DDPM steps use the posterior std."""
    min_std: float = 0.1
    """σ floor of every fine-tuned step, for sampling and the log-probability."""
    clip_base: float = 0.001
    """PPO clip of the first fine-tuned step; it grows to ``PPOConfig.clip`` at the last (per-step clip
    schedule, exponential with ``clip_rate``)."""
    clip_rate: float = 3.0
    """Rate of the per-step clip schedule: clip_j = base + (clip - base)·(e^{rate·u} - 1)/(e^{rate} - 1),
    u = j / (k - 1)."""
    gamma_denoising: float = 0.99
    """Denoising discount: the advantage of fine-tuned step j (of k, the last is j = k - 1) is scaled by
    gamma_denoising^(k - 1 - j)."""


@dataclass
class PPOConfig:
    """PPO over action chunks (cleanrl-style, with DPPO/ReinFlow's choices)."""

    clip: float = 0.01
    """Ratio clip ε (ReinFlow's 0.01; DPPO's per-step schedule ends here)."""
    gamma: float = 0.99
    """Discount per chunk-step."""
    gae_lambda: float = 0.95
    """GAE λ."""
    update_epochs: int = 5
    """PPO epochs over each iteration's rollouts."""
    minibatch_size: int = 256
    """Chunk-steps per gradient step."""
    actor_lr: float = 4.5e-5
    """Learning rate of the policy network."""
    critic_lr: float = 1e-3
    """Learning rate of the V(s) critic."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient (the chain's Gaussian entropy, normalized like the log-prob)."""
    vf_coef: float = 0.5
    """Value-loss coefficient."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip, applied to the actor and to the critic apart (0: off); ``grad_norm`` in the
    metrics is the actor's."""
    target_kl: float = 0.0
    """Stop an iteration's epochs once the approximate KL exceeds this (0: never)."""
    reward_scaling: bool = True
    """Divide rewards by the running std of the discounted return (DPPO's RunningRewardScaler)."""
    regularizer: Literal["none", "w2", "bc"] = "none"
    """Pull toward the pretrained policy: ``w2``, the mean squared distance between the deterministic
    samples of the fine-tuned and pretrained policies from the same noise (a bound on W2²); ``bc``, the
    squared distance between their network outputs at the rolled-out chain states."""
    reg_coef: float = 0.0
    """Weight of the regularizer."""
    critic_hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of the V(s) critic MLP."""
    critic_time: bool = False
    """Give V the episode's elapsed fraction of its step cap as an input, V(s, t): with a step cap the
    value depends on the time left, which the observation does not show (Pardo et al. 2018). Off by
    default: on lift it ended 6-13 points lower in both paired runs (within run-to-run noise, but the
    same way twice)."""
    critic_warmup_iterations: int = 0
    """Iterations at the start that train only the critic (the actor's gradients are dropped)."""
    critic_epochs: int = 0
    """Extra epochs per iteration that fit only V(s), after the PPO epochs. Critic steps are cheap (no
    chain evaluation) and a sparse-reward baseline fitted with a few steps per iteration is mostly noise."""


@dataclass
class FinetuneConfig:
    """One fine-tuning run (``robolearn finetune reinflow|dppo``)."""

    algorithm: Literal["reinflow", "dppo"] = "reinflow"
    """ReinFlow (flow checkpoints) or DPPO (diffusion checkpoints)."""
    iterations: int = 100
    """PPO iterations."""
    num_envs: int = 0
    """Env copies (0: ``envs_per_worker`` per CPU core). They run in one worker process per core, each
    holding a block of copies (:class:`robolearn.rl.env_pool.ProcessEnvPool`)."""
    envs_per_worker: int = 2
    """Env copies per worker process when ``num_envs`` is 0. Two per core gave 1.45x the rollout
    throughput of one here: the batched policy call and each message are shared by more envs."""
    n_steps: int = 50
    """Chunk-steps collected per env per iteration."""
    max_env_steps: int = 0
    """Stop once this many env steps were taken (0: run all ``iterations``)."""
    terminate_on_success: bool = True
    """End episodes at the first success (reward 1 there). False runs every episode to its step cap with
    reward 1 on each step the goal holds, which rewards keeping it (the fix for policies that reach
    the goal and then overshoot)."""
    max_episode_steps: int = 0
    """Episode cap in env steps (0: the env's default)."""
    bootstrap_step_cap: bool | None = None
    """Bootstrap V(s) where an episode hits its step cap, as at a cut (None: when ``terminate_on_success``).
    With episodes ending at success the cap cuts a failure short and V there credits a near miss;
    paying every held step makes the cap the end of the task, and bootstrapping held states, which V is
    never trained on, made its targets grow without bound (see :mod:`robolearn.rl.rollout`)."""

    @property
    def bootstraps_step_cap(self) -> bool:
        """:attr:`bootstrap_step_cap` resolved."""
        return self.terminate_on_success if self.bootstrap_step_cap is None else self.bootstrap_step_cap

    env_overrides: list[str] = field(default_factory=list)
    """Env config overrides ``key=value``, as ``eval --set``."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO settings."""
    reinflow: ReinFlowConfig = field(default_factory=ReinFlowConfig)
    """ReinFlow settings (used when ``algorithm: reinflow``)."""
    dppo: DPPOConfig = field(default_factory=DPPOConfig)
    """DPPO settings (used when ``algorithm: dppo``)."""
    ema_decay: float = 0.0
    """Average the fine-tuned weights over iterations, θ̄ ← d·θ̄ + (1 − d)·θ after each update, and write
    θ̄ to the checkpoints (rollouts always run θ, as PPO needs). Noisy PPO steps make a policy's success
    wander by several points between iterations; the average keeps the drift and damps the wander.
    0: off, the checkpoints hold θ."""
    seed: int = 0
    """Seeds the noise, the minibatch order and each iteration's env seeds."""
    save_every: int = 10
    """Iterations between checkpoints under ``RUN/checkpoints/ITER``; the final one also goes to ``RUN/``."""
    log_every: int = 1
    """Iterations between logged rows (progress, TensorBoard, ``metrics.jsonl``)."""

    def __post_init__(self) -> None:
        checks = {
            "iterations": self.iterations >= 1,
            "num_envs": self.num_envs >= 0,
            "envs_per_worker": self.envs_per_worker >= 1,
            "ema_decay": 0.0 <= self.ema_decay < 1.0,
            "n_steps": self.n_steps >= 1,
            "save_every": self.save_every >= 1,
            "log_every": self.log_every >= 1,
            "ppo.clip": self.ppo.clip > 0,
            "ppo.minibatch_size": self.ppo.minibatch_size >= 1,
            "ppo.update_epochs": self.ppo.update_epochs >= 1,
            "reinflow.sigma_min": 0 < self.reinflow.sigma_min <= min(self.reinflow.sigma_max,
                                                                     self.reinflow.sigma_max_end),
            "dppo.min_std": self.dppo.min_std > 0,
            "dppo.ft_denoising_steps": self.dppo.ft_denoising_steps >= 0,
        }  # fmt: skip
        bad = [k for k, good in checks.items() if not good]
        if bad:
            raise ConfigError(f"{bad[0]}: out of range (see robolearn.rl.config for its bounds)")
        if not 0.0 <= self.ppo.gae_lambda <= 1.0 or not 0.0 <= self.ppo.gamma <= 1.0:
            raise ConfigError("ppo.gamma and ppo.gae_lambda: expected in [0, 1]")

    def sigma_max_at(self, iteration: int) -> float:
        """The noise std's upper bound at ``iteration`` (0-based) under the σ schedule."""
        rf = self.reinflow
        if rf.sigma_decay_iterations <= 0:
            return rf.sigma_max
        u = min(iteration / rf.sigma_decay_iterations, 1.0)
        return rf.sigma_max + u * (rf.sigma_max_end - rf.sigma_max)


__all__ = ["DPPOConfig", "FinetuneConfig", "PPOConfig", "ReinFlowConfig"]
