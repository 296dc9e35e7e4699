"""``robolearn merge``: several datasets into one, exactly, or an error naming both datasets; a kill
mid-merge leaves no output. Also the writer's per-episode source env, which merge relies on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from robolearn.cli import main
from robolearn.data import stats as stats_mod
from robolearn.data.merge import MergeError, merge_datasets
from robolearn.data.reader import LeRobotReader
from robolearn.data.validate import validate
from robolearn.data.writer import LeRobotWriter
from robolearn.types import FeatureSpec

REPO = Path(__file__).resolve().parents[2]


def _dataset(lr, root: Path, lengths, first_ep=0, seeds=None, env="franka-lift", env_config=None,
             per_episode_env=None, tasks=None, features=None, fps=None) -> Path:  # fmt: skip
    """A small dataset of the conftest's frames; ``seeds`` per episode, ``env`` recorded in info.json."""
    multi = isinstance(env, list)
    cfg = env_config if env_config is not None else ({e: {"n": 1} for e in env} if multi else {"n": 1})
    with LeRobotWriter(root, fps or lr.FPS, features or lr.features(), env=env, env_config=cfg) as w:
        for k, n in enumerate(lengths):
            ep = first_ep + k
            for i in range(n):
                frame = lr.frame(ep, i)
                for key, spec in w.features.items():  # other shapes: the same numbers, resized
                    if spec.dtype not in ("video", "image"):
                        frame[key] = np.resize(frame[key], spec.shape).astype(spec.dtype)
                w.add_frame(frame, task=tasks[k] if tasks else f"pick the cube {ep % 3}")
            w.save_episode(seed=None if seeds is None else seeds[k],
                           env=None if per_episode_env is None else per_episode_env[k])  # fmt: skip
    return root


def _meta(root: Path) -> list[dict]:
    files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def test_round_trip(lr, tmp_path):
    a = _dataset(lr, tmp_path / "a", (5, 7), seeds=[0, 1], env="franka-lift")
    b = _dataset(lr, tmp_path / "b", (6, 4, 3), first_ep=10, seeds=[0, 1, 2], env=["franka-push", "franka-stack"],
                 per_episode_env=["franka-push", "franka-stack", "franka-push"],
                 tasks=["pick the cube 0", "stack it", "push it"])  # fmt: skip
    out = tmp_path / "merged"
    summary = merge_datasets([a, b], out, progress=False)
    assert (summary.episodes, summary.frames, summary.inputs, summary.seeds) == (5, 25, 2, True)
    assert summary.envs == ["franka-lift", "franka-push", "franka-stack"]
    assert validate(out) == []
    merged, sources = LeRobotReader(out), [LeRobotReader(a), LeRobotReader(b)]
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["robolearn"] == {
        "env": ["franka-lift", "franka-push", "franka-stack"],
        "env_config": {"franka-lift": {"n": 1}, "franka-push": {"n": 1}, "franka-stack": {"n": 1}},
    }
    assert merged.num_episodes == 5 and merged.num_frames == 25
    # Tasks merged: each instruction once, and every frame keeps its own.
    assert sorted(merged.tasks) == sorted({"pick the cube 0", "pick the cube 1", "stack it", "push it"})
    rows = _meta(out)
    assert [r["seed"] for r in rows] == [0, 1, 0, 1, 2]
    assert [r["env"] for r in rows] == [
        "franka-lift",
        "franka-lift",
        "franka-push",
        "franka-stack",
        "franka-push",
    ]
    pairs = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    for ep, (src, src_ep) in enumerate(pairs):
        got, want = merged.episode_columns(ep), sources[src].episode_columns(src_ep)
        for key in (lr.STATE, lr.ACTION, lr.REWARD):
            np.testing.assert_array_equal(got[key], want[key])
        np.testing.assert_array_equal(got["frame_index"], np.arange(len(want[lr.STATE])))
        assert [merged.task(t) for t in got["task_index"]] == [
            sources[src].task(t) for t in want["task_index"]
        ]
        # Re-encoded video: the same pictures up to the lossy codec.
        n = len(want[lr.STATE])
        diff = np.abs(merged.frames(ep, lr.FRONT, np.arange(n)).astype(int)
                      - sources[src].frames(src_ep, lr.FRONT, np.arange(n)).astype(int))  # fmt: skip
        assert diff.mean() < 4, diff.mean()
    np.testing.assert_array_equal(merged.rows(0, 25, ["index"])["index"], np.arange(25))
    # stats.json: the inputs' stats combined (numeric features exactly as one dataset of all episodes).
    both = {k: stats_mod.aggregate([sources[0].stats[k], sources[1].stats[k]]) for k in (lr.STATE, lr.ACTION)}
    for key, want in both.items():
        for stat in ("min", "max", "mean", "std", "count", "q01", "q99"):
            np.testing.assert_allclose(merged.stats[key][stat], want[stat], rtol=1e-9, atol=1e-12)


def test_one_env_stays_one_env_and_seeds_must_not_repeat(lr, tmp_path):
    a = _dataset(lr, tmp_path / "a", (3,), seeds=[4])
    b = _dataset(lr, tmp_path / "b", (3, 4), seeds=[5, 6])
    merge_datasets([a, b], tmp_path / "m", progress=False)
    info = json.loads((tmp_path / "m" / "meta" / "info.json").read_text())
    assert info["robolearn"] == {"env": "franka-lift", "env_config": {"n": 1}}
    rows = _meta(tmp_path / "m")
    assert [r["seed"] for r in rows] == [4, 5, 6] and "env" not in rows[0]
    # A collect run on the merged single-env dataset continues after its largest seed.
    assert LeRobotWriter.open(tmp_path / "m").seeds == {4: 0, 5: 1, 6: 2}
    c = _dataset(lr, tmp_path / "c", (3,), seeds=[5])
    with pytest.raises(
        MergeError, match=r"seed 5 of franka-lift is in .*/b \(episode 0\) and in .*/c \(episode 0\)"
    ):
        merge_datasets([a, b, c], tmp_path / "m2", progress=False)
    assert not (tmp_path / "m2").exists()


def test_mismatches_name_both_datasets(lr, tmp_path):
    a = _dataset(lr, tmp_path / "a", (3,), seeds=[0])
    feats = {**lr.features(), lr.STATE: FeatureSpec("float32", (5,))}
    wide = _dataset(lr, tmp_path / "wide", (3,), seeds=[1], features=feats, env="franka-push")
    with pytest.raises(
        MergeError, match=r"feature 'observation.state' is float32 \[4\] in .*/a but float32 \[5\] in .*/wide"
    ):
        merge_datasets([a, wide], tmp_path / "m", progress=False)
    renamed = {**lr.features(), lr.STATE: FeatureSpec("float32", (4,), ("a", "b", "c", "d"))}
    other = _dataset(lr, tmp_path / "renamed", (3,), seeds=[1], features=renamed, env="franka-push")
    with pytest.raises(
        MergeError, match=r"is named \['x', 'y', 'z', 'g'\] in .*/a but named \['a', 'b', 'c', 'd'\]"
    ):
        merge_datasets([a, other], tmp_path / "m", progress=False)
    slow = _dataset(lr, tmp_path / "slow", (3,), seeds=[1], fps=5, env="franka-push")
    with pytest.raises(MergeError, match=r"fps is 10 in .*/a but 5 in .*/slow"):
        merge_datasets([a, slow], tmp_path / "m", progress=False)
    config = _dataset(lr, tmp_path / "cfg", (3,), seeds=[1], env_config={"n": 2})
    with pytest.raises(
        MergeError, match=r"franka-lift is recorded with env config n=1 in .*/a but 2 in .*/cfg"
    ):
        merge_datasets([a, config], tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()


def test_command_line(lr, tmp_path, capsys):
    a = _dataset(lr, tmp_path / "a", (3,), seeds=[0])
    b = _dataset(lr, tmp_path / "b", (4,), seeds=[1])
    out, js = tmp_path / "out", tmp_path / "m.json"
    assert main(["merge", str(a), str(b), str(out), "--json", str(js)]) == 0
    assert "merged 2 episodes, 7 frames from 2 datasets" in capsys.readouterr().out
    assert json.loads(js.read_text())["episodes"] == 2
    assert main(["merge", str(a), str(b), str(out)]) == 2  # exists
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["merge", str(a), str(b), str(out), "--overwrite"]) == 0
    wide = _dataset(lr, tmp_path / "wide", (3,), seeds=[1], env="franka-push",
                    features={**lr.features(), lr.ACTION: FeatureSpec("float32", (3,))})  # fmt: skip
    capsys.readouterr()
    assert main(["merge", str(a), str(wide), str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'action'" in err and str(a) in err and str(wide) in err
    assert main(["merge", str(a), str(tmp_path / "bad")]) == 2
    assert main(["merge", str(a), str(tmp_path / "nope"), str(tmp_path / "bad")]) == 2
    assert "nope: not a LeRobot v3.0 dataset" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_failure_mid_merge_leaves_no_output(lr, tmp_path, monkeypatch):
    import robolearn.data.merge as M

    a = _dataset(lr, tmp_path / "a", (3, 3, 3), seeds=[0, 1, 2])
    b = _dataset(lr, tmp_path / "b", (3, 3), seeds=[3, 4])
    real, calls = M._copy_episode, []

    def failing(inp, ep, *args):
        calls.append(ep)
        if len(calls) == 4:
            raise OSError("disk full")
        return real(inp, ep, *args)

    monkeypatch.setattr(M, "_copy_episode", failing)
    with pytest.raises(OSError, match="disk full"):
        merge_datasets([a, b], tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no OUT, no temporary folder


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import robolearn.data.merge as M
    import robolearn.data.writer as W
    M._COMMIT_EVERY = 1
    commits = []
    def die_on_third():
        commits.append(1)
        if len(commits) == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 mid-merge: two episodes are on disk
    W._before_commit_point = die_on_third
    from robolearn.cli import main
    sys.exit(main(["merge", *sys.argv[1:]]))
    """
)


def test_kill_mid_merge_leaves_no_output(lr, tmp_path):
    a = _dataset(lr, tmp_path / "a", (3, 4), seeds=[0, 1])
    b = _dataset(lr, tmp_path / "b", (5, 3), seeds=[2, 3])
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, str(script), str(a), str(b), str(out)], env=env, timeout=300,
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert not out.exists()
    (tmp,) = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # what it had written, aside
    assert (tmp / "meta" / "info.json").is_file()
    # The inputs are untouched, and a rerun succeeds.
    assert LeRobotReader(a).num_episodes == 2 and LeRobotReader(b).num_episodes == 2
    assert main(["merge", str(a), str(b), str(out)]) == 0
    assert LeRobotReader(out).num_episodes == 4


def test_writer_records_the_source_env_per_episode(lr, tmp_path):
    root = tmp_path / "ds"
    with LeRobotWriter(
        root, lr.FPS, lr.features(cameras=()), env=["e1", "e2"], env_config={"e1": {}, "e2": {}}
    ) as w:
        for env, seed in (("e1", 0), ("e2", 0), ("e1", 1)):
            w.add_frame(lr.frame(0, 0, cameras=()), task="t")
            w.save_episode(seed=seed, env=env)
        w.add_frame(lr.frame(0, 0, cameras=()), task="t")
        with pytest.raises(ValueError, match=r"seed 0 of e2 is already in the dataset \(episode 1\)"):
            w.save_episode(seed=0, env="e2")
        with pytest.raises(ValueError, match="record their source env; pass save_episode"):
            w.save_episode(seed=5)
        assert w.seeds is None and w.env_seeds("e1") == {0: 0, 1: 2} and w.env_seeds("e2") == {0: 1}
        w.discard_episode()
    reopened = LeRobotWriter.open(root)
    assert reopened.env_seeds("e1") == {0: 0, 1: 2}
    reopened.finalize()
    reader = LeRobotReader(root)
    assert [reader.episode_meta(i)["env"] for i in range(3)] == ["e1", "e2", "e1"]
    plain = tmp_path / "plain"
    with LeRobotWriter(plain, lr.FPS, lr.features(cameras=())) as w:
        w.add_frame(lr.frame(0, 0, cameras=()), task="t")
        w.save_episode(seed=0)
        w.add_frame(lr.frame(0, 0, cameras=()), task="t")
        with pytest.raises(ValueError, match="record no source env"):
            w.save_episode(seed=1, env="e1")
