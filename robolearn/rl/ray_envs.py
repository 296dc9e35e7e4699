"""Env copies on Ray actors, for rollouts and evaluation that scale past one machine.

The learner (or the evaluating policy) stays in the caller's process; only the envs move. Each
actor (:class:`robolearn.rl.env_pool.EnvWorker`, one CPU) holds several env copies, so a batched
step costs one round trip per actor, not per env: a round trip on a local instance took ~1 ms here
against ~0.3 ms for an embedded-sim step. Two views over the same actors:

- :class:`RayVectorEnv` — :class:`robolearn.rl.env_pool.PooledVectorEnv` over a :class:`RayEnvPool`, a
  gymnasium ``VectorEnv`` that behaves exactly like ``AsyncVectorEnv`` (and like the ``process``
  backend's :class:`robolearn.rl.env_pool.ProcessEnvPool`), so the same seeds and actions give the same data;
- :class:`RayEnvPool` — indexable env handles (:class:`RemoteEnv`) plus :meth:`RayEnvPool.step_each`,
  for loops that manage each env themselves (``robolearn eval``).

Actors build their envs with :func:`robolearn.envs.make_env` after :func:`robolearn.envs.load_plugins`,
so an env registered by a plugin works as it does with ``collect --workers``; on a remote cluster,
robolearn (and any plugin) must be installed on the worker nodes. :func:`init_ray` connects
(``auto``: a running cluster, else a local instance with one CPU per core). Ray binds its
services to this machine's address, never to loopback alone (it rewrites 127.0.0.1 itself).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import ray
from gymnasium.vector import AutoresetMode

from robolearn.rl.env_pool import EnvWorker, PooledVectorEnv

PLACE_TIMEOUT_S = 300.0
"""How long to wait for Ray to place and start every env actor before giving up."""


def init_ray(address: str = "auto", num_cpus: int | None = None) -> bool:
    """Make sure this process is a Ray driver. ``address``: ``auto`` joins the cluster that
    ``ray start`` runs on this machine (or ``$RAY_ADDRESS``), else starts a local instance
    (``num_cpus``, default one per core, no dashboard); anything else is a cluster address
    (``HOST:PORT`` or ``ray://HOST:PORT``).

    Returns True when this call connected or started Ray, so the caller should ``ray.shutdown()``
    when done (which stops a local instance it started and only disconnects from a cluster); False
    when Ray was already initialized here. Raises ``ConnectionError`` when the address answers no Ray.
    """
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "include_dashboard": False}
    if address == "auto":
        try:
            ray.init(address="auto", **quiet)
        except ConnectionError:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **quiet)
        return True
    _probe(address)
    ray.init(address=address, **quiet)
    return True


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast where nothing listens at ``address``: ``ray.init`` retries a dead GCS for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not a Ray address (HOST:PORT, ray://HOST:PORT or auto): {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster answers at {host}:{port} ({exc.strerror or exc})") from None


@contextmanager
def ray_session(address: str) -> Iterator[None]:
    """For commands' ``--ray ADDRESS``: :func:`init_ray` for the block, shut down after it when this
    call brought Ray up. A Ray that cannot be reached raises :class:`robolearn.errors.UserError`."""
    from robolearn.errors import UserError

    try:
        owns = init_ray(address)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"--ray {address}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    try:
        yield
    finally:
        if owns:
            ray.shutdown()


_RemoteWorker = ray.remote(num_cpus=1)(EnvWorker)


class RayEnvPool:
    """``num_envs`` copies of env ``env_name`` spread evenly over ``num_workers`` Ray actors.

    ``num_workers`` defaults to one per CPU Ray has free (at most ``num_envs``); each actor takes
    one CPU; the envs go to them in contiguous blocks (``np.array_split``). Each copy is
    ``make_env(env_name, env_config, **env_kwargs)``, or ``env_factory()`` when given (a picklable
    zero-argument builder, e.g. :class:`robolearn.rl.vector.env_factory` with its wrappers). Ray must be
    initialized (:func:`init_ray`). Raises ``RuntimeError`` when the actors
    cannot be placed within :data:`PLACE_TIMEOUT_S`; an env that fails to build raises the env's
    own exception (wrapped by Ray).
    """

    def __init__(
        self,
        env_name: str,
        env_config: Any = None,
        num_envs: int = 1,
        num_workers: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
        env_factory: Callable[[], Any] | None = None,
    ):
        from robolearn.envs import env_config as default_config
        from robolearn.envs import make_env

        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, found {num_envs}")
        if not ray.is_initialized():
            raise RuntimeError(
                "RayEnvPool: Ray is not initialized; call robolearn.rl.ray_envs.init_ray first"
            )
        cfg = env_config if env_config is not None else default_config(env_name)
        if num_workers is None:
            num_workers = int(ray.available_resources().get("CPU", 1))
        num_workers = max(1, min(num_workers, num_envs))
        sizes = [len(block) for block in np.array_split(np.arange(num_envs), num_workers)]
        self.num_envs, self.env_name, self.config = num_envs, env_name, cfg
        factory = env_factory or partial(make_env, env_name, cfg, **dict(env_kwargs or {}))
        self.workers = [_RemoteWorker.remote(factory, n) for n in sizes]
        self._where = [(w, j) for w, n in enumerate(sizes) for j in range(n)]
        try:
            ray.get([w.pid.remote() for w in self.workers], timeout=PLACE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            cpus = ray.available_resources().get("CPU", 0)
            self.close()
            raise RuntimeError(
                f"Ray could not start {num_workers} env actors (1 CPU each) within {PLACE_TIMEOUT_S:.0f} s; "
                f"the cluster has {cpus:g} CPUs free"
            ) from None
        except BaseException:
            self.close()
            raise
        spec = ray.get(self.workers[0].describe.remote())
        self.observation_space = spec["observation_space"]
        self.action_space = spec["action_space"]
        self.metadata: dict[str, Any] = spec["metadata"]
        self.render_mode: str | None = spec["render_mode"]

    def run(self, ops: Sequence[tuple[str, int, Any]]) -> list[Any]:
        """``(kind, env index, arg)`` ops (:class:`EnvWorker`) -> their results, in order; one
        call per actor involved, all actors working at once."""
        per_worker: dict[int, list[tuple[str, int, Any]]] = {}
        slots: dict[int, list[int]] = {}
        for k, (kind, i, arg) in enumerate(ops):
            w, j = self._where[i]
            per_worker.setdefault(w, []).append((kind, j, arg))
            slots.setdefault(w, []).append(k)
        refs = {w: self.workers[w].run.remote(batch) for w, batch in per_worker.items()}
        out: list[Any] = [None] * len(ops)
        for w, results in zip(refs, ray.get(list(refs.values())), strict=True):
            for k, result in zip(slots[w], results, strict=True):
                out[k] = _writable(result)
        return out

    def step_each(self, indices: Sequence[int], actions: Sequence[Any]) -> list[tuple]:
        """Step env ``indices[k]`` with ``actions[k]`` (no autoreset), all at once; the step results."""
        return self.run([("step", i, a) for i, a in zip(indices, actions, strict=True)])

    def envs(self) -> list[RemoteEnv]:
        """One gymnasium-like handle per env copy."""
        return [RemoteEnv(self, i) for i in range(self.num_envs)]

    def pids(self) -> list[int]:
        """The actors' process ids."""
        return ray.get([w.pid.remote() for w in self.workers])

    def close(self) -> None:
        """Close the envs and end the actors (idempotent)."""
        workers, self.workers = getattr(self, "workers", []), []
        if workers:
            try:
                ray.get([w.close.remote() for w in workers], timeout=30)
            except Exception:  # noqa: BLE001 - a dead or stuck actor is killed below all the same
                pass
        for w in workers:
            ray.kill(w)


def _writable(value: Any) -> Any:
    """``value`` with its numpy arrays writable, as a local env returns them: Ray hands arrays back
    as read-only views of its transfer buffer (torch warns on those, in-place edits fail)."""
    if isinstance(value, np.ndarray):
        return value if value.flags.writeable or value.dtype == object else value.copy()
    if isinstance(value, dict):
        return {k: _writable(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_writable(v) for v in value)
    if isinstance(value, list):
        return [_writable(v) for v in value]
    return value


class RemoteEnv:
    """One env copy of a :class:`RayEnvPool`, with the gymnasium calls a per-env loop needs."""

    def __init__(self, pool: RayEnvPool, index: int):
        self.pool, self.index = pool, index
        self.observation_space, self.action_space = pool.observation_space, pool.action_space
        self.metadata, self.render_mode = pool.metadata, pool.render_mode
        # What recorders read off ``env.unwrapped`` (robolearn.envs.catalog.config_of).
        self.config, self.registry_name = pool.config, pool.env_name

    @property
    def unwrapped(self) -> RemoteEnv:
        return self

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """``env.reset`` on the actor."""
        return self.pool.run([("reset", self.index, {"seed": seed, "options": options})])[0]

    def step(self, action: Any) -> tuple:
        """``env.step`` on the actor (one round trip; :meth:`RayEnvPool.step_each` batches)."""
        return self.pool.run([("step", self.index, action)])[0]

    def render(self) -> Any:
        """``env.render`` on the actor."""
        return self.pool.run([("render", self.index, None)])[0]

    def close(self) -> None:
        """Nothing per env: :meth:`RayEnvPool.close` closes them all."""


class RayVectorEnv(PooledVectorEnv):
    """A gymnasium ``VectorEnv`` whose env copies run on Ray actors (:class:`RayEnvPool`), returning
    exactly what ``AsyncVectorEnv(..., shared_memory=False, autoreset_mode=...)`` returns for the
    same seeds and actions. Ray must be initialized (:func:`init_ray`)."""

    def __init__(
        self,
        env_name: str,
        env_config: Any = None,
        num_envs: int = 1,
        num_workers: int | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        env_kwargs: dict[str, Any] | None = None,
        env_factory: Callable[[], Any] | None = None,
    ):
        pool = RayEnvPool(env_name, env_config, num_envs, num_workers, env_kwargs, env_factory)
        super().__init__(pool, num_envs, autoreset_mode)


__all__ = [
    "EnvWorker",
    "PLACE_TIMEOUT_S",
    "RayEnvPool",
    "RayVectorEnv",
    "RemoteEnv",
    "init_ray",
    "ray_session",
]
