"""Faults: a killed server, a stalled server, Ctrl-C. Asserted on the sim robot's own action log.

Kill and stall tests run the client, the loop and the robot in this process (threads) so the robot's
log can be read; the killed server is a real ``robolearn serve`` process, killed by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from robolearn.deploy.client import PolicyClient
from robolearn.deploy.runner import Runner
from robolearn.deploy.server import PolicyServer
from robolearn.deploy.sim_robot import SimRobot


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


def _is_hold(action: np.ndarray) -> bool:
    return bool(np.all(action[:6] == 0.0))


class _Background:
    """``runner.run_episode`` in a thread, stopped through the runner's stop event."""

    def __init__(self, runner: Runner, seed: int = 0):
        self.runner = runner
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, args=(seed,), daemon=True)
        self.thread.start()
        _wait(lambda: runner.last_report is not None, 30, "the episode to start")

    def _main(self, seed: int) -> None:
        try:
            self.runner.run_episode(seed=seed)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            self.error = exc

    @property
    def report(self):
        return self.runner.last_report

    def stop(self):
        self.runner.stop_event.set()
        self.thread.join(timeout=30)
        if self.error is not None:
            raise self.error
        return self.report


def test_server_kill_holds_then_stops_within_two_periods_and_reconnects(
    reach_flow_run, serve_process, unused_port
):
    hz = 10.0
    period = 1.0 / hz
    server = serve_process(reach_flow_run, unused_port).start()
    overrides = ["max_episode_steps=100000", f"control_hz={hz}"]
    client = PolicyClient(server.url, retry_s=0.1)
    client.start(timeout=30)
    try:
        with SimRobot("franka-reach", hold_steps=100_000, overrides=overrides) as robot:
            run = _Background(Runner(robot, client, request_timeout=5.0))
            _wait(lambda: run.report.policy_actions >= 10, 60, "10 policy actions")
            t_kill = time.monotonic()
            server.kill()
            _wait(lambda: run.report.faults >= 1, 10, "the fault to be noticed")
            time.sleep(5 * period)
            server.start()  # the same port
            _wait(lambda: client.connects >= 2, 120, "the client to reconnect")
            t_back = client.connected_at
            resumed = run.report.policy_actions
            _wait(lambda: run.report.policy_actions >= resumed + 10, 60, "10 more policy actions")
            report = run.stop()
            log = list(robot.action_log)
            stops = list(robot.stop_times)
    finally:
        client.close()
    assert report.faults == 1 and report.policy_actions >= 20
    before = [r for r in log if r.time < t_kill]
    assert any(not _is_hold(r.action) for r in before)
    # From 2 control periods after the kill until the server is back, every tick held position, with
    # the gripper command it had.
    gap = [r for r in log if t_kill + 2 * period <= r.time < t_back]
    assert len(gap) >= 5 and all(_is_hold(r.action) for r in gap)
    assert len({float(r.action[-1]) for r in gap}) == 1
    last_moving = [r for r in log if r.time < gap[0].time][-1]
    assert float(gap[0].action[-1]) == float(last_moving.action[-1])
    # ...and the robot was stopped within those 2 periods.
    assert any(t_kill <= s <= t_kill + 2 * period for s in stops)
    # The policy drove it again after the reconnect.
    assert sum(not _is_hold(r.action) for r in log if r.time >= t_back) >= 5


def test_stalled_server_holds_drops_the_link_and_recovers(fake_policy_factory):
    gate = threading.Event()
    gate.set()
    policy = fake_policy_factory(
        state_dim=22, n_obs_steps=2, horizon=16, action_dim=7, n_action_steps=8, gate=gate
    )
    server = PolicyServer(policy, fps=20.0).start()
    client = PolicyClient(server.url, retry_s=0.05)
    client.start()
    try:
        with SimRobot("franka-reach", hold_steps=100_000, overrides=["max_episode_steps=100000"]) as robot:
            run = _Background(Runner(robot, client, request_timeout=0.3))
            _wait(lambda: run.report.policy_actions >= 10, 60, "10 policy actions")
            faults_before = run.report.faults  # a slow reply before the stall (a loaded machine) counts too
            gate.clear()  # the model hangs
            t_stall = time.monotonic()
            _wait(lambda: run.report.faults > faults_before, 10, "the stall to be noticed")
            time.sleep(0.3)
            gate.set()
            resumed = run.report.policy_actions
            _wait(lambda: run.report.policy_actions >= resumed + 10, 60, "10 more policy actions")
            report = run.stop()
            log = list(robot.action_log)
            stops = list(robot.stop_times)
    finally:
        client.close()
        gate.set()
        server.stop()
    assert report.faults >= 1 and client.connects >= 2  # the stalled link was dropped and remade
    after = [r for r in log if r.time >= t_stall]
    holds = [_is_hold(r.action) for r in after]
    # Once the plan ran out the robot held for a stretch of ticks, then the policy came back.
    first_hold = holds.index(True)
    run_len = next((i for i, h in enumerate(holds[first_hold:]) if not h), len(holds) - first_hold)
    assert run_len >= 3
    assert any(not h for h in holds[first_hold + run_len :])
    assert any(s >= t_stall for s in stops)


def test_ctrl_c_stops_the_robot_and_closes_the_dataset(reach_flow_run, serve_process, unused_port, tmp_path):
    server = serve_process(reach_flow_run, unused_port).start()
    out = tmp_path / "rec"
    cmd = [sys.executable, "-m", "robolearn.cli", "run", "--server", server.url, "--task", "franka-reach",
           "--episodes", "200", "--record", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    info = out / "meta" / "info.json"
    try:
        _wait(
            lambda: info.exists() and json.loads(info.read_text())["total_episodes"] >= 2, 180, "2 episodes"
        )
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "robolearn run: interrupted" in err and "Traceback" not in err
    from robolearn.data.writer import LeRobotWriter

    writer = LeRobotWriter.open(out)  # opens cleanly: nothing half-written to repair
    assert writer.repairs == [] and writer.num_episodes >= 2
    assert writer.source_env == "franka-reach" and sorted(writer.seeds)[0] == 1_000_000
    writer.finalize()
