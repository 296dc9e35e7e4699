"""Fixtures for the Franka driver tests: franky-sim in its own venv, and an ideal in-memory arm.

franky-sim 1.0.4 needs MuJoCo 4 and pinocchio, which clash with our mujoco pin, so the set-up builds
a venv for it once (cached under ``~/.cache/robolearn/franky-sim-<key>-venv``, the key naming the
requirement and the Python version; built in a temporary folder, then renamed) and runs
``franky-sim -s mujoco --hostname 127.0.0.1`` from it as a subprocess, stopped with SIGTERM by PID
(SIGINT does not stop it). Without a reachable package index (and no cached venv) those tests skip.
pylibfranka itself runs in this venv (the ``franka`` extra).
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from robolearn.deploy.franka.arm import Arm, ArmFault, ArmState

# Without the franka extra's ruckig (a core install) the driver cannot be imported: skip the folder.
collect_ignore_glob = [] if importlib.util.find_spec("ruckig") else ["test_*.py"]

FRANKY_SIM = ["franky-sim==1.0.4"]
NETWORK_ERRORS = ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution",
                  "ProxyError", "ConnectTimeoutError", "Max retries exceeded", "No matching distribution")  # fmt: skip
PORT = 1337


def _venv() -> Path:
    key = hashlib.sha256("\n".join([*FRANKY_SIM, sys.version]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robolearn"
    venv = cache / f"franky-sim-{key}-venv"
    if (venv / ".complete").is_file() and (venv / "bin" / "python").exists():
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".franky-sim-{key}-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True, timeout=300)
        res = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                              "--timeout", "30", *FRANKY_SIM], capture_output=True, text=True, timeout=1800)  # fmt: skip
        if res.returncode != 0:
            text = res.stdout + res.stderr
            if any(e in text for e in NETWORK_ERRORS):
                tail = text.strip().splitlines()[-1:] or ["(no output)"]
                pytest.skip(f"pip cannot reach the package index for the franky-sim venv: {tail[0]}")
            raise AssertionError(f"pip install {' '.join(FRANKY_SIM)} failed:\n{res.stderr[-3000:]}")
        (tmp / ".complete").write_text("\n".join(FRANKY_SIM) + "\n")
        if venv.exists():
            shutil.rmtree(venv)
        tmp.rename(venv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return venv  # used only as `bin/python -m ...`: its scripts name the temporary path


def _port_bound(host: str, port: int) -> bool:
    """True when something listens on host:port (probing by bind, so franky-sim sees no client)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    finally:
        s.close()
    return False


def _free_loopback() -> str:
    """127.0.0.1 when its port 1337 is free, else another loopback address (parallel runs)."""
    rng = np.random.default_rng()
    for host in [
        "127.0.0.1",
        *(f"127.0.{int(rng.integers(2, 250))}.{int(rng.integers(2, 250))}" for _ in range(20)),
    ]:
        if not _port_bound(host, PORT) and not _port_bound(host, PORT + 1):
            return host
    raise AssertionError("no loopback address with free ports 1337/1338")


class FrankySim:
    """A running franky-sim: ``host`` (the robot IP), ``pid``; :meth:`stop` sends SIGTERM."""

    def __init__(self, python: Path, log: Path):
        self.host = _free_loopback()
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [str(python), "-m", "franky_sim.run_server", "-s", "mujoco", "--hostname", self.host],
            stdout=self._out, stderr=subprocess.STDOUT, env={**os.environ, "MUJOCO_GL": "egl"},
        )  # fmt: skip
        self.pid = self.proc.pid
        deadline = time.monotonic() + 180
        while not (_port_bound(self.host, PORT) and "Connect to the server" in log.read_text()):
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"franky-sim exited ({self.proc.returncode}):\n{log.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"franky-sim did not bind port {PORT}:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM by PID, then wait (SIGKILL if it lingers)."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._out.close()


@pytest.fixture(scope="session")
def franky_sim_python() -> Path:
    """The franky-sim venv's interpreter (built once, cached)."""
    pytest.importorskip("pylibfranka")
    return _venv() / "bin" / "python"


@pytest.fixture
def franky_sim(franky_sim_python, tmp_path):
    """A fresh franky-sim on loopback for one test, stopped by PID afterwards."""
    sim = FrankySim(franky_sim_python, tmp_path / "franky-sim.log")
    try:
        yield sim
    finally:
        sim.stop()


class IdealArm(Arm):
    """An in-memory arm that follows every command exactly, one packet per :meth:`read` (1 ms), with
    an optional fault injected at packet ``fault_at``; it records what it was sent."""

    name = "ideal"

    def __init__(self, q0=(0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785), fault_at: int | None = None):
        self.q = np.asarray(q0, float)
        self.fault_at = fault_at
        self.sent: list[np.ndarray] = []
        self.finished = 0
        self.recovered = 0
        self.reflex = False
        self.packets = 0
        self._moving = False
        self.connected = False

    def connect(self):
        self.connected = True

    def close(self):
        self.connected = False

    def _state(self) -> ArmState:
        return ArmState(q=self.q.copy(), dq=np.zeros(7), q_d=self.q.copy(), time=self.packets * 1e-3,
                        mode="Reflex" if self.reflex else ("Move" if self._moving else "Idle"),
                        errors="joint_reflex" if self.reflex else "")  # fmt: skip

    def read_state(self):
        return self._state()

    def start(self, mode):
        if self.reflex:
            raise ArmFault("ControlException", "the robot is in reflex mode", "joint_reflex")
        self._moving = True
        return self._state()

    def read(self):
        time.sleep(0.0005)
        self.packets += 1
        if self.fault_at is not None and self.packets >= self.fault_at:
            self.fault_at, self.reflex, self._moving = None, True, False
            raise ArmFault("ControlException", "Motion aborted by reflex! ['joint_reflex']", "joint_reflex")
        return self._state(), 0.001

    def write(self, q, dq, finished=False):
        self.sent.append(np.asarray(q, float).copy())
        self.q = np.asarray(q, float).copy()
        if finished:
            self.finished += 1
            self._moving = False

    def recover(self):
        self.recovered += 1
        self.reflex = False


@pytest.fixture
def ideal_arm():
    """``factory(**kwargs) -> IdealArm``."""
    return IdealArm


@pytest.fixture
def zmq_base_port() -> int:
    """A port P with P, P + 1 and P + 2 free on 127.0.0.1 (the ZeroMQ bridge takes all three)."""
    for _ in range(50):
        socks = []
        try:
            for off in range(3):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", 0 if off == 0 else socks[0].getsockname()[1] + off))
            return socks[0].getsockname()[1]
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no three free consecutive ports on 127.0.0.1")


@pytest.fixture
def on_time_min() -> float:
    """The least share of 1 kHz driver cycles that must be on time: half. That fails a driver whose
    loop stalls or writes at most every other packet, not a busy machine. This 2-core machine runs the
    sim, the driver, the bridge, the client and the server at once; quiet, 1-3% of cycles miss now and
    then, but on a loaded CI machine the robot-PC test measured 83% on time (no fault, the arm on its
    target). The exact rate is a speed figure, which tests do not assert: the driver logs it."""
    return 0.5
