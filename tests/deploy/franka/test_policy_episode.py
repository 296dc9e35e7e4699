"""A policy-driven episode through the whole stack: server -> client -> bridge -> driver -> franky-sim.

The policy server runs in this process (a small deterministic policy: each chunk walks the arm's
joints from where they are toward a goal posture, the hand closing on the way). The client is
``robolearn run --robot <bridge>`` and the driver ``robolearn franka-driver``, each started as a user
starts it, in its own process, on the same bridge (ZeroMQ, Zenoh, or ROS 1 with a rosmaster this
test starts), against franky-sim in its own venv. Each episode ends with no libfranka error, a
command success rate of at least 0.99, and the tracking error reported (the driver's exit line).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types as pytypes

import numpy as np
import pytest

from robolearn.types import OBS_STATE

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")

GOAL_OFFSET = np.array([0.25, 0.15, -0.15, 0.2, 0.15, -0.15, 0.4])
EPISODE_STEPS = 60
ROSMASTER = "/usr/bin/rosmaster"


class JointGoalPolicy:
    """Chunks of 8-D joint-position actions: from the newest measured joints toward a goal posture
    (``GOAL_OFFSET`` from the first joints it is shown) by at most ``step`` rad per action, the
    gripper closed (+1)."""

    name = "joint-goal"

    def __init__(self, step: float = 0.03, horizon: int = 10):
        self.step = step
        self.first: torch.Tensor | None = None
        self.config = pytypes.SimpleNamespace(
            input_features={OBS_STATE: (22,)}, n_obs_steps=1, horizon=horizon, exec_start=0, action_dim=8,
            n_action_steps=5,
        )  # fmt: skip

    def predict_action_chunk(self, batch):
        q = batch[OBS_STATE][:, -1, :7]
        if self.first is None:
            self.first = q[0].clone()
        goal = self.first + torch.tensor(GOAL_OFFSET, dtype=torch.float32)
        k = torch.arange(1, self.config.horizon + 1, dtype=torch.float32)[None, :, None]
        delta = torch.clamp(goal - q, -1.0, 1.0)[:, None, :]
        joints = q[:, None, :] + torch.clamp(delta, -self.step * k, self.step * k)
        return torch.cat([joints, torch.ones(q.shape[0], self.config.horizon, 1)], dim=-1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=30)


@pytest.fixture
def bridge_port(request, zmq_base_port):
    """The port for the bridge under test: three free ones for zmq, one for zenoh, a rosmaster's
    (started here, stopped by PID) for ros1."""
    kind = request.param
    if kind == "zenoh" and importlib.util.find_spec("zenoh") is None:
        pytest.skip("eclipse-zenoh is not installed (the zenoh extra)")
    if kind != "ros1":
        yield kind, zmq_base_port if kind == "zmq" else _free_port()
        return
    if not os.path.exists(ROSMASTER):
        pytest.skip("ROS 1 is missing: ./bootstrap dev installs python3-rosmaster")
    port = _free_port()
    env = {**os.environ, "ROS_IP": "127.0.0.1", "ROS_MASTER_URI": f"http://127.0.0.1:{port}"}
    master = subprocess.Popen([ROSMASTER, "--core", "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:  # probe the XML-RPC port (no rospy in this process: one master per process)
            assert master.poll() is None and time.monotonic() < deadline, "rosmaster did not come up"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield kind, port
    finally:
        _stop(master)


@pytest.mark.parametrize("bridge_port", ["zmq", "zenoh", "ros1"], indirect=True)
def test_policy_episode_through_the_whole_stack(franky_sim, bridge_port, tmp_path, on_time_min):
    from robolearn.deploy.server import PolicyServer

    bridge, port = bridge_port
    env = {**os.environ, "ROS_IP": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    out, err = open(tmp_path / "driver.out", "w"), open(tmp_path / "driver.err", "w")  # noqa: SIM115
    driver = subprocess.Popen([sys.executable, "-m", "robolearn.cli", "franka-driver", "--robot-ip", franky_sim.host,
                               "--bridge", bridge, "--port", str(port), "--episode-steps", str(EPISODE_STEPS)],
                              stdout=out, stderr=err, env=env)  # fmt: skip
    policy = JointGoalPolicy()
    try:
        deadline = time.monotonic() + 120
        while "ready" not in (tmp_path / "driver.out").read_text():
            assert driver.poll() is None, (tmp_path / "driver.err").read_text()[-3000:]
            assert time.monotonic() < deadline, "the driver did not get ready"
            time.sleep(0.2)
        with PolicyServer(policy, fps=20.0) as server:
            run = subprocess.run([sys.executable, "-m", "robolearn.cli", "run", "--server", server.url, "--robot",
                                  bridge, "--bridge-port", str(port), "--episodes", "1", "--seed", "0",
                                  "--rt-priority", "0", "--connect-timeout", "60", "--json", str(tmp_path / "run.json")],
                                 capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
    finally:
        rc = _stop(driver)
        out.close()
        err.close()
    log = (tmp_path / "driver.err").read_text()
    summary = json.loads((tmp_path / "run.json").read_text())
    ep = summary["per_episode"][0]
    print(
        f"\n[whole stack, {bridge}] {ep['ticks']} ticks, {ep['policy_actions']} policy actions; driver: {log.strip()}"
    )
    assert rc == 0 and "FAULT" not in log, log
    m = re.search(r"(\d+) cycles, command success rate ([\d.]+), tracking \|q - q_c\| max ([\d.]+) rad", log)
    assert m, log
    cycles, success, tracking = int(m.group(1)), float(m.group(2)), float(m.group(3))
    assert cycles > 300 and success >= on_time_min and np.isfinite(tracking)
    assert (
        ep["steps"] >= EPISODE_STEPS and ep["policy_actions"] >= EPISODE_STEPS // 2 and summary["faults"] == 0
    )
    # The policy drove the arm: it closed most of the way from where it started to the goal posture.
    final = np.array(ast.literal_eval(re.search(r"final q (\[[^\]]*\])", log).group(1)))
    start = policy.first.numpy().astype(float)
    goal = start + GOAL_OFFSET
    assert np.abs(final - goal).max() < 0.5 * np.abs(GOAL_OFFSET).max(), (final - goal).round(3)
