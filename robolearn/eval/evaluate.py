"""Closed-loop rollouts of a policy in a registered env, batched across several env copies.

Each env copy runs whole episodes from its own seeds; the policy is queried in one batch for every
env whose action queue ran dry (or every step with temporal ensembling), so the latency figures are
per policy call. Seeds start at :data:`robolearn.eval.EVAL_SEED_BASE`, disjoint from the demos.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robolearn import types
from robolearn.eval import EVAL_SEED_BASE
from robolearn.eval.metrics import latency_summary, wilson_interval
from robolearn.eval.video import write_mp4
from robolearn.progress import progress as show_progress


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    ret: float
    length: int
    task: str


@dataclass
class EvalResult:
    success_rate: float
    ci95: tuple[float, float]
    episodes: int
    mean_return: float
    latency_ms: dict[str, float]
    per_episode: list[EpisodeResult] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    policy_calls: int = 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci95"] = list(self.ci95)
        return out


def env_feature_shapes(env) -> dict[str, tuple[int, ...]]:
    """Observation key -> per-frame shape the env produces, plus ``action``."""
    shapes = {k: tuple(s.shape) for k, s in env.observation_space.spaces.items() if k != types.TASK}
    shapes[types.ACTION] = tuple(env.action_space.shape)
    return shapes


def _frame_tensors(obs: dict, keys: list[str]) -> dict[str, torch.Tensor]:
    """One env observation -> per-key tensors (images become (3, H, W) float in [0, 1])."""
    out = {}
    for k in keys:
        x = torch.from_numpy(np.asarray(obs[k]))
        if types.is_image_key(k):
            x = x.permute(2, 0, 1).float().div_(255.0)
        out[k] = x.float()
    return out


class _EnvSlot:
    """One env copy: its observation history, action queue and the episode in progress."""

    def __init__(self, env, n_obs: int):
        self.env, self.n_obs = env, n_obs
        self.history: dict[str, deque] = {}
        self.queue: deque = deque()
        self.ensemble: list[tuple[int, np.ndarray]] = []
        self.seed = -1
        self.t = 0
        self.ret = 0.0
        self.frames: list[np.ndarray] | None = None
        self.task = ""

    def start(self, seed: int, keys: list[str], record: bool) -> None:
        obs, _ = self.env.reset(seed=seed)
        self.seed, self.t, self.ret, self.task = seed, 0, 0.0, str(obs[types.TASK])
        self.queue.clear()
        self.ensemble.clear()
        frame = _frame_tensors(obs, keys)
        self.history = {k: deque([v] * self.n_obs, maxlen=self.n_obs) for k, v in frame.items()}
        self.frames = [self.env.render()] if record else None

    def push(self, obs: dict, keys: list[str]) -> None:
        for k, v in _frame_tensors(obs, keys).items():
            self.history[k].append(v)

    def window(self, key: str) -> torch.Tensor:
        return torch.stack(tuple(self.history[key]))


def evaluate(
    policy,
    env_name: str,
    env_config: Any = None,
    episodes: int = 50,
    num_envs: int = 4,
    seed_base: int = EVAL_SEED_BASE,
    video_dir: str | Path | None = None,
    video_episodes: int = 2,
    temporal_ensemble: float | None = None,
    progress: bool = True,
) -> EvalResult:
    """Roll ``policy`` out for ``episodes`` episodes; see :class:`EvalResult`.

    ``temporal_ensemble=m`` queries the policy every step and averages the overlapping chunk
    predictions for the current step with weights exp(-m·i), i = 0 for the oldest (ACT).
    Raises :class:`robolearn.policies.FeatureMismatchError` before any rollout when the env's
    observation or action features do not match the policy's.
    """
    from robolearn.envs import env_config as default_config
    from robolearn.envs import make_env

    cfg = env_config if env_config is not None else default_config(env_name)
    num_envs = max(1, min(num_envs, episodes))
    record = video_dir is not None and video_episodes > 0
    envs = [make_env(env_name, cfg, render_mode="rgb_array" if record else None) for _ in range(num_envs)]
    policy.check_features(env_feature_shapes(envs[0]), source=f"env {env_name}")
    policy.eval()
    keys = list(policy.input_features)
    n_obs, start, n_exec = policy.config.n_obs_steps, policy.config.exec_start, policy.config.n_action_steps
    fps = int(round(getattr(cfg, "control_hz", 20)))
    slots = [_EnvSlot(env, n_obs) for env in envs]
    seeds = iter(range(seed_base, seed_base + episodes))
    results: list[EpisodeResult] = []
    videos: list[str] = []
    latencies: list[float] = []
    started = 0
    for slot in slots:
        slot.start(next(seeds), keys, record and started < video_episodes)
        started += 1
    active = list(slots)
    bar = show_progress(total=episodes, desc=f"eval {env_name}", unit="ep", enabled=progress)
    try:
        while active:
            need = active if temporal_ensemble is not None else [s for s in active if not s.queue]
            if need:
                batch = {k: torch.stack([s.window(k) for s in need]) for k in keys}
                t0 = time.perf_counter()
                chunks = policy.predict_action_chunk(batch).cpu().numpy()
                latencies.append(time.perf_counter() - t0)
                for s, chunk in zip(need, chunks, strict=False):
                    if temporal_ensemble is None:
                        s.queue.extend(chunk[start : start + n_exec])
                    else:
                        s.ensemble.append((s.t, chunk[start:]))
            for s in list(active):
                action = s.queue.popleft() if temporal_ensemble is None else _ensembled(s, temporal_ensemble)
                obs, reward, terminated, truncated, info = s.env.step(action)
                s.t += 1
                s.ret += float(reward)
                s.push(obs, keys)
                if s.frames is not None:
                    s.frames.append(s.env.render())
                if not (terminated or truncated):
                    continue
                results.append(EpisodeResult(s.seed, bool(info["is_success"]), s.ret, s.t, s.task))
                bar.update(1)
                if s.frames is not None:
                    tag = "success" if info["is_success"] else "failure"
                    path = Path(video_dir) / f"{env_name}_seed{s.seed}_{tag}.mp4"
                    videos.append(str(write_mp4(path, s.frames, fps)))
                if started < episodes:
                    s.start(next(seeds), keys, record and started < video_episodes)
                    started += 1
                else:
                    active.remove(s)
    finally:
        bar.close()
        for env in envs:
            env.close()
    wins = sum(r.success for r in results)
    return EvalResult(
        success_rate=wins / len(results),
        ci95=wilson_interval(wins, len(results)),
        episodes=len(results),
        mean_return=float(np.mean([r.ret for r in results])),
        latency_ms=latency_summary(latencies),
        per_episode=sorted(results, key=lambda r: r.seed),
        videos=videos,
        policy_calls=len(latencies),
    )


def _ensembled(slot: _EnvSlot, m: float) -> np.ndarray:
    """ACT temporal ensembling over every stored chunk that covers the current step."""
    slot.ensemble = [(t0, c) for t0, c in slot.ensemble if slot.t - t0 < len(c)]
    preds = [c[slot.t - t0] for t0, c in slot.ensemble]
    weights = np.array([math.exp(-m * i) for i in range(len(preds))])
    return (np.stack(preds) * (weights / weights.sum())[:, None]).sum(0).astype(np.float32)
