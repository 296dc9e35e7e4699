"""Contract tests for the gym-hil adapter (the env tests skip when the ``gym-hil`` extra is missing)."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from robolearn.envs import ENVS, env_config
from robolearn.envs.adapters import GYM_HIL_ENV_STATE_NAMES, GymHilConfig
from robolearn.types import ACTION, OBS_ENV_STATE, OBS_STATE, STATE_NAMES, TASK, image_key

ENTRIES = {"gym-hil-pick-cube": "PandaPickCube", "gym-hil-arrange-boxes": "PandaArrangeBoxes"}


def test_registered_with_light_configs() -> None:
    for name, task in ENTRIES.items():
        entry = ENVS.get(name)
        assert entry.config_cls is GymHilConfig and entry.defaults == {"task": task}
        names = env_config(name).feature_names()
        assert names[OBS_STATE] == STATE_NAMES and len(names[ACTION]) == 7
        assert names[OBS_ENV_STATE] == GYM_HIL_ENV_STATE_NAMES[task]
    assert len(GYM_HIL_ENV_STATE_NAMES["PandaArrangeBoxes"]) == 35
    assert env_config("gym-hil-pick-cube", overrides=["control_hz=20"]).control_hz == 20


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"task": "PandaDoor"}, "PandaPickCube"),
        ({"reward_type": "shaped"}, "reward_type"),
        ({"control_hz": 0}, "control_hz"),
        ({"max_ee_step": -0.1}, "max_ee_step"),
        ({"image_size": (0, 96)}, "image_size"),
    ],
)
def test_config_rejects_bad_fields(fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GymHilConfig(**fields)


def test_registry_import_stays_light() -> None:
    code = "import sys, robolearn.envs; heavy = {'gym_hil', 'mujoco'} & set(sys.modules); assert not heavy, heavy"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------- the env


@pytest.fixture(scope="module")
def pick():
    pytest.importorskip("gym_hil")
    env = ENVS.build("gym-hil-pick-cube", GymHilConfig(max_episode_steps=6))
    yield env
    env.close()


def _assert_valid(env: gym.Env, obs: dict) -> None:
    assert env.observation_space.contains(obs), {
        k: env.observation_space[k].contains(v) for k, v in obs.items()
    }
    assert np.all(np.isfinite(obs[OBS_STATE])) and np.all(np.isfinite(obs[OBS_ENV_STATE]))
    assert isinstance(obs[TASK], str) and obs[TASK]


def _check_contract(env: gym.Env) -> None:
    """Spaces, seeded resets, success flag, clipping and malformed actions (as the other adapters)."""
    assert env.metadata["render_fps"] == 10 and env.action_space.shape == (7,)
    obs, info = env.reset(seed=7)
    _assert_valid(env, obs)
    assert info["is_success"] is False
    again, _ = env.reset(seed=7)
    np.testing.assert_array_equal(obs[OBS_STATE], again[OBS_STATE])
    np.testing.assert_array_equal(obs[OBS_ENV_STATE], again[OBS_ENV_STATE])
    other, _ = env.reset(seed=8)
    assert not np.array_equal(obs[OBS_ENV_STATE], other[OBS_ENV_STATE])

    rng = np.random.default_rng(0)
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 7))
        _assert_valid(env, obs)
        assert np.isfinite(reward)
        assert isinstance(info["is_success"], bool) and info["action_clipped"] is False
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
    _, _, _, _, info = env.step(np.full(7, 3.0))
    assert info["action_clipped"] is True
    for bad in (np.zeros(8), np.full(7, np.nan), np.r_[np.inf, np.zeros(6)], "up"):
        with pytest.raises(ValueError, match=r"\(7,\)"):
            env.step(bad)


def test_pick_cube_contract(pick) -> None:
    _check_contract(pick)
    obs, _ = pick.reset(seed=1)
    assert obs[TASK] == "pick up the purple cube and lift it"
    # The pinch point starts above the table pointing down, gripper open (2F-85: 85 mm).
    state = obs[OBS_STATE]
    assert 0.08 < state[14] < 0.09 and 0.05 < state[17] < 0.12
    assert abs(state[19]) > 0.99  # wxyz of a 180-degree turn about x
    # The cube rests on the table inside gym-hil's sampling box.
    x, y, z = obs[OBS_ENV_STATE][:3]
    assert 0.3 <= x <= 0.5 and -0.15 <= y <= 0.15 and z == pytest.approx(0.02, abs=1e-3)
    done = [pick.step(np.zeros(7))[3] for _ in range(6)]
    assert done == [False] * 5 + [True]  # truncation only, never termination without success


def test_arrange_boxes_contract() -> None:
    pytest.importorskip("gym_hil")
    env = ENVS.build("gym-hil-arrange-boxes")
    try:
        _check_contract(env)
        assert env.max_episode_steps == 400
        obs, _ = env.reset(seed=0)
        rows = obs[OBS_ENV_STATE].reshape(5, 7)[:, 1]
        np.testing.assert_allclose(np.sort(rows), np.linspace(-0.3, 0.3, 5), atol=1e-6)
    finally:
        env.close()


def test_seeded_episodes_replay_exactly_and_leave_global_rng_alone(pick) -> None:
    def run(seed: int) -> list[np.ndarray]:
        obs, _ = pick.reset(seed=seed)
        rng = np.random.default_rng(seed)
        trace = [obs[OBS_ENV_STATE].copy()]
        for _ in range(5):
            obs, reward, *_ = pick.step(rng.uniform(-1, 1, 7))
            trace.append(np.concatenate([obs[OBS_STATE], obs[OBS_ENV_STATE], [reward]]))
        return trace

    before = np.random.get_state()[1].copy()
    a, b = run(11), run(11)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(run(12)[0], a[0])
    # gym-hil draws its layouts from numpy's global generator; the adapter must not.
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_actions_map_onto_gym_hils_mocap_target(pick) -> None:
    hil = pick.unwrapped_gym_hil
    pick.reset(seed=2)
    start = hil.data.mocap_pos[0].copy()
    pick.step(np.array([0, 0, 1.0, 0, 0, 0, -1]))
    np.testing.assert_allclose(hil.data.mocap_pos[0] - start, [0, 0, 0.025], atol=1e-9)
    q0 = hil.data.mocap_quat[0].copy()
    pick.step(np.array([0, 0, 0, 0, 0, 1.0, -1]))  # dyaw: 0.1 rad about world z
    angle = 2 * np.arccos(min(1.0, abs(float(np.dot(q0, hil.data.mocap_quat[0])))))
    assert angle == pytest.approx(0.1, abs=1e-6)
    for _ in range(4):
        obs, *_ = pick.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert obs[OBS_STATE][14] < 0.01  # closed on nothing
    for _ in range(4):
        obs, *_ = pick.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    assert obs[OBS_STATE][14] > 0.08


def test_control_hz_sets_substeps() -> None:
    pytest.importorskip("gym_hil")
    env = ENVS.build("gym-hil-pick-cube", GymHilConfig(control_hz=20))
    try:
        assert env.unwrapped_gym_hil._n_substeps == 25 and env.metadata["render_fps"] == 20
    finally:
        env.close()


def test_scripted_expert_lifts_the_cube_and_success_terminates() -> None:
    pytest.importorskip("gym_hil")
    from robolearn.envs.adapters.gym_hil_env import GymHilEnv, scripted_expert

    env = GymHilEnv(reward_type="sparse")
    expert = scripted_expert(env)
    try:
        for seed in range(4):
            obs, _ = env.reset(seed=seed)
            expert.reset()
            for _ in range(env.max_episode_steps):
                obs, reward, terminated, truncated, info = env.step(expert(obs))
                if terminated or truncated:
                    break
            assert info["is_success"] and terminated and reward == 1.0, f"seed {seed}"
            assert obs[OBS_ENV_STATE][2] > 0.12  # lifted 10 cm from its 2 cm resting height
    finally:
        env.close()
    with pytest.raises(ValueError, match="PandaArrangeBoxes"):
        scripted_expert(GymHilConfig(task="PandaArrangeBoxes"))


def test_success_without_termination_keeps_the_episode_going() -> None:
    pytest.importorskip("gym_hil")
    from robolearn.envs.adapters.gym_hil_env import GymHilEnv, scripted_expert

    env = GymHilEnv(terminate_on_success=False, max_episode_steps=60)
    expert = scripted_expert(env)
    try:
        obs, _ = env.reset(seed=5)
        flags, ends = [], []
        for _ in range(60):
            obs, reward, terminated, truncated, info = env.step(expert(obs))
            flags.append(info["is_success"])
            ends.append(terminated or truncated)
        first = flags.index(True)
        assert not any(ends[:-1]) and ends[-1]
        assert all(flags[first : first + 5])  # the expert holds the cube up
        assert 0.7 <= reward <= 1.0  # dense: 0.3 * closeness + 0.7 * lift
    finally:
        env.close()


def test_cameras_vector_env_and_render() -> None:
    pytest.importorskip("gym_hil")
    from robolearn.envs.adapters.gym_hil_env import GymHilEnv

    def make() -> GymHilEnv:
        return GymHilEnv(cameras=("front", "wrist"), image_size=(48, 64), max_episode_steps=4)

    vec = gym.vector.SyncVectorEnv([make, make])
    try:
        obs, _ = vec.reset(seed=[3, 4])
        for cam in ("front", "wrist"):
            img = obs[image_key(cam)]
            assert img.shape == (2, 48, 64, 3) and img.dtype == np.uint8 and img.std() > 5
        assert not np.array_equal(obs[image_key("front")][0], obs[image_key("front")][1])
        assert obs[OBS_STATE].shape == (2, 22)
        for _ in range(5):  # crosses the autoreset at max_episode_steps
            obs, reward, terminated, truncated, info = vec.step(np.zeros((2, 7)))
        assert reward.shape == (2,) and info["is_success"].dtype == bool
    finally:
        vec.close()

    env = GymHilEnv(image_size=(40, 56), render_mode="rgb_array")  # no observation camera
    try:
        obs, _ = env.reset(seed=0)
        assert not any(k.startswith("observation.images.") for k in obs)
        frame = env.render()
        assert frame.shape == (40, 56, 3) and frame.dtype == np.uint8 and frame.std() > 5
    finally:
        env.close()
    with pytest.raises(ValueError, match="no camera 'top'"):
        GymHilEnv(cameras=("top",))
