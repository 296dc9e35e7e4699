"""The robot client against the real policy server (in-process, port 0), with D1's fake policy.

The fake answers ``actions[i] = [last_state0, first_state0, i]``, so a reply shows which window the
client sent.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from robolearn import types
from robolearn.deploy.client import ClientError, ObservationWindow, PolicyClient, ServerUnavailable
from robolearn.deploy.keymap import KeyMap
from robolearn.deploy.runner import RunError, Runner
from robolearn.deploy.server import PolicyServer
from robolearn.types import FeatureSpec

STATE = FeatureSpec("float32", (4,))


@pytest.fixture
def served(fake_policy_factory):
    """``start(**policy_kwargs, api_key=None) -> (server, policy)``; servers stop after the test."""
    servers: list[PolicyServer] = []

    def start(api_key=None, **kw):
        policy = fake_policy_factory(**kw)
        servers.append(PolicyServer(policy, KeyMap(), api_key=api_key, fps=20.0).start())
        return servers[-1], policy

    yield start
    for s in servers:
        s.stop()


def _obs(x: float) -> dict:
    return {types.OBS_STATE: np.full(4, x, np.float32), types.TASK: "reach the red ball"}


def test_metadata_window_and_echoed_fields(served):
    server, _ = served(n_obs_steps=2, horizon=10, action_dim=3)
    with PolicyClient(server.url) as client:
        meta = client.metadata
        assert meta["features"] == {"observation/state": {"shape": [4], "dtype": "float32"}}
        assert (meta["action_horizon"], meta["action_dim"], meta["n_obs_steps"]) == (9, 3, 2)
        window = ObservationWindow(meta, {types.OBS_STATE: STATE})
        window.push(_obs(1.0))
        window.push(_obs(2.0))
        req = window.request()
        assert req["observation/state"].shape == (2, 4) and req["prompt"] == "reach the red ball"
        reply = client.infer({**req, "obs_timestamp": 12.5}, seq=7)
        assert reply.error is None and reply.seq == 7 and reply.obs_timestamp == 12.5
        assert reply.actions.shape == (9, 3) and reply.actions.dtype == np.float32
        # newest frame first column, oldest second: the window went out oldest first.
        np.testing.assert_array_equal(reply.actions[:, 0], 2.0)
        np.testing.assert_array_equal(reply.actions[:, 1], 1.0)
        np.testing.assert_array_equal(reply.actions[:, 2], np.arange(1, 10))  # the past step is cut
        assert reply.rtt_s > 0 and "infer_ms" in reply.server_timing


def test_a_fresh_window_repeats_the_first_frame(served):
    server, _ = served(n_obs_steps=3)
    with PolicyClient(server.url) as client:
        window = ObservationWindow(client.metadata, {types.OBS_STATE: STATE})
        window.push(_obs(5.0))
        assert window.request()["observation/state"].tolist() == [[5.0] * 4] * 3
        window.reset()
        with pytest.raises(RuntimeError, match="push"):
            window.request()


def test_error_reply_names_the_key_and_the_link_stays_up(served):
    server, _ = served()
    with PolicyClient(server.url) as client:
        bad = client.infer({"observation/state": np.zeros(5, np.float32)}, seq=1)
        assert bad.actions is None and "observation/state" in bad.error and not bad.disconnected
        good = client.infer({"observation/state": np.zeros(4, np.float32)}, seq=2)
        assert good.error is None and client.connects == 1


def test_submit_never_blocks_and_poll_delivers(served):
    gate = threading.Event()
    server, _ = served(gate=gate)
    with PolicyClient(server.url) as client:
        client.submit({"observation/state": np.ones(4, np.float32)}, seq=1)
        assert client.busy and client.poll() is None
        with pytest.raises(RuntimeError, match="in flight"):
            client.submit({"observation/state": np.ones(4, np.float32)}, seq=2)
        time.sleep(0.05)
        assert client.poll() is None and client.request_age >= 0.05
        gate.set()
        deadline = time.monotonic() + 10
        reply = None
        while reply is None and time.monotonic() < deadline:
            reply = client.poll()
            time.sleep(0.005)
        assert reply is not None and reply.seq == 1 and not client.busy


def test_api_key(served):
    server, _ = served(api_key="s3cret")
    with PolicyClient(server.url, api_key="s3cret") as client:
        assert client.infer({"observation/state": np.zeros(4, np.float32)}).error is None
    client = PolicyClient(server.url, api_key="wrong", connect_timeout=0.5)
    try:
        with pytest.raises(ServerUnavailable, match="401"):
            client.start(timeout=1.0)
    finally:
        client.close()


def test_no_server_is_a_clear_error(unused_port):
    client = PolicyClient(f"ws://127.0.0.1:{unused_port}", connect_timeout=0.3)
    try:
        with pytest.raises(ServerUnavailable, match="no policy server answered"):
            client.start(timeout=0.5)
    finally:
        client.close()
    with pytest.raises(ValueError, match="ws://"):
        PolicyClient("http://127.0.0.1:8000")


def test_window_refuses_a_robot_that_does_not_fit(served):
    server, _ = served()
    with PolicyClient(server.url) as client:
        with pytest.raises(ClientError, match=r"expects shape \[4\], the robot's is \[22\]"):
            ObservationWindow(client.metadata, {types.OBS_STATE: FeatureSpec("float32", (22,))})
        with pytest.raises(ClientError, match="needs 'observation/state'"):
            ObservationWindow(client.metadata, {types.OBS_ENV_STATE: STATE})


def test_runner_drives_the_sim_robot(served):
    """Through the whole stack: every tick after the first reply executes a planned action, each
    chunk's delay is dropped, requests go out when the chunk is half empty."""
    from robolearn.deploy.sim_robot import SimRobot

    server, policy = served(state_dim=22, n_obs_steps=2, horizon=16, action_dim=7, n_action_steps=8)
    with PolicyClient(server.url) as client, SimRobot("franka-reach", hold_steps=1000) as robot:
        runner = Runner(robot, client)
        rep = runner.run_episode(seed=1, max_ticks=30)
        with pytest.raises(RunError, match="real-time chunking"):
            Runner(robot, client, rtc=True)
    assert rep.ticks == 30 and rep.requests >= 3 and rep.faults == 0  # one per 8 steps (ceil(15 / 2))
    assert rep.policy_actions + rep.holds == 30 and rep.policy_actions >= 25
    assert all(d >= 1 for d in rep.delays)  # a reply is taken in at a later tick than its observation
    assert len(rep.rtt_ms) == len(rep.delays) and rep.jitter.ticks == 30
    assert sum(r.source == "sent" for r in robot.action_log) >= 25
    assert policy.calls and all(b == 1 for b in policy.calls)


def test_run_command_films_the_cameras_the_server_asks_for(served, tmp_path):
    """``robolearn run`` builds the sim robot with the server's cameras at its image size."""
    import json

    from robolearn.cli import main

    server, policy = served(state_dim=22, image_shape=(3, 32, 48), horizon=16, action_dim=7, n_action_steps=8)
    out = tmp_path / "run.json"
    argv = ["run", "--server", server.url, "--task", "franka-reach", "--episodes", "2", "--set",
            "max_episode_steps=12", "--json", str(out), "--merge", "weighted"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(out.read_text())
    assert summary["episodes"] == 2 and [e["steps"] for e in summary["per_episode"]] == [12, 12]
    assert summary["merge"] == "weighted" and summary["rtt_ms"]["p50"] > 0
    assert {s["observation.images.front"] for s in policy.shapes} == {(1, 2, 3, 32, 48)}
