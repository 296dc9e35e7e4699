"""Scripted policies written the way a user would, for ``robolearn collect --expert`` tests.

They follow the contract in :mod:`robolearn.envs.expert_plugin`: the named callable takes the env
and returns a policy ``obs -> action`` (optionally with ``reset()``).
"""

from __future__ import annotations

import numpy as np

OSC_STEP = 0.05
"""robosuite's OSC_POSE delta: metres of EE motion per step at |action| = 1."""


class RobosuiteLiftExpert:
    """robosuite Lift: hover over the cube, descend, close, lift (a class taking the env fits the contract)."""

    def __init__(self, env):
        assert env.action_space.shape == (7,)
        self.reset()

    def reset(self) -> None:
        self.phase, self.timer, self.lift_z = 0, 0, 0.0

    def __call__(self, obs: dict) -> np.ndarray:
        eef, cube = obs["observation.state"][15:18], obs["observation.environment_state"][:3]
        self.timer += 1
        grip = -1.0
        if self.phase == 0:  # hover 6 cm above the cube, open
            target = cube + [0.0, 0.0, 0.06]
            if np.linalg.norm(target - eef) < 0.01:
                self.phase = 1
        elif self.phase == 1:  # descend to the cube's centre
            target = cube.copy()
            if np.linalg.norm(target - eef) < 0.006:
                self.phase, self.timer = 2, 0
        elif self.phase == 2:  # close
            target, grip = cube.copy(), 1.0
            if self.timer > 12:
                self.phase, self.lift_z = 3, eef[2] + 0.1
        else:  # lift 10 cm and hold it there
            target, grip = np.array([eef[0], eef[1], self.lift_z]), 1.0
        action = np.zeros(7, dtype=np.float32)
        action[:3] = np.clip(0.8 * (target - eef) / OSC_STEP, -1.0, 1.0)
        action[6] = grip
        return action


def make_reach_policy(env):
    """Meta-World reach: servo the hand onto the goal (a factory function returning a closure)."""
    step = 0.01  # Meta-World moves the hand's mocap 1 cm per step at |action| = 1

    def policy(obs: dict) -> np.ndarray:
        hand, goal = obs["observation.state"][15:18], obs["observation.environment_state"][14:17]
        action = np.zeros(env.action_space.shape, dtype=np.float32)
        action[:3] = np.clip((goal - hand) / step, -1.0, 1.0)
        return action

    return policy


def wrong_shape(env):
    """A policy whose actions have one element too many."""
    return lambda obs: np.zeros(env.action_space.shape[0] + 1)
