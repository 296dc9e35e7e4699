"""The CLI behaves like a Unix tool: a closed pipe ends quietly, Ctrl-C stops cleanly with nothing
half-written, and neither prints a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from robolearn.data.reader import LeRobotReader
from robolearn.data.validate import validate

ENV = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "ROBOLEARN_PROGRESS_INTERVAL": "0.2"}


def _start(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "robolearn.cli", *args], env=ENV, text=True,
                            stderr=subprocess.PIPE, **kwargs)  # fmt: skip


def _wait_for(proc: subprocess.Popen, needle: str, timeout: float = 300) -> str:
    """Read stderr until a line holds ``needle``; returns what was read."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"never saw {needle!r}:\n{''.join(seen)}")


def test_a_closed_stdout_ends_quietly(lift_dataset):
    proc = _start("inspect", str(lift_dataset), stdout=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before anything is written (`... | head -0`)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_ctrl_c_during_collect_keeps_whole_episodes(tmp_path):
    out = tmp_path / "ds"
    proc = _start("collect", "--env", "franka-lift", "--episodes", "500", "--workers", "2", "--out", str(out),
                  stdout=subprocess.PIPE)  # fmt: skip
    _wait_for(proc, "collect franka-lift: ")  # at least one episode is saved
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 130
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "robolearn collect: interrupted", err
    reader = LeRobotReader(out)
    assert 1 <= reader.num_episodes < 500
    assert not [p for p in validate(out) if p.severity == "error"]
    assert not list(out.rglob("*.tmp*"))


def test_ctrl_c_during_train_leaves_only_whole_checkpoints(lift_dataset, tmp_path):
    run = tmp_path / "run"
    proc = _start("train", "--policy", "flow", "--dataset", str(lift_dataset), "--out", str(run),
                  "--set", "steps=100000", "--set", "save_every=20", stdout=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "20").is_dir() and time.monotonic() < deadline:
        time.sleep(0.1)  # stop it while it trains on past its first checkpoint
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 130
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "robolearn train: interrupted", err
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not leftovers
    for ckpt in (run / "checkpoints").iterdir():
        assert {"config.json", "model.safetensors", "norm_stats.json"} <= {p.name for p in ckpt.iterdir()}


def test_ctrl_c_during_convert_leaves_no_output(lift_dataset, tmp_path):
    out = tmp_path / "d.hdf5"
    proc = _start("convert", str(lift_dataset), str(out), "--to", "robomimic", stdout=subprocess.PIPE)
    # Once it runs (a signal during the interpreter's own start-up kills any Python program), anywhere
    # up to the last episode: the output appears whole or not at all.
    first = proc.stderr.readline()  # its first progress line (or EOF: it is already done)
    proc.send_signal(signal.SIGINT)
    err = first + proc.stderr.read()
    code = proc.wait(timeout=120)
    assert "Traceback" not in err, err
    if code == 130:
        assert not out.exists()
    else:
        assert code == 0 and out.stat().st_size > 0
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith(".")]
