"""Conditional 1D temporal UNet with FiLM conditioning (the diffusion-policy denoiser).

The chunk (B, H, Da) is treated as Da channels over H time steps. Every residual block is modulated
(FiLM: per-channel scale and bias) by one global vector: the time embedding concatenated with the
flattened observation features (B, To·Do) and, for shortcut models, a step-size embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robolearn.policies.common.fastconv import FastConv1d, FastConvTranspose1d
from robolearn.policies.common.layers import TimeEmbedding


class ConvNormAct(nn.Module):
    """Conv1d -> GroupNorm -> Mish, length preserving."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.conv = FastConv1d(c_in, c_out, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(n_groups, c_out)
        self.act = nn.Mish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class FiLMResBlock(nn.Module):
    """Two conv blocks; the conditioning vector scales and shifts the first one's output."""

    def __init__(
        self, c_in: int, c_out: int, cond_dim: int, kernel_size: int, n_groups: int, predict_scale: bool
    ) -> None:
        super().__init__()
        self.block1 = ConvNormAct(c_in, c_out, kernel_size, n_groups)
        self.block2 = ConvNormAct(c_out, c_out, kernel_size, n_groups)
        self.predict_scale = predict_scale
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, c_out * (2 if predict_scale else 1)))
        self.skip = FastConv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, H), cond (B, cond_dim) -> (B, C_out, H)."""
        h = self.block1(x)
        film = self.film(cond).unsqueeze(-1)
        if self.predict_scale:
            scale, bias = film.chunk(2, dim=1)
            h = torch.addcmul(bias, h, scale)
        else:
            h = h + film
        return self.block2(h) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """Denoiser ``(x (B, H, Da), t (B,), cond (B, To, Do), d (B,) | None) -> (B, H, Da)``."""

    def __init__(
        self,
        action_dim: int,
        global_cond_dim: int,
        down_dims: Sequence[int] = (256, 512, 1024),
        kernel_size: int = 5,
        n_groups: int = 8,
        time_embed_dim: int = 128,
        cond_predict_scale: bool = True,
        step_size_cond: bool = False,
    ) -> None:
        super().__init__()
        self.time_embed = TimeEmbedding(time_embed_dim)
        self.step_embed = TimeEmbedding(time_embed_dim) if step_size_cond else None
        cond_dim = time_embed_dim + global_cond_dim

        def block(c_in: int, c_out: int) -> FiLMResBlock:
            return FiLMResBlock(c_in, c_out, cond_dim, kernel_size, n_groups, cond_predict_scale)

        dims = [action_dim, *down_dims]
        levels = list(zip(dims[:-1], dims[1:], strict=True))
        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(levels):
            last = i == len(levels) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        block(c_in, c_out),
                        block(c_out, c_out),
                        nn.Identity() if last else FastConv1d(c_out, c_out, 3, stride=2, padding=1),
                    ]
                )
            )
        mid = down_dims[-1]
        self.mid = nn.ModuleList([block(mid, mid), block(mid, mid)])
        self.up = nn.ModuleList()
        for c_in, c_out in reversed(levels[1:]):
            # c_out is the deeper level's width; the skip connection doubles it.
            self.up.append(
                nn.ModuleList(
                    [
                        block(c_out * 2, c_in),
                        block(c_in, c_in),
                        FastConvTranspose1d(c_in, c_in, 4, stride=2, padding=1),
                    ]
                )
            )
        self.final = nn.Sequential(
            ConvNormAct(down_dims[0], down_dims[0], kernel_size, n_groups),
            FastConv1d(down_dims[0], action_dim, 1),
        )
        self.num_downsamples = len(levels) - 1

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, d: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.time_embed(t)
        if self.step_embed is not None and d is not None:
            emb = emb + self.step_embed(d)
        c = torch.cat([emb, cond.flatten(1)], dim=-1)
        h = x.transpose(1, 2)
        skips = []
        for res1, res2, downsample in self.down:
            h = res2(res1(h, c), c)
            skips.append(h)
            h = downsample(h)
        for res in self.mid:
            h = res(h, c)
        for res1, res2, upsample in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = upsample(res2(res1(h, c), c))
        return self.final(h).transpose(1, 2)
