"""The robot side installs and runs without torch or mujoco: numpy, msgpack and websockets only.

A plain venv gets exactly those three from PyPI (plus setuptools, to build the package without
reaching the index again); it is created once and cached under
``~/.cache/robolearn/robot-client-<key>-venv``, the key naming the requirement set and the Python
version. Every run installs this checkout into it with ``pip install --no-deps`` (built from a copy,
so no build files land in the tree) and runs a script there that imports the client, chunk queue,
loop and robot modules, proves torch and mujoco are not importable, and drives a policy server
running in this test process with a numpy-only robot. Without a reachable package index (and no
cached venv) the test is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ["numpy", "msgpack", "websockets>=15", "setuptools>=68"]
NETWORK_ERRORS = ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution",
                  "ProxyError", "ConnectTimeoutError", "Max retries exceeded", "No matching distribution")  # fmt: skip

pytestmark = pytest.mark.slow

ROBOT_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys, time
    import numpy as np

    out = {"unavailable": [m for m in ("torch", "mujoco", "yaml", "gymnasium") if importlib.util.find_spec(m) is None]}
    from robolearn.deploy import chunks, client, loop, robot, runner
    from robolearn.types import ACTION, OBS_STATE, FeatureSpec

    class NumpyRobot(robot.Robot):
        '''A 4-D state robot that logs what it is sent (each observation ticks it).'''
        name = "numpy-robot"

        def __init__(self):
            self.x, self.sent, self._on = 0.0, [], False
        observation_features = property(lambda self: {OBS_STATE: FeatureSpec("float32", (4,))})
        action_feature = property(lambda self: FeatureSpec("float32", (3,)))
        control_hz = property(lambda self: 50.0)
        is_connected = property(lambda self: self._on)
        def connect(self): self._on = True
        def disconnect(self): self._on = False
        def get_observation(self):
            self.x += 1.0
            return {OBS_STATE: np.full(4, self.x, np.float32), "task": "t", "timestamp": time.monotonic()}
        def send_action(self, action, target_time=None):
            self.sent.append(self.check_action(action).tolist())
            return self.sent[-1]
        def hold_action(self): return np.zeros(3, np.float32)

    with client.PolicyClient(sys.argv[1]) as c, NumpyRobot() as bot:
        rep = runner.Runner(bot, c, merge="weighted").run_episode(max_ticks=40)
    out.update(ticks=rep.ticks, requests=rep.requests, policy_actions=rep.policy_actions,
               sent=bot.sent, jitter_ticks=rep.jitter.ticks,
               heavy=sorted(m for m in ("torch", "mujoco", "yaml") if m in sys.modules))
    print("RESULT " + json.dumps(out))
    """
)


def _venv() -> Path:
    """The cached venv with the client's requirements; built (temp folder, then rename) if missing."""
    key = hashlib.sha256("\n".join([*REQUIREMENTS, sys.version]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robolearn"
    venv = cache / f"robot-client-{key}-venv"
    if (venv / ".complete").is_file() and (venv / "bin" / "python").exists():
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".robot-client-{key}-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True, timeout=300)
        res = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                              "--timeout", "30", *REQUIREMENTS], capture_output=True, text=True, timeout=900)  # fmt: skip
        if res.returncode != 0:
            text = res.stdout + res.stderr
            if any(e in text for e in NETWORK_ERRORS):
                tail = text.strip().splitlines()[-1:] or ["(no output)"]
                pytest.skip(f"pip cannot reach the package index for the client venv: {tail[0]}")
            raise AssertionError(f"pip install {' '.join(REQUIREMENTS)} failed:\n{res.stderr[-3000:]}")
        (tmp / ".complete").write_text("\n".join(REQUIREMENTS) + "\n")
        if venv.exists():
            shutil.rmtree(venv)
        tmp.rename(venv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return venv  # used only as `bin/python -m ...`: its scripts name the temporary path


def _install_checkout(python: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "robolearn", src / "robolearn", ignore=shutil.ignore_patterns("__pycache__"))
    res = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-deps",
                          "--no-index", "--no-build-isolation", "--force-reinstall", str(src)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]


def test_robot_side_runs_without_torch_or_mujoco(fake_policy_factory, tmp_path):
    from robolearn.deploy.server import PolicyServer

    python = _venv() / "bin" / "python"
    _install_checkout(python, tmp_path)
    policy = fake_policy_factory(state_dim=4, n_obs_steps=2, horizon=10, action_dim=3, n_action_steps=4)
    with PolicyServer(policy, fps=50.0) as server:
        script = tmp_path / "robot.py"
        script.write_text(ROBOT_SCRIPT)
        # A neutral cwd, so `import robolearn` can only find the installed copy.
        res = subprocess.run([str(python), str(script), server.url], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert set(out["unavailable"]) >= {"torch", "mujoco"} and out["heavy"] == []
    assert out["ticks"] == 40 and out["jitter_ticks"] == 40 and out["requests"] >= 5
    sent = out["sent"]
    assert len(sent) == 41 and sent[-1] == [0.0, 0.0, 0.0]  # a tick each, then the stop's hold
    assert out["policy_actions"] >= 30
    # The fake answers [newest state0, oldest state0, chunk index]: the robot ran the server's chunks.
    planned = [a for a in sent if a != [0.0, 0.0, 0.0]]
    assert all(a[0] >= a[1] >= 1.0 for a in planned) and max(a[2] for a in planned) >= 2
