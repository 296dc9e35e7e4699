"""A tiny, fast task for RL tests, registered as ``toy-reach1d`` when this module is imported.

A point on a line must reach a goal: ``observation.state`` = [x, goal], both uniform in [-1, 1]; the
action (1,) in [-1, 1] moves x by 0.4·a; success when |x − goal| < 0.1. The optimal policy
a = clip((goal − x)/0.4) succeeds from every start within 5 steps; a random one rarely does. Steps
take microseconds, so PPO runs of a few thousand steps finish in seconds on one thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from robolearn.envs import ENVS, register_env

NAME = "toy-reach1d"


@dataclass
class ToyConfig:
    """Fields robolearn sets on any env it rolls out (see ``register_env``)."""

    cameras: tuple[str, ...] = ()
    image_size: tuple[int, int] = (8, 8)
    terminate_on_success: bool = True
    max_episode_steps: int = 8
    reward_type: str = "sparse"
    control_hz: float = 20.0


class ToyReach(gym.Env):
    """See the module docstring."""

    metadata = {"render_modes": [], "render_fps": 20}

    def __init__(self, config: ToyConfig):
        self.config = config
        self.observation_space = gym.spaces.Dict(
            {
                "observation.state": gym.spaces.Box(-2.0, 2.0, (2,), np.float32),
                "task": gym.spaces.Text(64),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._x = self._goal = 0.0
        self._t = 0

    def _obs(self) -> dict:
        return {"observation.state": np.array([self._x, self._goal], np.float32), "task": "reach the goal"}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._x, self._goal = (float(v) for v in self.np_random.uniform(-1, 1, 2))
        self._t = 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1, 1))
        self._x = float(np.clip(self._x + 0.4 * a, -2, 2))
        self._t += 1
        success = abs(self._x - self._goal) < 0.1
        reward = float(success) if self.config.reward_type == "sparse" else -abs(self._x - self._goal)
        terminated = success and self.config.terminate_on_success
        truncated = self._t >= self.config.max_episode_steps
        return self._obs(), reward, terminated, truncated, {"is_success": success}


def build(config: ToyConfig, **kwargs) -> ToyReach:
    """Registry builder."""
    return ToyReach(config)


if NAME not in ENVS:
    register_env(NAME, ToyConfig, build, description="1-D point reaching a goal (RL tests)")


def tiny_flow_policy(num_steps: int = 3, seed: int = 0, denoiser: str = "mlp", horizon: int = 2,
                     n_action_steps: int = 2, n_obs_steps: int = 1):  # fmt: skip
    """An untrained flow policy for ``toy-reach1d``: by default To = 1, chunks of 2 actions, all executed."""
    import torch

    from robolearn.policies.common.config import DenoiserConfig
    from robolearn.policies.flow.config import FlowConfig
    from robolearn.policies.flow.model import FlowPolicy

    torch.manual_seed(seed)
    cfg = FlowConfig(n_obs_steps=n_obs_steps, horizon=horizon, n_action_steps=n_action_steps, num_inference_steps=num_steps,
                     denoiser=DenoiserConfig(kind=denoiser, mlp_dims=(64, 64), down_dims=(16, 32), time_embed_dim=16))  # fmt: skip
    return FlowPolicy(cfg, features={"observation.state": (2,), "action": (1,)})


def tiny_diffusion_policy(num_steps: int = 4, scheduler: str = "ddim", seed: int = 0):
    """An untrained diffusion policy for ``toy-reach1d`` (DDIM or DDPM, ``num_steps`` of 20)."""
    import torch

    from robolearn.policies.common.config import DenoiserConfig
    from robolearn.policies.diffusion.config import DiffusionConfig
    from robolearn.policies.diffusion.model import DiffusionPolicy

    torch.manual_seed(seed)
    cfg = DiffusionConfig(n_obs_steps=1, horizon=2, n_action_steps=2, num_train_timesteps=20,
                          num_inference_steps=num_steps, inference_scheduler=scheduler, prediction_type="sample",
                          denoiser=DenoiserConfig(kind="mlp", mlp_dims=(64, 64), time_embed_dim=16))  # fmt: skip
    return DiffusionPolicy(cfg, features={"observation.state": (2,), "action": (1,)})
