"""The driver's topics on the in-process bridge, driven by BridgeRobot (as ``robolearn run`` does):
describe/reset, joint and end-effector commands, the e-stop topic, a fault and the recover service."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import numpy as np
import pytest

from robolearn.deploy.cell import load_cell
from robolearn.deploy.franka.driver import FrankaDriver
from robolearn.deploy.franka.service import DriverService, ee_delta_target, rotation_to_quaternion
from robolearn.deploy.safety import forward_kinematics, load_hardware
from robolearn.deploy.topics import StringMsg
from robolearn.deploy.topics.inproc import InprocBackend
from robolearn.types import OBS_STATE

pytest.importorskip("ruckig")


@pytest.fixture
def cell(ideal_arm):
    """(arm, driver, service, BridgeRobot) on a fresh in-process bus; all closed afterwards."""
    from robolearn.deploy.bridge_robot import BridgeRobot

    name = uuid.uuid4().hex
    arm = ideal_arm()
    drv = FrankaDriver(arm, load_cell().safety, policy_hz=20.0)
    drv.connect()
    robot_bus, client_bus = InprocBackend(name), InprocBackend(name)
    service = DriverService(drv, robot_bus, episode_steps=30)
    service.start()
    robot = BridgeRobot("inproc", bus=client_bus, timeout=10.0)
    robot.connect()
    yield arm, drv, service, robot
    robot.disconnect()
    service.stop()
    drv.close()
    robot_bus.close()
    client_bus.close()


def _status(robot) -> dict:
    assert robot._subs["status"].wait_for(1, timeout=5.0)
    time.sleep(0.1)
    return json.loads(robot._subs["status"].latest().msg.data)


def test_describe_reset_and_joint_commands(cell):
    arm, drv, service, robot = cell
    assert robot.command_mode == "joint_position" and robot.action_feature.shape == (8,)
    assert robot.info["cameras"] == [] and robot.info["robot_type"] == "franka_fr3"
    obs = robot.reset(3)
    state = obs[OBS_STATE]
    assert state.shape == (22,) and np.allclose(state[:7], arm.q, atol=1e-6)
    q0 = arm.q.copy()
    goal = q0 + 0.1
    for k in range(30):
        robot.send_action(np.append(q0 + 0.1 * min(1.0, (k + 1) / 10), -1.0).astype(np.float32))
        time.sleep(0.02)
    time.sleep(0.5)
    assert np.abs(arm.q - goal).max() < 1e-3
    robot.get_observation()
    assert robot.episode.steps == 30 and robot.episode.done and robot.episode.seed == 3
    status = _status(robot)
    assert status["driver"]["success_rate"] == 1.0 and status["driver"]["fault"] is None


def test_estop_topic_and_recover_service(cell):
    arm, drv, service, robot = cell
    robot.reset(0)
    q0 = arm.q.copy()
    robot.send_action(np.append(q0 + 0.02, -1.0).astype(np.float32))
    time.sleep(0.2)
    robot.estop()
    time.sleep(0.3)
    assert drv.state == "estop" and _status(robot)["state"] == "estop"
    at = arm.q.copy()
    robot.send_action(np.append(q0 + 0.3, -1.0).astype(np.float32))
    time.sleep(0.2)
    assert np.array_equal(arm.q, at)
    robot.clear_estop()
    time.sleep(0.3)
    assert drv.state == "idle"
    # A reflex: reported on the status topic; commands do nothing until the recover service is asked.
    arm.fault_at = arm.packets + 20
    robot.send_action(np.append(at + 0.01, -1.0).astype(np.float32))
    deadline = time.monotonic() + 10.0
    while drv.state != "fault" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert drv.state == "fault"
    assert "reflex" in _status(robot)["driver"]["fault"]
    robot.send_action(np.append(at, -1.0).astype(np.float32))
    time.sleep(0.2)
    assert drv.state == "fault" and arm.recovered == 0
    reply = robot.bus.request("recover", {})
    assert reply["state"] == "idle" and reply["fault"] is None and arm.recovered == 1


def test_estop_string_other_than_stop_or_reset_is_ignored(cell):
    arm, drv, service, robot = cell
    robot.bus.publish(service.topics["estop"], StringMsg("hello"))
    time.sleep(0.2)
    assert drv.state == "idle"


def test_ee_delta_moves_the_tcp_along_the_command():
    hw = load_hardware("fr3")
    q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    p0, r0 = forward_kinematics(hw, q)
    for axis in range(3):
        act = np.zeros(7)
        act[axis] = 1.0
        p1, r1 = forward_kinematics(hw, ee_delta_target(hw, q, act, ee_step=0.02, rot_step=0.2))
        step = p1 - p0
        assert abs(step[axis] - 0.02) < 2e-3 and np.abs(np.delete(step, axis)).max() < 2e-3
    for r in (r0, r1, np.eye(3)):
        x, y, z, w = rotation_to_quaternion(r)
        back = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])  # fmt: skip
        assert np.abs(back - r).max() < 1e-9


def test_ee_delta_commands_through_the_bridge(ideal_arm):
    from robolearn.deploy.bridge_robot import BridgeRobot

    name = uuid.uuid4().hex
    arm = ideal_arm()
    # A patient watchdog: on a busy machine a late command must not reset the target to the arm.
    limits = dataclasses.replace(load_cell().safety, watchdog_hold_s=0.5, watchdog_stop_s=5.0)
    drv = FrankaDriver(arm, limits, policy_hz=20.0)
    hw = drv.pipeline.filter.hardware
    with drv:
        robot_bus, client_bus = InprocBackend(name), InprocBackend(name)
        service = DriverService(drv, robot_bus, policy_action="ee_delta", ee_step=0.01)
        service.start()
        try:
            with BridgeRobot("inproc", bus=client_bus, timeout=10.0) as robot:
                assert robot.command_mode == "ee_delta" and robot.action_feature.shape == (7,)
                robot.reset(0)
                p0 = forward_kinematics(hw, arm.q)[0]
                for _ in range(10):  # down at 1 cm per command
                    robot.send_action(np.array([0, 0, -1, 0, 0, 0, -1], np.float32))
                    time.sleep(0.05)
                time.sleep(0.5)
                step = forward_kinematics(hw, arm.q)[0] - p0
        finally:
            service.stop()
            robot_bus.close()
            client_bus.close()
    # 10 steps of 1 cm, each from the last safe target.
    assert -0.11 < step[2] < -0.08 and np.abs(step[:2]).max() < 0.01, step.round(4)
