"""MLP behaviour-cloning baseline config (light)."""

from __future__ import annotations

from dataclasses import dataclass

from robolearn.policies.common.config import PolicyConfig


@dataclass
class MLPConfig(PolicyConfig):
    """An MLP from the flattened observation features (To·Do) to the action chunk (H·Da), MSE loss."""

    hidden_dims: tuple[int, ...] = (512, 512, 512)
    """Hidden layer sizes."""
    dropout: float = 0.0
    """Dropout after each hidden layer."""
    clip_sample: bool = False
    """Clip predicted (normalized) actions to [-1, 1]."""
