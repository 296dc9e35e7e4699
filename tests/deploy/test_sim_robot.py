"""SimRobot's contract: connect, observation keys equal the env's, monotonic stamps, real-time ticks."""

from __future__ import annotations

import numpy as np
import pytest

from robolearn import types
from robolearn.deploy.robot import TIMESTAMP_KEY, NotConnectedError, Robot
from robolearn.deploy.sim_robot import SimRobot
from robolearn.envs import make_env


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def robot():
    clock = Clock()
    r = SimRobot("franka-reach", clock=clock, hold_steps=3)
    r.clock = clock
    with r:
        yield r


def test_is_a_robot_and_needs_connect():
    r = SimRobot("franka-reach")
    assert isinstance(r, Robot) and not r.is_connected
    with pytest.raises(NotConnectedError, match="connect"):
        r.get_observation()
    with r:
        assert r.is_connected
    assert not r.is_connected
    r.disconnect()  # twice is fine


def test_observation_keys_equal_the_envs(robot):
    env = make_env("franka-reach")
    try:
        env_obs, _ = env.reset(seed=0)
        assert set(robot.observation_features) == set(env.observation_space.spaces) - {types.TASK}
        obs = robot.get_observation()
        assert set(obs) == set(env_obs) | {TIMESTAMP_KEY}
        # Same seed, same state: the robot's episode 0 is the env's reset(seed=0).
        np.testing.assert_array_equal(obs[types.OBS_ENV_STATE], env_obs[types.OBS_ENV_STATE])
        assert robot.action_feature.shape == env.action_space.shape
    finally:
        env.close()
    assert robot.control_hz == 20.0 and robot.instruction == obs[types.TASK]


def test_ticks_follow_the_clock_and_stamps_are_monotonic(robot):
    clock = robot.clock
    stamps = [robot.get_observation()[TIMESTAMP_KEY]]
    assert stamps[0] == clock.now and robot.episode.steps == 0
    for _ in range(3):
        clock.now += 0.05
        stamps.append(robot.get_observation()[TIMESTAMP_KEY])
    assert robot.episode.steps == 3
    assert np.diff(stamps) == pytest.approx([0.05] * 3)
    clock.now += 0.049  # not yet the next tick
    assert robot.get_observation()[TIMESTAMP_KEY] == stamps[-1]
    clock.now += 0.101  # three ticks due at once: they all run
    assert robot.advance() == 3 and robot.episode.steps == 6


def test_send_action_applies_at_the_next_tick_and_idle_ticks_hold(robot):
    clock = robot.clock
    move = np.array([1.0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32)
    x0 = robot.get_observation()[types.OBS_STATE][15]
    robot.send_action(move)
    assert robot.episode.steps == 0  # nothing happens before the tick
    clock.now += 0.05
    obs = robot.get_observation()
    assert obs[types.OBS_STATE][15] > x0 + 0.01  # the TCP moved along +x
    clock.now += 0.05
    robot.advance()
    log = robot.action_log
    assert [r.source for r in log] == ["sent", "idle"]
    np.testing.assert_array_equal(log[0].action, move)
    # The idle tick held: no motion, the gripper command kept closed.
    np.testing.assert_array_equal(log[1].action, [0, 0, 0, 0, 0, 0, 1.0])
    np.testing.assert_array_equal(robot.hold_action(), log[1].action)
    assert log[1].time == pytest.approx(robot.tick_time(2))


def test_target_time_and_replacement(robot):
    clock = robot.clock
    a = np.full(7, 0.1, np.float32)
    b = np.full(7, -0.2, np.float32)
    robot.send_action(a, target_time=robot.tick_time(2))
    robot.send_action(b, target_time=robot.tick_time(2) - 0.001)  # same tick (the first at or after it)
    clock.now = robot.tick_time(2)
    robot.advance()
    assert [r.source for r in robot.action_log] == ["idle", "sent"]
    np.testing.assert_array_equal(robot.action_log[1].action, b)
    # Out of range is clipped; malformed is refused with the expected shape.
    out = robot.send_action(np.full(7, 3.0))
    assert out.max() == 1.0
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        robot.send_action(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        robot.send_action(np.full(7, np.nan))


def test_stop_drops_queued_actions(robot):
    robot.send_action(np.ones(7, np.float32))
    robot.stop()
    robot.clock.now += 0.05
    robot.advance()
    assert robot.action_log[0].source == "idle" and robot.stop_times == [50.0]


def test_episode_counts_as_eval_does(robot):
    """Drive the reach expert through the robot: first success, then hold_steps more ticks, then done."""
    from robolearn.envs.experts import make_expert

    robot.reset(seed=3)
    expert = make_expert(robot.config)
    obs = robot.get_observation()
    while not robot.episode.done:
        robot.send_action(expert(obs))
        robot.clock.now += 0.05
        obs = robot.get_observation()
    ep = robot.episode
    assert ep.success and ep.held and ep.seed == 3
    assert ep.steps == ep.first_success_step + 3 and ep.idle_ticks == 0
    robot.clock.now += 1.0
    assert robot.advance() == 0  # a finished episode executes nothing more


def test_record_keeps_dataset_frames():
    clock = Clock()
    with SimRobot("franka-reach", clock=clock, record=True) as r:
        r.send_action(np.zeros(7, np.float32))
        clock.now += 0.1
        r.advance()
        frames = r.episode.frames
        assert len(frames) == 2
        assert set(frames[0]) == set(r.features) | {types.REWARD, types.DONE, types.SUCCESS}
