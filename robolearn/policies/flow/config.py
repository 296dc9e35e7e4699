"""Flow-matching policy config (light)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from robolearn.config import ConfigError
from robolearn.policies.common.config import DenoiserConfig, PolicyConfig


@dataclass
class FlowConfig(PolicyConfig):
    """Rectified-flow action chunking: x_t = t·a + (1−t)·x0, the network predicts v = a − x0 and
    sampling integrates it with K Euler steps from noise (t = 0) to actions (t = 1)."""

    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    """Velocity network."""
    num_inference_steps: int = 10
    """K: Euler steps at inference (1–10 typical; 1–4 with ``shortcut``)."""
    prediction: Literal["velocity", "sample"] = "velocity"
    """What the network outputs: the velocity v, or the clean chunk â (x-prediction, as in "Back to
    Basics", Li & He 2025) from which v = (â − x_t)/(1 − t) (1 − t clamped at ``sample_t_floor``)
    and the loss is the MSE on â. Near-deterministic demonstrations (scripted or DART-noised experts)
    are far easier to fit as a clean chunk than as noise-dependent velocities."""
    sample_t_floor: float = 0.05
    """Lower bound on 1 − t when turning a predicted chunk into a velocity."""
    time_sampling: Literal["uniform", "logit_normal"] = "uniform"
    """Distribution of training times t in [0, 1]."""
    clip_sample: bool = True
    """Clip sampled (normalized) actions to [-clip_range, clip_range]."""
    clip_range: float = 1.0
    """Clip bound in normalized units; 1.0 is the min-max normalized range."""
    shortcut: bool = False
    """Shortcut model (Frans et al. 2024): condition on the step size d and train few-step jumps with
    the self-consistency target s(x_t, t, 2d) = (s(x_t, t, d) + s(x'_{t+d}, t + d, d)) / 2."""
    shortcut_max_steps: int = 128
    """M: the finest step size 1/M, trained with the plain flow-matching target (a power of two)."""
    shortcut_bootstrap_fraction: float = 0.25
    """Fraction of each batch trained with self-consistency targets (the rest: flow matching)."""
    adaptive_steps: bool = False
    """AdaFlow-style adaptive step count: a variance head predicts the flow-matching error at t = 0
    (the action variance given the observation); below ``adaptive_threshold`` one Euler step is
    exact enough, otherwise K steps run."""
    adaptive_threshold: float = 0.01
    """Per-dimension variance (normalized units) under which a sample takes one step."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps: expected >= 1, found {self.num_inference_steps}")
        if self.shortcut and self.prediction == "sample":
            raise ConfigError("shortcut: trains step-size-conditioned velocities; use prediction: velocity")
        if not 0.0 < self.sample_t_floor <= 1.0:
            raise ConfigError(f"sample_t_floor: expected in (0, 1], found {self.sample_t_floor}")
        m = self.shortcut_max_steps
        if m < 2 or m & (m - 1):
            raise ConfigError(f"shortcut_max_steps: expected a power of two >= 2, found {m}")
        if not 0.0 <= self.shortcut_bootstrap_fraction < 1.0:
            raise ConfigError(
                f"shortcut_bootstrap_fraction: expected in [0, 1), found {self.shortcut_bootstrap_fraction}"
            )
