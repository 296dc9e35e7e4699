"""Env registry and factories.

Registered here (light: config classes and import paths only): the embedded tasks
``franka-reach``, ``franka-lift``, ``franka-push``, ``franka-stack``, ``franka-pick-place``, their
two-distractor variants ``franka-{lift,push,pick-place,stack}-d2`` (the suite ``franka-language``), and the
optional adapters ``robosuite-*``, ``metaworld-*``, ``gym-hil-*`` and LIBERO's ``libero-<suite>-<id>`` with
the suites ``libero-spatial``, ``libero-object``, ``libero-goal``, ``libero-10`` (their packages import
only when built).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from robolearn.config import from_dict, load_yaml, to_dict
from robolearn.config.loader import apply_overrides
from robolearn.envs.adapters import GymHilConfig, MetaWorldConfig, RobosuiteConfig
from robolearn.envs.config import FrankaTaskConfig
from robolearn.registry import ENVS, SUITES

_FRANKA_BUILDER = "robolearn.envs.franka.env:FrankaEnv"
for _task, _desc in {
    "reach": "move the gripper to a coloured ball",
    "lift": "grasp a cube and lift it",
    "push": "push a cube onto a goal circle",
    "stack": "put one cube on another",
    "pick-place": "pick a cube and place it on a goal circle",
}.items():
    ENVS.register(f"franka-{_task}", FrankaTaskConfig, _FRANKA_BUILDER, {"task": _task}, _desc)
# The language suite: every task with two distractor cubes, so only the instruction names the target;
# the four share one environment-state layout (robolearn.envs.config.SLOT_ENV_STATE_NAMES).
_LANGUAGE = ("lift", "push", "pick-place", "stack")
for _task in _LANGUAGE:
    ENVS.register(f"franka-{_task}-d2", FrankaTaskConfig, _FRANKA_BUILDER,
                  {"task": _task, "extra": {"distractors": 2.0}},
                  f"franka-{_task} with 2 distractor cubes: the instruction names the target")  # fmt: skip
SUITES.register("franka-language", [f"franka-{t}-d2" for t in _LANGUAGE],
                "lift, push, pick-place and stack with 2 distractors each; one shared layout")  # fmt: skip

# Optional adapters (extras robosuite / metaworld / gym-hil): same observation and action conventions.
_RS = "robolearn.envs.adapters.robosuite_env:build"
for _name, _task in {"lift": "Lift", "stack": "Stack", "pick-place-can": "PickPlaceCan",
                     "nut-assembly-square": "NutAssemblySquare"}.items():  # fmt: skip
    ENVS.register(
        f"robosuite-{_name}",
        RobosuiteConfig,
        _RS,
        {"task": _task},
        f"robosuite 1.5.2 {_task}, Panda, OSC_POSE delta, 20 Hz",
    )
_MW = "robolearn.envs.adapters.metaworld_env:build"
for _name in ("reach", "push", "pick-place"):
    ENVS.register(
        f"metaworld-{_name}",
        MetaWorldConfig,
        _MW,
        {"task": f"{_name}-v3"},
        f"Meta-World v3 {_name}, Sawyer, 4-D xyz+gripper action",
    )
_HIL = "robolearn.envs.adapters.gym_hil_env:build"
for _name, _task in {"pick-cube": "PandaPickCube", "arrange-boxes": "PandaArrangeBoxes"}.items():
    ENVS.register(
        f"gym-hil-{_name}",
        GymHilConfig,
        _HIL,
        {"task": _task},
        f"gym-hil {_task}, Panda + Robotiq 2F-85, mocap ee_delta, 10 Hz",
    )

# LIBERO's four suites (extra libero): every task as libero-<suite>-<id>, and each suite by its name.
from robolearn.envs.adapters.libero import LIBERO_SUITES, LiberoConfig, registered_tasks, suite_env_prefix  # noqa: E402

for _name, _defaults, _desc in registered_tasks():
    ENVS.register(_name, LiberoConfig, "robolearn.envs.adapters.libero_env:build", _defaults, _desc)
for _suite, _tasks in LIBERO_SUITES.items():
    SUITES.register(suite_env_prefix(_suite), [f"{suite_env_prefix(_suite)}-{i}" for i in range(len(_tasks))],
                    f"LIBERO {suite_env_prefix(_suite)[len('libero-'):]}: {len(_tasks)} tasks, 50 stored "
                    "initial states each (seeds 0-49)")  # fmt: skip


def env_config(
    name: str, preset: str | Path | None = None, overrides: Iterable[str] = (), **fields: Any
) -> Any:
    """The config of registered env ``name``: registry defaults, then YAML ``preset``, overrides, ``fields``."""
    entry = ENVS.get(name)
    data = to_dict(entry.default_config())
    source = f"env {name!r}"
    if preset is not None:
        data.update(load_yaml(preset))
        source = str(preset)
    data = apply_overrides(data, overrides)
    data.update(fields)
    return from_dict(entry.config_cls, data, source=source)


def make_env(name: str, config: Any = None, **kwargs: Any):
    """Build one env by registry name (``config`` defaults to :func:`env_config`).

    The env's ``unwrapped.registry_name`` is set to ``name``, so recorders can write where the data
    came from (``robolearn.data.record_episodes``)."""
    entry = ENVS.get(name)
    env = entry.load_builder()(config if config is not None else env_config(name), **kwargs)
    try:
        env.unwrapped.registry_name = name
    except AttributeError:  # an env class with __slots__ or a read-only attribute
        pass
    return env


def register_env(
    name: str,
    config_cls: type,
    builder: str | Callable[..., Any],
    defaults: dict[str, Any] | None = None,
    description: str = "",
) -> None:
    """Register your own env so every robolearn command and function can use it by ``name``.

    ``config_cls`` is a dataclass whose every field has a default; give it the fields robolearn
    sets when they apply: ``cameras`` and ``image_size`` (``eval`` of image policies),
    ``terminate_on_success`` (held-success eval and demos recorded past success), ``control_hz``
    and ``max_episode_steps``. ``builder(config, **kwargs) -> gymnasium.Env`` is a callable or an
    import path ``"package.module:callable"`` (needed for ``collect --workers``, whose processes
    import it). The env follows the conventions in :mod:`robolearn.data.record`.
    """
    ENVS.register(name, config_cls, builder, defaults, description)


def make_vec_env(name: str, num_envs: int, config: Any = None, asynchronous: bool = False, **kwargs: Any):
    """A gymnasium vector env of ``num_envs`` copies (``AsyncVectorEnv`` runs one process per env)."""
    import gymnasium as gym

    cfg = config if config is not None else env_config(name)
    fns = [lambda: make_env(name, cfg, **kwargs) for _ in range(num_envs)]
    if asynchronous:
        # The instruction (a Text space) has no shared-memory layout; observations travel by pipe.
        return gym.vector.AsyncVectorEnv(fns, shared_memory=False)
    return gym.vector.SyncVectorEnv(fns)


PLUGIN_GROUP = "robolearn.envs"
"""Entry-point group of installed packages that register envs (``[project.entry-points."robolearn.envs"]``)."""
PLUGIN_ENV = "ROBOLEARN_PLUGINS"
"""Comma-separated modules imported at start-up, each registering its envs with :func:`register_env`."""


def load_plugins() -> list[str]:
    """Import every env plugin: installed entry points of :data:`PLUGIN_GROUP` and the modules named in
    ``$ROBOLEARN_PLUGINS``; their import registers their envs. Returns what was loaded. A plugin that
    fails to import raises :class:`robolearn.errors.PluginError` naming it."""
    import importlib
    import os
    from importlib.metadata import entry_points

    from robolearn.errors import PluginError

    loaded = []
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as exc:
            raise PluginError(f"env plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        loaded.append(ep.value)
    for name in filter(None, (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise PluginError(f"${PLUGIN_ENV}: module {name!r} failed to import: {exc}") from exc
        loaded.append(name)
    return loaded


load_plugins()

__all__ = [
    "ENVS",
    "SUITES",
    "FrankaTaskConfig",
    "env_config",
    "make_env",
    "load_plugins",
    "make_vec_env",
    "register_env",
]
