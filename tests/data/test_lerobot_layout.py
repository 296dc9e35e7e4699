"""The files on disk, field by field, against what lerobot 0.4.x writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robolearn.data import layout
from robolearn.data.stats import STAT_KEYS
from robolearn.types import ACTION, REWARD, image_key

STATE = "observation.state"
FRONT, WRIST = image_key("front"), image_key("wrist")
FPS, H, W = 10, 24, 32

BOOKKEEPING = ["timestamp", "frame_index", "episode_index", "index", "task_index"]


@pytest.fixture(scope="module")
def root(tmp_path_factory, lr):
    from robolearn.data.writer import LeRobotWriter

    root = tmp_path_factory.mktemp("layout") / "ds"
    with LeRobotWriter(root, FPS, lr.features((FRONT, WRIST)), robot_type="franka") as w:
        lr.record(
            w,
            [5, 7, 6],
            cameras=(FRONT, WRIST),
            tasks=["open the drawer", "close the drawer", "open the drawer"],
        )
    return root


def test_file_tree(root):
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == [
        "data/chunk-000/file-000.parquet",
        "meta/episodes/chunk-000/file-000.parquet",
        "meta/info.json",
        "meta/stats.json",
        "meta/tasks.parquet",
        f"videos/{FRONT}/chunk-000/file-000.mp4",
        f"videos/{WRIST}/chunk-000/file-000.mp4",
    ]


def test_info_json(root):
    info = json.loads((root / "meta/info.json").read_text())
    assert list(info) == [
        "codebase_version",
        "robot_type",
        "total_episodes",
        "total_frames",
        "total_tasks",
        "chunks_size",
        "data_files_size_in_mb",
        "video_files_size_in_mb",
        "fps",
        "splits",
        "data_path",
        "video_path",
        "features",
    ]
    assert info["codebase_version"] == "v3.0"
    assert info["robot_type"] == "franka"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 18, 2)
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (
        1000,
        100,
        200,
    )
    assert info["fps"] == FPS
    assert info["splits"] == {"train": "0:3"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feats = info["features"]
    assert list(feats) == [STATE, ACTION, REWARD, FRONT, WRIST, *BOOKKEEPING]
    assert feats[STATE] == {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "g"]}
    assert feats[REWARD] == {"dtype": "float32", "shape": [1], "names": None}
    assert feats["timestamp"] == {"dtype": "float32", "shape": [1], "names": None}
    for key in BOOKKEEPING[1:]:
        assert feats[key] == {"dtype": "int64", "shape": [1], "names": None}
    video = feats[FRONT]
    assert (video["dtype"], video["shape"], video["names"]) == (
        "video",
        [H, W, 3],
        ["height", "width", "channels"],
    )
    assert list(video["info"]) == [
        "video.height",
        "video.width",
        "video.codec",
        "video.pix_fmt",
        "video.is_depth_map",
        "video.fps",
        "video.channels",
        "has_audio",
    ]
    assert video["info"]["video.height"] == H and video["info"]["video.width"] == W
    assert video["info"]["video.codec"] in ("av1", "h264")
    assert video["info"]["video.pix_fmt"] == "yuv420p"
    assert video["info"]["video.is_depth_map"] is False
    assert (video["info"]["video.fps"], video["info"]["video.channels"], video["info"]["has_audio"]) == (
        FPS,
        3,
        False,
    )


def test_av1_used_when_available(root):
    from robolearn.data.video import encoder_available

    codec = json.loads((root / "meta/info.json").read_text())["features"][FRONT]["info"]["video.codec"]
    assert codec == ("av1" if encoder_available("libsvtav1") else "h264")


def test_tasks_parquet(root):
    df = pd.read_parquet(root / "meta/tasks.parquet")
    assert list(df.columns) == ["task_index"]
    assert list(df.index) == ["open the drawer", "close the drawer"]
    assert df["task_index"].tolist() == [0, 1]
    schema = pq.read_schema(root / "meta/tasks.parquet")
    assert schema.names == ["task_index", "__index_level_0__"]
    assert schema.field("task_index").type == pa.int64()
    assert schema.field("__index_level_0__").type == pa.string()


def test_data_parquet(root):
    pf = pq.ParquetFile(root / "data/chunk-000/file-000.parquet")
    schema = pf.schema_arrow
    assert schema.names == [STATE, ACTION, REWARD, *BOOKKEEPING]
    assert schema.field(STATE).type == pa.list_(pa.float32(), 4)
    assert schema.field(ACTION).type == pa.list_(pa.float32(), 2)
    assert schema.field(REWARD).type == pa.float32()
    assert schema.field("timestamp").type == pa.float32()
    assert all(schema.field(k).type == pa.int64() for k in BOOKKEEPING[1:])
    hf = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert hf[STATE] == {"feature": {"dtype": "float32", "_type": "Value"}, "length": 4, "_type": "List"}
    assert hf["index"] == {"dtype": "int64", "_type": "Value"}
    assert pf.num_row_groups == 3  # one per episode, as LeRobot's ParquetWriter leaves them
    table = pf.read()
    assert table.column("episode_index").to_pylist() == [0] * 5 + [1] * 7 + [2] * 6
    assert table.column("index").to_pylist() == list(range(18))
    assert table.column("frame_index").to_pylist()[5:12] == list(range(7))
    assert table.column("task_index").to_pylist() == [0] * 5 + [1] * 7 + [0] * 6
    np.testing.assert_allclose(
        table.column("timestamp").to_numpy()[12:], np.arange(6) / FPS, rtol=0, atol=1e-7
    )


def test_episodes_parquet(root):
    table = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    names = table.column_names
    video_cols = [
        f"videos/{k}/{c}"
        for k in (FRONT, WRIST)
        for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
    ]
    stat_cols = [
        f"stats/{f}/{s}" for f in [STATE, ACTION, REWARD, FRONT, WRIST, *BOOKKEEPING] for s in STAT_KEYS
    ]
    assert names == [
        "episode_index",
        "tasks",
        "length",
        "data/chunk_index",
        "data/file_index",
        "dataset_from_index",
        "dataset_to_index",
        *video_cols,
        *stat_cols,
        "meta/episodes/chunk_index",
        "meta/episodes/file_index",
    ]
    rows = table.to_pylist()
    assert [r["episode_index"] for r in rows] == [0, 1, 2]
    assert [r["tasks"] for r in rows] == [["open the drawer"], ["close the drawer"], ["open the drawer"]]
    assert [r["length"] for r in rows] == [5, 7, 6]
    assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [(0, 5), (5, 12), (12, 18)]
    for key in (FRONT, WRIST):
        assert [r[f"videos/{key}/from_timestamp"] for r in rows] == pytest.approx([0.0, 0.5, 1.2])
        assert [r[f"videos/{key}/to_timestamp"] for r in rows] == pytest.approx([0.5, 1.2, 1.8])
        assert all(r[f"videos/{key}/file_index"] == 0 for r in rows)
    assert table.schema.field("tasks").type == pa.list_(pa.string())
    assert table.schema.field("videos/observation.images.front/from_timestamp").type == pa.float64()
    assert table.schema.field(f"stats/{STATE}/mean").type == pa.list_(pa.float64())
    assert table.schema.field("stats/index/min").type == pa.list_(pa.int64())
    assert table.schema.field(f"stats/{FRONT}/mean").type == pa.list_(pa.list_(pa.list_(pa.float64())))
    assert rows[1][f"stats/{STATE}/min"] == [1.0, 0.0, 100.0, 0.5]
    assert rows[1][f"stats/{STATE}/max"] == [1.0, 6.0, 106.0, 0.5]
    assert rows[1]["stats/index/count"] == [7]
    assert rows[1]["stats/frame_index/mean"] == [3.0]
    assert np.asarray(rows[0][f"stats/{FRONT}/mean"]).shape == (3, 1, 1)


def test_stats_json(root):
    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats) == {STATE, ACTION, REWARD, FRONT, WRIST, *BOOKKEEPING}
    for key, s in stats.items():
        assert list(s) == list(STAT_KEYS), key
        assert s["count"] == [18]
    assert stats[STATE]["min"] == [0.0, 0.0, 0.0, 0.5]
    assert stats[STATE]["max"] == [2.0, 6.0, 205.0, 0.5]
    ep = np.repeat([0, 1, 2], [5, 7, 6])
    assert stats[STATE]["mean"][0] == pytest.approx(ep.mean())
    assert stats[STATE]["std"][0] == pytest.approx(ep.std())
    assert stats["index"]["mean"] == [pytest.approx(8.5)]
    assert np.asarray(stats[FRONT]["mean"]).shape == (3, 1, 1)
    assert np.asarray(stats[FRONT]["q50"]).shape == (3, 1, 1)
    assert 0.0 <= np.min(stats[FRONT]["min"]) and np.max(stats[FRONT]["max"]) <= 1.0


def test_chunk_file_math():
    assert layout.next_chunk_file(0, 0, 1000) == (0, 1)
    assert layout.next_chunk_file(0, 999, 1000) == (1, 0)
    assert layout.next_chunk_file(3, 1, 2) == (4, 0)
    assert layout.data_relpath({"data_path": layout.DATA_PATH}, 1, 12) == "data/chunk-001/file-012.parquet"
    assert layout.video_relpath({}, FRONT, 0, 2) == f"videos/{FRONT}/chunk-000/file-002.mp4"


def test_feature_validation():
    from robolearn.types import FeatureSpec

    with pytest.raises(ValueError, match="must not contain '/'"):
        layout.features_to_info({"a/b": FeatureSpec("float32", (1,))}, True)
    with pytest.raises(ValueError, match="filled in by the writer"):
        layout.features_to_info({"index": FeatureSpec("int64", (1,))}, True)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        layout.features_to_info({FRONT: FeatureSpec("video", (8, 8))}, True)


def test_stats_formulas_match_numpy():
    from robolearn.data import stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 3)).astype(np.float32), rng.normal(2.0, 3.0, size=(25, 3)).astype(np.float32)
    merged = stats.merge(stats.merge(None, {"x": stats.numeric_stats(a)}), {"x": stats.numeric_stats(b)})["x"]
    full = np.concatenate([a, b]).astype(np.float64)
    np.testing.assert_allclose(merged["mean"], full.mean(0), rtol=1e-6)
    np.testing.assert_allclose(merged["std"], full.std(0), rtol=1e-6)
    np.testing.assert_array_equal(merged["min"], full.min(0))
    assert merged["count"].tolist() == [65]
    np.testing.assert_allclose(stats.numeric_stats(a)["q10"], np.quantile(a.astype(np.float64), 0.1, axis=0))
    imgs = rng.integers(0, 256, size=(4, 10, 12, 3), dtype=np.uint8)
    acc = stats.ImageStats()
    for img in imgs:
        acc.update(img)
    got = acc.result()
    pixels = imgs.reshape(-1, 3).astype(np.float64) / 255
    assert got["mean"].shape == (3, 1, 1) and got["count"].tolist() == [4]
    np.testing.assert_allclose(got["mean"].ravel(), pixels.mean(0))
    np.testing.assert_allclose(got["std"].ravel(), pixels.std(0))
    for key, q in zip(stats.QUANTILE_KEYS, stats.QUANTILES, strict=True):
        np.testing.assert_allclose(got[key].ravel(), np.quantile(pixels, q, axis=0), atol=1e-9)
