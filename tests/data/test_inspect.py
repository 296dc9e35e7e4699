"""``robolearn inspect``: summary, one-line errors on corrupt input, leftovers, ``--video`` rendering."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from robolearn.cli import UserError
from robolearn.commands import inspect as inspect_cmd
from robolearn.data.reader import LeRobotReader


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="robolearn inspect")
    inspect_cmd.add_arguments(parser)
    return inspect_cmd.run(parser.parse_args([str(a) for a in argv]))


def test_summary_of_a_valid_dataset(new_dataset, lr, capsys):
    root = new_dataset((5, 7, 6), cameras=(lr.FRONT, lr.WRIST))
    assert _run(root) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert (
        lines[-1]
        == f"{root}: valid LeRobot v3.0 dataset: 3 episodes, 18 frames, 10 fps, 2 camera(s), 2 task(s)"
    )
    assert any(line.split()[:3] == [lr.STATE, "float32", "(4,)"] for line in lines)
    assert any(line.split()[:2] == [lr.FRONT, "video"] and "yuv420p" in line for line in lines)
    assert "episodes    3   frames 18   (1.8 s)" in out
    assert "[1] pick the cube 1" in out
    assert any(line.split()[:3] == ["1", "7", "0.70"] for line in lines)  # episode table
    assert any(
        line.split()[0] == "index" and line.split()[1] == "[8.5]"
        for line in lines[lines.index("stats (mean / std / min / max)") :]
    )


def test_corrupt_dataset_is_a_one_line_error_naming_file_and_episode(new_dataset, lr):
    root = new_dataset((5, 7, 6))

    def edit(values):
        values[9][0] = float("nan")  # episode 1, frame 4
        return values

    lr.rewrite_parquet(root / "data/chunk-000/file-000.parquet", lr.ACTION, edit)
    with pytest.raises(UserError) as exc:
        _run(root)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(
        f"{root}: data/chunk-000/file-000.parquet: episode 1: field 'action': NaN at frame 4"
    )


def test_missing_video_error(new_dataset, lr):
    root = new_dataset((4, 4))
    (root / f"videos/{lr.FRONT}/chunk-000/file-000.mp4").unlink()
    with pytest.raises(UserError, match=r"videos/observation.images.front/chunk-000/file-000.mp4: episode 0"):
        _run(root)
    assert _run(root, "--no-video-check") == 0  # numeric data alone is fine


def test_bad_arguments(new_dataset, tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        _run(tmp_path / "nope")
    with pytest.raises(UserError, match="not a LeRobot dataset"):
        _run(tmp_path)
    root = new_dataset((3, 3))
    with pytest.raises(UserError, match="out of range"):
        _run(root, "--episodes", "0,5")
    with pytest.raises(UserError, match="comma-separated"):
        _run(root, "--episodes", "x")
    assert inspect_cmd.parse_episodes("0,2-4", 5) == [0, 2, 3, 4]


def test_interrupted_write_is_a_warning_and_repair_fixes_it(tmp_path, lr, capsys, monkeypatch):
    from robolearn.data import writer as writer_mod

    root = tmp_path / "ds"
    w = writer_mod.LeRobotWriter(root, lr.FPS, lr.features())
    lr.record(w, (4, 5))

    def crash() -> None:
        raise RuntimeError("simulated crash before the commit point")

    monkeypatch.setattr(writer_mod, "_before_commit_point", crash)
    with pytest.raises(RuntimeError):
        lr.record(w, (3,), first_ep=2)  # every file rewritten, info.json not
    assert _run(root) == 0
    captured = capsys.readouterr()
    assert (
        "warning: data/chunk-000/file-000.parquet: episode 1: 3 row(s) past the last episode" in captured.err
    )
    assert "2 episodes, 9 frames" in captured.out and "warning(s)" in captured.out
    assert _run(root, "--repair") == 0
    captured = capsys.readouterr()
    assert "repaired: data/chunk-000/file-000.parquet: dropped 3 row(s)" in captured.err
    assert "warning" not in captured.err and "warning(s)" not in captured.out


def test_video_renders_cameras_side_by_side(new_dataset, lr, tmp_path, capsys):
    root = new_dataset((4, 6, 5), cameras=(lr.FRONT, lr.WRIST))
    out_dir = tmp_path / "render"
    assert _run(root, "--video", out_dir, "--episodes", "0,2") == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["episode_000000.mp4", "episode_000002.mp4"]
    assert f"wrote {out_dir / 'episode_000002.mp4'}" in capsys.readouterr().out
    from robolearn.data.video import VideoDecoder, frame_times

    path = out_dir / "episode_000002.mp4"
    assert len(frame_times(path)) == 5
    frames = VideoDecoder().get_frames(path, np.arange(5) / lr.FPS)
    assert frames.shape == (5, lr.H, 2 * lr.W, 3)
    left, right = frames[:, :, : lr.W].astype(int), frames[:, :, lr.W :].astype(int)
    want_left = np.stack([lr.smooth_image(2, i, 0) for i in range(5)])
    want_right = np.stack([lr.smooth_image(2, i, 1) for i in range(5)])
    assert np.abs(left - want_left).mean() < 10 and np.abs(right - want_right).mean() < 10
    assert LeRobotReader(root).num_episodes == 3  # the dataset itself is untouched


def test_video_needs_cameras(tmp_path, lr):
    from robolearn.data.writer import LeRobotWriter

    root = tmp_path / "ds"
    with LeRobotWriter(root, lr.FPS, lr.features(cameras=())) as w:
        lr.record(w, (3,), cameras=())
    with pytest.raises(UserError, match="needs camera features"):
        _run(root, "--video", tmp_path / "out")
