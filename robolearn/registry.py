"""One small generic registry for envs and policies, and the suites (named lists of envs).

An entry pairs a name with a light config class and the *import path* of the heavy code that builds
from it, so that listing or validating configs never imports torch or mujoco.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str
    config_cls: type
    builder: str | Callable[..., Any]
    """``"package.module:callable"`` (imported when first built) or the callable itself; called as
    ``callable(config, **kwargs)``."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Field values that differ from the config class defaults for this entry."""
    description: str = ""

    def default_config(self, **overrides: Any) -> Any:
        # A copy: a default such as ``extra: {...}`` must not be shared between the configs built.
        return self.config_cls(**{**copy.deepcopy(self.defaults), **overrides})

    def load_builder(self) -> Callable[..., Any]:
        if callable(self.builder):
            return self.builder
        module_name, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module_name), attr)


class Registry:
    """Name -> :class:`Entry`. Unknown names raise ``KeyError`` listing what exists."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        config_cls: type,
        builder: str | Callable[..., Any],
        defaults: dict[str, Any] | None = None,
        description: str = "",
    ) -> Entry:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        entry = Entry(name, config_cls, builder, dict(defaults or {}), description)
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def build(self, name: str, config: Any = None, **kwargs: Any) -> Any:
        entry = self.get(name)
        return entry.load_builder()(config if config is not None else entry.default_config(), **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


@dataclass(frozen=True)
class Suite:
    """A named list of registered envs that ``collect``, ``train`` and ``eval`` take as one."""

    name: str
    envs: tuple[str, ...]
    description: str = ""


class SuiteRegistry:
    """Name -> :class:`Suite`; the names share one namespace with the envs of ``envs_registry``."""

    def __init__(self, envs_registry: Registry):
        self._envs = envs_registry
        self._suites: dict[str, Suite] = {}

    def register(self, name: str, envs: tuple[str, ...] | list[str], description: str = "") -> Suite:
        if name in self._suites or name in self._envs:
            raise ValueError(f"suite {name!r}: the name is already registered")
        for env in envs:
            self._envs.get(env)  # a member must be a registered env (KeyError listing them otherwise)
        if not envs:
            raise ValueError(f"suite {name!r}: it needs at least one env")
        suite = Suite(name, tuple(envs), description)
        self._suites[name] = suite
        return suite

    def get(self, name: str) -> Suite:
        try:
            return self._suites[name]
        except KeyError:
            known = ", ".join(sorted(self._suites)) or "none"
            raise KeyError(f"unknown suite {name!r}; registered: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._suites)

    def __contains__(self, name: object) -> bool:
        return name in self._suites

    def expand(self, spec: str) -> tuple[str, ...]:
        """``"franka-language"`` or ``"franka-lift,franka-push"`` -> the env names, each once, in order:
        every comma-separated item is a suite (its envs) or a registered env."""
        out: list[str] = []
        for item in (part.strip() for part in spec.split(",")):
            if item in self._suites:
                out.extend(self._suites[item].envs)
            elif item in self._envs:
                out.append(item)
            else:
                suites = ", ".join(self.names()) or "none"
                raise KeyError(
                    f"unknown env {item!r} (nor a suite); suites: {suites}; envs: {', '.join(self._envs.names())}"
                )
        if not out:
            raise KeyError(f"no env named in {spec!r}")
        return tuple(dict.fromkeys(out))


ENVS = Registry("env")
POLICIES = Registry("policy")
SUITES = SuiteRegistry(ENVS)
