"""Real middleware for the bridge tests: a rosmaster and ``robolearn sim-robot`` processes, started
the way a user starts them, on 127.0.0.1, stopped by their PIDs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

ROSMASTER = "/usr/bin/rosmaster"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


class RosMaster:
    """``rosmaster --core -p PORT`` with ``ROS_IP=127.0.0.1``."""

    def __init__(self) -> None:
        import rosgraph

        assert os.path.exists(ROSMASTER), "ROS 1 is missing: ./bootstrap dev installs python3-rosmaster"
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ROS_IP": "127.0.0.1", "ROS_MASTER_URI": self.uri}
        self.proc = subprocess.Popen([ROSMASTER, "--core", "-p", str(self.port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 30
        while not rosgraph.is_master_online(self.uri):
            assert self.proc.poll() is None and time.monotonic() < deadline, "rosmaster did not come up"
            time.sleep(0.1)

    def stop(self) -> None:
        _stop(self.proc)


@pytest.fixture(scope="session")
def rosmaster():
    """One rosmaster for the session (rospy allows one master per process)."""
    master = RosMaster()
    yield master
    master.stop()


class SimRobotProcess:
    """``robolearn sim-robot`` as a subprocess; ``start()`` waits for its ready line."""

    def __init__(self, bridge: str, port: int, *extra: str):
        self.bridge, self.port, self.extra = bridge, port, extra
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> SimRobotProcess:
        cmd = [sys.executable, "-m", "robolearn.cli", "sim-robot", "--bridge", self.bridge,
               "--port", str(self.port), *self.extra]  # fmt: skip
        self._err = tempfile.TemporaryFile()
        env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, text=True, env=env)
        deadline = time.monotonic() + timeout
        line = ""
        while "ready" not in line:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None or time.monotonic() > deadline:
                self._err.seek(0)
                raise RuntimeError(f"sim-robot did not start: {self._err.read()[-3000:]!r}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


@pytest.fixture
def sim_robot_process():
    """``factory(bridge, port, *extra) -> SimRobotProcess`` (not started); all stopped after the test."""
    made: list[SimRobotProcess] = []

    def factory(bridge: str, port: int, *extra: str) -> SimRobotProcess:
        made.append(SimRobotProcess(bridge, port, *extra))
        return made[-1]

    yield factory
    for p in made:
        p.stop()


@pytest.fixture
def port_for():
    """``port_for(kind, rosmaster=None)``: see :func:`bridge_port`."""
    return bridge_port


def bridge_port(kind: str, rosmaster: RosMaster | None = None) -> int:
    """A port for ``kind``: the rosmaster's for ros1, else free ones (zmq uses three in a row)."""
    if kind == "ros1":
        assert rosmaster is not None
        return rosmaster.port
    while True:
        port = free_port()
        if kind != "zmq" or all(_free(port + i) for i in (1, 2)):
            return port


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def lift_flow_run(tmp_path_factory):
    """A state flow checkpoint for franka-lift: 25 expert demos, 1,000 steps (a few minutes on one
    busy core); ``robolearn eval`` measured 20/20 first and held successes with its 30-demo, 1,500-step
    sibling."""
    import torch

    from robolearn.commands import collect
    from robolearn.train.config import TrainConfig
    from robolearn.train.trainer import Trainer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bridges_lift")
    assert collect.run(collect.default_args(env="franka-lift", episodes=25, out=root / "ds")) == 0
    cfg = TrainConfig(
        policy="flow",
        policy_config={"denoiser": {"kind": "mlp", "mlp_dims": [256, 256]}, "prediction": "sample",
                       "num_inference_steps": 4},
        steps=1000, batch_size=64, lr=1e-3, warmup_steps=20, save_every=1000, log_every=100,
    )  # fmt: skip
    Trainer(cfg, root / "ds", root / "run", progress=False).fit()
    return root / "run"
