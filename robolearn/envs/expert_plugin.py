"""Plug a user's scripted policy into ``robolearn collect --expert package.module:callable``.

The contract:

- ``package.module`` is imported by name. The working directory is put on ``sys.path`` first (as
  ``python -m`` does), so ``my_expert.py`` next to where you run ``robolearn`` is ``my_expert:make``.
- ``callable`` is called as ``callable(env)`` with the built env (gymnasium API, robolearn's
  observation keys: ``observation.state``, ``observation.environment_state``, ``task``, ...) and
  returns the **policy**: any callable ``policy(obs: dict) -> action`` (array of the env's action
  shape). A class whose ``__init__`` takes the env and that defines ``__call__(obs)`` fits as is.
- If the policy has a ``reset()`` method, it is called after every ``env.reset(seed=...)``, before
  the episode's first action.
- ``callable(env)`` runs once in the main process (to check the spec before any work starts) and
  once in each ``--workers`` process, each with its own env. It must be importable there, so define
  it at module level (no lambdas or closures named by the spec).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

Policy = Callable[[dict], np.ndarray]


class ExpertSpecError(ValueError):
    """A ``--expert`` spec that cannot be resolved; the message is one line naming the spec."""


def load_factory(spec: str) -> Callable[[Any], Policy]:
    """Import ``package.module:callable`` and return the callable (not yet called)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ExpertSpecError(f"--expert {spec!r}: expected package.module:callable, e.g. my_expert:make")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExpertSpecError(f"--expert {spec!r}: cannot import module {module_name!r} ({exc})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ExpertSpecError(f"--expert {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ExpertSpecError(f"--expert {spec!r}: {attr!r} is a {type(obj).__name__}, not a callable")
    return obj


def build_policy(spec: str, env: Any) -> Policy:
    """``load_factory(spec)(env)``, checked: the result must be callable (obs -> action)."""
    factory = load_factory(spec)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have no signature: just call them
        signature = None
    if signature is not None:
        try:
            signature.bind(env)
        except TypeError:
            raise ExpertSpecError(
                f"--expert {spec!r}: it must be callable with one argument, the env; its signature is "
                f"{signature}"
            ) from None
    policy = factory(env)
    if not callable(policy):
        raise ExpertSpecError(
            f"--expert {spec!r}: calling it with the env returned a {type(policy).__name__}; "
            "it must return a policy, a callable obs -> action"
        )
    reset = getattr(policy, "reset", None)
    if reset is not None and not callable(reset):
        raise ExpertSpecError(f"--expert {spec!r}: the policy's reset is not callable")
    return policy


def check_action(spec: str, policy: Policy, env: Any, obs: dict) -> None:
    """Raise :class:`ExpertSpecError` unless ``policy(obs)`` fits ``env.action_space``'s shape."""
    action = np.asarray(policy(obs))
    expected = tuple(env.action_space.shape)
    if action.shape != expected or not np.issubdtype(action.dtype, np.number):
        raise ExpertSpecError(
            f"--expert {spec!r}: the policy returned an action of shape {action.shape} "
            f"({action.dtype}); the env expects {expected}"
        )
