"""Fakes for the policy tests: a tiny synthetic dataset and tiny configs for every registered policy."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import robolearn.policies  # noqa: F401  (registers the policies)
from robolearn.policies.common.config import DenoiserConfig, ImageEncoderConfig, ObsEncoderConfig
from robolearn.registry import POLICIES
from robolearn.types import ACTION, OBS_STATE, FeatureSpec, image_key

torch.set_num_threads(1)
# Captured at import: several folders have a module named ``conftest``, so sys.modules["conftest"]
# later points at whichever was imported last.
_THIS = sys.modules[__name__]

DS, DA, TO, H, N_EXEC = 4, 3, 2, 8, 4
IMG = (3, 16, 16)
CAMS = ("front", "wrist")


def features(images: bool = False) -> dict[str, FeatureSpec]:
    """Dataset features as a dataset would report them (images channel-last)."""
    feats = {OBS_STATE: FeatureSpec("float32", (DS,)), ACTION: FeatureSpec("float32", (DA,))}
    if images:
        for cam in CAMS:
            feats[image_key(cam)] = FeatureSpec("video", (IMG[1], IMG[2], IMG[0]))
    return feats


def make_batch(n: int = 32, images: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """Actions are a smooth function of the last state (learnable), in raw units around 5 ± 2."""
    g = torch.Generator().manual_seed(seed)
    state = torch.rand(n, TO, DS, generator=g) * 4 - 2
    steps = torch.arange(H, dtype=torch.float32)[None, :, None]
    action = 5 + 2 * torch.tanh(state[:, -1:, :DA] + 0.2 * steps)
    batch = {OBS_STATE: state, ACTION: action, f"{ACTION}_is_pad": torch.zeros(n, H, dtype=torch.bool)}
    if images:
        for cam in CAMS:
            # image brightness carries the state, so images alone are informative too
            base = torch.rand(n, TO, *IMG, generator=g) * 0.2
            batch[image_key(cam)] = (base + 0.4 + 0.1 * state[:, :, :1, None, None]).clamp(0, 1)
    return batch


def stats_of(batch: dict[str, torch.Tensor]) -> dict[str, dict[str, np.ndarray]]:
    """LeRobot-style stats (per-channel (3, 1, 1) for images)."""
    out = {}
    for key, x in batch.items():
        if key.endswith("_is_pad"):
            continue
        if x.dim() == 5:
            flat = x.transpose(0, 2).reshape(x.shape[2], -1)
            shape = (x.shape[2], 1, 1)
        else:
            flat = x.reshape(-1, x.shape[-1]).T
            shape = (x.shape[-1],)
        out[key] = {
            "mean": flat.mean(1).reshape(shape).numpy(),
            "std": flat.std(1).reshape(shape).numpy(),
            "min": flat.min(1).values.reshape(shape).numpy(),
            "max": flat.max(1).values.reshape(shape).numpy(),
        }
    return out


def obs_of(batch: dict[str, torch.Tensor], n: int | None = None) -> dict[str, torch.Tensor]:
    return {k: (v if n is None else v[:n]) for k, v in batch.items() if k.startswith("observation.")}


TINY_DENOISER = dict(
    down_dims=(16, 32),
    n_groups=4,
    time_embed_dim=16,
    kernel_size=3,
    n_layer=1,
    n_head=2,
    n_emb=16,
    mlp_dims=(32, 32),
)


def tiny_config(name: str, images: bool = False, denoiser: str = "unet", **overrides):
    entry = POLICIES.get(name)
    kwargs = dict(horizon=H, n_obs_steps=TO, n_action_steps=N_EXEC)
    fields = entry.config_cls.__dataclass_fields__
    if "denoiser" in fields:
        kwargs["denoiser"] = DenoiserConfig(kind=denoiser, **TINY_DENOISER)
    if "hidden_dims" in fields:
        kwargs["hidden_dims"] = (32, 32)
    if "num_inference_steps" in fields:
        kwargs["num_inference_steps"] = 4
    if images:
        kwargs["obs_encoder"] = ObsEncoderConfig(
            image=ImageEncoderConfig(backbone="resnet_tiny", feature_dim=8, num_keypoints=4)
        )
    kwargs.update(overrides)
    return entry.default_config(**kwargs)


def tiny_policy(name: str, images: bool = False, denoiser: str = "unet", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    batch = make_batch(images=images)
    return POLICIES.build(
        name,
        tiny_config(name, images, denoiser, **overrides),
        features=features(images),
        stats=stats_of(batch),
    )


# (policy name, images, denoiser): every registered policy on state; the generative ones also with the
# transformer denoiser and with images.
VARIANTS = [(name, False, "unet") for name in POLICIES.names()] + [
    ("diffusion", False, "transformer"),
    ("flow", False, "mlp"),
    ("flow", True, "unet"),
    ("diffusion", True, "unet"),
]
VARIANT_IDS = [f"{n}-{'image' if i else 'state'}-{d}" for n, i, d in VARIANTS]


@pytest.fixture(params=VARIANTS, ids=VARIANT_IDS)
def variant(request):
    return request.param


@pytest.fixture
def fakes():
    """This module: constants and helpers (``make_batch``, ``tiny_policy``, ...). Test modules get them
    through this fixture because several test folders have a ``conftest`` module."""
    return _THIS
