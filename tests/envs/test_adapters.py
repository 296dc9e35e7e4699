"""Contract tests for the robosuite and Meta-World adapters (skipped when the extra is missing)."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from robolearn.envs import ENVS
from robolearn.envs.adapters import MetaWorldConfig, RobosuiteConfig
from robolearn.registry import Registry
from robolearn.types import OBS_ENV_STATE, OBS_STATE, TASK, image_key

os.environ.setdefault("MUJOCO_GL", "egl")

ROBOSUITE_ENTRIES = {
    "robosuite-lift": "Lift",
    "robosuite-stack": "Stack",
    "robosuite-pick-place-can": "PickPlaceCan",
    "robosuite-nut-assembly-square": "NutAssemblySquare",
}
METAWORLD_ENTRIES = {
    "metaworld-reach": "reach-v3",
    "metaworld-push": "push-v3",
    "metaworld-pick-place": "pick-place-v3",
}


def _registry() -> Registry:
    """The project's env registry, which must hold every adapter entry."""
    for name, task in {**ROBOSUITE_ENTRIES, **METAWORLD_ENTRIES}.items():
        entry = ENVS.get(name)
        assert entry.config_cls in (RobosuiteConfig, MetaWorldConfig) and entry.defaults == {"task": task}
    return ENVS


def _assert_valid(env: gym.Env, obs: dict) -> None:
    assert env.observation_space.contains(obs), {
        k: env.observation_space[k].contains(v) for k, v in obs.items()
    }
    assert np.all(np.isfinite(obs[OBS_STATE])) and np.all(np.isfinite(obs[OBS_ENV_STATE]))
    assert isinstance(obs[TASK], str) and obs[TASK]


def _check_contract(env: gym.Env, action_dim: int) -> None:
    """reset/step conform to the declared spaces; same seed, same start; malformed actions raise."""
    assert isinstance(env.metadata, dict) and env.metadata["render_fps"] > 0
    assert env.action_space.shape == (action_dim,)
    obs, info = env.reset(seed=7)
    _assert_valid(env, obs)
    assert obs[OBS_STATE].shape == (22,)
    assert isinstance(info["is_success"], bool)
    again, _ = env.reset(seed=7)
    np.testing.assert_array_equal(obs[OBS_STATE], again[OBS_STATE])
    np.testing.assert_array_equal(obs[OBS_ENV_STATE], again[OBS_ENV_STATE])
    other, _ = env.reset(seed=8)
    assert not np.array_equal(obs[OBS_ENV_STATE], other[OBS_ENV_STATE])

    rng = np.random.default_rng(0)
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, action_dim))
        _assert_valid(env, obs)
        assert np.isfinite(reward)
        assert isinstance(info["is_success"], bool) and info["action_clipped"] is False
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
    _, _, _, _, info = env.step(np.full(action_dim, 3.0))
    assert info["action_clipped"] is True

    bad = {
        "shape": np.zeros(action_dim + 1),
        "nan": np.full(action_dim, np.nan),
        "inf": np.r_[np.inf, np.zeros(action_dim - 1)],
        "text": "up",
    }
    for action in bad.values():
        with pytest.raises(ValueError, match=f"\\({action_dim},\\)"):
            env.step(action)


def test_configs_validate_fields() -> None:
    with pytest.raises(ValueError, match="Lift"):
        RobosuiteConfig(task="Door")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reward_type"):
        RobosuiteConfig(reward_type="shaped")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="v3"):
        MetaWorldConfig(task="reach-v2")
    with pytest.raises(TypeError):
        MetaWorldConfig(unknown_key=1)  # type: ignore[call-arg]
    assert _registry().get("robosuite-stack").default_config().task == "Stack"


def test_config_module_is_light() -> None:
    code = (
        "import sys, robolearn.envs.adapters; "
        "heavy = {'robosuite', 'metaworld'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------- robosuite


@pytest.fixture(scope="module")
def lift():
    pytest.importorskip("robosuite")
    env = _registry().build("robosuite-lift", RobosuiteConfig(task="Lift", max_episode_steps=6))
    yield env
    env.close()


def test_robosuite_lift_contract(lift) -> None:
    _check_contract(lift, 7)
    assert lift.observation_space[OBS_ENV_STATE].shape == (10,)
    # Truncation at max_episode_steps, never termination without success.
    lift.reset(seed=1)
    done = [lift.step(np.zeros(7))[3] for _ in range(6)]
    assert done == [False] * 5 + [True]


@pytest.mark.parametrize(
    "name", ["robosuite-stack", "robosuite-pick-place-can", "robosuite-nut-assembly-square"]
)
def test_robosuite_other_tasks(name: str) -> None:
    pytest.importorskip("robosuite")
    env = _registry().build(name)
    try:
        obs, _ = env.reset(seed=0)
        _assert_valid(env, obs)
        obs, reward, *_ = env.step(np.zeros(7))
        _assert_valid(env, obs)
        assert np.isfinite(reward)
    finally:
        env.close()


def test_robosuite_cameras_and_vector_env() -> None:
    pytest.importorskip("robosuite")
    import mujoco

    from robolearn.envs.adapters.robosuite_env import RobosuiteEnv

    def make() -> RobosuiteEnv:
        return RobosuiteEnv("Lift", cameras=("front", "wrist"), image_size=(48, 64), max_episode_steps=4)

    vec = gym.vector.SyncVectorEnv([make, make])
    try:
        obs, _ = vec.reset(seed=[3, 4])
        for cam in ("front", "wrist"):
            img = obs[image_key(cam)]
            assert img.shape == (2, 48, 64, 3) and img.dtype == np.uint8
            assert img.std() > 5  # a scene, not a blank frame
        assert obs[OBS_STATE].shape == (2, 22) and tuple(obs[TASK]) == ("lift the red cube",) * 2
        front = obs[image_key("front")].copy()
        assert not np.array_equal(front[0], front[1])  # different seeds, different cube poses

        # Another GL user in between must not blank robosuite's frames (it never makes its context current).
        other = mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 8, 8)
        other.render()
        other.close()
        again, _ = vec.reset(seed=[3, 4])
        np.testing.assert_array_equal(again[image_key("front")], front)

        for _ in range(5):  # crosses the autoreset at max_episode_steps
            obs, reward, terminated, truncated, info = vec.step(np.zeros((2, 7)))
        assert reward.shape == (2,) and info["is_success"].dtype == bool
    finally:
        vec.close()


# --------------------------------------------------------------------------------------------- Meta-World


@pytest.mark.parametrize("name", list(METAWORLD_ENTRIES))
def test_metaworld_contract(name: str) -> None:
    pytest.importorskip("metaworld")
    env = _registry().build(name)
    try:
        _check_contract(env, 4)
        assert env.observation_space[OBS_ENV_STATE].shape == (17,)
    finally:
        env.close()


@pytest.mark.parametrize("task", list(METAWORLD_ENTRIES.values()))
def test_metaworld_expert_succeeds(task: str) -> None:
    pytest.importorskip("metaworld")
    from robolearn.envs.adapters.metaworld_env import MetaWorldEnv, MetaWorldExpert

    env = MetaWorldEnv(task, max_episode_steps=200)
    expert = MetaWorldExpert(task)
    try:
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            np.testing.assert_allclose(
                expert.native_observation(obs[OBS_STATE], obs[OBS_ENV_STATE]),
                env.native_observation,
                atol=1e-5,
            )
            for _ in range(200):
                obs, _, terminated, truncated, info = env.step(expert(obs))
                if terminated or truncated:
                    break
            assert info["is_success"] and terminated, f"{task} seed {seed}"
    finally:
        env.close()


def test_metaworld_cameras_vector_env_and_batched_expert() -> None:
    pytest.importorskip("metaworld")
    from robolearn.envs.adapters.metaworld_env import MetaWorldEnv, MetaWorldExpert

    def make() -> MetaWorldEnv:
        return MetaWorldEnv("reach-v3", cameras=("front", "wrist"), image_size=(40, 56))

    vec = gym.vector.SyncVectorEnv([make, make])
    try:
        obs, _ = vec.reset(seed=[0, 1])
        for cam in ("front", "wrist"):
            img = obs[image_key(cam)]
            assert img.shape == (2, 40, 56, 3) and img.dtype == np.uint8 and img.std() > 5
        actions = MetaWorldExpert("reach-v3")(obs)
        assert actions.shape == (2, 4) and np.all(np.abs(actions) <= 1)
        obs, reward, *_ = vec.step(actions)
        assert reward.shape == (2,)
    finally:
        vec.close()
