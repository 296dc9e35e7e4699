"""Denoiser backbones shared by the diffusion and flow policies, and their factory.

All share one signature: ``forward(x (B, H, Da), t (B,), cond (B, To, Do), d (B,) | None) -> (B, H, Da)``
where ``t`` is the time in embedding units (diffusion: step index 0..T-1; flow: t·1000) and ``d`` the
step size in the same units (shortcut models only).
"""

from __future__ import annotations

import torch
from torch import nn

from robolearn.config import ConfigError
from robolearn.policies.common.config import DenoiserConfig
from robolearn.policies.common.layers import TimeEmbedding
from robolearn.policies.common.unet1d import ConditionalUnet1D


class TransformerDenoiser(nn.Module):
    """Transformer encoder over [time token, To observation tokens, H action tokens]; the action
    tokens' outputs are the prediction. Bidirectional attention (the chunk is denoised jointly)."""

    def __init__(
        self,
        action_dim: int,
        obs_dim: int,
        horizon: int,
        n_obs_steps: int,
        cfg: DenoiserConfig,
        step_size_cond: bool = False,
    ) -> None:
        super().__init__()
        if cfg.n_emb % cfg.n_head:
            raise ConfigError(
                f"denoiser.n_emb: expected a multiple of n_head={cfg.n_head}, found {cfg.n_emb}"
            )
        self.time_embed = TimeEmbedding(cfg.n_emb)
        self.step_embed = TimeEmbedding(cfg.n_emb) if step_size_cond else None
        self.obs_in = nn.Linear(obs_dim, cfg.n_emb)
        self.action_in = nn.Linear(action_dim, cfg.n_emb)
        self.pos = nn.Parameter(torch.zeros(1, 1 + n_obs_steps + horizon, cfg.n_emb))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.n_emb,
            cfg.n_head,
            dim_feedforward=4 * cfg.n_emb,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.n_emb)
        self.out = nn.Linear(cfg.n_emb, action_dim)
        self.horizon = horizon

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, d: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.time_embed(t)
        if self.step_embed is not None and d is not None:
            emb = emb + self.step_embed(d)
        tokens = torch.cat([emb.unsqueeze(1), self.obs_in(cond), self.action_in(x)], dim=1) + self.pos
        h = self.encoder(tokens)
        return self.out(self.norm(h[:, -self.horizon :]))


class MLPDenoiser(nn.Module):
    """Residual MLP over [flattened chunk, time embedding, flattened observation features]."""

    def __init__(
        self,
        action_dim: int,
        obs_dim: int,
        horizon: int,
        n_obs_steps: int,
        cfg: DenoiserConfig,
        step_size_cond: bool = False,
    ) -> None:
        super().__init__()
        if not cfg.mlp_dims:
            raise ConfigError("denoiser.mlp_dims: expected at least one hidden size, found ()")
        self.time_embed = TimeEmbedding(cfg.time_embed_dim)
        self.step_embed = TimeEmbedding(cfg.time_embed_dim) if step_size_cond else None
        in_dim = horizon * action_dim + cfg.time_embed_dim + n_obs_steps * obs_dim
        self.layers = nn.ModuleList()
        prev = in_dim
        for width in cfg.mlp_dims:
            self.layers.append(nn.Linear(prev, width))
            prev = width
        self.act = nn.Mish()
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.out = nn.Linear(prev, horizon * action_dim)
        self.shape = (horizon, action_dim)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, d: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.time_embed(t)
        if self.step_embed is not None and d is not None:
            emb = emb + self.step_embed(d)
        h = torch.cat([x.flatten(1), emb, cond.flatten(1)], dim=-1)
        for layer in self.layers:
            y = self.drop(self.act(layer(h)))
            h = h + y if y.shape == h.shape else y
        return self.out(h).view(-1, *self.shape)


def build_denoiser(
    cfg: DenoiserConfig,
    action_dim: int,
    obs_dim: int,
    horizon: int,
    n_obs_steps: int,
    step_size_cond: bool = False,
) -> nn.Module:
    """The denoiser named by ``cfg.kind`` for chunks (B, H, Da) and observation features (B, To, Do)."""
    if cfg.kind == "unet":
        if not cfg.down_dims:
            raise ConfigError("denoiser.down_dims: expected at least one level, found ()")
        factor = 2 ** (len(cfg.down_dims) - 1)
        if horizon % factor:
            raise ConfigError(
                f"horizon: the UNet with {len(cfg.down_dims)} levels needs a multiple of {factor}, found {horizon}"
            )
        bad = [c for c in cfg.down_dims if c % cfg.n_groups]
        if bad:
            raise ConfigError(f"denoiser.down_dims: {bad[0]} is not divisible by n_groups={cfg.n_groups}")
        return ConditionalUnet1D(
            action_dim,
            n_obs_steps * obs_dim,
            cfg.down_dims,
            cfg.kernel_size,
            cfg.n_groups,
            cfg.time_embed_dim,
            cfg.cond_predict_scale,
            step_size_cond,
        )
    if cfg.kind == "transformer":
        return TransformerDenoiser(action_dim, obs_dim, horizon, n_obs_steps, cfg, step_size_cond)
    if cfg.kind == "mlp":
        return MLPDenoiser(action_dim, obs_dim, horizon, n_obs_steps, cfg, step_size_cond)
    raise ConfigError(f"denoiser.kind: expected unet, transformer or mlp, found {cfg.kind!r}")
