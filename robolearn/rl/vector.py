"""The one place RL rollouts get their vector of envs.

:func:`make_rollout_envs` returns a gymnasium ``VectorEnv``-style object, whatever the backend:

- ``reset(seed=[s0, s1, ...]) -> (obs, info)``; ``obs`` is a dict of batched arrays, one row per
  env, with ``task`` a sequence of instruction strings;
- ``step(actions (N, Da)) -> (obs, reward (N,), terminated (N,), truncated (N,), info)``, with
  gymnasium's **same-step autoreset** (``AutoresetMode.SAME_STEP``): an env whose episode ended
  returns the first observation of its next episode, and its ``info`` entries are the reset's; the
  episode's last observation is ``info["final_obs"][i]`` (an object array of per-env obs dicts, None
  where not done) and its last step's info is in ``info["final_info"]`` (batched like ``info``, with
  ``_key`` masks). :func:`step_success` reads the success flag of the step just taken either way;
- ``num_envs``, ``single_action_space``, ``single_observation_space``, ``close()``.

With ``obs_steps=To`` and ``action_steps=n`` each copy is wrapped in :class:`ChunkedEnv`: one
``step`` executes a whole (n, Da) action chunk in the worker (one message per chunk, not per env
step; the remaining actions are dropped when the episode ends inside the chunk) and observations are
the last To frames, each key (To, ...) (repeating the first frame after a reset), as policies take them.

Every backend builds its copies with :func:`env_factory`, so they run the same wrapped env. The
``process`` backend (:class:`robolearn.rl.env_pool.PooledVectorEnv` over a
:class:`robolearn.rl.env_pool.ProcessEnvPool`) runs one worker process per core (at most one per
env), each holding a contiguous block of the envs and stepping them in one message per batch: 4 envs
on 2 cores gave ~1.45× the rollout throughput of 2, as the policy call and the round trip are shared;
it returns exactly what gymnasium's ``AsyncVectorEnv`` returns for the same seeds and actions.
``num_envs=1`` or ``backend="sync"`` steps in this process (tests, debugging). The ``ray``
backend (:class:`robolearn.rl.ray_envs.RayVectorEnv`, extra ``ray``) puts the envs on Ray actors,
one per free CPU of the cluster, and returns the same data as ``process`` for the same seeds.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

BACKENDS = ("process", "sync", "ray")
"""Vector-env backends :func:`make_rollout_envs` knows."""


class ChunkedEnv(gym.Wrapper):
    """One ``step`` runs an (n, Da) action chunk; observations are windows of the last To frames.

    The reward is the sum over the executed steps. ``info`` holds ``is_success`` (the last executed
    step's), ``episode_success`` (success on some step of the episode so far) and ``env_steps`` (steps
    executed by this call)."""

    def __init__(self, env: gym.Env, obs_steps: int, action_steps: int):
        super().__init__(env)
        self.obs_steps, self.action_steps = obs_steps, action_steps
        spaces = {}
        for key, space in env.observation_space.spaces.items():
            if isinstance(space, gym.spaces.Box):
                low = np.repeat(space.low[None], obs_steps, axis=0)
                high = np.repeat(space.high[None], obs_steps, axis=0)
                spaces[key] = gym.spaces.Box(low, high, dtype=space.dtype)
            else:
                spaces[key] = space
        self.observation_space = gym.spaces.Dict(spaces)
        act = env.action_space
        low, high = np.repeat(act.low[None], action_steps, 0), np.repeat(act.high[None], action_steps, 0)
        self.action_space = gym.spaces.Box(low, high, dtype=act.dtype)
        self._frames: dict[str, deque] = {}
        self._success = False

    def _window(self) -> dict[str, Any]:
        return {k: (np.stack(v) if not isinstance(v[0], str) else v[-1]) for k, v in self._frames.items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._frames = {k: deque([v] * self.obs_steps, maxlen=self.obs_steps) for k, v in obs.items()}
        self._success = False
        return self._window(), {**info, "episode_success": False, "env_steps": 0}

    def step(self, action):
        total, info = 0.0, {}
        terminated = truncated = False
        steps = 0
        for a in np.asarray(action).reshape(self.action_space.shape):
            obs, reward, terminated, truncated, info = self.env.step(a)
            steps += 1
            total += float(reward)
            self._success = self._success or bool(info.get("is_success", False))
            for k, v in obs.items():
                self._frames[k].append(v)
            if terminated or truncated:
                break
        info = {**info, "episode_success": self._success, "env_steps": steps}
        return self._window(), total, terminated, truncated, info


@dataclass(frozen=True)
class env_factory:  # noqa: N801 - used like a function: env_factory(name, cfg, To, n)()
    """A picklable builder of one rollout env copy (backends send it to their workers): registered env
    ``env_name`` built from ``env_config``, wrapped in :class:`ChunkedEnv` unless both sizes are 1."""

    env_name: str
    env_config: Any
    obs_steps: int = 1
    action_steps: int = 1

    def __call__(self) -> gym.Env:
        from robolearn.envs import make_env

        env = make_env(self.env_name, self.env_config)
        if self.obs_steps == 1 and self.action_steps == 1:
            return env
        return ChunkedEnv(env, self.obs_steps, self.action_steps)


def make_rollout_envs(
    env_name: str,
    env_config: Any,
    num_envs: int,
    backend: str = "process",
    ray_address: str | None = None,
    *,
    obs_steps: int = 1,
    action_steps: int = 1,
):
    """``num_envs`` copies of registered env ``env_name`` built from ``env_config``, batched as
    described in the module docstring. ``backend``: ``process`` (one worker process per core,
    at most ``num_envs``, each holding a block of envs), ``sync`` (all in this process), ``ray`` (Ray actors; ``ray_address``: ``auto`` or a cluster
    address, see :func:`robolearn.rl.ray_envs.init_ray`; Ray stays up for the caller to shut down). Raises ``ValueError`` for an unknown backend or ``num_envs < 1``."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, found {num_envs}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown rollout backend {backend!r} (known: {', '.join(BACKENDS)})")
    mode = gym.vector.AutoresetMode.SAME_STEP
    if backend == "ray":
        # Ray actors, one CPU each holding a block of envs; the learner stays in this process.
        from robolearn.rl.ray_envs import RayVectorEnv, init_ray

        init_ray(ray_address or "auto")
        # Chunked copies are built in the actors by the same env_factory as the other backends.
        chunked = {} if (obs_steps, action_steps) == (1, 1) else {
            "env_factory": env_factory(env_name, env_config, obs_steps, action_steps)}  # fmt: skip
        return RayVectorEnv(env_name, env_config, num_envs, autoreset_mode=mode, **chunked)
    factory = env_factory(env_name, env_config, obs_steps, action_steps)
    if backend == "sync" or num_envs == 1:
        return gym.vector.SyncVectorEnv([factory] * num_envs, autoreset_mode=mode)
    from robolearn.rl.env_pool import PooledVectorEnv, ProcessEnvPool

    # One worker per core, several envs each: more envs than cores share workers, not processes.
    pool = ProcessEnvPool(factory, num_envs, num_workers=min(num_envs, os.cpu_count() or 1))
    return PooledVectorEnv(pool, num_envs, autoreset_mode=mode)


def step_success(info: dict, done: np.ndarray) -> np.ndarray:
    """(N,) bool: ``is_success`` of the step just taken, from ``final_info`` where ``done`` (N,)."""
    success = np.asarray(info.get("is_success", np.zeros(len(done), bool)), dtype=bool).copy()
    final = info.get("final_info")
    if final is not None and "is_success" in final:
        mask = np.asarray(final.get("_is_success", done), dtype=bool) & np.asarray(done, dtype=bool)
        success[mask] = np.asarray(final["is_success"], dtype=bool)[mask]
    return success


__all__ = ["BACKENDS", "ChunkedEnv", "env_factory", "make_rollout_envs", "step_success"]
