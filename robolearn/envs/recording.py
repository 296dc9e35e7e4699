"""Turn env episodes into dataset frames: feature specs from an env, and expert rollouts.

Shared by ``robolearn collect`` (scripted experts, teleop) and the quickstart. Each recorded frame
holds the observation at t, the action taken at t, and the reward/done/success that followed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from robolearn import types
from robolearn.types import FeatureSpec


def env_features(env) -> dict[str, FeatureSpec]:
    """Dataset features (LeRobot ``info.json`` style) for what ``env`` observes and accepts."""
    from robolearn.envs.franka.env import STATE_NAMES

    feats: dict[str, FeatureSpec] = {}
    for key, space in env.observation_space.spaces.items():
        if key == types.TASK:
            continue
        if types.is_image_key(key):
            feats[key] = FeatureSpec("video", tuple(space.shape))
        elif key == types.OBS_STATE and space.shape == (len(STATE_NAMES),):
            feats[key] = FeatureSpec("float32", tuple(space.shape), STATE_NAMES)
        else:
            feats[key] = FeatureSpec("float32", tuple(space.shape))
    feats[types.ACTION] = FeatureSpec("float32", tuple(env.action_space.shape), _action_names(env))
    feats[types.REWARD] = FeatureSpec("float32", (1,))
    feats[types.DONE] = FeatureSpec("bool", (1,))
    feats[types.SUCCESS] = FeatureSpec("bool", (1,))
    return feats


def _action_names(env) -> tuple[str, ...] | None:
    if env.action_space.shape == (7,):
        return ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
    if env.action_space.shape == (8,):
        return (*(f"q{i}" for i in range(1, 8)), "gripper")
    return None


@dataclass
class Episode:
    """One recorded episode: per-frame feature arrays, its instruction and outcome."""

    seed: int
    task: str
    frames: list[dict[str, np.ndarray]] = field(default_factory=list)
    success: bool = False

    def __len__(self) -> int:
        return len(self.frames)


def frame_from(
    obs: dict, action: np.ndarray, reward: float, done: bool, success: bool
) -> dict[str, np.ndarray]:
    frame = {k: np.asarray(v) for k, v in obs.items() if k != types.TASK}
    frame[types.ACTION] = np.asarray(action, dtype=np.float32)
    frame[types.REWARD] = np.array([reward], dtype=np.float32)
    frame[types.DONE] = np.array([done])
    frame[types.SUCCESS] = np.array([success])
    return frame


def rollout(
    env,
    policy: Callable[[dict], np.ndarray],
    seed: int,
    reset_policy: Callable[[], None] | None = None,
    action_noise: float = 0.0,
) -> Episode:
    """Run ``policy`` (obs -> action) for one episode from ``reset(seed=seed)`` and record every frame.

    ``action_noise=σ`` injects DART-style noise (Laskey et al., 2017): the env executes the action
    plus N(0, σ²) on every dimension but the last (the gripper), clipped to the action space, while
    the frame records the policy's clean action. A closed-loop expert then labels the states a
    learner drifts into with the correction back, which is what imitation needs to recover. The
    noise is drawn from a generator seeded by ``seed``, so a noisy episode is reproducible.
    """
    obs, _ = env.reset(seed=seed)
    if reset_policy is not None:
        reset_policy()
    rng = np.random.default_rng([seed, 0x0DA27]) if action_noise > 0 else None
    low, high = env.action_space.low, env.action_space.high
    episode = Episode(seed=seed, task=str(obs[types.TASK]))
    while True:
        action = policy(obs)
        executed = action
        if rng is not None:
            executed = np.array(action, dtype=np.float64)
            executed[:-1] += rng.normal(0.0, action_noise, executed.shape[0] - 1)
            executed = np.clip(executed, low, high).astype(np.float32)
        next_obs, reward, terminated, truncated, info = env.step(executed)
        success = bool(info["is_success"])
        episode.frames.append(frame_from(obs, action, reward, terminated or truncated, success))
        episode.success = episode.success or success
        obs = next_obs
        if terminated or truncated:
            return episode


def expert_episodes(
    env_name: str, config, seeds: Iterator[int], action_noise: float = 0.0
) -> Iterator[Episode]:
    """Scripted-expert episodes of ``env_name``, one per seed (failed ones included, flagged).

    ``action_noise``: DART noise on the executed actions, see :func:`rollout`.
    """
    from robolearn.envs import make_env
    from robolearn.envs.experts import make_expert

    env = make_env(env_name, config)
    expert = make_expert(config)
    try:
        for seed in seeds:
            yield rollout(env, expert, seed, expert.reset, action_noise)
    finally:
        env.close()
