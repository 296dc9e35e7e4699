"""Write -> read round trips: numeric data exact, images within codec tolerance, appends, rollover."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robolearn.data.reader import LeRobotReader
from robolearn.data.validate import validate
from robolearn.data.writer import LeRobotWriter


def _expected_state(ep: int, n: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float32)
    return np.stack([np.full(n, ep), i, ep * 100 + i, np.full(n, 0.5)], axis=1).astype(np.float32)


def test_numeric_round_trip_is_exact(new_dataset, lr):
    root = new_dataset((5, 7, 6))
    r = LeRobotReader(root)
    assert (r.num_episodes, r.num_frames, r.fps) == (3, 18, lr.FPS)
    assert r.tasks == ["pick the cube 0", "pick the cube 1"]
    for ep, n in enumerate((5, 7, 6)):
        cols = r.episode_columns(ep)
        np.testing.assert_array_equal(cols[lr.STATE], _expected_state(ep, n))
        np.testing.assert_array_equal(cols[lr.ACTION][:, 1], np.full(n, -ep, np.float32))
        np.testing.assert_array_equal(cols[lr.REWARD], (np.arange(n) == 4).astype(np.float32))
        assert cols[lr.REWARD].shape == (n,)
        np.testing.assert_array_equal(cols["frame_index"], np.arange(n))
        np.testing.assert_array_equal(cols["episode_index"], np.full(n, ep))
        np.testing.assert_array_equal(cols["task_index"], np.full(n, ep % 2))
        assert cols[lr.STATE].dtype == np.float32 and cols["index"].dtype == np.int64
    meta = r.episode_meta(1)
    assert (meta["length"], meta["dataset_from_index"], meta["dataset_to_index"]) == (7, 5, 12)
    assert meta["tasks"] == ["pick the cube 1"]
    assert validate(root) == []


def test_rows_span_episodes_and_select_columns(new_dataset, lr):
    r = LeRobotReader(new_dataset((5, 7, 6)))
    rows = r.rows(3, 14, ["index", lr.STATE])
    assert set(rows) == {"index", lr.STATE}
    np.testing.assert_array_equal(rows["index"], np.arange(3, 14))
    np.testing.assert_array_equal(rows[lr.STATE][:, 0], [0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2])
    with pytest.raises(IndexError):
        r.rows(10, 19)


def test_images_round_trip_within_codec_tolerance(new_dataset, lr):
    root = new_dataset((6, 8), cameras=(lr.FRONT, lr.WRIST))
    r = LeRobotReader(root)
    for ep, n in enumerate((6, 8)):
        for c, cam in enumerate((lr.FRONT, lr.WRIST)):
            got = r.frames(ep, cam, np.arange(n))
            want = np.stack([lr.smooth_image(ep, i, c) for i in range(n)])
            assert got.shape == (n, lr.H, lr.W, 3) and got.dtype == np.uint8
            assert np.abs(got.astype(int) - want).mean() < 8
    # frames are located by timestamp: any order, repeats, and the right frame each time
    got = r.frames(1, lr.FRONT, [7, 0, 3, 3])
    for k, i in enumerate([7, 0, 3, 3]):
        errors = [np.abs(got[k].astype(int) - lr.smooth_image(1, j)).mean() for j in range(8)]
        assert int(np.argmin(errors)) == i
    with pytest.raises(IndexError):
        r.frames(1, lr.FRONT, [8])


def test_png_images_in_parquet_are_lossless(new_dataset, lr):
    root = new_dataset((3, 4), use_videos=False, camera_dtype="image")
    info = json.loads((root / "meta/info.json").read_text())
    assert info["video_path"] is None and info["features"][lr.FRONT]["dtype"] == "image"
    r = LeRobotReader(root)
    got = r.frames(1, lr.FRONT, [0, 3])
    np.testing.assert_array_equal(got, np.stack([lr.smooth_image(1, 0), lr.smooth_image(1, 3)]))
    assert not (root / "videos").exists()
    assert validate(root) == []


def test_many_episodes_per_file_with_timestamps(new_dataset, lr):
    lengths = (3, 5, 2, 4, 6, 3)
    root = new_dataset(lengths)
    r = LeRobotReader(root)
    starts = np.concatenate([[0], np.cumsum(lengths)]) / lr.FPS
    for ep, n in enumerate(lengths):
        meta = r.episode_meta(ep)
        assert meta[f"videos/{lr.FRONT}/file_index"] == 0 and meta["data/file_index"] == 0
        assert meta[f"videos/{lr.FRONT}/from_timestamp"] == pytest.approx(starts[ep])
        assert meta[f"videos/{lr.FRONT}/to_timestamp"] == pytest.approx(starts[ep + 1])
        last = r.frames(ep, lr.FRONT, [n - 1])[0]
        assert np.abs(last.astype(int) - lr.smooth_image(ep, n - 1)).mean() < 8


def test_rollover_to_new_files_and_chunks(new_dataset, lr):
    # tiny size caps: every episode after the first in a file overflows it; 2 files per chunk
    root = new_dataset(
        (4, 4, 4, 4, 4), chunks_size=2, data_files_size_in_mb=0.004, video_files_size_in_mb=0.001
    )
    r = LeRobotReader(root)
    data_locs = [
        (r.episode_meta(e)["data/chunk_index"], r.episode_meta(e)["data/file_index"]) for e in range(5)
    ]
    assert len(set(data_locs)) > 1 and max(data_locs)[0] >= 1  # several files, into chunk-001
    assert data_locs == sorted(data_locs)
    video_locs = [
        (
            r.episode_meta(e)[f"videos/{lr.FRONT}/chunk_index"],
            r.episode_meta(e)[f"videos/{lr.FRONT}/file_index"],
        )
        for e in range(5)
    ]
    assert video_locs == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    assert (root / f"videos/{lr.FRONT}/chunk-002/file-000.mp4").is_file()
    assert r.episode_meta(3)[f"videos/{lr.FRONT}/from_timestamp"] == 0.0
    np.testing.assert_array_equal(r.rows(0, 20, ["index"])["index"], np.arange(20))
    for ep in range(5):
        np.testing.assert_array_equal(r.episode_columns(ep)[lr.STATE], _expected_state(ep, 4))
        assert np.abs(r.frames(ep, lr.FRONT, [3])[0].astype(int) - lr.smooth_image(ep, 3)).mean() < 8
    assert validate(root) == []


def test_append_to_existing_dataset(new_dataset, lr):
    root = new_dataset((5, 4))
    with LeRobotWriter.open(root) as w:
        assert w.repairs == [] and w.num_episodes == 2
        lr.record(w, (3, 6), first_ep=2, tasks=["pick the cube 0", "stack the blocks"])
    r = LeRobotReader(root)
    assert (r.num_episodes, r.num_frames) == (4, 18)
    assert r.tasks == ["pick the cube 0", "pick the cube 1", "stack the blocks"]
    np.testing.assert_array_equal(r.episode_columns(3)["task_index"], np.full(6, 2))
    np.testing.assert_array_equal(r.episode_columns(3)["index"], np.arange(12, 18))
    for ep, n in enumerate((5, 4, 3, 6)):
        np.testing.assert_array_equal(r.episode_columns(ep)[lr.STATE], _expected_state(ep, n))
        assert np.abs(r.frames(ep, lr.FRONT, [n - 1])[0].astype(int) - lr.smooth_image(ep, n - 1)).mean() < 8
    stats = r.stats
    assert stats["index"]["count"].tolist() == [18]
    assert stats[lr.STATE]["max"].tolist() == [3.0, 5.0, 305.0, 0.5]
    assert validate(root) == []


def test_commit_every_batches_and_discard(tmp_path, lr):
    root = tmp_path / "ds"
    w = LeRobotWriter(root, lr.FPS, lr.features(), commit_every=3)
    lr.record(w, (3, 4))
    assert json.loads((root / "meta/info.json").read_text())["total_episodes"] == 0  # not committed yet
    for i in range(5):
        w.add_frame(lr.frame(9, i), task="never saved")
    w.discard_episode()
    lr.record(w, (2,), first_ep=2)  # third save triggers the commit
    assert json.loads((root / "meta/info.json").read_text())["total_episodes"] == 3
    lr.record(w, (5,), first_ep=3)
    w.finalize()
    r = LeRobotReader(root)
    assert r.num_episodes == 4 and "never saved" not in r.tasks
    np.testing.assert_array_equal(r.episode_columns(2)[lr.STATE], _expected_state(2, 2))
    assert validate(root) == []


def test_h264_codec(new_dataset, lr):
    root = new_dataset((4, 3), vcodec="h264")
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"][lr.FRONT]["info"]["video.codec"] == "h264"
    r = LeRobotReader(root)
    assert np.abs(r.frames(1, lr.FRONT, [2])[0].astype(int) - lr.smooth_image(1, 2)).mean() < 8


def test_add_frame_rejects_bad_input(tmp_path, lr):
    w = LeRobotWriter(tmp_path / "ds", lr.FPS, lr.features())
    good = lr.frame(0, 0)
    with pytest.raises(ValueError, match="missing"):
        w.add_frame({k: v for k, v in good.items() if k != lr.ACTION}, task="t")
    with pytest.raises(ValueError, match=r"'observation.state' frame 0: shape \(3,\)"):
        w.add_frame({**good, lr.STATE: np.zeros(3)}, task="t")
    with pytest.raises(ValueError, match="non-finite"):
        w.add_frame({**good, lr.ACTION: np.array([np.nan, 0])}, task="t")
    with pytest.raises(ValueError, match="uint8"):
        w.add_frame({**good, lr.FRONT: good[lr.FRONT].astype(np.float32)}, task="t")
    with pytest.raises(ValueError, match="no frames"):
        w.save_episode()
    with pytest.raises(FileExistsError, match="LeRobotWriter.open"):
        LeRobotWriter(tmp_path / "ds", lr.FPS, lr.features())
    w.finalize()


def test_a_rejected_frame_leaves_the_open_episode_as_it_was(tmp_path, lr):
    w = LeRobotWriter(tmp_path / "ds", lr.FPS, lr.features())
    for i in range(2):
        w.add_frame(lr.frame(0, i), task="t")
    # the state is valid and checked first; the action is not: nothing of the frame may be kept
    with pytest.raises(ValueError, match="non-finite"):
        w.add_frame({**lr.frame(0, 2), lr.ACTION: np.array([np.nan, 0])}, task="t")
    assert w.episode_frames == 2
    w.add_frame(lr.frame(0, 2), task="t")
    w.save_episode()
    w.finalize()
    r = LeRobotReader(tmp_path / "ds")
    np.testing.assert_array_equal(r.episode_columns(0)[lr.STATE], _expected_state(0, 3))
    assert r.episode_columns(0)[lr.ACTION].shape == (3, 2)
    assert validate(tmp_path / "ds") == []


def _write_lerobot_style(root, lr) -> None:
    """A dataset laid out the way lerobot 0.4.x leaves a resumed recording: every session starts new
    data/video/episode files; one column as a variable-length list (older ``Sequence`` features)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from robolearn.data import stats
    from robolearn.data.video import EpisodeVideoEncoder, remux, video_info

    sessions, fps, ep, start = [(3, 4), (5,)], lr.FPS, 0, 0
    (root / "meta").mkdir(parents=True)
    pd.DataFrame({"task_index": [0]}, index=["wipe the table"]).to_parquet(root / "meta/tasks.parquet")
    for s, lengths in enumerate(sessions):
        rows, tables, vids = [], [], []
        for n in lengths:
            state = _expected_state(ep, n)
            vid = root / f"ep{ep}.mp4"
            enc = EpisodeVideoEncoder(vid, fps, "libx264", lr.W, lr.H)
            for i in range(n):
                enc.add(lr.smooth_image(ep, i))
            enc.close()
            vids.append(vid)
            tables.append(
                pa.table(
                    {
                        lr.STATE: pa.array(state.tolist(), type=pa.list_(pa.float32())),
                        "timestamp": pa.array(np.arange(n) / fps, type=pa.float32()),
                        "frame_index": pa.array(np.arange(n)),
                        "episode_index": pa.array(np.full(n, ep)),
                        "index": pa.array(np.arange(start, start + n)),
                        "task_index": pa.array(np.zeros(n, np.int64)),
                    }
                )
            )
            rows.append(
                {
                    "episode_index": ep,
                    "tasks": ["wipe the table"],
                    "length": n,
                    "data/chunk_index": 0,
                    "data/file_index": s,
                    "dataset_from_index": start,
                    "dataset_to_index": start + n,
                    **stats.flatten_episode({lr.STATE: stats.numeric_stats(state)}),
                }
            )
            ep, start = ep + 1, start + n
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(root / f"data/chunk-000/file-{s:03d}.parquet", tables[0].schema) as w:
            for t in tables:
                w.write_table(t)
        out = root / f"videos/{lr.FRONT}/chunk-000/file-{s:03d}.mp4"
        out.parent.mkdir(parents=True, exist_ok=True)
        bounds = remux(vids, out)
        for k, row in enumerate(rows):
            row.update(
                {
                    f"videos/{lr.FRONT}/chunk_index": 0,
                    f"videos/{lr.FRONT}/file_index": s,
                    f"videos/{lr.FRONT}/from_timestamp": bounds[k],
                    f"videos/{lr.FRONT}/to_timestamp": bounds[k + 1],
                    "meta/episodes/chunk_index": 0,
                    "meta/episodes/file_index": s,
                }
            )
        (root / "meta/episodes/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / f"meta/episodes/chunk-000/file-{s:03d}.parquet")
        for v in vids:
            v.unlink()
    feats = {
        lr.STATE: {"dtype": "float32", "shape": [4], "names": {"motors": ["a", "b", "c", "d"]}},
        lr.FRONT: {
            "dtype": "video",
            "shape": [lr.H, lr.W, 3],
            "names": ["height", "width", "channels"],
            "info": video_info(out),
        },
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        **{
            k: {"dtype": "int64", "shape": [1], "names": None}
            for k in ("frame_index", "episode_index", "index", "task_index")
        },
    }
    info = {
        "codebase_version": "v3.0",
        "robot_type": "so100",
        "total_episodes": 3,
        "total_frames": 12,
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps,
        "splits": {"train": "0:3"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": feats,
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))


def test_reads_lerobot_layout_with_several_files(tmp_path, lr):
    root = tmp_path / "lerobot"
    _write_lerobot_style(root, lr)
    r = LeRobotReader(root)
    assert (r.num_episodes, r.num_frames, r.robot_type, r.tasks) == (3, 12, "so100", ["wipe the table"])
    assert r.features[lr.STATE].names is None or len(r.features[lr.STATE].names) == 4
    for ep, n in enumerate((3, 4, 5)):
        np.testing.assert_array_equal(r.episode_columns(ep)[lr.STATE], _expected_state(ep, n))
        assert np.abs(r.frames(ep, lr.FRONT, [n - 1])[0].astype(int) - lr.smooth_image(ep, n - 1)).mean() < 8
    np.testing.assert_array_equal(r.rows(5, 9, ["index"])["index"], np.arange(5, 9))  # across two files
    assert r.episode_stats(2)[lr.STATE]["max"].tolist() == [2.0, 4.0, 204.0, 0.5]
    assert [p for p in validate(root) if p.severity == "error"] == []
    with LeRobotWriter.open(root) as w:  # appending continues the last files
        for i in range(3):
            w.add_frame(
                {lr.STATE: _expected_state(3, 3)[i], lr.FRONT: lr.smooth_image(3, i)}, task="wipe the table"
            )
        w.save_episode()
    r = LeRobotReader(root)
    assert r.num_episodes == 4 and r.episode_meta(3)["data/file_index"] == 1
    np.testing.assert_array_equal(r.episode_columns(3)[lr.STATE], _expected_state(3, 3))
    assert np.abs(r.frames(3, lr.FRONT, [2])[0].astype(int) - lr.smooth_image(3, 2)).mean() < 8
