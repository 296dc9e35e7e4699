"""The imitation trainer: any registered policy, any LeRobot v3.0 dataset, one loop.

Built on ``accelerate``: the same code runs in one process, several CPU processes or GPUs, and
several nodes (``accelerate launch -m robolearn.cli train ...``). Each step draws its batch from a
deterministic, seed-derived order, so resuming from ``RUN/checkpoints/STEP`` continues the same
loss curve exactly.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robolearn.config import ConfigError, from_dict, to_dict
from robolearn.policies.checkpoint import record_source
from robolearn.train.config import TrainConfig
from robolearn.train.sampler import StepBatchSampler
from robolearn.train.state import (
    STATE_DIR,
    ema_parameters,
    latest_checkpoint,
    load_training_state,
    save_training_state,
)

CHECKPOINT_FILES = ("config.json", "model.safetensors", "norm_stats.json")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the message names the step and the batch."""


@dataclass
class TrainSummary:
    run: Path
    steps: int
    final_loss: float
    seconds: float
    checkpoint: Path


def dataset_envs(info: dict[str, Any], source: str = "meta/info.json") -> tuple[str, ...]:
    """The registered env(s) a dataset was recorded from: ``info["robolearn"]["env"]`` (a name or a
    list of names) of its ``meta/info.json``; ``()`` for data without that record (converted data)."""
    section = info.get("robolearn")
    env = section.get("env") if isinstance(section, dict) else None
    if env is None:
        return ()
    envs = [env] if isinstance(env, str) else env
    if not isinstance(envs, list) or not all(isinstance(e, str) and e for e in envs):
        raise ConfigError(f"{source}: robolearn.env: expected an env name or a list of names, found {env!r}")
    return tuple(dict.fromkeys(envs))


def build_policy(cfg: TrainConfig, features: dict, stats: dict | None, source: str):
    """The policy named in ``cfg`` with its config checked strictly (errors name ``source``)."""
    import robolearn.policies  # noqa: F401  (registers policies)
    from robolearn.registry import POLICIES

    try:
        entry = POLICIES.get(cfg.policy)
    except KeyError as exc:
        raise ConfigError(f"{source}: policy: {exc.args[0]}") from None
    pcfg = from_dict(entry.config_cls, cfg.policy_config, source=source, prefix="policy_config.")
    # a fresh build: the builder's pretrained factory (a reload, load_policy, never reads `pretrained`)
    return entry.load_builder()(pcfg, features=features, stats=stats, load_pretrained=True)


class _EtaAnnouncer:
    """Prints one line with the estimated training time once the first steps are timed.

    The first ``skip`` steps (allocator and kernel warm-up) are left out of the rate; the estimate
    is printed after ``measure`` more steps or ``max_wait`` seconds, whichever comes first."""

    def __init__(
        self, policy: str, start: int, total: int, skip: int = 3, measure: int = 20, max_wait: float = 10.0
    ):
        self.policy, self.start, self.total = policy, start, total
        self.skip, self.measure, self.max_wait = skip, measure, max_wait
        self._t0 = time.perf_counter()
        self._t_skip: float | None = None

    def tick(self, step: int) -> bool:
        """Call after every step; True once the estimate has been printed (then stop calling)."""
        from robolearn.progress import format_duration

        done = step - self.start
        now = time.perf_counter()
        if done == self.skip:
            self._t_skip = now
        if self._t_skip is None or step >= self.total:
            return step >= self.total
        timed = done - self.skip
        # timed <= 0: steps so slow that max_wait passed before one was timed
        if timed <= 0 or (timed < self.measure and now - self._t0 < self.max_wait):
            return False
        rate = timed / max(now - self._t_skip, 1e-9)
        left = (self.total - step) / rate
        print(f"train {self.policy}: {rate:.3g} steps/s, estimated {format_duration(left)} for the remaining "
              f"{self.total - step} of {self.total} steps (validation and checkpoints add a little)", flush=True)  # fmt: skip
        return True


class _LossModule(torch.nn.Module):
    """``forward(batch) -> (loss, metrics)`` so DDP sees a forward call (gradient sync needs it)."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return self.policy.compute_loss(batch)


class Trainer:
    """``Trainer(cfg, dataset, run).fit()``; see the module docstring. ``dataset`` is one dataset
    folder or a list of them with identical features (:mod:`robolearn.train.multi`)."""

    def __init__(self, cfg: TrainConfig, dataset: str | Path | Sequence[str | Path], run: str | Path, *,
                 resume: bool = False, source: str = "<train config>", progress: bool = True):  # fmt: skip
        from accelerate import Accelerator

        from robolearn.train.multi import combined_stats, load_training_data, windows

        self.cfg, self.run_dir, self.progress = cfg, Path(run), progress
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.start_step = 0
        self._resume_from = latest_checkpoint(self.run_dir) if resume else None
        if resume and self._resume_from is None:
            raise FileNotFoundError(
                f"{self.run_dir}: --resume given but no checkpoints/STEP/{STATE_DIR} found"
            )
        if not resume and (self.run_dir / "checkpoints").exists():
            raise FileExistsError(
                f"{self.run_dir} already holds a run; pass --resume to continue it or choose a new --out"
            )

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        roots = [dataset] if isinstance(dataset, (str, Path)) else list(dataset)
        data = load_training_data(roots, cfg.val_fraction, cfg.seed)
        self.data = data
        self.source_envs = data.envs
        """The env(s) the datasets were recorded from; every checkpoint records them."""
        self.eval_env = cfg.eval_env or (self.source_envs[0] if len(self.source_envs) == 1 else "")
        if cfg.eval_every and not self.eval_env:
            found = f"envs {', '.join(self.source_envs)}" if self.source_envs else "no env (robolearn.env)"
            raise ConfigError(
                f"{source}: eval_env: required when eval_every > 0 and the dataset's meta/info.json records {found}"
            )
        self.train_eps, self.val_eps = data.train_episodes[0], data.val_episodes[0]
        stats = combined_stats(data.roots, data.train_episodes)
        # Build (and so check) the policy against the dataset's features before any data work.
        self.policy = build_policy(cfg, data.features, stats, source)
        fit_instructions = getattr(self.policy, "fit_instructions", None)
        if fit_instructions is not None:  # a VLA builds its word-level tokenizer from the instructions
            fit_instructions(data.tasks)
        self.policy.check_features(
            {k: s.shape for k, s in data.features.items()}, source=f"dataset {', '.join(map(str, roots))}"
        )
        pc = self.policy.config
        kwargs = dict(
            obs_horizon=pc.n_obs_steps, action_horizon=pc.horizon, obs_keys=list(self.policy.input_features)
        )
        self.train_set = windows(data, "train", video_cache_mb=cfg.video_cache_mb, **kwargs)
        self.val_set = windows(data, "val", **kwargs)
        self.fps = data.fps
        # don't decode frames whose features the policy has cached (same losses)
        self.skip_cached_pixels = True

    # ------------------------------------------------------------------------------------------ setup
    def _optim(self, policy):
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        cfg = self.cfg
        opt = torch.optim.AdamW(
            policy.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        sched = get_scheduler("cosine", opt, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps)
        ema = None
        if cfg.ema_decay > 0:
            ema = EMAModel(ema_parameters(policy), decay=cfg.ema_decay, use_ema_warmup=True, power=0.75)
        return opt, sched, ema

    def _loader(self, start: int):
        acc = self.accelerator
        sampler = StepBatchSampler(len(self.train_set), self.cfg.batch_size, self.cfg.seed, start, self.cfg.steps,
                                   acc.process_index, acc.num_processes)  # fmt: skip
        # Its own generator: a DataLoader iterator otherwise draws its worker seed from the global RNG,
        # which would shift the noise stream of a resumed run by one draw.
        gen = torch.Generator().manual_seed(self.cfg.seed + start)
        data, batches = self.train_set, sampler
        pixels_needed = getattr(self.policy, "pixels_needed", None)
        if pixels_needed is not None and self.skip_cached_pixels:  # frames it has cached features of
            from robolearn.train.skip_decode import PixelsOptional, SkipCachedPixels

            data, batches = PixelsOptional(data), SkipCachedPixels(sampler, data, pixels_needed)
        return torch.utils.data.DataLoader(data, batch_sampler=batches, num_workers=self.cfg.num_workers,
                                           generator=gen)  # fmt: skip

    # ------------------------------------------------------------------------------------------ loop
    def fit(self) -> TrainSummary:
        from robolearn.progress import progress
        from robolearn.train.logging import MetricsLog

        cfg, acc = self.cfg, self.accelerator
        policy = self.policy.to(acc.device)
        opt, sched, ema = self._optim(policy)
        if ema is not None:
            ema.to(acc.device)
        if self._resume_from is not None:
            self.start_step = load_training_state(self._resume_from / STATE_DIR, policy, opt, sched, ema)
        model = acc.prepare(_LossModule(policy))
        tracked = ema_parameters(policy)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:
            (self.run_dir / "train_config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        log = MetricsLog(
            self.run_dir, enabled=acc.is_main_process, wandb=cfg.wandb, resume_step=self.start_step
        )
        show = self.progress and acc.is_main_process
        if hasattr(policy, "cache_frame_features"):  # a frozen tower's features, one ordered pass first
            from robolearn.train.skip_decode import warm_feature_cache

            warm_feature_cache(policy, self.train_set, 64, cfg.num_workers, acc.device, show)
        bar = progress(total=cfg.steps, initial=self.start_step, desc=f"train {cfg.policy}", unit="step",
                       enabled=show)  # fmt: skip
        last_ckpt = self._resume_from
        loss_value = float("nan")
        started = time.perf_counter()
        model.train()
        window: list[float] = []
        step = self.start_step
        eta = _EtaAnnouncer(cfg.policy, step, cfg.steps) if self.progress and acc.is_main_process else None
        for batch in self._loader(self.start_step):
            batch = {k: (v.to(acc.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            loss, metrics = model(batch)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                frames = batch["index"].tolist() if "index" in batch else "?"
                eps = (
                    sorted({int(e) for e in batch["episode_index"].tolist()})
                    if "episode_index" in batch
                    else "?"
                )
                if "dataset_index" in batch and isinstance(frames, list):  # several datasets: name each's
                    tags = batch["dataset_index"].tolist()
                    frames = [f"{self.data.roots[d]}:{i}" for d, i in zip(tags, frames, strict=True)]
                raise TrainingDiverged(
                    f"step {step + 1}: loss is {loss_value} on the batch of frames {frames} (episodes {eps}); "
                    f"last good checkpoint: {last_ckpt or 'none yet'}"
                )
            acc.backward(loss)
            grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(tracked)
            step += 1
            window.append(loss_value)
            bar.update(1)
            if eta is not None and eta.tick(step):
                eta = None
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {
                    "step": step,
                    "loss": loss_value,
                    "loss_avg": float(np.mean(window)),
                    "lr": sched.get_last_lr()[0],
                }
                if grad_norm is not None:
                    row["grad_norm"] = float(grad_norm)
                row.update({f"train/{k}": float(v) for k, v in metrics.items()})
                log.write(row)
                bar.set_postfix(loss=f"{row['loss_avg']:.4f}")
                window.clear()
            if step % cfg.save_every == 0 or step == cfg.steps:
                with torch.random.fork_rng(devices=[]):
                    self._validate(policy, ema, step, log)
                last_ckpt = self._save(policy, opt, sched, ema, step)
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                self._periodic_eval(policy, ema, step, log)  # evaluate() restores the RNG itself
        bar.close()
        log.close()
        final = self.run_dir / "checkpoints" / str(step)
        if acc.is_main_process:
            # the three checkpoint files and any a policy adds (a VLA's tokenizer.json)
            for name in sorted({*CHECKPOINT_FILES, *(p.name for p in final.iterdir() if p.is_file())}):
                tmp = self.run_dir / f".{name}.tmp"
                shutil.copyfile(final / name, tmp)
                os.replace(tmp, self.run_dir / name)
        return TrainSummary(self.run_dir, step, loss_value, time.perf_counter() - started, self.run_dir)

    # ------------------------------------------------------------------------------------------ helpers
    def _with_ema(self, policy, ema, fn):
        """Run ``fn()`` with the EMA weights swapped in (restored afterwards)."""
        if ema is None:
            return fn()
        tracked = ema_parameters(policy)
        ema.store(tracked)
        ema.copy_to(tracked)
        try:
            return fn()
        finally:
            ema.restore(tracked)

    @torch.no_grad()
    def _validate(self, policy, ema, step: int, log) -> None:
        if self.val_set is None or not self.accelerator.is_main_process:
            return
        torch.manual_seed(self.cfg.seed + step)
        loader = torch.utils.data.DataLoader(self.val_set, batch_size=self.cfg.batch_size, shuffle=False)

        def run():
            policy.eval()
            losses = []
            for i, batch in enumerate(loader):
                if i >= 8:
                    break
                batch = {
                    k: (v.to(self.accelerator.device) if torch.is_tensor(v) else v) for k, v in batch.items()
                }
                losses.append(float(policy.compute_loss(batch)[0]))
            policy.train()
            return float(np.mean(losses)) if losses else float("nan")

        log.write({"step": step, "val_loss": self._with_ema(policy, ema, run)})

    def _periodic_eval(self, policy, ema, step: int, log) -> None:
        if not self.accelerator.is_main_process:
            return
        from robolearn.eval.evaluate import evaluate

        def run():
            res = evaluate(policy, self.eval_env, episodes=self.cfg.eval_episodes, progress=False)
            policy.train()
            return res

        res = self._with_ema(policy, ema, run)
        log.write({"step": step, "eval/success_rate": res.success_rate, "eval/ci95_low": res.ci95[0],
                   "eval/ci95_high": res.ci95[1], "eval/held_success_rate": res.held_success_rate,
                   "eval/held_ci95_low": res.held_ci95[0], "eval/held_ci95_high": res.held_ci95[1],
                   "eval/latency_p50_ms": res.latency_ms["p50"]})  # fmt: skip

    def _save(self, policy, opt, sched, ema, step: int) -> Path:
        final = self.run_dir / "checkpoints" / str(step)
        if not self.accelerator.is_main_process:
            return final
        tmp = self.run_dir / "checkpoints" / f".tmp-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        self._with_ema(policy, ema, lambda: policy.save_pretrained(tmp))
        record_source(tmp, self.source_envs)
        save_training_state(tmp / STATE_DIR, policy, opt, sched, ema, step)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return final


def train_policy(
    cfg: TrainConfig,
    dataset: str | Path | Sequence[str | Path],
    run: str | Path,
    resume: bool = False,
    **kwargs: Any,
) -> TrainSummary:
    """Train ``cfg``'s policy on the LeRobot v3.0 dataset at ``dataset`` (or a list of them) into run folder ``run``
    (checkpoints under ``run/checkpoints/STEP``, the final one in ``run``); ``Trainer(...).fit()``.
    ``resume=True`` continues from the latest checkpoint exactly."""
    return Trainer(cfg, dataset, run, resume=resume, **kwargs).fit()
