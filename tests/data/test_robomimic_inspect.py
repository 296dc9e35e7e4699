"""``robolearn inspect FILE.hdf5``: what the file is and what a conversion keeps and drops."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np


def _inspect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robolearn.cli", "inspect", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.lstrip().startswith(start))


def test_inspect_robosuite_file(robosuite_file):
    path, _ = robosuite_file
    res = _inspect(str(path))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "layout      robomimic" in out
    assert "demos       3 (demo_0, demo_3, demo_7)   frames 18" in out
    assert "env_name 'Lift', type robosuite, control_freq 20, robots ['Panda']" in out
    assert _line(out, "masks") == "masks       20_percent (1 demos), train (2 demos), valid (1 demos)"
    assert _line(out, "robot0_eef_quat").split()[-1] == "observation.state[3:7]"
    assert "float64 (4,)" in _line(out, "robot0_eef_quat")
    assert _line(out, "agentview_image").endswith("-> observation.images.agentview")
    assert _line(out, "robot0_joint_pos").endswith("-> observation.robot0_joint_pos")
    assert _line(out, "agentview_depth").endswith("dropped (depth is not imported)")
    assert _line(out, "states").endswith("-> observation.sim_state")
    assert "model_file kept" in out and "robot_type 'panda'" in out
    assert _line(out, "drops").startswith("drops       obs/agentview_depth;")


def test_inspect_libero_and_unknown_layouts(tmp_path, robosuite_file):
    path, _ = robosuite_file
    with h5py.File(path, "a") as f:
        f["data"].attrs["problem_info"] = json.dumps({"language_instruction": "put the bowl on the plate"})
    res = _inspect(str(path))
    assert res.returncode == 0 and "layout      LIBERO" in res.stdout
    assert "data attrs  problem_info" in res.stdout and "conversion  " in res.stdout

    other = tmp_path / "weights.h5"
    with h5py.File(other, "w") as f:
        f["layer0/kernel"] = np.zeros((2, 2))
    res = _inspect(str(other))
    assert res.returncode == 0 and "layout      unknown" in res.stdout and "top level   layer0" in res.stdout


def test_inspect_errors_are_one_line(tmp_path, robosuite_file):
    path, _ = robosuite_file
    res = _inspect(str(path), "--video", str(tmp_path / "v"))
    assert res.returncode == 2 and "--video works on LeRobot datasets" in res.stderr
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not hdf5 at all")
    res = _inspect(str(junk))
    assert (
        res.returncode == 2
        and "cannot open as HDF5" in res.stderr
        and len(res.stderr.strip().splitlines()) == 1
    )
    with h5py.File(path, "a") as f:
        f["data"].attrs["env_args"] = "{broken"
    res = _inspect(str(path))
    assert res.returncode == 2 and "env_args is not valid JSON" in res.stderr
