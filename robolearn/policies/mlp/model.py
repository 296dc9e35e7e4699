"""MLP behaviour cloning: observation features (B, To·Do) -> action chunk (B, H, Da), MSE loss.

Deterministic: ``noise`` is ignored and ``num_samples=K`` returns K identical chunks.
"""

from __future__ import annotations

from typing import Any

import torch

from robolearn.policies.base import Batch, Policy
from robolearn.policies.common.layers import masked_mse, mlp
from robolearn.policies.mlp.config import MLPConfig


class MLPPolicy(Policy):
    """The behaviour-cloning baseline."""

    name = "mlp"
    config: MLPConfig

    def __init__(
        self, config: MLPConfig, features: Any = None, stats: Any = None, *, load_pretrained: bool = True
    ) -> None:
        super().__init__(config, features, stats, load_pretrained=load_pretrained)
        cfg = self.config
        self.head = mlp(
            cfg.n_obs_steps * self.obs_encoder.out_dim,
            cfg.hidden_dims,
            cfg.horizon * cfg.action_dim,
            act=torch.nn.ReLU,
            dropout=cfg.dropout,
        )

    def _forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.head(cond.flatten(1)).view(-1, self.config.horizon, self.config.action_dim)

    def compute_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE between predicted and demonstrated normalized chunks (padded steps excluded)."""
        action, is_pad = self._normalized_action(batch)
        loss = masked_mse(self._forward(self.encode_obs(batch)), action, is_pad)
        return loss, {"loss": loss.item()}

    def _sample(self, cond: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        x = self._forward(cond)
        return x.clamp(-1.0, 1.0) if self.config.clip_sample else x


def build(
    config: MLPConfig, features: Any = None, stats: Any = None, *, load_pretrained: bool = True
) -> MLPPolicy:
    """Registry builder for ``mlp``."""
    return MLPPolicy(config, features, stats, load_pretrained=load_pretrained)
