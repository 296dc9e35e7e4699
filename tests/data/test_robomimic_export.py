"""The robomimic export of a dataset recorded from the embedded sim: next_obs, masks, env_args, states."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from robolearn.data.convert import ConvertOptions, Episode, InMemorySource, convert, write_episodes
from robolearn.data.reader import LeRobotReader
from robolearn.data.sampler import split_episodes
from robolearn.types import FeatureSpec


@pytest.fixture(scope="module")
def lift(tmp_path_factory):
    """4 franka-lift expert episodes with a camera and the MuJoCo state, made by ``robolearn collect``."""
    out = tmp_path_factory.mktemp("lift") / "lift"
    cmd = [sys.executable, "-m", "robolearn.cli", "collect", "--env", "franka-lift", "--episodes", "4",
           "--out", str(out), "--cameras", "front", "--image-size", "16x16", "--record-sim-state"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_export_writes_next_obs_masks_env_args_and_states(lift, tmp_path):
    h5 = tmp_path / "lift.hdf5"
    convert(lift, h5, to="robomimic", progress=False)
    reader = LeRobotReader(lift)
    info = reader.info
    train, valid = split_episodes(reader.num_episodes, 0.05, 0)  # robolearn train's default split
    with h5py.File(h5, "r") as f:
        assert sorted(f["mask/train"][()].tolist()) == [f"demo_{i}".encode() for i in train]
        assert [x.decode() for x in f["mask/valid"][()]] == [f"demo_{i}" for i in valid] and len(valid) == 1
        env_args = json.loads(f["data"].attrs["env_args"])
        assert env_args["env_name"] == "franka-lift" and env_args["type"] == 2
        assert env_args["env_kwargs"] == {**info["robolearn"]["env_config"], "control_freq": 20.0}
        for ep in range(reader.num_episodes):
            demo, cols = f[f"data/demo_{ep}"], reader.episode_columns(ep)
            n = int(reader.episode_lengths[ep])
            assert demo.attrs["num_samples"] == n
            state = np.asarray(cols["observation.state"])
            assert np.array_equal(demo["obs/state"][()], state)
            assert np.array_equal(demo["next_obs/state"][:-1], state[1:])
            assert np.array_equal(demo["next_obs/state"][-1], state[-1])  # no obs after the last: repeated
            assert np.array_equal(demo["next_obs/object"][:-1], demo["obs/object"][1:])
            assert np.array_equal(demo["next_obs/front_image"][:-1], demo["obs/front_image"][1:])
            assert (
                demo["dones"][()].tolist() == np.asarray(cols["next.done"]).reshape(-1).astype(int).tolist()
            )
            assert demo["dones"][-1] == 1 and demo["dones"].dtype == np.int64
            states = demo["states"][()]
            assert states.dtype == np.float64 and np.array_equal(
                states, np.asarray(cols["observation.sim_state"])
            )
            assert "sim_state" not in demo["obs"]


def test_recorded_sim_state_replays_the_observation(lift):
    """Restoring a frame's ``observation.sim_state`` reproduces that frame's joint positions."""
    from robolearn.envs import make_env
    from robolearn.envs.sim_state import SimStateObservation, restore_sim_state

    reader = LeRobotReader(lift)
    cols = reader.episode_columns(1)
    env = SimStateObservation(make_env("franka-lift"))
    try:
        env.reset(seed=123)  # a different episode: everything must come from the recorded state
        for t in (0, 17, int(reader.episode_lengths[1]) - 1):
            restore_sim_state(env, np.asarray(cols["observation.sim_state"])[t])
            qpos = env.unwrapped.data.qpos
            recorded = np.asarray(cols["observation.state"])[t][:7]  # q1..q7
            joints = [env.unwrapped.model.joint(f"joint{i}").qposadr[0] for i in range(1, 8)]
            assert np.allclose(qpos[joints], recorded, atol=1e-6), t
    finally:
        env.close()


def test_val_fraction_and_recorded_split(lift, tmp_path):
    convert(
        lift, tmp_path / "a.hdf5", to="robomimic", options=ConvertOptions(val_fraction=0.5), progress=False
    )
    with h5py.File(tmp_path / "a.hdf5", "r") as f:
        assert len(f["mask/valid"]) == 2 and len(f["mask/train"]) == 2
    feats = {"observation.state": FeatureSpec("float32", (2,)), "action": FeatureSpec("float32", (1,))}
    eps = [Episode({"observation.state": np.full((3, 2), i, np.float32), "action": np.zeros((3, 1), np.float32)}, "t")
           for i in range(4)]  # fmt: skip
    src = InMemorySource(
        tmp_path / "mem", fps=10.0, features=feats, episode_list=eps, splits={"valid": [0, 3]}
    )
    write_episodes(src, tmp_path / "b.hdf5", "robomimic", iter(eps))
    with h5py.File(tmp_path / "b.hdf5", "r") as f:
        assert f["mask/valid"][()].tolist() == [b"demo_0", b"demo_3"]
        assert f["mask/train"][()].tolist() == [b"demo_1", b"demo_2"]  # the complement
        assert json.loads(f["data"].attrs["env_args"])["env_kwargs"] == {"control_freq": 10.0}


def test_record_sim_state_needs_a_mujoco_env_and_one_env(tmp_path):
    cmd = [sys.executable, "-m", "robolearn.cli", "collect", "--env", "franka-lift,franka-push", "--episodes", "1",
           "--out", str(tmp_path / "x"), "--record-sim-state"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "--record-sim-state records one env per run" in res.stderr
    assert not (tmp_path / "x").exists()
