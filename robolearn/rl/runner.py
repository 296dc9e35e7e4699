"""The fine-tuning loop: rollouts, GAE, PPO, checkpoints with exact resume, logs.

``RUN/checkpoints/ITER/`` holds the fine-tuned policy as a plain checkpoint (``eval``, ``serve`` and
``steer`` load it like any other) and ``training_state/`` (the chain policy with its noise network,
the critic, Adam moments, every RNG state: :mod:`robolearn.train.state`) plus ``rl_state.json`` (the
reward scaler, env steps). Every iteration resets the envs with seeds derived from (seed, iteration),
so an iteration depends only on the state saved before it and a resumed run repeats the same
iterations exactly. ``RUN/metrics.jsonl`` and ``RUN/tensorboard/`` get one row per logged iteration.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robolearn.config import to_dict
from robolearn.rl.config import FinetuneConfig
from robolearn.rl.gae import RunningRewardScaler, compute_gae
from robolearn.rl.ppo import Batch, ValueCritic, ppo_update
from robolearn.rl.rollout import collect
from robolearn.train.state import STATE_DIR, latest_checkpoint, load_training_state, save_training_state

CHECKPOINT_FILES = ("config.json", "model.safetensors", "norm_stats.json")
SEED_STRIDE = 100_003
"""Env seeds of iteration i are seed·SEED_STRIDE + i·num_envs + (0 … num_envs − 1) + 1."""


@dataclass
class FinetuneSummary:
    """What a fine-tuning run ended with."""

    run: Path
    iterations: int
    env_steps: int
    seconds: float
    last: dict[str, Any]
    """The last iteration's metrics row."""


def build_agent(policy, cfg: FinetuneConfig):
    """The chain policy for ``cfg.algorithm`` around ``policy`` (trained in place)."""
    if cfg.algorithm == "reinflow":
        from robolearn.rl.reinflow import ReinFlowPolicy

        rf = cfg.reinflow
        return ReinFlowPolicy(policy, rf.num_steps, rf.sigma_min, cfg.sigma_max_at(0), rf.noise_hidden,
                              cfg.ppo.regularizer, rf.marginalize_unexecuted, rf.per_step_ratio)  # fmt: skip
    from robolearn.rl.dppo import DPPODiffusion

    d = cfg.dppo
    return DPPODiffusion(policy, d.ft_denoising_steps, d.ddim_eta, d.min_std, d.clip_base, d.clip_rate,
                         d.gamma_denoising, cfg.ppo.regularizer)  # fmt: skip


def rollout_env_config(policy, env_name: str, cfg: FinetuneConfig) -> Any:
    """The env config for rollouts: the eval config for ``policy`` (its cameras) with the sparse
    success reward, ``terminate_on_success`` and the episode cap of ``cfg``."""
    from robolearn.eval.evaluate import policy_env_config

    env_cfg = policy_env_config(policy, env_name, overrides=cfg.env_overrides)
    fields = {"terminate_on_success": cfg.terminate_on_success}
    if cfg.max_episode_steps:
        fields["max_episode_steps"] = cfg.max_episode_steps
    if hasattr(env_cfg, "reward_type"):
        fields["reward_type"] = "sparse"
    missing = [f for f in ("terminate_on_success", "max_episode_steps") if not hasattr(env_cfg, f)]
    if missing:
        raise ValueError(f"env {env_name}: {type(env_cfg).__name__} has no field {missing[0]!r}")
    return dataclasses.replace(env_cfg, **fields)


def episode_step_cap(env_name: str, env_cfg: Any) -> int:
    """The episode cap in env steps of ``env_name`` built from ``env_cfg``: its ``max_episode_steps``,
    or (0 there: the env's default) what a built env reports; 0 when it reports none."""
    cap = int(getattr(env_cfg, "max_episode_steps", 0) or 0)
    if cap > 0:
        return cap
    from robolearn.envs import make_env

    env = make_env(env_name, env_cfg)
    try:
        inner = env.unwrapped
        cap = getattr(inner, "max_episode_steps", None) or getattr(env.spec, "max_episode_steps", None)
    finally:
        env.close()
    return int(cap or 0)


class _Learner(torch.nn.Module):
    """Everything with weights, as one module for the training-state files."""

    def __init__(self, agent, critic, average=None):
        super().__init__()
        self.agent, self.critic, self.average = agent, critic, average


class FineTuner:
    """``FineTuner(cfg, policy, env_name, run).fit()``; see the module docstring.

    ``policy`` is the pretrained policy (flow for ReinFlow, diffusion for DPPO), trained in place;
    ``source_envs`` is recorded in every checkpoint (what ``eval`` defaults to). ``backend`` and
    ``ray_address`` choose the rollout envs (:func:`robolearn.rl.vector.make_rollout_envs`)."""

    def __init__(self, cfg: FinetuneConfig, policy, env_name: str, run: str | Path, *, resume: bool = False,
                 backend: str = "process", ray_address: str | None = None, progress: bool = True):  # fmt: skip
        self.cfg, self.env_name, self.run_dir = cfg, env_name, Path(run)
        self.backend, self.ray_address, self.progress = backend, ray_address, progress
        self._resume_from = latest_checkpoint(self.run_dir) if resume else None
        if resume and self._resume_from is None:
            raise FileNotFoundError(
                f"{self.run_dir}: --resume given but no checkpoints/ITER/{STATE_DIR} found"
            )
        if not resume and (self.run_dir / "checkpoints").exists():
            raise FileExistsError(
                f"{self.run_dir} already holds a run; pass --resume to continue it or choose a new --out"
            )
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.env_cfg = rollout_env_config(policy, env_name, cfg)
        self.num_envs = cfg.num_envs or cfg.envs_per_worker * (os.cpu_count() or 1)
        self.agent = build_agent(policy, cfg)
        self.step_cap = episode_step_cap(env_name, self.env_cfg) if cfg.ppo.critic_time else 0
        self.critic = ValueCritic(policy.config.n_obs_steps * policy.obs_encoder.out_dim, cfg.ppo.critic_hidden,
                                  time_input=self.step_cap > 0)  # fmt: skip
        # The averaged weights (cfg.ema_decay): a frozen copy of the chain policy that checkpoints write.
        self.average = copy.deepcopy(self.agent).requires_grad_(False) if cfg.ema_decay > 0 else None
        self.learner = _Learner(self.agent, self.critic, self.average)
        groups = self.agent.param_groups(cfg.ppo.actor_lr, cfg.reinflow.noise_lr)
        groups.append({"params": list(self.critic.parameters()), "lr": cfg.ppo.critic_lr})
        self.optimizer = torch.optim.Adam(groups, eps=1e-5)
        # A constant schedule: it exists so that the imitation trainer's state files apply unchanged.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        self.scaler = RunningRewardScaler(self.num_envs, cfg.ppo.gamma) if cfg.ppo.reward_scaling else None
        self.iteration, self.env_steps = 0, 0

    def _seeds(self, iteration: int) -> list[int]:
        base = self.cfg.seed * SEED_STRIDE + iteration * self.num_envs + 1
        return [base + i for i in range(self.num_envs)]

    # ------------------------------------------------------------------------------------------ loop
    def fit(self) -> FinetuneSummary:
        from robolearn.progress import progress
        from robolearn.train.logging import MetricsLog

        cfg = self.cfg
        if self._resume_from is not None:
            self._load(self._resume_from)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "finetune_config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        envs = self.make_envs()
        log = MetricsLog(self.run_dir, resume_step=self.iteration)
        bar = progress(total=cfg.iterations, initial=self.iteration, desc=f"finetune {cfg.algorithm}", unit="it",
                       enabled=self.progress)  # fmt: skip
        started, row = time.perf_counter(), {}
        try:
            while self.iteration < cfg.iterations:
                if cfg.max_env_steps and self.env_steps >= cfg.max_env_steps:
                    break
                row = self.iterate(envs)
                bar.update(1)
                bar.set_postfix(success=f"{row['success_rate']:.2f}", ret=f"{row['mean_return']:.2f}",
                                sps=f"{row['env_steps_per_s']:.0f}")  # fmt: skip
                if self.iteration % cfg.log_every == 0 or self.iteration == cfg.iterations:
                    log.write(row)
                if self.iteration % cfg.save_every == 0 or self.iteration == cfg.iterations:
                    self._save()
        finally:
            bar.close()
            log.close()
            envs.close()
        if (
            latest_checkpoint(self.run_dir) is None
            or int(latest_checkpoint(self.run_dir).name) != self.iteration
        ):
            self._save()
        final = self.run_dir / "checkpoints" / str(self.iteration)
        for name in CHECKPOINT_FILES:
            tmp = self.run_dir / f".{name}.tmp"
            shutil.copyfile(final / name, tmp)
            os.replace(tmp, self.run_dir / name)
        return FinetuneSummary(
            self.run_dir, self.iteration, self.env_steps, time.perf_counter() - started, row
        )

    def make_envs(self):
        """This run's rollout envs (chunked to the policy's To and n_action_steps); close them after."""
        from robolearn.rl.vector import make_rollout_envs

        pc = self.agent.policy.config
        return make_rollout_envs(self.env_name, self.env_cfg, self.num_envs, self.backend, self.ray_address,
                                 obs_steps=pc.n_obs_steps, action_steps=pc.n_action_steps)  # fmt: skip

    def iterate(self, envs) -> dict[str, Any]:
        """One iteration (rollouts, GAE, PPO) on ``envs`` from :meth:`make_envs`; returns its metrics row.
        :meth:`fit` adds logging and checkpoints around it."""
        row = self._iterate(envs)
        self.iteration += 1
        return row

    def _iterate(self, envs) -> dict[str, Any]:
        cfg, it = self.cfg, self.iteration
        if hasattr(self.agent, "set_sigma_max"):
            self.agent.set_sigma_max(cfg.sigma_max_at(it))
        if self.scaler is not None:
            self.scaler.ret[:] = 0.0  # every episode starts afresh at an iteration's reset
        self.learner.eval()
        roll, stats = collect(self.agent, self.critic, envs, cfg.n_steps, self._seeds(it), self.scaler,
                              cfg.bootstraps_step_cap, self.step_cap)  # fmt: skip
        adv, ret = compute_gae(roll.rewards, roll.values, roll.next_values, roll.terminated, roll.done,
                               cfg.ppo.gamma, cfg.ppo.gae_lambda)  # fmt: skip
        batch = Batch(roll.obs, roll.chain, roll.logp, torch.from_numpy(adv.reshape(-1)),
                      torch.from_numpy(ret.reshape(-1)), roll.time if self.step_cap else None)  # fmt: skip
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, it])
        train_actor = it >= cfg.ppo.critic_warmup_iterations
        metrics = ppo_update(self.agent, self.critic, self.optimizer, batch, cfg.ppo, rng, train_actor)
        self.scheduler.step()
        if self.average is not None:
            with torch.no_grad():
                for mine, online in zip(self.average.parameters(), self.agent.parameters(), strict=True):
                    mine.lerp_(online, 1.0 - cfg.ema_decay)
        update_s = time.perf_counter() - t0
        self.env_steps += stats.env_steps
        row = {"step": it + 1, "env_steps_total": self.env_steps, **stats.summary(),
               "rollout_s": stats.seconds, "policy_s": stats.policy_seconds, "update_s": update_s,
               "iteration_s": stats.seconds + update_s, "sigma_max": cfg.sigma_max_at(it),
               **{f"ppo/{k}": v for k, v in metrics.items()}}  # fmt: skip
        return row

    # ------------------------------------------------------------------------------------------ state
    def _save(self) -> Path:
        from robolearn.policies.checkpoint import record_source

        it = self.iteration
        final = self.run_dir / "checkpoints" / str(it)
        tmp = self.run_dir / "checkpoints" / f".tmp-{it}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        (self.average if self.average is not None else self.agent).save_policy(tmp)
        record_source(tmp, [self.env_name])
        save_training_state(tmp / STATE_DIR, self.learner, self.optimizer, self.scheduler, None, it)
        rl_state = {"env_steps": self.env_steps, "scaler": self.scaler.state_dict() if self.scaler else None}
        (tmp / STATE_DIR / "rl_state.json").write_text(json.dumps(rl_state))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return final

    def _load(self, folder: Path) -> None:
        self.iteration = load_training_state(folder / STATE_DIR, self.learner, self.optimizer, self.scheduler,
                                             None)  # fmt: skip
        rl_state = json.loads((folder / STATE_DIR / "rl_state.json").read_text())
        self.env_steps = int(rl_state["env_steps"])
        if self.scaler is not None and rl_state["scaler"] is not None:
            self.scaler.load_state_dict(rl_state["scaler"])


def finetune(cfg: FinetuneConfig, policy, env_name: str, run: str | Path, **kwargs: Any) -> FinetuneSummary:
    """Fine-tune ``policy`` (a copy of it) with ``cfg.algorithm`` on ``env_name`` into run folder ``run``;
    ``FineTuner(...).fit()``. Keyword arguments go to :class:`FineTuner` (``resume``, ``backend``, ...)."""
    return FineTuner(cfg, copy.deepcopy(policy), env_name, run, **kwargs).fit()


__all__ = [
    "FineTuner",
    "FinetuneSummary",
    "build_agent",
    "episode_step_cap",
    "finetune",
    "rollout_env_config",
]
