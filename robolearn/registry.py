"""One small generic registry for envs and policies.

An entry pairs a name with a light config class and the *import path* of the heavy code that builds
from it, so that listing or validating configs never imports torch or mujoco.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str
    config_cls: type
    builder: str
    """``"package.module:callable"``; called as ``callable(config, **kwargs)``."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Field values that differ from the config class defaults for this entry."""
    description: str = ""

    def default_config(self, **overrides: Any) -> Any:
        return self.config_cls(**{**self.defaults, **overrides})

    def load_builder(self) -> Callable[..., Any]:
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
        builder: str,
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


ENVS = Registry("env")
POLICIES = Registry("policy")
