"""Bring your own task: record demos from your own gymnasium env, train a policy on them, evaluate it.

Run it from the repository root (about 3 minutes on 2 cores with the defaults):

    .venv/bin/python examples/own_env.py --out runs/own-env

The env here is written from scratch so that the example stands alone: a point on a table that has
to reach a coloured goal and stay there. Everything robolearn needs from an env is in it:

- a ``Dict`` observation with ``observation.state`` (what the robot knows about itself),
  ``observation.environment_state`` (what it knows about the scene) and ``task`` (the instruction);
- a ``Box`` action in [-1, 1];
- ``info["is_success"]`` on every step;
- a config dataclass with the fields robolearn sets: ``terminate_on_success`` (demos and evals run
  past success to check that it holds), ``cameras`` / ``image_size`` and ``control_hz``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

import robolearn
from robolearn.data import LeRobotReader

GOALS = {"red": (0.15, 0.1), "green": (-0.12, 0.14), "blue": (0.0, -0.15)}


@dataclass
class PointReachConfig:
    """Config of the point-reach task (every field has a default, as the registry requires)."""

    control_hz: float = 10.0
    """Control rate (steps per second)."""
    max_episode_steps: int = 60
    """Episode cap in control steps."""
    terminate_on_success: bool = True
    """End the episode on the first successful step (robolearn switches it off to record and judge
    what happens after success)."""
    cameras: tuple[str, ...] = ()
    """This env renders no cameras."""
    image_size: tuple[int, int] = (96, 96)
    """Unused (no cameras)."""
    max_speed: float = 0.03
    """Metres per step at |action| = 1."""
    tolerance: float = 0.02
    """Success radius around the goal (m)."""


class PointReachEnv(gym.Env):
    """A point with inertia on a 0.5 x 0.5 m table; the instruction names one of three goals."""

    metadata = {"render_modes": [], "render_fps": 10}

    def __init__(self, config: PointReachConfig):
        self.config = config
        self.metadata = {**self.metadata, "render_fps": config.control_hz}
        box = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "observation.state": box,
            "observation.environment_state": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
            "task": gym.spaces.Text(64),
        })  # fmt: skip
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _obs(self) -> dict:
        state = np.concatenate([self.pos, self.vel]).astype(np.float32)
        return {"observation.state": state, "observation.environment_state": self.goal.astype(np.float32),
                "task": f"move the point to the {self.colour} goal"}  # fmt: skip

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.2, 0.2, 2)
        self.vel = np.zeros(2)
        self.colour = str(self.np_random.choice(sorted(GOALS)))
        self.goal = np.array(GOALS[self.colour])
        self.t = 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        # A first-order lag: the point does not stop dead, so holding the goal takes some care.
        self.vel = 0.6 * self.vel + 0.4 * action * self.config.max_speed
        self.pos = np.clip(self.pos + self.vel, -0.25, 0.25)
        self.t += 1
        dist = float(np.linalg.norm(self.pos - self.goal))
        success = dist < self.config.tolerance
        terminated = success and self.config.terminate_on_success
        truncated = self.t >= self.config.max_episode_steps
        return self._obs(), -dist, terminated, truncated, {"is_success": success}


def scripted_policy(obs: dict) -> np.ndarray:
    """A proportional-derivative controller onto the goal: the demonstrator."""
    pos, vel = obs["observation.state"][:2], obs["observation.state"][2:]
    goal = obs["observation.environment_state"]
    return np.clip(12.0 * (goal - pos) - 20.0 * vel, -1.0, 1.0).astype(np.float32)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/own-env"))
    p.add_argument("--episodes", type=int, default=100, help="demos to record")
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--eval-episodes", type=int, default=50)
    args = p.parse_args(argv)

    # 1. Register the env once; every robolearn command and function can then use it by name.
    robolearn.register_env(
        "point-reach", PointReachConfig, PointReachEnv, description="reach a coloured goal"
    )

    # 2. Record demos. A rerun tops the dataset up: it continues after the largest recorded seed.
    dataset = args.out / "dataset"
    have = LeRobotReader(dataset).num_episodes if (dataset / "meta" / "info.json").is_file() else 0
    if have < args.episodes:
        env = robolearn.make_env("point-reach")
        rec = robolearn.record_episodes(env, scripted_policy, dataset, episodes=args.episodes - have)
        print(
            f"recorded {rec.episodes} demos ({rec.frames} frames), demonstrator success {rec.success_rate:.0%}"
        )

    # 3. Train the measured default recipe for these observations (flow matching on state).
    run = args.out / "run"
    if not (run / "model.safetensors").is_file():
        cfg = robolearn.recipe(dataset, "flow", steps=args.steps, save_every=args.steps)
        summary = robolearn.train_policy(cfg, dataset, run, resume=(run / "checkpoints").exists())
        print(f"trained {summary.steps} steps, final loss {summary.final_loss:.4f}")

    # 4. Evaluate closed loop on unseen seeds: success when first reached, and still held 20 steps on.
    policy = robolearn.load_policy(run)
    result = robolearn.evaluate(policy, "point-reach", episodes=args.eval_episodes)
    print(f"success {result.success_rate:.0%} first reached, {result.held_success_rate:.0%} held "
          f"over {result.episodes} episodes")  # fmt: skip
    return {"episodes": LeRobotReader(dataset).num_episodes, "success": result.success_rate,
            "held": result.held_success_rate}  # fmt: skip


if __name__ == "__main__":
    main()
