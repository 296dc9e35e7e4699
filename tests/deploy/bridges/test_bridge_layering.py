"""The robot side of the bridges imports neither torch nor mujoco (DESIGN.md §6): only the sim twin
(``robolearn.deploy.sim_twin``, the sim side) may."""

from __future__ import annotations

import json
import subprocess
import sys

ROBOT_SIDE = [
    "robolearn.deploy.safety", "robolearn.deploy.cell", "robolearn.deploy.topics", "robolearn.deploy.topics.inproc",
    "robolearn.deploy.topics.zmq_backend", "robolearn.deploy.topics.zenoh_backend", "robolearn.deploy.topics.ros1",
    "robolearn.deploy.bridge_robot", "robolearn.deploy.teleop_run", "robolearn.commands.sim_robot",
]  # fmt: skip


def test_robot_side_modules_import_neither_torch_nor_mujoco():
    code = (
        "import importlib, json, sys\n"
        f"for m in {ROBOT_SIDE!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in ('torch', 'mujoco') if m in sys.modules)))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
