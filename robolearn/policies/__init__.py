"""Policies: flow matching, diffusion, an MLP baseline, vision-language-action (VLA).

Importing this package registers the light config classes in :data:`robolearn.registry.POLICIES`;
torch, ``diffusers`` and ``transformers`` load only when a policy is built::

    policy = POLICIES.build("flow", FlowConfig(), features=dataset.features, stats=dataset.stats())
    policy = load_policy("runs/x/checkpoint")   # any registered type, from its config.json

Every builder is ``build(config, features=None, stats=None, *, load_pretrained=True)``.

Conventions decided here:

- The action window starts at the first observation frame (LeRobot's): a sampler should read
  ``config.observation_delta_indices`` and ``config.action_delta_indices``; ``select_action``
  executes ``chunk[To-1 : To-1+n_action_steps]``.
- ``predict_action_chunk(obs, noise=None, num_samples=K)`` returns (B, K, H, Da) from one encoding
  of the observation (V-GPS); without ``num_samples`` it returns (B, H, Da).
- Flow sampling exposes its chain: ``FlowPolicy.sample_chain`` gives every Euler iterate, the time
  grid (``time_grid(K)``) and the observation features; ``velocity(x, t, cond, d)`` re-evaluates a
  step with gradients (``sample_chain`` runs under ``no_grad``, not inference mode, for that).
- Adaptive step count (``FlowConfig.adaptive_steps``, AdaFlow-style): a head predicts the
  flow-matching error at t = 0, i.e. the action variance given the observation; samples under
  the threshold take one Euler step, the others K.
- VLAs (``vla``) take the instruction from ``obs["task"]`` (a string or one per sample) and keep
  their tokenizer in the checkpoint (``tokenizer.json``, via ``checkpoint_files``); a trainer calls
  ``fit_instructions(tasks)`` on a policy that has it before training.
- Checkpoints: ``save_pretrained(folder)`` / ``load_policy(folder)``; ``checkpoint_input_features``
  reads the expected features without torch, to check an env or dataset first; ``checkpoint_env``
  the env the training data came from (the default env of ``eval``).
"""

from __future__ import annotations

from typing import Any

from robolearn.policies.common.config import (
    DenoiserConfig,
    ImageEncoderConfig,
    ObsEncoderConfig,
    PolicyConfig,
)
from robolearn.policies.common.features import FeatureMismatchError, check_features
from robolearn.policies.diffusion.config import DiffusionConfig
from robolearn.policies.flow.config import FlowConfig
from robolearn.policies.mlp.config import MLPConfig
from robolearn.policies.vla.config import VLAConfig
from robolearn.registry import POLICIES

POLICIES.register(
    "flow",
    FlowConfig,
    "robolearn.policies.flow.model:build",
    description="rectified-flow action chunks, K Euler steps; shortcut and adaptive-step options",
)
POLICIES.register(
    "diffusion",
    DiffusionConfig,
    "robolearn.policies.diffusion.model:build",
    description="diffusion policy: DDPM training, DDIM/DDPM sampling, UNet or transformer denoiser",
)
POLICIES.register(
    "mlp",
    MLPConfig,
    "robolearn.policies.mlp.model:build",
    description="MLP behaviour-cloning baseline: observation features to action chunk, MSE",
)

POLICIES.register(
    "vla",
    VLAConfig,
    "robolearn.policies.vla.model:build",
    description="vision-language-action: image/instruction/state prefix; flow expert, parallel L1 or token head",
)

_LAZY = {
    "Policy": "robolearn.policies.base",
    "load_policy": "robolearn.policies.base",
    "CheckpointError": "robolearn.policies.checkpoint",
    "checkpoint_input_features": "robolearn.policies.checkpoint",
    "checkpoint_env": "robolearn.policies.checkpoint",
    "checkpoint_envs": "robolearn.policies.checkpoint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "DenoiserConfig",
    "DiffusionConfig",
    "FeatureMismatchError",
    "FlowConfig",
    "ImageEncoderConfig",
    "MLPConfig",
    "ObsEncoderConfig",
    "Policy",
    "PolicyConfig",
    "VLAConfig",
    "check_features",
    "checkpoint_env",
    "checkpoint_envs",
    "checkpoint_input_features",
    "load_policy",
]
