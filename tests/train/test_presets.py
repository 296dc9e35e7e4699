"""Every shipped training preset (``policies/*.yaml``) loads strictly and builds its policy against
the features of the env it is meant for, and the policy's loss is finite on a batch of that shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robolearn.commands.train import load_train_config
from robolearn.envs import env_config, make_env
from robolearn.envs.recording import env_features
from robolearn.train.trainer import build_policy

RL_RECIPES = ("reinflow_", "dppo_")
"""Fine-tuning recipes (``robolearn.rl.config.FinetuneConfig``; tests/rl/test_finetune_recipes.py loads them)."""
SLOT_LAYOUT = ("vla_state_objects",)
"""Presets for the colour-slot environment state of the ``franka-*-d2`` envs (object tokens)."""
PRESETS = sorted(p for p in (Path(__file__).resolve().parents[2] / "policies").glob("*.yaml")
                 if not p.stem.startswith(RL_RECIPES))  # fmt: skip


def _stats(features) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for key, spec in features.items():
        shape = (3, 1, 1) if spec.dtype == "video" else spec.shape
        out[key] = {"min": np.full(shape, -1.0), "max": np.full(shape, 1.0),
                    "mean": np.zeros(shape), "std": np.ones(shape)}  # fmt: skip
    return out


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_preset_builds_and_computes_a_loss(preset):
    torch.set_num_threads(1)
    cfg = load_train_config(preset, [], None)
    cams = ("front", "wrist") if "image" in preset.stem or "gpu" in preset.stem else ()
    name = "franka-lift-d2" if preset.stem in SLOT_LAYOUT else "franka-lift"
    env = make_env(name, env_config(name, cameras=cams))
    features = env_features(env)
    env.close()
    policy = build_policy(cfg, features, _stats(features), str(preset))
    pc = policy.config
    assert set(policy.input_features) <= set(features)
    b = 2
    batch = {"action": torch.zeros(b, pc.horizon, pc.action_dim)}
    for key, shape in policy.input_features.items():
        batch[key] = torch.rand(b, pc.n_obs_steps, *shape)
    loss, _ = policy.compute_loss(batch)
    assert torch.isfinite(loss)
