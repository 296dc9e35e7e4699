"""A real ``kill -9`` of a recording process loses at most the open episode; reopening repairs the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from robolearn.data.reader import LeRobotReader
from robolearn.data.validate import validate
from robolearn.data.writer import LeRobotWriter

REPO = Path(__file__).resolve().parents[2]

RECORDER = textwrap.dedent(
    """
    import os, signal, sys, time
    import numpy as np
    import robolearn.data.writer as W
    from robolearn.types import FeatureSpec

    root, mode = sys.argv[1], sys.argv[2]
    small = mode.endswith("rollover")
    feats = {"observation.state": FeatureSpec("float32", (3,)),
             "observation.images.front": FeatureSpec("video", (16, 24, 3))}
    def frame(ep, i):
        img = np.full((16, 24, 3), (40 * ep + 5 * i) % 256, np.uint8)
        return {"observation.state": np.array([ep, i, ep * 10 + i], np.float32), "observation.images.front": img}
    w = W.LeRobotWriter(root, 10, feats, data_files_size_in_mb=0.002 if small else 100,
                        video_files_size_in_mb=0.001 if small else 200)
    for ep, n in enumerate((4, 6, 5)):
        for i in range(n):
            w.add_frame(frame(ep, i), task="pick")
        w.save_episode()
    if mode.startswith("mid_commit"):
        # die at the worst moment: every file rewritten, info.json (the commit point) not yet
        W._before_commit_point = lambda: os.kill(os.getpid(), signal.SIGKILL)
    print("committed 3", flush=True)
    for i in range(10**6):
        w.add_frame(frame(3, i % 50), task="a task never committed")
        if mode.startswith("mid_commit") and i == 7:
            w.save_episode()  # dies inside
        if i == 30:  # the encoder has written part of the episode's temporary mp4 by now
            print("recording", flush=True)
        time.sleep(0.005)
    """
)


def _run_and_kill(tmp_path: Path, mode: str) -> Path:
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    root = tmp_path / "ds"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "committed 3"
        if mode == "mid_episode":
            assert proc.stdout.readline().strip() == "recording"
            os.kill(proc.pid, signal.SIGKILL)  # kill -9 from outside, mid-episode
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return root


def _assert_committed_intact(root: Path, stats: bool = True) -> None:
    r = LeRobotReader(root)
    assert (r.num_episodes, r.num_frames, r.tasks) == (3, 15, ["pick"])
    for ep, n in enumerate((4, 6, 5)):
        cols = r.episode_columns(ep)
        i = np.arange(n, dtype=np.float32)
        np.testing.assert_array_equal(
            cols["observation.state"], np.stack([np.full(n, ep), i, ep * 10 + i], 1)
        )
        np.testing.assert_array_equal(cols["index"], np.arange(r.episode_from[ep], r.episode_to[ep]))
        means = r.frames(ep, "observation.images.front", np.arange(n)).mean(axis=(1, 2, 3))
        np.testing.assert_allclose(means, (40 * ep + 5 * np.arange(n)) % 256, atol=3)
    if stats:  # stats.json is replaced just before info.json, so a kill in between leaves it one commit ahead
        assert r.stats["index"]["count"].tolist() == [15]


def test_kill_mid_episode_loses_only_the_open_episode(tmp_path, caplog):
    root = _run_and_kill(tmp_path, "mid_episode")
    _assert_committed_intact(root)  # readable as is, before any repair
    assert any(p.severity == "warning" and "temporary" in p.message for p in validate(root))
    with caplog.at_level("WARNING"):
        w = LeRobotWriter.open(root)
    assert len(w.repairs) == 1 and "temporary file" in w.repairs[0]
    assert "temporary file" in caplog.text
    w.finalize()
    assert not (root / ".robolearn_tmp").exists()
    assert validate(root) == []


@pytest.mark.parametrize("mode", ["mid_commit", "mid_commit_rollover"])
def test_kill_inside_commit_is_repaired_on_open(tmp_path, mode):
    root = _run_and_kill(tmp_path, mode)
    problems = validate(root)
    assert problems and all(p.severity == "warning" for p in problems), problems
    _assert_committed_intact(root, stats=False)  # readers see the last commit even before the repair
    w = LeRobotWriter.open(root)
    text = "\n".join(w.repairs)
    assert "uncommitted" in text or "removed" in text
    if mode == "mid_commit":
        assert "data/chunk-000/file-000.parquet: dropped 8 row(s)" in text
        assert "videos/observation.images.front/chunk-000/file-000.mp4: cut 0.800s" in text
        assert "meta/episodes/chunk-000/file-000.parquet: dropped 1 row(s)" in text
        assert "meta/tasks.parquet: dropped 1 uncommitted task(s)" in text
    else:  # the lost episode had started new files: they are deleted, not cut
        assert "removed data file with no committed episode" in text
        assert "removed video file with no committed episode" in text
    assert "meta/stats.json: recomputed" in text
    assert validate(root) == []
    _assert_committed_intact(root)
    # recording resumes where the last commit left off
    for i in range(3):
        w.add_frame(
            {
                "observation.state": np.array([3, i, 30 + i], np.float32),
                "observation.images.front": np.full((16, 24, 3), 120 + 5 * i, np.uint8),
            },
            task="place",
        )
    w.save_episode()
    w.finalize()
    r = LeRobotReader(root)
    assert (r.num_episodes, r.num_frames, r.tasks) == (4, 18, ["pick", "place"])
    np.testing.assert_array_equal(r.episode_columns(3)["index"], [15, 16, 17])
    assert abs(r.frames(3, "observation.images.front", [2])[0].mean() - 130) < 3
    assert validate(root) == []
