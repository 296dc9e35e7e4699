"""Trainable spatial pooling of image grids for the VLA prefix, run after the frozen-feature cache.

:class:`KeypointTokens` turns a token grid into spatial-softmax keypoint tokens, :class:`FeatureAdapter`
adds FiLM-conditioned convolutions over the cached map, and :class:`PixelKeypoints` finds keypoints in
the camera's own (average-pooled) pixels, at a finer grid than the tower's map.

Shapes: N images, P = s·s grid positions, C channels, K keypoints.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def grid_side(num_tokens: int, field: str) -> int:
    """The side of the square grid that ``num_tokens`` tokens per image form; else an error naming ``field``."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{field}: the tower's {num_tokens} tokens per image are not a square grid")
    return side


class KeypointTokens(nn.Module):
    """Spatial-softmax keypoints as tokens: grid tokens (N, P = s·s, C) -> (N, K, C + 2).

    A 1x1 projection scores every position for each of K keypoints; the softmax over positions gives
    the keypoint's expected (x, y) in [-1, 1] and the attention-weighted features (what it found).
    With ``cond_dim`` the instruction shifts each keypoint's query (FiLM-style, as RT-1 conditions its
    EfficientNet on the instruction), so what a keypoint looks for, e.g. the red cube, follows the
    words; that shift starts at zero.
    """

    def __init__(self, channels: int, num_tokens: int, keypoints: int, cond_dim: int = 0) -> None:
        super().__init__()
        side = grid_side(num_tokens, "vision.keypoints")
        self.score = nn.Linear(channels, keypoints)
        # a learned sharpness per keypoint, starting at 10: on unit-scale frozen features the plain
        # scores (std ~0.5) leave the softmax nearly uniform over the grid, and at Adam's step size
        # the projection alone takes many thousands of steps to grow peaky
        self.log_sharpness = nn.Parameter(torch.full((keypoints,), math.log(10.0)))
        self.cond: nn.Linear | None = None
        if cond_dim > 0:
            self.cond = nn.Linear(cond_dim, keypoints * channels)
            nn.init.zeros_(self.cond.weight)
            nn.init.zeros_(self.cond.bias)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], -1), persistent=False)
        self.out_dim = channels + 2

    def forward(self, tokens: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens`` (N, P, C), ``cond`` (N, cond_dim) with ``cond_dim``."""
        scores = self.score(tokens)  # (N, P, K)
        if self.cond is not None and cond is not None:
            n, _, c = tokens.shape
            scores = scores + tokens @ self.cond(cond).view(n, -1, c).transpose(1, 2)
        weights = torch.softmax((scores * self.log_sharpness.exp()).transpose(1, 2), dim=-1)  # (N, K, P)
        return torch.cat([weights @ self.grid.to(tokens.dtype), weights @ tokens], dim=-1)


class FeatureAdapter(nn.Module):
    """Trainable FiLM-conditioned convolutions over a token grid: (N, P = s·s, C) -> (N, P, W).

    Each layer is a 3x3 conv, GroupNorm, a per-channel scale and shift from the instruction
    (``x·(1 + γ) + β``, zero at the start) and GELU. With ``shift`` > 0, training translates the grid
    by a random offset of up to ``shift`` cells first (bilinear, border values repeated).
    """

    def __init__(
        self, channels: int, num_tokens: int, width: int, layers: int, cond_dim: int, shift: float
    ) -> None:
        super().__init__()
        self.side = grid_side(num_tokens, "vision.adapter")
        self.shift = shift
        self.convs = nn.ModuleList(
            nn.Conv2d(channels if i == 0 else width, width, 3, padding=1) for i in range(layers)
        )
        self.norms = nn.ModuleList(nn.GroupNorm(math.gcd(8, width), width) for _ in range(layers))
        self.films = (
            nn.ModuleList(nn.Linear(cond_dim, 2 * width) for _ in range(layers)) if cond_dim else None
        )
        for film in self.films or ():
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.out_dim = width

    def _shifted(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        offset = (torch.rand(n, 2, device=x.device, dtype=x.dtype) * 2 - 1) * (2 * self.shift / self.side)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = offset
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def forward(self, tokens: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens`` (N, P, C), ``cond`` (N, cond_dim) with ``cond_dim``."""
        n, p, c = tokens.shape
        x = tokens.transpose(1, 2).reshape(n, c, self.side, self.side)
        if self.training and self.shift > 0:
            x = self._shifted(x)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = norm(conv(x))
            if self.films is not None and cond is not None:
                gamma, beta = self.films[i](cond).chunk(2, dim=-1)
                x = x * (1 + gamma[..., None, None]) + beta[..., None, None]
            x = F.gelu(x)
        return x.flatten(2).transpose(1, 2)


class PixelKeypoints(nn.Module):
    """Instruction-conditioned keypoints over a camera's own pixels: (N, 3, H, W) -> (N, K, hidden + 2).

    The normalized image is average-pooled to a ``grid`` x ``grid`` map (:meth:`pool`, cheap enough to
    cache beside the tower's features), a per-pixel MLP turns each cell's colour into ``hidden``
    features, and :class:`KeypointTokens` finds K keypoints in that map. A frozen ImageNet tower at
    stride 8 sees a 5 cm cube in one or two cells of its 12x12 map; at a 48x48 grid the same cube
    covers a few cells of its own colour, so a keypoint the instruction points at "red" lands on the
    red cube's centre with a fraction of a cell's error.
    """

    def __init__(self, grid: int, keypoints: int, hidden: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.grid = grid
        self.colour = nn.Sequential(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.keypoints = KeypointTokens(hidden, grid * grid, keypoints, cond_dim)
        self.out_dim = self.keypoints.out_dim

    def pool(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, grid·grid, 3) the pooled cells, row-major (the keypoints' grid order)."""
        return F.adaptive_avg_pool2d(images, self.grid).flatten(2).transpose(1, 2)

    def forward(self, cells: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``cells`` (N, grid·grid, 3) from :meth:`pool`, ``cond`` (N, cond_dim) -> (N, K, hidden + 2)."""
        return self.keypoints(self.colour(cells), cond)
