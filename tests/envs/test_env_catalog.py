"""Element names of every env's vectors match what the simulators put there; peers import quietly."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from robolearn.envs import ENVS, env_config, make_env
from robolearn.envs.catalog import feature_names, is_ee_delta
from robolearn.envs.config import ENV_STATE_NAMES
from robolearn.envs.recording import env_features
from robolearn.types import ACTION, EE_DELTA_ACTION_NAMES, OBS_ENV_STATE, OBS_STATE, STATE_NAMES

os.environ.setdefault("MUJOCO_GL", "egl")


def test_state_names_are_the_franka_envs_own():
    from robolearn.envs.franka.env import STATE_NAMES as FRANKA_STATE_NAMES

    assert STATE_NAMES == FRANKA_STATE_NAMES


@pytest.mark.parametrize("task", sorted(ENV_STATE_NAMES))
def test_franka_env_state_names(task):
    from robolearn.envs.franka.mjcf import CUBE_HALF

    env = make_env(f"franka-{task}")
    try:
        obs, _ = env.reset(seed=0)
        names = feature_names(env)
        assert names[OBS_ENV_STATE] == ENV_STATE_NAMES[task]
        assert len(names[OBS_ENV_STATE]) == obs[OBS_ENV_STATE].shape[0]
        values = dict(zip(names[OBS_ENV_STATE], obs[OBS_ENV_STATE], strict=True))
        for cube in ("cube", "cube_a", "cube_b"):
            if f"{cube}_z" in values:  # a cube rests on the table, upright (unit quaternion)
                assert values[f"{cube}_z"] == pytest.approx(CUBE_HALF, abs=2e-3)
                quat = [values[f"{cube}_q{c}"] for c in "wxyz"]
                assert np.linalg.norm(quat) == pytest.approx(1.0, abs=1e-4) and abs(quat[0]) > 0.7
        if "goal_z" in values:
            assert abs(values["goal_z"]) < 0.01  # a circle drawn on the table
        assert names[ACTION] == EE_DELTA_ACTION_NAMES and is_ee_delta(env)
        feats = env_features(env)
        assert feats[OBS_ENV_STATE].names == ENV_STATE_NAMES[task] and feats[OBS_STATE].names == STATE_NAMES
    finally:
        env.close()


def test_joint_pos_mode_is_not_ee_delta():
    env = make_env("franka-reach", env_config("franka-reach", overrides=["control_mode=joint_pos"]))
    try:
        assert feature_names(env)[ACTION][-1] == "gripper" and len(feature_names(env)[ACTION]) == 8
        assert not is_ee_delta(env)
    finally:
        env.close()


def _axes(dim: int) -> str:
    return {3: "xyz", 4: "xyzw"}[dim]


@pytest.mark.parametrize("name", [n for n in ENVS.names() if n.startswith("robosuite-")])
def test_robosuite_env_state_names_follow_robosuite_observables(name):
    pytest.importorskip("robosuite")
    env = make_env(name)
    try:
        obs, _ = env.reset(seed=0)
        rs = env.unwrapped_robosuite
        raw = rs._get_observations(force_update=True)
        expected = [
            f"{key}_{axis}"
            for key, ob in rs._observables.items()
            if ob.modality == "object" and ob.is_enabled() and ob.is_active()
            for axis in _axes(np.asarray(raw[key]).shape[0])
        ]
        names = feature_names(env)[OBS_ENV_STATE]
        assert list(names) == expected
        values = dict(zip(names, obs[OBS_ENV_STATE], strict=True))
        pos = {k.removesuffix("_pos_z") for k in names if k.endswith("_pos_z") and "_to_" not in k}
        for obj in pos:  # objects rest on the table, about 0.8 m up in robosuite's world
            assert 0.8 < values[f"{obj}_pos_z"] < 0.95, obj
    finally:
        env.close()


@pytest.mark.parametrize("name", [n for n in ENVS.names() if n.startswith("metaworld-")])
def test_metaworld_env_state_names_follow_metaworld(name):
    pytest.importorskip("metaworld")
    env = make_env(name)
    try:
        obs, _ = env.reset(seed=3)
        values = dict(zip(feature_names(env)[OBS_ENV_STATE], obs[OBS_ENV_STATE], strict=True))
        mw = env.unwrapped._env
        np.testing.assert_allclose([values[f"obj_{c}"] for c in "xyz"], mw._get_pos_objects()[:3], atol=1e-5)
        np.testing.assert_allclose(
            [values[f"obj_q{c}"] for c in "xyzw"], mw._get_quat_objects()[:4], atol=1e-5
        )
        np.testing.assert_allclose([values[f"goal_{c}"] for c in "xyz"], mw._target_pos, atol=1e-5)
        assert feature_names(env)[ACTION] == ("dx", "dy", "dz", "gripper") and not is_ee_delta(env)
        assert env.metadata["render_fps"] == 80
    finally:
        env.close()


def test_metaworld_control_hz_sets_the_substeps():
    pytest.importorskip("metaworld")
    from robolearn.envs.adapters import MetaWorldConfig

    env = make_env("metaworld-reach", MetaWorldConfig(control_hz=40))
    try:
        assert env.unwrapped._env.frame_skip == 10 and env.metadata["render_fps"] == 40
    finally:
        env.close()
    with pytest.raises(ValueError, match="divide"):
        MetaWorldConfig(control_hz=30)


def test_robosuite_imports_and_steps_without_log_noise():
    pytest.importorskip("robosuite")
    code = (
        "import numpy as np; from robolearn.envs import make_env; e = make_env('robosuite-lift'); "
        "e.reset(seed=0); e.step(np.zeros(7)); e.close(); "
        "import logging; logging.getLogger('robosuite_logs').warning('a warning that matters')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    # Only the warning that matters gets through.
    assert [line for line in res.stderr.splitlines() if line.strip()] == [
        "[robosuite WARNING] a warning that matters (<string>:1)"
    ]
