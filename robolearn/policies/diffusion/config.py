"""Diffusion policy config (light)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from robolearn.config import ConfigError
from robolearn.policies.common.config import DenoiserConfig, PolicyConfig


@dataclass
class DiffusionConfig(PolicyConfig):
    """Diffusion policy (Chi et al. 2023): DDPM training, DDIM or DDPM sampling with ``diffusers``."""

    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    """Noise (or sample) prediction network."""
    num_train_timesteps: int = 100
    """Diffusion steps of the training noise schedule."""
    beta_schedule: Literal["squaredcos_cap_v2", "linear", "scaled_linear"] = "squaredcos_cap_v2"
    """Noise schedule (``diffusers`` name)."""
    beta_start: float = 0.0001
    """First beta (linear schedules)."""
    beta_end: float = 0.02
    """Last beta (linear schedules)."""
    prediction_type: Literal["epsilon", "sample"] = "epsilon"
    """What the network predicts: the added noise or the clean action chunk."""
    clip_sample: bool = True
    """Clip the predicted clean sample to [-clip_sample_range, clip_sample_range] at every step."""
    clip_sample_range: float = 1.0
    """Clip bound in normalized units."""
    inference_scheduler: Literal["ddim", "ddpm"] = "ddim"
    """Sampler at inference: deterministic DDIM (eta = 0) or stochastic DDPM."""
    num_inference_steps: int = 10
    """Denoising steps at inference; 0 means ``num_train_timesteps``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_inference_steps < 0 or self.num_inference_steps > self.num_train_timesteps:
            raise ConfigError(
                f"num_inference_steps: expected in [0, {self.num_train_timesteps}], "
                f"found {self.num_inference_steps}"
            )
