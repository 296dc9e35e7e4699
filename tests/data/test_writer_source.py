"""LeRobotWriter's robolearn metadata: the source env in info.json and a seed per episode."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from robolearn.data.reader import LeRobotReader
from robolearn.data.validate import validate
from robolearn.data.writer import LeRobotWriter
from robolearn.types import FeatureSpec

FEATURES = {
    "observation.state": FeatureSpec("float32", (3,), ("x", "y", "z")),
    "action": FeatureSpec("float32", (2,)),
}


def _episode(writer: LeRobotWriter, n: int = 4, value: float = 0.0) -> None:
    for i in range(n):
        writer.add_frame(
            {"observation.state": np.full(3, value + i, np.float32), "action": np.zeros(2, np.float32)},
            task="reach",
        )


def _seed_column(root) -> list:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    return [s for f in files for s in pq.read_table(f).column("seed").to_pylist()]


def test_source_env_and_robot_type_in_info(tmp_path):
    cfg = {"task": "lift", "control_hz": 20.0, "cameras": []}
    with LeRobotWriter(
        tmp_path / "a", 20, FEATURES, robot_type="franka_fr3", env="franka-lift", env_config=cfg
    ) as w:
        _episode(w)
        w.save_episode(seed=3)
    info = json.loads((tmp_path / "a" / "meta" / "info.json").read_text())
    assert info["robot_type"] == "franka_fr3"
    assert info["robolearn"] == {"env": "franka-lift", "env_config": cfg}
    assert list(info)[-1] == "robolearn"  # after lerobot's own keys, which keep their order
    assert LeRobotWriter.open(tmp_path / "a").source_env == "franka-lift"

    # No label unless told: robot_type is null and there is no robolearn block.
    with LeRobotWriter(tmp_path / "b", 20, FEATURES) as w:
        _episode(w)
        w.save_episode()
    info = json.loads((tmp_path / "b" / "meta" / "info.json").read_text())
    assert info["robot_type"] is None and "robolearn" not in info
    with pytest.raises(ValueError, match="env_config needs env"):
        LeRobotWriter(tmp_path / "c", 20, FEATURES, env_config=cfg)


def test_seeds_are_recorded_per_episode_and_survive_reopening(tmp_path):
    root = tmp_path / "ds"
    with LeRobotWriter(root, 10, FEATURES, env="x", env_config={}) as w:
        for seed in (5, 6, 9):
            _episode(w, value=seed)
            w.save_episode(seed=seed)
        assert w.seeds == {5: 0, 6: 1, 9: 2}
    assert _seed_column(root) == [5, 6, 9]
    w = LeRobotWriter.open(root)
    assert w.seeds == {5: 0, 6: 1, 9: 2}
    _episode(w)
    with pytest.raises(ValueError, match=r"seed 6 is already in the dataset \(episode 1\)"):
        w.save_episode(seed=6)
    assert w.episode_frames == 4  # the open episode is kept: save it under a free seed
    with pytest.raises(ValueError, match="record their seed"):
        w.save_episode()
    w.save_episode(seed=10)
    w.finalize()
    assert _seed_column(root) == [5, 6, 9, 10]
    reader = LeRobotReader(root)
    assert reader.num_episodes == 4
    np.testing.assert_array_equal(reader.episode_columns(3)["observation.state"][:, 0], [0, 1, 2, 3])
    assert not [p for p in validate(root) if p.severity == "error"]


def test_a_dataset_without_seeds_takes_none(tmp_path):
    root = tmp_path / "ds"
    with LeRobotWriter(root, 10, FEATURES) as w:
        _episode(w)
        w.save_episode()
        _episode(w)
        with pytest.raises(ValueError, match="record no seed"):
            w.save_episode(seed=1)
        w.discard_episode()
    w = LeRobotWriter.open(root)
    assert w.seeds is None
    w.finalize()
