"""Fakes for the evaluation tests: a scripted reach "policy" that speaks the evaluator's interface."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from robolearn.types import ACTION, OBS_ENV_STATE, OBS_STATE

TCP = slice(15, 18)  # TCP position in the Franka env's 22-D state


class ScriptedReach:
    """Drives the franka-reach TCP to the ball; with ``leave=True`` it then rises away from it.

    It has what :func:`robolearn.eval.evaluate.evaluate` uses of a policy: ``config``
    (To = Ta = 1), ``input_features``, ``check_features``, ``eval`` and ``predict_action_chunk``.
    Each episode has its own random ball, so the ball position keys the per-episode memory of
    whether it was reached, whatever the order of the env copies in a batch.
    """

    def __init__(self, leave: bool, reached_dist: float = 0.015):
        self.leave, self.reached_dist = leave, reached_dist
        self.config = SimpleNamespace(n_obs_steps=1, exec_start=0, n_action_steps=1)
        self.input_features = {OBS_STATE: (22,), OBS_ENV_STATE: (3,)}
        self._reached: set[bytes] = set()

    def check_features(self, found: dict, source: str = "env") -> None:
        want = {**self.input_features, ACTION: (7,)}
        bad = {k: found.get(k) for k, v in want.items() if tuple(found.get(k, ())) != v}
        assert not bad, f"{source}: {bad}"

    def eval(self) -> ScriptedReach:
        return self

    def predict_action_chunk(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, To=1, D) observations -> (B, 1, 7) ee_delta actions."""
        tcp = obs[OBS_STATE][:, -1, TCP].numpy().astype(np.float64)
        ball = obs[OBS_ENV_STATE][:, -1].numpy().astype(np.float64)
        actions = np.zeros((len(tcp), 1, 7), dtype=np.float32)
        for i, (p, b) in enumerate(zip(tcp, ball, strict=True)):
            key = b.astype(np.float32).tobytes()
            if np.linalg.norm(b - p) < self.reached_dist:
                self._reached.add(key)
            if self.leave and key in self._reached:
                actions[i, 0, 2] = 1.0  # straight up, 5 cm per step: out of the 2.5 cm success ball
            else:
                actions[i, 0, :3] = np.clip((b - p) / 0.05, -1.0, 1.0)
        return torch.from_numpy(actions)


@pytest.fixture
def scripted_reach():
    """``scripted_reach(leave)`` -> a fresh :class:`ScriptedReach`."""
    return ScriptedReach
