"""Small layers shared by denoisers and heads: time embeddings, MLPs, the masked chunk loss."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class SinusoidalEmbedding(nn.Module):
    """(B,) scalars -> (B, dim) sin/cos features with periods from 2π to 10000·2π."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(10000.0) / max(half - 1, 1)))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.float()[:, None] * self.freqs[None, :]
        return torch.cat([args.sin(), args.cos()], dim=-1)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of a diffusion/flow time followed by an MLP, as in diffusion policy:
    (B,) -> (B, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            SinusoidalEmbedding(dim), nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.net(t)


def mlp(
    in_dim: int,
    dims: Sequence[int],
    out_dim: int | None = None,
    act: type[nn.Module] = nn.Mish,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Linear+activation layers of sizes ``dims``, then an optional plain Linear to ``out_dim``."""
    layers: list[nn.Module] = []
    prev = in_dim
    for d in dims:
        layers += [nn.Linear(prev, d), act()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = d
    if out_dim is not None:
        layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, is_pad: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over (B, H, Da) chunks, ignoring steps where ``is_pad`` (B, H) is True."""
    err = (pred - target).square()
    if is_pad is None:
        return err.mean()
    keep = (~is_pad).to(err.dtype).unsqueeze(-1)
    return (err * keep).sum() / (keep.sum() * err.shape[-1]).clamp_min(1.0)


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor, is_pad: torch.Tensor | None) -> torch.Tensor:
    """(B,) mean squared error per chunk, ignoring padded steps."""
    err = (pred - target).square()
    if is_pad is None:
        return err.flatten(1).mean(1)
    keep = (~is_pad).to(err.dtype).unsqueeze(-1)
    return (err * keep).flatten(1).sum(1) / (keep.flatten(1).sum(1) * err.shape[-1]).clamp_min(1.0)
