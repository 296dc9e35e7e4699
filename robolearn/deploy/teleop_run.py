"""Keyboard teleop of a bridged robot at its control rate: ``robolearn run --robot zmq --teleop keyboard``.

Keys map to ``ee_delta`` actions as in ``robolearn collect --teleop keyboard``
(:mod:`robolearn.envs.teleop`): one key is one control step; Enter saves the episode, ``x``
discards it, Esc (or the end of piped input) stops. On a terminal a step without a key holds. Steps
are paced on absolute deadlines at the robot's rate, so piped keys drive the arm in real time too.
The robot records the frames (``BridgeRobot(record=True)``: measured state, commanded action, the
joint target its safety layer let through). torch-free and mujoco-free.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["teleop_episodes"]


def teleop_episodes(
    robot: Any, keys: Iterator[str], first_seed: int, *, announce: bool = True
) -> Iterator[Any]:
    """Yield each episode to keep (the robot's ``episode`` with its frames), from ``first_seed`` on.

    An episode ends on Enter (kept, when it has frames), ``x`` (dropped), or when the robot side says
    it is done (kept); Esc or the end of ``keys`` stops after the episode in progress is dropped."""
    from robolearn.deploy.loop import RateLoop
    from robolearn.envs.teleop import KeyboardTeleop

    if robot.action_feature.shape != (7,):
        raise ValueError(
            f"{robot.name}: keyboard teleop drives a 7-D ee_delta action, not {robot.action_feature.shape}"
        )
    teleop = KeyboardTeleop()
    loop = RateLoop(robot.control_hz)
    for seed in itertools.count(first_seed):
        robot.reset(seed)
        teleop.reset()
        if announce:
            print(f"episode seed {seed}: {robot.episode.task}", file=sys.stderr)
        loop.start()
        for ev in teleop.events(keys):
            if ev.command == "quit":
                return
            if ev.command in ("save", "discard"):
                if ev.command == "save" and robot.episode.frames:
                    yield robot.episode
                break
            loop.wait()
            robot.get_observation()
            robot.send_action(ev.action)
            if robot.episode.done:
                yield robot.episode
                break
        else:
            return  # keys ran out
    robot.stop()
