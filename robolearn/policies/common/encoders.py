"""Observation encoders: one observation step (normalized state vectors + camera images) -> Do features.

Steps are encoded independently, so features of past frames can be cached (see
:meth:`robolearn.policies.base.Policy.select_action`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from robolearn.policies.common.backbones import build_backbone
from robolearn.policies.common.config import ImageEncoderConfig, ObsEncoderConfig
from robolearn.policies.common.layers import mlp
from robolearn.types import is_image_key


class SpatialSoftmax(nn.Module):
    """Keypoints of a feature map: softmax over positions per channel, expected (x, y) in [-1, 1].

    (N, C, h, w) -> (N, 2·K) with K keypoints (a 1x1 conv maps C to K first; K = 0 keeps C).
    """

    def __init__(self, channels: int, hw: tuple[int, int], num_keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, num_keypoints, 1) if num_keypoints > 0 else nn.Identity()
        self.num_keypoints = num_keypoints if num_keypoints > 0 else channels
        h, w = hw
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.proj(x).flatten(2), dim=-1)  # (N, K, h·w)
        return (weights @ self.grid).flatten(1)


class ImageEncoder(nn.Module):
    """Crop -> backbone -> pooling -> Linear + ReLU: images (N, C, H, W) -> (N, feature_dim)."""

    def __init__(
        self, cfg: ImageEncoderConfig, shape: tuple[int, int, int], load_pretrained: bool = True
    ) -> None:
        super().__init__()
        channels, height, width = shape
        self.crop_shape = tuple(cfg.crop_shape) if cfg.crop_shape else None
        if self.crop_shape and (self.crop_shape[0] > height or self.crop_shape[1] > width):
            raise ValueError(f"obs_encoder.image.crop_shape {self.crop_shape} is larger than images {shape}")
        hw = self.crop_shape or (height, width)
        self._hw = hw
        self.random_crop = cfg.random_crop
        if cfg.random_shift < 0:
            raise ValueError(f"obs_encoder.image.random_shift must be >= 0, found {cfg.random_shift}")
        self.random_shift = cfg.random_shift
        self.backbone = build_backbone(cfg, channels, hw, load_pretrained)
        self.is_vit = cfg.backbone.startswith("vit")
        self.frozen_bn = cfg.norm == "frozen_batch"
        if cfg.freeze_backbone:
            self.backbone.requires_grad_(False)
        if self.frozen_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.requires_grad_(False)
        channels_out, fmap_hw = self._probe(channels, hw)
        self.pool_kind = cfg.pool
        if cfg.pool == "spatial_softmax":
            self.pool: nn.Module = SpatialSoftmax(channels_out, fmap_hw, cfg.num_keypoints)
            pooled = 2 * self.pool.num_keypoints
        else:
            self.pool = nn.Identity()
            pooled = channels_out
        self.out = nn.Sequential(nn.Linear(pooled, cfg.feature_dim), nn.ReLU())
        self.feature_dim = cfg.feature_dim
        self.train()

    @torch.no_grad()
    def _probe(self, channels: int, hw: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        """Channels and spatial size of the feature map, from one dummy forward in eval mode."""
        self.backbone.eval()
        fmap = self._feature_map(self.backbone(torch.zeros(1, channels, *hw)))
        return fmap.shape[1], (fmap.shape[2], fmap.shape[3])

    def _feature_map(self, out: torch.Tensor) -> torch.Tensor:
        if not self.is_vit:
            return out
        patches = out[:, 1:]  # ViT tokens (N, 1 + P, E) -> grid (N, E, gh, gw)
        n, p, e = patches.shape
        gh, gw = self._vit_grid(p)
        return patches.transpose(1, 2).reshape(n, e, gh, gw)

    def _vit_grid(self, p: int) -> tuple[int, int]:
        patch = self.backbone.model.config.patch_size
        gh, gw = self._hw[0] // patch, self._hw[1] // patch
        if gh * gw != p:
            raise RuntimeError(f"ViT produced {p} patch tokens for a {gh}x{gw} grid")
        return gh, gw

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        if self.frozen_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Random shift and random crop per image in training, centred crop in eval:
        (N, C, H, W) -> (N, C, ch, cw)."""
        if self.training and self.random_shift:
            s = self.random_shift
            x = _random_crop(F.pad(x, (s, s, s, s), mode="replicate"), x.shape[-2:])
        if self.crop_shape is None:
            return x
        ch, cw = self.crop_shape
        h, w = x.shape[-2:]
        if self.training and self.random_crop:
            return _random_crop(x, (ch, cw))
        top, left = (h - ch) // 2, (w - cw) // 2
        return x[..., top : top + ch, left : left + cw]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.crop(x)
        out = self.backbone(x)
        if self.is_vit and self.pool_kind == "cls":
            pooled = out[:, 0]
        else:
            fmap = self._feature_map(out)
            pooled = fmap.mean(dim=(2, 3)) if self.pool_kind == "avg" else self.pool(fmap)
        return self.out(pooled)


class ObsEncoder(nn.Module):
    """Normalized observation dict -> per-step features (B, To, Do).

    Low-dim features (state, environment state; each (B, To, D)) are concatenated in key order and
    go through an optional MLP; each camera (B, To, C, H, W) gives ``feature_dim`` features. Cameras
    of equal shape share one batched encoder call when ``shared``.
    """

    def __init__(
        self, cfg: ObsEncoderConfig, features: Mapping[str, tuple[int, ...]], load_pretrained: bool = True
    ) -> None:
        super().__init__()
        self.vector_keys = [k for k in features if not is_image_key(k)]
        self.image_keys = [k for k in features if is_image_key(k)]
        vec_dim = sum(features[k][0] for k in self.vector_keys)
        self.state_mlp = mlp(vec_dim, cfg.state_mlp_dims) if cfg.state_mlp_dims and vec_dim else nn.Identity()
        state_out = cfg.state_mlp_dims[-1] if cfg.state_mlp_dims and vec_dim else vec_dim
        self.shared = cfg.image.shared
        self.image_encoders = nn.ModuleList()
        if self.image_keys:
            shapes = {tuple(features[k]) for k in self.image_keys}
            if self.shared and len(shapes) > 1:
                raise ValueError(
                    f"obs_encoder.image.shared: cameras have different shapes {sorted(shapes)}; "
                    "set shared: false"
                )
            n_enc = 1 if self.shared else len(self.image_keys)
            for i in range(n_enc):
                shape = tuple(features[self.image_keys[i]])
                self.image_encoders.append(ImageEncoder(cfg.image, shape, load_pretrained))
        self.out_dim = state_out + len(self.image_keys) * (cfg.image.feature_dim if self.image_keys else 0)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """obs: key -> (B, To, D) or (B, To, C, H, W), normalized -> (B, To, Do)."""
        parts: list[torch.Tensor] = []
        if self.vector_keys:
            vec = (
                obs[self.vector_keys[0]]
                if len(self.vector_keys) == 1
                else torch.cat([obs[k] for k in self.vector_keys], dim=-1)
            )
            parts.append(self.state_mlp(vec))
        if self.image_keys:
            first = obs[self.image_keys[0]]
            b, t = first.shape[:2]
            if self.shared:
                imgs = torch.cat([obs[k].flatten(0, 1) for k in self.image_keys], dim=0)
                feats = self.image_encoders[0](imgs).view(len(self.image_keys), b, t, -1)
                parts.extend(feats.unbind(0))
            else:
                for key, enc in zip(self.image_keys, self.image_encoders, strict=True):
                    parts.append(enc(obs[key].flatten(0, 1)).view(b, t, -1))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _random_crop(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """An independent random (ch, cw) window of each image: (N, C, H, W) -> (N, C, ch, cw)."""
    (ch, cw), (h, w) = hw, x.shape[-2:]
    n, device = x.shape[0], x.device
    top = torch.randint(0, h - ch + 1, (n, 1), device=device) + torch.arange(ch, device=device)
    left = torch.randint(0, w - cw + 1, (n, 1), device=device) + torch.arange(cw, device=device)
    idx = torch.arange(n, device=device)[:, None, None]
    # advanced indexing moves the indexed dims first: (N, ch, cw, C) -> (N, C, ch, cw)
    return x.permute(0, 2, 3, 1)[idx, top[:, :, None], left[:, None, :]].permute(0, 3, 1, 2)
