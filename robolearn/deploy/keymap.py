"""Site configs: how one robot cell names things on the wire (``deploy/<site>.yaml``).

openpi clients send keys such as ``observation/image`` and ``prompt``; robolearn policies consume
``observation.images.front`` and ``task``. A site config maps the first to the second::

    name: franka-sim
    keys:
      observation/image: observation.images.front
      observation/state: observation.state
      prompt: task

A policy feature the map does not name travels under its own name. Loading is strict: an unknown
key or a wrong type is a :class:`~robolearn.config.ConfigError` naming the file. numpy-free and
torch-free: the robot side reads the same file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from robolearn.config import ConfigError, load_config
from robolearn.types import OBS_ENV_STATE, OBS_STATE, TASK, image_key

__all__ = ["DEFAULT_KEYS", "DEFAULT_SITE", "KeyMap", "SiteConfig", "load_site"]

DEFAULT_SITE = Path(__file__).resolve().parents[2] / "deploy" / "franka_sim.yaml"
"""The site config shipped for the embedded Franka (used when ``--site`` is not given)."""

DEFAULT_KEYS: dict[str, str] = {
    "observation/image": image_key("front"),
    "observation/wrist_image": image_key("wrist"),
    "observation/state": OBS_STATE,
    "observation/environment_state": OBS_ENV_STATE,
    "prompt": TASK,
}
"""openpi's wire keys -> robolearn features, as the embedded Franka names them."""


@dataclass
class SiteConfig:
    """One robot cell's deployment settings."""

    name: str = "franka-sim"
    """A label for the cell (shown in logs and the server's metadata)."""
    keys: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_KEYS))
    """Wire key -> policy feature (``observation.*`` or ``task``). Each side may appear once."""
    fps: float | None = None
    """Control rate the policy runs at, announced in the metadata; None: the rate of the env the
    checkpoint was trained on."""
    batch_window_ms: float = 2.0
    """How long the server waits after a request for others to batch with it (it goes at once when
    every connected client is already waiting)."""
    max_batch: int = 16
    """The most requests one policy call serves."""

    def __post_init__(self) -> None:
        if self.batch_window_ms < 0:
            raise ConfigError(f"batch_window_ms: expected >= 0, found {self.batch_window_ms}")
        if self.max_batch < 1:
            raise ConfigError(f"max_batch: expected >= 1, found {self.max_batch}")
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"fps: expected > 0, found {self.fps}")
        KeyMap(self.keys)  # checks the map


class KeyMap:
    """A one-to-one map between wire keys and policy features (unnamed features map to themselves)."""

    def __init__(self, keys: Mapping[str, str] | None = None) -> None:
        keys = dict(DEFAULT_KEYS if keys is None else keys)
        seen: dict[str, str] = {}
        for wire, feature in keys.items():
            if not wire or not feature:
                raise ConfigError(f"keys: empty key in {wire!r}: {feature!r}")
            if feature in seen:
                raise ConfigError(f"keys: {wire!r} and {seen[feature]!r} both map to {feature!r}")
            seen[feature] = wire
        self._to_feature = keys
        self._to_wire = {f: w for w, f in keys.items()}

    def to_wire(self, feature: str) -> str:
        """Policy feature -> its wire key."""
        return self._to_wire.get(feature, feature)

    def to_feature(self, wire_key: str) -> str:
        """Wire key -> policy feature."""
        return self._to_feature.get(wire_key, wire_key)

    def mapped_wire_keys(self) -> tuple[str, ...]:
        """Every wire key the site names."""
        return tuple(self._to_feature)

    def as_dict(self) -> dict[str, str]:
        """Wire key -> policy feature, as written in the site config."""
        return dict(self._to_feature)


def load_site(path: str | Path | None = None) -> SiteConfig:
    """Read a site config (default: ``deploy/franka_sim.yaml``, or the built-in defaults when the
    file is not shipped, as in an installed wheel)."""
    if path is None:
        if not DEFAULT_SITE.is_file():
            return SiteConfig()
        path = DEFAULT_SITE
    return load_config(SiteConfig, path)
