"""What a registered env observes and accepts, by name: feature element names, robot type, instruction.

An env config class may describe its env without building it, through three optional members
(the embedded tasks' :class:`~robolearn.envs.config.FrankaTaskConfig` and the adapter configs in
:mod:`robolearn.envs.adapters` have all three):

- ``robot_type`` (attribute or property): LeRobot's robot label, e.g. ``franka_fr3``, ``panda``;
- ``feature_names() -> {feature key: element names}`` for ``observation.state``,
  ``observation.environment_state`` and ``action``;
- ``instruction_template() -> str``: the instruction with its per-episode parts as ``{placeholders}``.

Where a config has none of them, the names fall back to the shared conventions by shape (22-D state,
7-D ``ee_delta`` or 8-D ``joint_pos`` action) and the instruction to an example from ``reset(seed=0)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robolearn import types
from robolearn.types import EE_DELTA_ACTION_NAMES, JOINT_POS_ACTION_NAMES, STATE_NAMES


def config_of(env: Any) -> Any:
    """The config an env was built from (``env.unwrapped.config``), or None."""
    return getattr(getattr(env, "unwrapped", env), "config", None)


def robot_type(config: Any) -> str | None:
    """LeRobot's ``robot_type`` for an env config, None when the config does not say."""
    value = getattr(config, "robot_type", None)
    return str(value) if value else None


def config_feature_names(config: Any) -> dict[str, tuple[str, ...]]:
    """Element names the config declares (empty when it declares none)."""
    method = getattr(config, "feature_names", None)
    return {k: tuple(v) for k, v in method().items()} if callable(method) else {}


def feature_names(env: Any) -> dict[str, tuple[str, ...]]:
    """Element names of ``env``'s flat observation vectors and its action, where known.

    Names the config declares are kept only when their count matches the space's shape, so a
    task outside the config's tables (an unlisted Meta-World task, say) gets no wrong labels.
    """
    spaces = dict(env.observation_space.spaces)
    spaces[types.ACTION] = env.action_space
    shapes = {k: tuple(s.shape) for k, s in spaces.items() if getattr(s, "shape", None)}
    names = {k: v for k, v in config_feature_names(config_of(env)).items() if shapes.get(k) == (len(v),)}
    if types.OBS_STATE not in names and shapes.get(types.OBS_STATE) == (len(STATE_NAMES),):
        names[types.OBS_STATE] = STATE_NAMES
    if types.ACTION not in names:
        for fallback in (EE_DELTA_ACTION_NAMES, JOINT_POS_ACTION_NAMES):
            if shapes.get(types.ACTION) == (len(fallback),):
                names[types.ACTION] = fallback
    return names


def is_ee_delta(env: Any) -> bool:
    """Whether ``env`` takes the 7-D ``ee_delta`` action [dx, dy, dz, droll, dpitch, dyaw, gripper]."""
    return feature_names(env).get(types.ACTION) == EE_DELTA_ACTION_NAMES


@dataclass
class Feature:
    """One observation or action entry of an env, as ``robolearn envs`` shows it."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    names: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None


@dataclass
class EnvInfo:
    """Everything ``robolearn envs`` reports about one registered env."""

    name: str
    description: str
    config: dict[str, Any]
    robot_type: str | None = None
    control_hz: float | None = None
    max_episode_steps: int | None = None
    instruction: str | None = None
    features: list[Feature] = field(default_factory=list)
    expert: str | None = None
    """The shipped scripted expert ``robolearn collect`` uses (its class name), None if there is none."""
    not_installed: str | None = None
    """The missing module when the env's extra is not installed (then nothing was built)."""

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "features"}
        out["features"] = {
            f.key: {"dtype": f.dtype, "shape": list(f.shape), "names": list(f.names) if f.names else None,
                    **({"low": f.low, "high": f.high} if f.low is not None else {})}
            for f in self.features
        }  # fmt: skip
        return out


def _bound(values: Any) -> float | None:
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    return (
        float(arr.flat[0]) if arr.size and np.all(arr == arr.flat[0]) and np.isfinite(arr.flat[0]) else None
    )


def describe(name: str, config: Any = None) -> EnvInfo:
    """Build env ``name`` once (default config) and report its features, rates and instruction.

    When building fails with ``ImportError`` (its optional extra is missing), the result holds what
    the registry knows without building: the description, the config and the config's rate and cap.
    """
    from robolearn.config import to_dict
    from robolearn.envs import ENVS, env_config, make_env

    entry = ENVS.get(name)
    config = config if config is not None else env_config(name)
    template = getattr(config, "instruction_template", None)
    info = EnvInfo(
        name=name,
        description=entry.description,
        config=to_dict(config),
        robot_type=robot_type(config),
        control_hz=getattr(config, "control_hz", None),
        max_episode_steps=getattr(config, "max_episode_steps", None) or None,
        instruction=template() if callable(template) else None,
    )
    try:
        env = make_env(name, config)
    except ImportError as exc:
        info.not_installed = exc.name or str(exc)
        return info
    try:
        names = feature_names(env)
        info.control_hz = float((env.metadata or {}).get("render_fps") or info.control_hz or 0) or None
        base = getattr(env, "unwrapped", env)
        spec_steps = env.spec.max_episode_steps if env.spec is not None else None
        info.max_episode_steps = (
            getattr(base, "max_episode_steps", None) or spec_steps or info.max_episode_steps
        )
        spaces = dict(env.observation_space.spaces)
        for key, space in spaces.items():
            if key == types.TASK:
                continue
            dtype = "video" if types.is_image_key(key) else str(space.dtype)
            info.features.append(Feature(key, dtype, tuple(space.shape), names.get(key)))
        act = env.action_space
        info.features.append(
            Feature(types.ACTION, str(act.dtype), tuple(act.shape), names.get(types.ACTION),
                    _bound(getattr(act, "low", [])), _bound(getattr(act, "high", [])))
        )  # fmt: skip
        if info.instruction is None:
            obs, _ = env.reset(seed=0)
            info.instruction = str(obs.get(types.TASK, "")) or None
        info.expert = _expert_name(config)
    finally:
        env.close()
    return info


def _expert_name(config: Any) -> str | None:
    from robolearn.envs.experts import NoExpertError, make_expert

    try:
        return type(make_expert(config)).__name__
    except (NoExpertError, ValueError):
        return None
