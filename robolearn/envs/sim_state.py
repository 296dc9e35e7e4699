"""Record a MuJoCo env's full physics state with every observation (``collect --record-sim-state``).

:class:`SimStateObservation` adds ``observation.sim_state``: ``mujoco.mj_getState(model, data,
mjSTATE_FULLPHYSICS)`` as float64 (time, qpos, qvel, act, history, mocap poses, userdata, plugin
state), taken with the observation it sits beside. :func:`restore_sim_state` puts such a vector back,
so a recorded frame can be replayed exactly; the robomimic export writes it as ``states``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from robolearn import types


def mujoco_handles(env: Any) -> tuple[Any, Any]:
    """``(MjModel, MjData)`` of ``env`` (its ``unwrapped.model`` / ``.data``); ValueError if it has none."""
    import mujoco

    inner = env.unwrapped
    model, data = getattr(inner, "model", None), getattr(inner, "data", None)
    if not isinstance(model, mujoco.MjModel) or not isinstance(data, mujoco.MjData):
        name = getattr(inner, "registry_name", type(inner).__name__)
        raise ValueError(f"{name}: the env exposes no MuJoCo model/data, so its sim state cannot be recorded")
    return model, data


def sim_state(model: Any, data: Any) -> np.ndarray:
    """The full physics state of ``data`` as a float64 vector."""
    import mujoco

    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    out = np.empty(mujoco.mj_stateSize(model, spec), dtype=np.float64)
    mujoco.mj_getState(model, data, out, spec)
    return out


def restore_sim_state(env: Any, state: np.ndarray) -> None:
    """Set ``env``'s MuJoCo state to a recorded ``observation.sim_state`` and recompute derived values."""
    import mujoco

    model, data = mujoco_handles(env)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    mujoco.mj_setState(model, data, np.array(state, dtype=np.float64), spec)  # a writeable copy
    mujoco.mj_forward(model, data)


class SimStateObservation(gym.ObservationWrapper):
    """Adds ``observation.sim_state`` (float64, the full physics state) to a MuJoCo env's observations."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._model, self._data = mujoco_handles(env)
        size = len(sim_state(self._model, self._data))
        spaces = dict(env.observation_space.spaces)
        spaces[types.OBS_SIM_STATE] = gym.spaces.Box(-np.inf, np.inf, (size,), np.float64)
        self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, observation: dict) -> dict:
        return {**observation, types.OBS_SIM_STATE: sim_state(self._model, self._data)}
