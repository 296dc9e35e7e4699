"""Action validation, clipping reports, control modes, rewards, cameras and vector envs."""

from __future__ import annotations

import numpy as np
import pytest

from robolearn import types
from robolearn.envs import env_config, make_env, make_vec_env


@pytest.fixture(scope="module")
def lift():
    env = make_env("franka-lift")
    yield env
    env.close()


@pytest.mark.parametrize(
    "bad, message",
    [(np.zeros(6), r"shape \(7,\)"), (np.zeros((1, 7)), r"shape \(7,\)"), ([0, 0, np.nan, 0, 0, 0, 0], "NaN or inf"),
     ([0, 0, 0, np.inf, 0, 0, 0], "NaN or inf")],
)  # fmt: skip
def test_malformed_action_raises_with_expectation(lift, bad, message):
    lift.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        lift.step(bad)


def test_out_of_range_action_is_clipped_and_reported(lift):
    lift.reset(seed=0)
    _, _, _, _, info = lift.step(np.array([5, 0, 0, 0, 0, 0, -1], np.float32))
    assert info["action_clipped"] is True
    _, _, _, _, info = lift.step(np.array([0.5, 0, 0, 0, 0, 0, -1], np.float32))
    assert info["action_clipped"] is False


def test_workspace_limit_reported_and_enforced(lift):
    lift.reset(seed=0)
    for _ in range(40):
        obs, _, _, _, info = lift.step(np.array([0, 0, -1, 0, 0, 0, -1], np.float32))
    assert info["workspace_clipped"] is True
    assert obs[types.OBS_STATE][17] > lift.config.workspace_low[2] - 0.01


def test_ee_delta_moves_tcp_in_commanded_direction(lift):
    obs, _ = lift.reset(seed=0)
    start = obs[types.OBS_STATE][15:18].copy()
    for _ in range(10):
        obs, *_ = lift.step(np.array([0, 1, 0, 0, 0, 0, -1], np.float32))
    moved = obs[types.OBS_STATE][15:18] - start
    assert moved[1] > 0.15 and abs(moved[0]) < 0.03 and abs(moved[2]) < 0.03


def test_gripper_closes_and_opens(lift):
    obs, _ = lift.reset(seed=0)
    assert obs[types.OBS_STATE][14] == pytest.approx(0.08, abs=1e-3)
    for _ in range(25):
        obs, *_ = lift.step(np.array([0, 0, 0, 0, 0, 0, 1], np.float32))
    assert obs[types.OBS_STATE][14] < 0.005


def test_joint_position_mode_tracks_target():
    env = make_env("franka-reach", env_config("franka-reach", control_mode="joint_pos"))
    obs, _ = env.reset(seed=0)
    assert env.action_space.shape == (8,)
    target = obs[types.OBS_STATE][:7] + np.array([0.2, -0.1, 0.1, 0.1, 0, 0.1, 0])
    for _ in range(20):
        obs, _, _, _, info = env.step(np.concatenate([target, [-1]]).astype(np.float32))
    np.testing.assert_allclose(obs[types.OBS_STATE][:7], target, atol=0.02)
    over = np.concatenate([env.arm.q_max + 1.0, [0]]).astype(np.float32)
    _, _, _, _, info = env.step(over)
    assert info["action_clipped"] is True
    env.close()


def test_sparse_and_dense_rewards():
    dense = make_env("franka-lift")
    sparse = make_env("franka-lift", env_config("franka-lift", reward_type="sparse"))
    a = np.zeros(7, np.float32)
    dense.reset(seed=1)
    sparse.reset(seed=1)
    _, rd, *_ = dense.step(a)
    _, rs, *_ = sparse.step(a)
    assert 0.0 < rd < 1.5 and rs == 0.0


def test_cameras_render_declared_shapes():
    cfg = env_config("franka-lift", cameras=("front", "wrist"), image_size=(64, 80))
    env = make_env("franka-lift", cfg)
    obs, _ = env.reset(seed=0)
    for cam in ("front", "wrist"):
        img = obs[types.image_key(cam)]
        assert img.shape == (64, 80, 3) and img.dtype == np.uint8
        assert img.std() > 5, f"{cam} image is blank"
    assert not np.array_equal(obs[types.image_key("front")], obs[types.image_key("wrist")])
    env.close()


def test_unknown_camera_and_extra_rejected():
    with pytest.raises(ValueError, match="unknown camera 'top'"):
        make_env("franka-lift", env_config("franka-lift", cameras=("top",)))
    with pytest.raises(ValueError, match="unknown extra key 'nope'"):
        make_env("franka-lift", env_config("franka-lift", extra={"nope": 1.0}))


@pytest.mark.parametrize("asynchronous", [False, True])
def test_vector_envs(asynchronous):
    vec = make_vec_env("franka-push", 2, asynchronous=asynchronous)
    try:
        obs, _ = vec.reset(seed=[5, 6])
        assert obs[types.OBS_STATE].shape == (2, 22)
        assert len(obs[types.TASK]) == 2 and all(isinstance(t, str) and t for t in obs[types.TASK])
        obs2, _ = vec.reset(seed=[5, 6])
        np.testing.assert_array_equal(obs[types.OBS_ENV_STATE], obs2[types.OBS_ENV_STATE])
        for _ in range(3):
            obs, reward, term, trunc, info = vec.step(np.zeros((2, 7), np.float32))
        assert reward.shape == (2,) and info["is_success"].shape == (2,)
    finally:
        vec.close()
