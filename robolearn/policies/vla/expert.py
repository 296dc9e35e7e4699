"""The action expert: a small transformer over H action tokens that cross-attends to the prefix.

Each block runs self-attention over the action tokens (bidirectional), cross-attention to the
prefix tokens, and an MLP (pre-LayerNorm, residual). The cross-attention keys and values of the
prefix depend on the observation only, so :meth:`ActionExpert.prefix_kv` computes them once per
chunk and every Euler step of the flow head reuses them (pi0's "prefix KV once per chunk").

Shapes: N batch, H action tokens, P prefix tokens, W expert width, E prefix width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PrefixKV = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""Per block: keys (N, heads, P, d), values (N, heads, P, d), attention mask (N, 1, 1, P) bool."""


class ExpertBlock(nn.Module):
    """Self-attention, cross-attention to the prefix, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, prefix_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.cross_q = nn.Linear(width, width)
        self.cross_kv = nn.Linear(prefix_dim, 2 * width)
        self.cross_proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width),
            nn.GELU(approximate="tanh"),
            nn.Linear(mlp_ratio * width, width),
        )

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, length, w = x.shape
        return x.view(n, length, self.heads, w // self.heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        n, h, length, d = x.shape
        return x.transpose(1, 2).reshape(n, length, h * d)

    def kv(self, prefix: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prefix (N, P, E) and its validity mask (N, P) -> this block's cross-attention K, V, mask."""
        k, v = self.cross_kv(prefix).chunk(2, dim=-1)
        return self._split(k), self._split(v), mask[:, None, None, :]

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q, k, v = (self._split(t) for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        x = x + self.proj(self._merge(F.scaled_dot_product_attention(q, k, v)))
        ck, cv, mask = kv
        cq = self._split(self.cross_q(self.norm2(x)))
        x = x + self.cross_proj(self._merge(F.scaled_dot_product_attention(cq, ck, cv, attn_mask=mask)))
        return x + self.mlp(self.norm3(x))


class ActionExpert(nn.Module):
    """(action tokens (N, H, W), prefix KV) -> outputs (N, H, out_dim)."""

    def __init__(
        self, width: int, layers: int, heads: int, mlp_ratio: int, prefix_dim: int, horizon: int, out_dim: int
    ) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, horizon, width) * 0.02)
        self.blocks = nn.ModuleList(ExpertBlock(width, heads, mlp_ratio, prefix_dim) for _ in range(layers))
        self.prefix_norm = nn.LayerNorm(prefix_dim)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_dim)

    def prefix_kv(self, prefix: torch.Tensor, mask: torch.Tensor) -> PrefixKV:
        """Cross-attention keys/values of every block, from the prefix (N, P, E) and mask (N, P)."""
        prefix = self.prefix_norm(prefix)
        return [blk.kv(prefix, mask) for blk in self.blocks]

    def forward(self, tokens: torch.Tensor, kv: PrefixKV) -> torch.Tensor:
        x = tokens + self.pos
        for blk, block_kv in zip(self.blocks, kv, strict=True):
            x = blk(x, block_kv)
        return self.out(self.norm(x))


def repeat_kv(kv: PrefixKV, times: int) -> PrefixKV:
    """Each sample's prefix KV repeated ``times`` (K samples per observation share one prefix)."""
    return [tuple(t.repeat_interleave(times, dim=0) for t in block) for block in kv]  # type: ignore[misc]
