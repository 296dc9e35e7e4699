"""Turn env episodes into dataset frames: feature specs from an env, and expert rollouts.

Shared by ``robolearn collect`` (scripted experts, teleop) and the quickstart. Each recorded frame
holds the observation at t, the action taken at t, and the reward/done/success that followed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from robolearn import types
from robolearn.types import FeatureSpec


def env_features(env, executed_action: bool = False) -> dict[str, FeatureSpec]:
    """Dataset features (LeRobot ``info.json`` style) for what ``env`` observes and accepts.

    Vector features carry their element names where the env's config declares them (see
    :mod:`robolearn.envs.catalog`). ``executed_action``: also ``action.executed``, the action the
    env executed when it differs from the recorded label (DART noise, :func:`rollout`).
    """
    from robolearn.envs.catalog import feature_names

    names = feature_names(env)
    feats: dict[str, FeatureSpec] = {}
    for key, space in env.observation_space.spaces.items():
        if key == types.TASK:
            continue
        if types.is_image_key(key):
            feats[key] = FeatureSpec("video", tuple(space.shape))
        elif key == types.OBS_SIM_STATE:  # float64: a float32 state would not replay the sim exactly
            feats[key] = FeatureSpec("float64", tuple(space.shape))
        else:
            feats[key] = FeatureSpec("float32", tuple(space.shape), names.get(key))
    feats[types.ACTION] = FeatureSpec("float32", tuple(env.action_space.shape), names.get(types.ACTION))
    if executed_action:
        feats[types.ACTION_EXECUTED] = FeatureSpec(
            "float32", tuple(env.action_space.shape), names.get(types.ACTION)
        )
    feats[types.REWARD] = FeatureSpec("float32", (1,))
    feats[types.DONE] = FeatureSpec("bool", (1,))
    feats[types.SUCCESS] = FeatureSpec("bool", (1,))
    return feats


POST_SUCCESS_STEPS = 25
"""Frames :func:`rollout` (and so ``robolearn collect``) records past an episode's first success by
default, so demos show what to do once the task is done; a little more than ``eval``'s default hold
of 20 steps, the horizon over which a learned policy is then judged."""


@dataclass
class Episode:
    """One recorded episode: per-frame feature arrays, its instruction and outcome."""

    seed: int
    task: str
    frames: list[dict[str, np.ndarray]] = field(default_factory=list)
    success: bool = False
    """Whether the task is achieved at the last frame: the outcome ``collect`` saves episodes on, so
    a demo that reached the goal and then lost it again does not count."""
    first_success: int | None = None
    """Index of the first frame whose ``next.success`` is true; None if success was never reached."""

    def __len__(self) -> int:
        return len(self.frames)


def frame_from(
    obs: dict,
    action: np.ndarray,
    reward: float,
    done: bool,
    success: bool,
    executed: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """One dataset frame: ``obs`` at t, the ``action`` label, what followed; ``executed``: the action
    the env executed where it differs from the label (stored as ``action.executed``)."""
    frame = {k: np.asarray(v) for k, v in obs.items() if k != types.TASK}
    frame[types.ACTION] = np.asarray(action, dtype=np.float32)
    if executed is not None:
        frame[types.ACTION_EXECUTED] = np.asarray(executed, dtype=np.float32)
    frame[types.REWARD] = np.array([reward], dtype=np.float32)
    frame[types.DONE] = np.array([done])
    frame[types.SUCCESS] = np.array([success])
    return frame


@contextmanager
def _running_past_success(env) -> Iterator[None]:
    """Switch off the env's own end-of-episode on success (``config.terminate_on_success``, which
    every registered env has) for the duration of one rollout, and restore it after."""
    config = getattr(env.unwrapped, "config", None)
    if not getattr(config, "terminate_on_success", False):
        yield
        return
    try:
        config.terminate_on_success = False
    except AttributeError:  # a frozen config: the env keeps ending the episode on success
        yield
        return
    try:
        yield
    finally:
        config.terminate_on_success = True


def rollout(
    env,
    policy: Callable[[dict], np.ndarray],
    seed: int,
    reset_policy: Callable[[], None] | None = None,
    action_noise: float = 0.0,
    post_success_steps: int | None = POST_SUCCESS_STEPS,
) -> Episode:
    """Run ``policy`` (obs -> action) for one episode from ``reset(seed=seed)`` and record every frame.

    ``post_success_steps=N``: the episode runs on past its first success and ends N frames after
    it (the frame of the first success is followed by N more), or earlier where the env ends it
    (its step cap); the last frame is marked done. The env's ``terminate_on_success`` is switched
    off meanwhile, so the demo shows what to do once the task is done: hold, let go, back off. A
    custom env that ends the episode on success by itself still ends it there. ``None`` runs until
    the env ends the episode, on its own terms. ``Episode.success`` is success at the last frame.

    ``action_noise=σ`` injects DART-style noise (Laskey et al., 2017): the env executes the action
    plus N(0, σ²) on every dimension but the last (the gripper), clipped to the action space, while
    the frame records the policy's clean action as ``action`` and the executed one as
    ``action.executed`` (what an offline RL critic learns from; see ``env_features(executed_action=)``).
    A closed-loop expert then labels the states a learner drifts into with the correction back,
    which is what imitation needs to recover. The noise is drawn from a generator seeded by ``seed``, so a noisy episode is reproducible.
    """
    if post_success_steps is not None and post_success_steps < 0:
        raise ValueError(f"post_success_steps must be >= 0 or None, found {post_success_steps}")
    with _running_past_success(env) if post_success_steps is not None else nullcontext():
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
            t = len(episode.frames)
            if success and episode.first_success is None:
                episode.first_success = t
            done = terminated or truncated
            if post_success_steps is not None and episode.first_success is not None:
                done = done or t - episode.first_success >= post_success_steps
            episode.frames.append(
                frame_from(obs, action, reward, done, success, executed if rng is not None else None)
            )
            obs = next_obs
            if done:
                episode.success = success
                return episode


def expert_episodes(
    env_name: str,
    config,
    seeds: Iterator[int],
    action_noise: float = 0.0,
    post_success_steps: int | None = POST_SUCCESS_STEPS,
) -> Iterator[Episode]:
    """Scripted-expert episodes of ``env_name``, one per seed (failed ones included, flagged).

    ``action_noise``: DART noise on the executed actions; ``post_success_steps``: frames recorded
    past the first success; see :func:`rollout`.
    """
    from robolearn.envs import make_env
    from robolearn.envs.experts import make_expert

    env = make_env(env_name, config)
    expert = make_expert(config)
    try:
        for seed in seeds:
            yield rollout(env, expert, seed, getattr(expert, "reset", None), action_noise, post_success_steps)
    finally:
        env.close()
