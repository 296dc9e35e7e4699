"""Record episodes of any gymnasium env into a LeRobot v3.0 dataset, from Python.

This is what ``robolearn collect`` does, as one call for your own env and your own scripted
policy::

    from robolearn.data import record_episodes

    summary = record_episodes(env, policy, "datasets/my-task", episodes=100)

The env follows robolearn's conventions (see ``robolearn envs``): a ``Dict`` observation with
``observation.state`` and optional ``observation.environment_state`` vectors,
``observation.images.<camera>`` uint8 (H, W, 3) images and a ``task`` instruction string, a ``Box``
action, and ``info["is_success"]`` on every step. A registered env (``robolearn.register_env``)
also records its name and config in ``info.json``, so ``train``/``eval`` know where the data came
from.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class RecordSummary:
    """What :func:`record_episodes` wrote."""

    episodes: int
    """Episodes saved by this call."""
    frames: int
    """Frames saved by this call."""
    attempts: int
    """Episodes rolled out (failed ones included)."""
    success_rate: float
    """Share of attempts whose success still held on their last frame."""
    seeds: list[int] = field(default_factory=list)
    """Seed of every saved episode (each episode's ``reset(seed=...)``)."""
    seconds: float = 0.0


def record_episodes(
    env,
    policy: Callable[[dict], np.ndarray],
    out: str | Path,
    episodes: int,
    *,
    seed: int | None = None,
    env_name: str | None = None,
    fps: float | None = None,
    robot_type: str | None = None,
    action_noise: float = 0.0,
    post_success_steps: int | None = None,
    keep_failed: bool = False,
    max_attempts: int | None = None,
) -> RecordSummary:
    """Roll ``policy`` (obs dict -> action) out in ``env`` and save the episodes into dataset ``out``.

    - A new ``out`` is created; an existing one is appended to, continuing after its largest seed
      (``seed`` sets the first one; a seed already in the dataset raises ``ValueError`` naming the
      episode). Episodes are committed one by one: an interruption keeps every saved episode.
    - Only episodes whose success holds on their last frame are saved unless ``keep_failed``.
    - ``policy.reset()`` is called before each episode when it exists.
    - ``post_success_steps`` frames are recorded past the first success (default
      ``robolearn.envs.recording.POST_SUCCESS_STEPS``) when the env's config has
      ``terminate_on_success``; ``action_noise`` is DART noise on the executed actions (the
      dataset keeps the policy's clean label as ``action`` and the executed action as
      ``action.executed``), see :func:`robolearn.envs.recording.rollout`.
    - ``env_name`` (default: the env's registry name when it was made by ``robolearn.make_env``)
      and its config go into ``info.json``; ``fps`` defaults to ``env.metadata["render_fps"]`` or
      the config's ``control_hz``.
    """
    from robolearn.config import to_dict
    from robolearn.data.writer import LeRobotWriter
    from robolearn.envs.recording import POST_SUCCESS_STEPS, env_features, rollout

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, found {episodes}")
    out = Path(out)
    config = getattr(env.unwrapped, "config", None)
    env_name = env_name or getattr(env.unwrapped, "registry_name", None)
    features = env_features(env, executed_action=action_noise > 0)
    rate = fps or (env.metadata or {}).get("render_fps") or getattr(config, "control_hz", None)
    if not rate:
        raise ValueError("the env reports no control rate: pass fps= (or set metadata['render_fps'])")
    if (out / "meta" / "info.json").is_file():
        writer = LeRobotWriter.open(out)
        mismatched = sorted(k for k in set(writer.features) | set(features)
                            if _spec(writer.features.get(k)) != _spec(features.get(k)))  # fmt: skip
        if mismatched:
            raise ValueError(
                f"{out}: feature {mismatched[0]!r} differs from this env's; record into a new folder"
            )
    else:
        env_config = to_dict(config) if dataclasses.is_dataclass(config) else None
        writer = LeRobotWriter(out, fps=int(round(rate)), features=features, robot_type=robot_type,
                               env=env_name, env_config=env_config if env_name else None)  # fmt: skip
    taken = writer.seeds or {}
    next_seed = seed if seed is not None else (max(taken) + 1 if taken else 0)
    post = POST_SUCCESS_STEPS if post_success_steps is None else post_success_steps
    reset = getattr(policy, "reset", None)
    limit = max_attempts if max_attempts is not None else 3 * episodes + 20
    summary = RecordSummary(0, 0, 0, 0.0)
    start = time.perf_counter()
    wins = 0
    with writer:
        while summary.episodes < episodes and summary.attempts < limit:
            if next_seed in taken:
                raise ValueError(
                    f"{out}: seed {next_seed} is already in the dataset (episode {taken[next_seed]})"
                )
            episode = rollout(env, policy, next_seed, reset, action_noise, post)
            summary.attempts += 1
            wins += episode.success
            if episode.success or keep_failed:
                for frame in episode.frames:
                    writer.add_frame(frame, task=episode.task)
                writer.save_episode(seed=episode.seed)
                summary.episodes += 1
                summary.frames += len(episode)
                summary.seeds.append(episode.seed)
            next_seed += 1
    summary.success_rate = wins / summary.attempts
    summary.seconds = time.perf_counter() - start
    return summary


def _spec(spec: Any) -> tuple | None:
    return None if spec is None else (spec.dtype, tuple(spec.shape))


__all__ = ["RecordSummary", "record_episodes"]
