"""Round trips through LeRobot v3: lerobot -> zarr -> lerobot and lerobot -> robomimic -> lerobot."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from robolearn.data.convert import ConversionError, convert, detect_format, open_source
from robolearn.data.reader import LeRobotReader
from robolearn.data.writer import LeRobotWriter
from robolearn.types import FeatureSpec

H, W = 16, 24
FEATURES = {
    "observation.state": FeatureSpec("float32", (3,), ("x", "y", "gripper")),
    "observation.images.wrist": FeatureSpec("video", (H, W, 3)),
    "action": FeatureSpec("float32", (2,)),
    "next.done": FeatureSpec("bool", (1,)),
}
TASKS = ["lift the cube", "push the cube", "lift the cube"]
LENGTHS = [6, 9, 4]


def _frame(t: int, ep: int) -> np.ndarray:
    """A smooth moving gradient: video codecs keep it within a few grey levels."""
    yy, xx = np.mgrid[0:H, 0:W]
    base = 40 + 6 * xx + 3 * yy + 5 * t + 20 * ep
    return np.stack([base, 255 - base, np.full_like(base, 90 + 10 * ep)], -1).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def lerobot_ds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src") / "tiny_lerobot"
    rng = np.random.default_rng(0)
    with LeRobotWriter(root, fps=15, features=FEATURES, robot_type="franka") as w:
        for ep, (n, task) in enumerate(zip(LENGTHS, TASKS, strict=True)):
            for t in range(n):
                w.add_frame(
                    {
                        "observation.state": rng.normal(size=3).astype(np.float32),
                        "observation.images.wrist": _frame(t, ep),
                        "action": rng.normal(size=2).astype(np.float32),
                        "next.done": np.array([t == n - 1]),
                    },
                    task=task,
                )
            w.save_episode()
    return root


def _compare(a: Path, b: Path) -> None:
    """Numeric columns identical, tasks identical, camera frames within codec tolerance."""
    with LeRobotReader(a) as ra, LeRobotReader(b) as rb:
        assert rb.fps == ra.fps and rb.robot_type == ra.robot_type and rb.num_episodes == ra.num_episodes
        assert rb.features == ra.features
        assert rb.episode_lengths.tolist() == ra.episode_lengths.tolist() == LENGTHS
        for ep in range(ra.num_episodes):
            ca, cb = ra.episode_columns(ep), rb.episode_columns(ep)
            for key in ("observation.state", "action", "next.done"):
                assert ca[key].dtype == cb[key].dtype and np.array_equal(ca[key], cb[key]), (ep, key)
            assert (
                [ra.task(i) for i in ca["task_index"]]
                == [rb.task(i) for i in cb["task_index"]]
                == [TASKS[ep]] * LENGTHS[ep]
            )
            idx = np.arange(LENGTHS[ep])
            fa = ra.frames(ep, "observation.images.wrist", idx).astype(np.int16)
            fb = rb.frames(ep, "observation.images.wrist", idx).astype(np.int16)
            truth = np.stack([_frame(t, ep) for t in idx]).astype(np.int16)
            assert np.abs(fb - fa).mean() < 3.0 and np.abs(fb - truth).mean() < 4.0, ep


def test_lerobot_zarr_lerobot_round_trip(lerobot_ds, tmp_path):
    s1 = convert(lerobot_ds, tmp_path / "mid.zarr", to="zarr", progress=False)
    assert detect_format(tmp_path / "mid.zarr") == "zarr"
    s2 = convert(tmp_path / "mid.zarr", tmp_path / "back", to="lerobot", progress=False)
    assert s1.frames == s2.frames == sum(LENGTHS) and s2.cameras == 1 and s2.numeric_features == 3
    _compare(lerobot_ds, tmp_path / "back")


def test_lerobot_robomimic_lerobot_round_trip(lerobot_ds, tmp_path):
    convert(lerobot_ds, tmp_path / "mid.hdf5", to="robomimic", progress=False)
    convert(tmp_path / "mid.hdf5", tmp_path / "back", to="lerobot", progress=False)
    _compare(lerobot_ds, tmp_path / "back")
    # The intermediate file uses robomimic's own names.
    import h5py

    with h5py.File(tmp_path / "mid.hdf5", "r") as f:
        assert sorted(f["data/demo_0/obs"].keys()) == ["state", "wrist_image"]
        assert f["data"].attrs["total"] == sum(LENGTHS)


def test_lerobot_source_reports_features_and_tasks(lerobot_ds):
    with open_source(lerobot_ds) as src:
        assert detect_format(lerobot_ds) == "lerobot" and src.fps == 15 and src.num_episodes == 3
        assert set(src.features) == set(FEATURES)
        assert [ep.task for ep in src.episodes()] == TASKS


def test_failed_lerobot_conversion_leaves_no_output(lerobot_ds, tmp_path):
    src = tmp_path / "in.zarr"
    convert(lerobot_ds, src, to="zarr", progress=False)
    import zarr

    root = zarr.open_group(str(src), mode="r+")
    arr = root["data/state"]
    arr[7] = np.array([np.nan, 0, 0], np.float32)  # LeRobot's writer rejects non-finite values
    with pytest.raises(
        ConversionError, match=r"in\.zarr episode 1: feature 'observation\.state' frame 1: non-finite"
    ):
        convert(src, tmp_path / "out", to="lerobot", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr"]


def test_command_line_round_trip(lerobot_ds, tmp_path, capsys):
    from robolearn.commands import convert as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    assert cmd.run(parser.parse_args([str(lerobot_ds), str(tmp_path / "o.zarr.zip"), "--to", "zarr"])) == 0
    assert (
        cmd.run(parser.parse_args([str(tmp_path / "o.zarr.zip"), str(tmp_path / "o"), "--to", "lerobot"]))
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("converted 3 episodes, 19 frames at 15 fps") and "-> lerobot" in out[-1]
    _compare(lerobot_ds, tmp_path / "o")
