"""Fixtures shared by the deploy tests (server, client, RTC). Append new fixtures; do not reorder."""

from __future__ import annotations

import pytest


# ---------------------------------------------------------------------------------------- D1: server fakes
class FakeChunkPolicy:
    """A cheap stand-in for a policy behind the server: no network, answers a known function of its input.

    ``actions[b, i] = [last_state0, first_state0, i, 0, ...]`` where ``last_state0`` / ``first_state0`` are
    element 0 of ``observation.state`` in the newest / oldest frame of the window. It records each call's
    batch size (``calls``) and feature shapes (``shapes``); ``gate`` (a threading.Event), when given,
    holds every call until set; a state whose element 0 equals ``fail_value`` makes the call raise.
    """

    name = "fake"

    def __init__(self, state_dim=4, image_shape=None, n_obs_steps=2, horizon=10, action_dim=3, n_action_steps=4,
                 gate=None, fail_value=None):  # fmt: skip
        import types

        features = {"observation.state": (state_dim,)}
        if image_shape is not None:
            features["observation.images.front"] = tuple(image_shape)
        self.config = types.SimpleNamespace(
            input_features=features, n_obs_steps=n_obs_steps, horizon=horizon, exec_start=n_obs_steps - 1,
            action_dim=action_dim, n_action_steps=n_action_steps,
        )  # fmt: skip
        self.gate = gate
        self.fail_value = fail_value
        self.calls: list[int] = []
        self.shapes: list[dict] = []

    def predict_action_chunk(self, batch):
        import torch

        if self.gate is not None:
            self.gate.wait(timeout=60)
        state = batch["observation.state"]
        self.calls.append(int(state.shape[0]))
        self.shapes.append({k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")})
        if self.fail_value is not None and bool((state[:, -1, 0] == self.fail_value).any()):
            raise RuntimeError("the fake policy was asked to fail")
        b, h, da = state.shape[0], self.config.horizon, self.config.action_dim
        out = torch.zeros(b, h, da)
        out[:, :, 0] = state[:, -1, 0, None]
        if da > 1:
            out[:, :, 1] = state[:, 0, 0, None]
        if da > 2:
            out[:, :, 2] = torch.arange(h, dtype=torch.float32)
        return out


@pytest.fixture
def fake_policy_factory():
    """``factory(**kwargs) -> FakeChunkPolicy`` (see its docstring)."""
    return FakeChunkPolicy


@pytest.fixture(scope="session")
def tiny_flow_run(lift_dataset, tmp_path_factory):
    """A flow checkpoint trained 2 steps on the six-episode franka-lift state dataset (To=2, H=16, Da=8)."""
    from robolearn.train.config import TrainConfig
    from robolearn.train.trainer import Trainer

    run = tmp_path_factory.mktemp("deploy_flow") / "run"
    cfg = TrainConfig(policy="flow", policy_config={"denoiser": {"kind": "mlp", "mlp_dims": [32, 32]}}, steps=2,
                      batch_size=8, save_every=2, log_every=1)  # fmt: skip
    Trainer(cfg, lift_dataset, run, progress=False).fit()
    return run


# ---------------------------------------------------------------------------------------- D2: robot side
@pytest.fixture(scope="session")
def reach_flow_run(tmp_path_factory):
    """A state flow checkpoint that solves franka-reach: 20 expert demos, 600 steps (about 20 s on one
    core); ``robolearn eval`` measured 20/20 held successes with it."""
    from robolearn.commands import collect
    from robolearn.train.config import TrainConfig
    from robolearn.train.trainer import Trainer

    root = tmp_path_factory.mktemp("deploy_reach")
    assert collect.run(collect.default_args(env="franka-reach", episodes=20, out=root / "ds")) == 0
    cfg = TrainConfig(
        policy="flow",
        policy_config={"denoiser": {"kind": "mlp", "mlp_dims": [256, 256]}, "prediction": "sample",
                       "num_inference_steps": 4},
        steps=600, batch_size=64, lr=1e-3, warmup_steps=20, save_every=600, log_every=100,
    )  # fmt: skip
    Trainer(cfg, root / "ds", root / "run", progress=False).fit()
    return root / "run"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``robolearn serve`` as a subprocess on 127.0.0.1:``port``; stopped by its PID."""

    def __init__(self, checkpoint, port: int, *extra: str):
        self.checkpoint, self.port, self.extra = checkpoint, port, extra
        self.proc = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ServeProcess:
        """Start it and wait until ``/healthz`` answers."""
        import subprocess
        import sys
        import tempfile
        import time
        import urllib.request

        cmd = [sys.executable, "-m", "robolearn.cli", "serve", "--checkpoint", str(self.checkpoint),
               "--port", str(self.port), "--quiet", *self.extra]  # fmt: skip
        self._log = tempfile.TemporaryFile()  # a pipe nobody reads could fill up and block the server
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(
                    f"robolearn serve exited {self.proc.returncode}: {self._log.read()[-2000:]!r}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1.0) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"robolearn serve did not answer /healthz within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL (a crash) and reap it."""
        import os
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL if it lingers."""
        import os
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture
def serve_process():
    """``factory(checkpoint, port, *extra_args) -> ServeProcess`` (not started); all are stopped after the test."""
    made: list[ServeProcess] = []

    def factory(checkpoint, port: int, *extra: str) -> ServeProcess:
        made.append(ServeProcess(checkpoint, port, *extra))
        return made[-1]

    yield factory
    for p in made:
        p.stop()


@pytest.fixture
def unused_port() -> int:
    """A port free on 127.0.0.1 (see :func:`free_port`)."""
    return free_port()
