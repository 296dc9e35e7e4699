"""``robolearn collect`` appends without repeating episodes: seeds recorded, resumed, checked."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from robolearn.cli import main
from robolearn.commands.collect import default_args
from robolearn.data.reader import LeRobotReader


def _seeds(root) -> list[int]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    return [s for f in files for s in pq.read_table(f).column("seed").to_pylist()]


def _collect(*args: str) -> int:
    return main(["collect", "--env", "franka-reach", *args])


def test_seeds_recorded_and_resume_continues(tmp_path, capsys):
    out = str(tmp_path / "ds")
    assert _collect("--episodes", "3", "--out", out) == 0
    assert _seeds(tmp_path / "ds") == [0, 1, 2]
    assert _collect("--episodes", "2", "--out", out) == 0  # continues after the largest seed
    assert _collect("--episodes", "2", "--out", out, "--seed", "10") == 0  # --seed sets the first
    assert _collect("--episodes", "1", "--out", out) == 0
    assert _seeds(tmp_path / "ds") == [0, 1, 2, 3, 4, 10, 11, 12]
    reader = LeRobotReader(tmp_path / "ds")
    assert reader.num_episodes == 8 and reader.info["robolearn"]["env"] == "franka-reach"
    # Same seed, same episode: a seed names an episode exactly (same env config).
    again = tmp_path / "again"
    assert _collect("--episodes", "1", "--out", str(again), "--seed", "11") == 0
    assert (LeRobotReader(again).episode_columns(0)["observation.state"] == reader.episode_columns(6)["observation.state"]).all()  # fmt: skip


def test_a_seed_already_in_the_dataset_is_an_error_naming_the_episode(tmp_path, capsys):
    out = str(tmp_path / "ds")
    assert _collect("--episodes", "3", "--out", out, "--seed", "5") == 0
    capsys.readouterr()
    assert _collect("--episodes", "3", "--out", out, "--seed", "3") == 2  # 3, 4 are free, 5 is taken
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed 5 is already in the dataset (episode 0)" in err[0], err
    assert "continue after seed 7" in err[0]
    assert _seeds(tmp_path / "ds") == [5, 6, 7]  # nothing was added


def test_appending_needs_the_same_env_and_config(tmp_path, capsys):
    out = str(tmp_path / "ds")
    assert _collect("--episodes", "1", "--out", out) == 0
    capsys.readouterr()
    assert main(["collect", "--env", "franka-lift", "--episodes", "1", "--out", out]) == 2
    assert "records env 'franka-reach', this run is 'franka-lift'" in capsys.readouterr().err
    assert _collect("--episodes", "1", "--out", out, "--set", "max_episode_steps=60") == 2
    assert "max_episode_steps=0" in capsys.readouterr().err
    assert LeRobotReader(tmp_path / "ds").num_episodes == 1


def test_default_args_for_python_callers(tmp_path):
    args = default_args(env="franka-reach", episodes=2, out=tmp_path / "ds")
    assert args.seed is None and args.workers == 1 and args.expert is None
    with pytest.raises(TypeError, match="nope"):
        default_args(nope=1)


def test_killed_collection_resumes_without_duplicate_seeds(tmp_path):
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "robolearn.cli", "collect", "--env", "franka-lift", "--episodes", "300",
           "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    info = out / "meta" / "info.json"
    deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
    try:
        while not (info.exists() and json.loads(info.read_text())["total_episodes"] >= 4):
            assert proc.poll() is None, "collect ended before it could be killed"
            assert time.monotonic() < deadline, "collect made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed = json.loads(info.read_text())["total_episodes"]
    assert 4 <= killed < 300

    assert main(["collect", "--env", "franka-lift", "--episodes", "5", "--out", str(out)]) == 0
    seeds = _seeds(out)
    assert len(seeds) == killed + 5 and len(set(seeds)) == len(seeds)
    assert seeds == sorted(seeds) and min(seeds[killed:]) > max(seeds[:killed])
    res = subprocess.run([sys.executable, "-m", "robolearn.cli", "inspect", str(out)], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"valid LeRobot v3.0 dataset: {killed + 5} episodes" in res.stdout
    assert "warning" not in res.stderr
