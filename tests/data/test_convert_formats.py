"""zarr (diffusion_policy) and robomimic HDF5: hand-built foreign files, our writers, errors, atomicity."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from robolearn.data.convert import (
    ConversionError,
    ConvertOptions,
    Episode,
    InMemorySource,
    convert,
    detect_format,
    open_source,
    write_episodes,
)
from robolearn.data.convert.episode import image_spec
from robolearn.types import FeatureSpec

FEATURES = {
    "observation.state": FeatureSpec("float32", (4,), ("x", "y", "z", "g")),
    "observation.environment_state": FeatureSpec("float64", (3,)),
    "observation.images.front": image_spec((8, 10, 3)),
    "action": FeatureSpec("float32", (2,)),
    "next.reward": FeatureSpec("float32", (1,)),
    "next.done": FeatureSpec("bool", (1,)),
}


def _episodes(lengths=(5, 7, 3), seed=0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        done = np.zeros((n, 1), bool)
        done[-1] = True
        frames = {
            "observation.state": rng.normal(size=(n, 4)).astype(np.float32),
            "observation.environment_state": rng.normal(size=(n, 3)),
            "observation.images.front": rng.integers(0, 256, (n, 8, 10, 3), dtype=np.uint8),
            "action": rng.normal(size=(n, 2)).astype(np.float32),
            "next.reward": rng.normal(size=(n, 1)).astype(np.float32),
            "next.done": done,
        }
        out.append(Episode(frames, ["push the T", "lift the cube"][i % 2]))
    return out


def _source(eps=None, fps=10.0) -> InMemorySource:
    return InMemorySource(
        Path("memory"), fps=fps, features=dict(FEATURES), robot_type="franka", episode_list=eps or _episodes()
    )


def _assert_same(expected: list[Episode], path: Path, **opts) -> None:
    with open_source(path, options=ConvertOptions(**opts)) as src:
        assert src.features == FEATURES and src.fps == 10.0 and src.robot_type == "franka"
        got = list(src.episodes())
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert a.task == b.task
        for key, arr in a.frames.items():
            other = b.frames[key].reshape(arr.shape)
            assert other.dtype == arr.dtype, key
            assert np.array_equal(arr, other), key


@pytest.mark.parametrize(
    "name,to", [("out.zarr", "zarr"), ("out.zarr.zip", "zarr"), ("out.hdf5", "robomimic")]
)
def test_our_files_read_back_losslessly(tmp_path, name, to):
    eps = _episodes()
    frames = write_episodes(_source(eps), tmp_path / name, to, iter(eps))
    assert frames == 15
    assert detect_format(tmp_path / name) == to
    _assert_same(eps, tmp_path / name)


def test_zarr_output_is_a_diffusion_policy_replay_buffer(tmp_path):
    write_episodes(_source(), tmp_path / "rb.zarr", "zarr", iter(_episodes()))
    assert (
        tmp_path / "rb.zarr" / ".zgroup"
    ).exists()  # zarr format 2, what diffusion_policy's zarr 2.x opens
    root = zarr.open_group(str(tmp_path / "rb.zarr"), mode="r")
    assert root.metadata.zarr_format == 2
    ends = root["meta/episode_ends"][:]
    assert ends.dtype == np.int64 and ends.tolist() == [5, 12, 15]
    assert sorted(root["data"].keys()) == ["action", "done", "environment_state", "front", "reward", "state"]
    for key in root["data"].keys():
        assert root["data"][key].shape[0] == ends[-1]  # ReplayBuffer's own consistency check
    assert root["data/front"].dtype == np.uint8 and root["data/front"].shape == (15, 8, 10, 3)
    meta = json.loads((tmp_path / "rb.zarr" / "data" / "front" / ".zarray").read_text())
    assert meta["compressor"]["id"] == "blosc"


def test_foreign_zarr_like_pusht(tmp_path):
    path = tmp_path / "pusht_replay.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    n = 9
    rng = np.random.default_rng(1)
    state, action = rng.normal(size=(n, 5)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)
    img = rng.integers(0, 256, (n, 16, 16, 3)).astype(np.float32)  # Push-T stores float pixels in [0, 255]
    keypoint = rng.normal(size=(n, 9, 2)).astype(np.float32)
    for key, arr in {"state": state, "action": action, "img": img, "keypoint": keypoint}.items():
        root.create_group("data") if "data" not in root else None
        root["data"].create_array(key, data=arr)
    root.create_group("meta").create_array("episode_ends", data=np.array([4, 9], dtype=np.int64))
    assert detect_format(path) == "zarr"
    with pytest.raises(
        ConversionError, match=r"pusht_replay\.zarr: the zarr does not record a frame rate; pass --fps"
    ):
        open_source(path)
    with open_source(path, options=ConvertOptions(fps=10)) as src:
        assert set(src.features) == {
            "observation.state",
            "action",
            "observation.images.image",
            "observation.keypoint",
        }
        assert src.features["observation.images.image"] == image_spec((16, 16, 3))
        assert any("no task recorded" in n for n in src.notes)
        eps = list(src.episodes())
    assert [len(e) for e in eps] == [4, 5] and eps[0].task == "pusht_replay"
    assert np.array_equal(eps[1].frames["observation.state"], state[4:])
    assert np.array_equal(eps[1].frames["observation.keypoint"], keypoint[4:])
    assert eps[0].frames["observation.images.image"].dtype == np.uint8
    assert np.array_equal(eps[0].frames["observation.images.image"], img[:4].astype(np.uint8))


def _foreign_robomimic(path: Path, lengths=(4, 6, 5)) -> dict:
    rng = np.random.default_rng(2)
    arrays = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        names = [f"demo_{i}" for i in (0, 2, 10)][: len(lengths)]
        for name, n in zip(names, lengths, strict=True):
            g = data.create_group(name)
            a = {
                "obs/robot0_eef_pos": rng.normal(size=(n, 3)),
                "obs/robot0_eef_quat": rng.normal(size=(n, 4)),
                "obs/robot0_gripper_qpos": rng.normal(size=(n, 2)),
                "obs/robot0_joint_pos": rng.normal(size=(n, 7)),
                "obs/object": rng.normal(size=(n, 10)),
                "obs/agentview_image": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
                "obs/agentview_depth": rng.random((n, 8, 8, 1)).astype(np.float32),
                "actions": rng.normal(size=(n, 7)),
                "rewards": np.zeros(n),
                "dones": np.eye(n, dtype=np.int64)[-1],
            }
            for k, v in a.items():
                g.create_dataset(k, data=v)
            g.attrs["num_samples"] = n
            arrays[name] = a
        data.attrs["total"] = sum(lengths)
        data.attrs["env_args"] = json.dumps(
            {"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}}
        )
        f.create_dataset("mask/valid", data=np.array([b"demo_10"]))
    return arrays


def test_foreign_robomimic_mapping(tmp_path):
    path = tmp_path / "lift_ph.hdf5"
    arrays = _foreign_robomimic(path)
    assert detect_format(path) == "robomimic"
    with open_source(path) as src:
        assert src.fps == 20.0  # from env_args.env_kwargs.control_freq
        f = src.features
        assert f["observation.state"].shape == (9,) and f["observation.state"].names[:2] == (
            "robot0_eef_pos.0",
            "robot0_eef_pos.1",
        )
        assert f["observation.environment_state"].shape == (10,)
        assert f["observation.images.agentview"] == image_spec((8, 8, 3))
        assert f["observation.robot0_joint_pos"].shape == (7,)
        assert f["action"].shape == (7,) and f["next.done"].dtype == "bool"
        assert not any("depth" in k for k in f) and any("depth" in n for n in src.notes)
        eps = list(src.episodes())
    assert [len(e) for e in eps] == [4, 6, 5]  # demo_0, demo_2, demo_10: numeric order
    a = arrays["demo_10"]
    state = np.concatenate(
        [a["obs/robot0_eef_pos"], a["obs/robot0_eef_quat"], a["obs/robot0_gripper_qpos"]], 1
    )
    assert np.array_equal(eps[2].frames["observation.state"], state) and eps[2].task == "Lift"
    assert np.array_equal(eps[2].frames["action"], a["actions"])
    assert eps[2].frames["next.done"].tolist() == [False] * 4 + [True]
    opts = ConvertOptions(state_keys=("robot0_joint_pos",), filter_key="valid", task="lift the cube")
    with open_source(path, options=opts) as src:
        eps = list(src.episodes())
        assert len(eps) == 1 and eps[0].task == "lift the cube"
        assert np.array_equal(eps[0].frames["observation.state"], a["obs/robot0_joint_pos"])
    with pytest.raises(ConversionError, match=r"state key\(s\) \['robot0_eef_vel'\] not in obs"):
        open_source(path, options=ConvertOptions(state_keys=("robot0_eef_vel",)))


def test_robomimic_output_layout(tmp_path):
    path = tmp_path / "out.hdf5"
    write_episodes(_source(), path, "robomimic", iter(_episodes()))
    with h5py.File(path, "r") as f:
        data = f["data"]
        assert data.attrs["total"] == 15
        assert json.loads(data.attrs["env_args"])["env_name"] == "unknown"  # no registered env recorded
        demo = data["demo_1"]
        assert demo.attrs["num_samples"] == 7
        assert demo["obs/front_image"].shape == (7, 8, 10, 3) and demo["obs/state"].shape == (7, 4)
        assert demo["obs/object"].shape == (7, 3)
        assert (
            demo["actions"].shape == (7, 2) and demo["rewards"].shape == (7,) and demo["dones"].shape == (7,)
        )


def test_robomimic_to_zarr_to_robomimic_keeps_everything(tmp_path):
    src = tmp_path / "lift.hdf5"
    _foreign_robomimic(src)
    convert(src, tmp_path / "a.zarr", to="zarr", progress=False)
    convert(tmp_path / "a.zarr", tmp_path / "b.hdf5", to="robomimic", progress=False)
    with open_source(src) as a, open_source(tmp_path / "b.hdf5") as b:
        assert a.features == b.features and a.fps == b.fps
        for ea, eb in zip(a.episodes(), b.episodes(), strict=True):
            assert ea.task == eb.task
            for key, arr in ea.frames.items():
                assert np.array_equal(arr.reshape(eb.frames[key].shape), eb.frames[key]), key


# -- errors and atomicity ---------------------------------------------------------------------------
def test_bad_robomimic_demos_are_named(tmp_path):
    path = tmp_path / "bad.hdf5"
    _foreign_robomimic(path)
    with h5py.File(path, "a") as f:
        f["data/demo_2"].attrs["num_samples"] = 99
        del f["data/demo_10/obs/object"]
    with pytest.raises(ConversionError, match=r"bad\.hdf5 demo_2: num_samples is 99 but actions has 6 rows"):
        convert(path, tmp_path / "o.zarr", to="zarr", progress=False)
    assert not (tmp_path / "o.zarr").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.hdf5"]
    with h5py.File(path, "a") as f:
        f["data/demo_2"].attrs["num_samples"] = 6
    with pytest.raises(ConversionError, match=r"bad\.hdf5 demo_10: missing 'obs/object'"):
        convert(path, tmp_path / "o.zarr", to="zarr", progress=False)


def test_corrupt_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.hdf5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ConversionError, match=r"broken\.hdf5: cannot open as HDF5"):
        convert(bad, tmp_path / "o.zarr", to="zarr", progress=False)
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"hello world")
    with pytest.raises(ConversionError, match=r"junk\.hdf5: cannot tell the format \(its name says HDF5"):
        detect_format(junk)
    zarr_dir = tmp_path / "short.zarr"
    root = zarr.open_group(str(zarr_dir), mode="w", zarr_format=2)
    root.create_group("data").create_array("action", data=np.zeros((3, 2)))
    root.create_group("meta").create_array("episode_ends", data=np.array([2, 5]))
    with pytest.raises(ConversionError, match=r"short\.zarr: data/action has 3 frames, expected 5"):
        open_source(zarr_dir, options=ConvertOptions(fps=10))


class _Exploding(InMemorySource):
    def episodes(self):
        yield self.episode_list[0]
        raise ConversionError("memory episode 1: boom")


@pytest.mark.parametrize("to,name", [("zarr", "o.zarr"), ("zarr", "o.zip"), ("robomimic", "o.hdf5")])
def test_failure_leaves_nothing_and_keeps_old_output(tmp_path, to, name):
    out = tmp_path / name
    src = _Exploding(Path("memory"), fps=10, features=dict(FEATURES), episode_list=_episodes())
    from robolearn.data.convert.atomic import atomic_output

    with pytest.raises(ConversionError, match="boom"), atomic_output(out) as tmp:
        write_episodes(src, tmp, to, src.episodes())
    assert list(tmp_path.iterdir()) == []
    out.write_text("old")
    with pytest.raises(ConversionError, match="exists; pass --overwrite"), atomic_output(out):
        pass
    with pytest.raises(ConversionError, match="boom"), atomic_output(out, overwrite=True) as tmp:
        write_episodes(src, tmp, to, src.episodes())
    assert out.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_overwrite_replaces_existing_output(tmp_path):
    src = tmp_path / "in.hdf5"
    write_episodes(_source(), src, "robomimic", iter(_episodes()))
    out = tmp_path / "out.zarr"
    out.mkdir()
    with pytest.raises(ConversionError, match=r"out\.zarr exists; pass --overwrite"):
        convert(src, out, to="zarr", progress=False)
    summary = convert(src, out, to="zarr", overwrite=True, progress=False)
    assert summary.episodes == 3 and summary.frames == 15 and summary.cameras == 1
    assert "converted 3 episodes, 15 frames at 10 fps" in summary.line()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.hdf5", "out.zarr"]
    _assert_same(_episodes(), out)


def test_command_reports_and_maps_errors_to_user_error(tmp_path, capsys):
    from robolearn.cli import UserError
    from robolearn.commands import convert as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    src = tmp_path / "in.hdf5"
    write_episodes(_source(), src, "robomimic", iter(_episodes()))
    assert cmd.run(parser.parse_args([str(src), str(tmp_path / "o.zip"), "--to", "zarr"])) == 0
    assert "converted 3 episodes" in capsys.readouterr().out
    with pytest.raises(UserError, match=r"o\.zip exists; pass --overwrite"):
        cmd.run(parser.parse_args([str(src), str(tmp_path / "o.zip"), "--to", "zarr"]))
    with pytest.raises(UserError, match=r"nothing\.bag: no such file"):
        cmd.run(parser.parse_args([str(tmp_path / "nothing.bag"), str(tmp_path / "x"), "--to", "lerobot"]))
