"""One config system: typed dataclasses, YAML presets, ``key=value`` CLI overrides.

An unknown key or a value of the wrong type is a :class:`ConfigError` naming the key and the file
it came from.
"""

from robolearn.config.loader import (
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    load_yaml,
    to_dict,
)

__all__ = ["ConfigError", "apply_overrides", "from_dict", "load_config", "load_yaml", "to_dict"]
