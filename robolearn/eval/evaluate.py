"""Closed-loop rollouts of a policy in a registered env, batched across several env copies.

Each env copy runs whole episodes from its own seeds; the policy is queried in one batch for every
env whose action queue ran dry (or every step with temporal ensembling), so the latency figures are
per policy call. Seeds start at :data:`robolearn.eval.EVAL_SEED_BASE`, disjoint from the demos.

Two success figures, because a policy can reach success and then lose it (drop the cube, push it
past the goal). The env is built with ``terminate_on_success=False`` and an episode ends
``hold_steps`` steps after its first success, at the env's own end (its step cap, a truncation or a
termination), whichever comes first:

- **first success**: ``info["is_success"]`` was true on some step (``EpisodeResult.success``,
  ``first_success_step`` counts the steps taken up to and including it);
- **held**: ``info["is_success"]`` is true on the episode's final step (``EpisodeResult.held``).

An episode's ``length`` counts every step taken, the hold steps included, and ``ret`` sums the
reward of all of them. ``hold_steps=0`` is the old protocol: the episode stops at its first
success, so held equals first success and length and return end there.

The policy's sampling noise is seeded from ``seed_base`` as well (the caller's torch RNG state is
restored after), so a stochastic policy evaluated twice on the same seeds gives the same results.

``record_dir`` writes every rollout as a LeRobot v3.0 dataset (``eval --record``), in the order
episodes finish, each with its seed: per frame the observation, the executed ``action``,
``next.reward``, ``next.done`` and ``next.success`` (the data a critic trains on, see
:mod:`robolearn.rl.critic_train`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robolearn import types
from robolearn.envs.recording import frame_from
from robolearn.eval import EVAL_SEED_BASE
from robolearn.eval.metrics import latency_summary, wilson_interval
from robolearn.eval.video import write_mp4
from robolearn.progress import progress as show_progress


@dataclass
class EpisodeResult:
    """One evaluation episode (see the module docstring for what the fields count)."""

    seed: int
    success: bool
    """Success was reached on some step (first success)."""
    ret: float
    """Sum of the rewards of every step taken, hold steps included."""
    length: int
    """Steps taken, hold steps included."""
    task: str
    first_success_step: int | None = None
    """Steps taken when success was first reached (1-based); None when it never was."""
    held: bool = False
    """``info["is_success"]`` on the episode's final step."""


@dataclass
class EvalResult:
    """Both success figures with 95% Wilson intervals, mean return, latency per policy call."""

    success_rate: float
    """Share of episodes that reached success at least once (first success)."""
    ci95: tuple[float, float]
    held_success_rate: float
    """Share of episodes still successful on their final step, ``hold_steps`` after the first success."""
    held_ci95: tuple[float, float]
    hold_steps: int
    """Steps each episode ran past its first success (fewer where the env ended it sooner)."""
    episodes: int
    mean_return: float
    latency_ms: dict[str, float]
    per_episode: list[EpisodeResult] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    policy_calls: int = 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci95"] = list(self.ci95)
        out["held_ci95"] = list(self.held_ci95)
        return out


def env_feature_shapes(env) -> dict[str, tuple[int, ...]]:
    """Observation key -> per-frame shape the env produces, plus ``action``."""
    shapes = {k: tuple(s.shape) for k, s in env.observation_space.spaces.items() if k != types.TASK}
    shapes[types.ACTION] = tuple(env.action_space.shape)
    return shapes


def policy_env_config(
    policy, env_name: str, preset: str | Path | None = None, overrides: Iterable[str] = (),
    cameras: Iterable[str] | None = None,
) -> Any:  # fmt: skip
    """The config of env ``env_name`` for evaluating ``policy``: registry defaults, ``preset``,
    ``overrides``, then the cameras the policy consumes (or ``cameras``) at the policy's image size.
    Raises ``robolearn.config.ConfigError`` for a bad override, ``KeyError`` for an unknown env."""
    from robolearn.envs import env_config

    image_keys = [k for k in policy.input_features if types.is_image_key(k)]
    prefix = len(types.OBS_IMAGE_PREFIX)
    cams = tuple(cameras) if cameras is not None else tuple(k[prefix:] for k in image_keys)
    fields: dict[str, Any] = {"cameras": cams}
    if image_keys:
        _, h, w = policy.input_features[image_keys[0]]
        fields["image_size"] = (h, w)
    return env_config(env_name, preset, overrides, **fields)


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
        self.first: int | None = None
        self.ret = 0.0
        self.frames: list[np.ndarray] | None = None
        self.task = ""
        self.obs: dict = {}
        self.steps: list[dict] | None = None

    def start(self, seed: int, keys: list[str], record: bool) -> None:
        obs, _ = self.env.reset(seed=seed)
        self.seed, self.t, self.first, self.ret, self.task = seed, 0, None, 0.0, str(obs[types.TASK])
        self.obs = obs
        if self.steps is not None:
            self.steps = []
        self.queue.clear()
        self.ensemble.clear()
        frame = _frame_tensors(obs, keys)
        self.history = {k: deque([v] * self.n_obs, maxlen=self.n_obs) for k, v in frame.items()}
        self.frames = [self.env.render()] if record else None

    def push(self, obs: dict, keys: list[str]) -> None:
        self.obs = obs
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
    hold_steps: int = 20,
    record_dir: str | Path | None = None,
    ray_address: str | None = None,
) -> EvalResult:
    """Roll ``policy`` out for ``episodes`` episodes; see :class:`EvalResult`.

    ``env_config`` defaults to :func:`policy_env_config` (the cameras the policy consumes); its
    ``terminate_on_success`` is set to False, and each episode runs ``hold_steps`` past its first
    success (module docstring). Videos (``video_dir``) work for any policy: the env renders its
    front view when the policy consumes no camera. ``temporal_ensemble=m`` queries the policy
    every step and averages the overlapping chunk predictions for the current step with weights
    exp(-m·i), i = 0 for the oldest (ACT). ``record_dir``: write the rollouts there as a dataset (a
    new or empty folder; module docstring).
    ``ray_address`` (``auto`` or a cluster address) runs the env copies on Ray actors
    (:class:`robolearn.rl.ray_envs.RayEnvPool`) and steps them all at once; the policy stays here and
    the results equal the in-process ones. Ray stays up when it already was, else it is shut down.
    Raises :class:`robolearn.policies.FeatureMismatchError` before any rollout when the env's
    observation or action features do not match the policy's.
    """
    from robolearn.envs import make_env

    if hold_steps < 0:
        raise ValueError(f"hold_steps must be >= 0, found {hold_steps}")
    cfg = env_config if env_config is not None else policy_env_config(policy, env_name)
    if not hasattr(cfg, "terminate_on_success"):
        raise ValueError(f"env {env_name}: {type(cfg).__name__} has no terminate_on_success field")
    # The episode's end is decided here (hold_steps past the first success), never by the env.
    cfg = dataclasses.replace(cfg, terminate_on_success=False)
    if record_dir is not None:
        _check_record_dir(record_dir)
    num_envs = max(1, min(num_envs, episodes))
    record = video_dir is not None and video_episodes > 0
    # render_mode only when filming: a user's env need not take the argument otherwise.
    render = {"render_mode": "rgb_array"} if record else {}
    pool, owns_ray = _ray_pool(ray_address, env_name, cfg, num_envs, render) if ray_address else (None, False)
    envs = pool.envs() if pool is not None else [make_env(env_name, cfg, **render) for _ in range(num_envs)]
    policy.check_features(env_feature_shapes(envs[0]), source=f"env {env_name}")
    policy.eval()
    keys = list(policy.input_features)
    n_obs, start, n_exec = policy.config.n_obs_steps, policy.config.exec_start, policy.config.n_action_steps
    fps = int(round(envs[0].metadata.get("render_fps") or getattr(cfg, "control_hz", 20)))
    slots = [_EnvSlot(env, n_obs) for env in envs]
    writer = _record_writer(record_dir, envs[0], env_name, cfg, fps) if record_dir is not None else None
    for slot in slots:
        slot.steps = [] if writer is not None else None
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
    # The policy's own sampling noise (a flow's x_0, a diffusion chain) is seeded from seed_base too,
    # so the same checkpoint on the same seeds gives the same figures; the caller's RNG is restored.
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed_base)
        try:
            while active:
                need = active if temporal_ensemble is not None else [s for s in active if not s.queue]
                if need:
                    batch: dict[str, Any] = {k: torch.stack([s.window(k) for s in need]) for k in keys}
                    # the instruction, for language-conditioned policies (VLAs)
                    batch[types.TASK] = [s.task for s in need]
                    t0 = time.perf_counter()
                    chunks = policy.predict_action_chunk(batch).cpu().numpy()
                    latencies.append(time.perf_counter() - t0)
                    for s, chunk in zip(need, chunks, strict=False):
                        if temporal_ensemble is None:
                            s.queue.extend(chunk[start : start + n_exec])
                        else:
                            s.ensemble.append((s.t, chunk[start:]))
                stepping = list(active)
                actions = [s.queue.popleft() if temporal_ensemble is None else _ensembled(s, temporal_ensemble)
                           for s in stepping]  # fmt: skip
                # Every env steps before any is looked at, so Ray actors work at once; each env still
                # sees the same calls in the same order as when stepped one by one.
                if pool is not None:
                    outcomes = pool.step_each([s.env.index for s in stepping], actions)
                else:
                    outcomes = [s.env.step(a) for s, a in zip(stepping, actions, strict=True)]
                for s, action, outcome in zip(stepping, actions, outcomes, strict=True):
                    before = s.obs
                    obs, reward, terminated, truncated, info = outcome
                    s.t += 1
                    s.ret += float(reward)
                    s.push(obs, keys)
                    if s.frames is not None:
                        s.frames.append(s.env.render())
                    held = bool(info["is_success"])
                    if held and s.first is None:
                        s.first = s.t
                    ended = terminated or truncated or (s.first is not None and s.t - s.first >= hold_steps)
                    if s.steps is not None:
                        s.steps.append(frame_from(before, action, float(reward), ended, held))
                    if not ended:
                        continue
                    if writer is not None:
                        for frame in s.steps:
                            writer.add_frame(frame, task=s.task)
                        writer.save_episode(seed=s.seed)
                    results.append(
                        EpisodeResult(s.seed, s.first is not None, s.ret, s.t, s.task, s.first, held)
                    )
                    bar.update(1)
                    if s.frames is not None:
                        tag = "held" if held else ("lost" if s.first is not None else "failure")
                        path = Path(video_dir) / f"{env_name}_seed{s.seed}_{tag}.mp4"
                        videos.append(str(write_mp4(path, s.frames, fps)))
                    if started < episodes:
                        s.start(next(seeds), keys, record and started < video_episodes)
                        started += 1
                    else:
                        active.remove(s)
        finally:
            bar.close()
            if writer is not None:
                writer.finalize()
            for env in envs:
                env.close()
            if pool is not None:
                pool.close()
                if owns_ray:
                    import ray

                    ray.shutdown()
    wins, kept, n = sum(r.success for r in results), sum(r.held for r in results), len(results)
    return EvalResult(
        success_rate=wins / n,
        ci95=wilson_interval(wins, n),
        held_success_rate=kept / n,
        held_ci95=wilson_interval(kept, n),
        hold_steps=hold_steps,
        episodes=n,
        mean_return=float(np.mean([r.ret for r in results])),
        latency_ms=latency_summary(latencies),
        per_episode=sorted(results, key=lambda r: r.seed),
        videos=videos,
        policy_calls=len(latencies),
    )


def _ray_pool(address: str, env_name: str, cfg: Any, num_envs: int, env_kwargs: dict[str, Any]):
    """``num_envs`` env copies on Ray actors, and whether this call brought Ray up (extra ``ray``)."""
    from robolearn.rl.ray_envs import RayEnvPool, init_ray

    owns = init_ray(address)
    try:
        return RayEnvPool(env_name, cfg, num_envs, env_kwargs=env_kwargs), owns
    except BaseException:
        if owns:
            import ray

            ray.shutdown()
        raise


def _check_record_dir(root: str | Path) -> None:
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"--record {root}: exists and is not empty; record into a new folder")


def _record_writer(root: str | Path, env, env_name: str, cfg: Any, fps: int):
    """A writer on a new (or empty) dataset folder ``root`` for ``env``'s frames."""
    from robolearn.config import to_dict
    from robolearn.data.writer import LeRobotWriter
    from robolearn.envs.catalog import robot_type
    from robolearn.envs.recording import env_features

    _check_record_dir(root)
    env_config = to_dict(cfg) if dataclasses.is_dataclass(cfg) else None
    return LeRobotWriter(root, fps=fps, features=env_features(env), robot_type=robot_type(cfg), env=env_name,
                         env_config=env_config)  # fmt: skip


def _ensembled(slot: _EnvSlot, m: float) -> np.ndarray:
    """ACT temporal ensembling over every stored chunk that covers the current step."""
    slot.ensemble = [(t0, c) for t0, c in slot.ensemble if slot.t - t0 < len(c)]
    preds = [c[slot.t - t0] for t0, c in slot.ensemble]
    weights = np.array([math.exp(-m * i) for i in range(len(preds))])
    return (np.stack(preds) * (weights / weights.sum())[:, None]).sum(0).astype(np.float32)
