"""Q(s, a_chunk): the action-chunk critic that V-GPS steers with, and its checkpoint folder.

Shapes: B batch, K samples per observation, C scored chunk length (``CriticConfig.chunk``), Da
action dim, Do the concatenated vector observation.

The critic reads the current frame of its vector observation features (``observation.state``,
``observation.environment_state``: whichever the training data has, or ``obs_keys``) and a chunk of
the C actions that will be executed from that frame. Observations are standardized (mean/std) and
actions min-max scaled to [-1, 1] with stats of the training data, stored as buffers and in
``norm_stats.json``. Two Q heads are trained (clipped double Q); :meth:`ChunkCritic.score` returns
their minimum, the conservative estimate. An IQL critic also holds its V(s) head.

A critic folder is ``config.json`` (type ``chunk_critic``) + ``model.safetensors`` +
``norm_stats.json``, written atomically like a policy checkpoint (:mod:`robolearn.policies.checkpoint`);
:func:`load_critic` rebuilds it from the folder alone. No pickle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from robolearn.config import ConfigError, from_dict, to_dict
from robolearn.policies.checkpoint import CheckpointError, load_weights, read_meta, write_checkpoint

CRITIC_TYPE = "chunk_critic"
OBS_STAT = "observation"
ACTION_STAT = "action"
_EPS = 1e-6
_CONSTANT_STD = 1e-4


@dataclass
class CriticConfig:
    """Critic architecture, data and training settings (all saved in ``config.json``)."""

    algo: Literal["calql", "iql"] = "calql"
    """Offline RL algorithm: Cal-QL (CQL with the Monte-Carlo return lower bound; ``calql=False``
    gives plain CQL) or IQL (expectile V, no actor)."""
    chunk: int = 8
    """C: actions per scored chunk; the default matches the policies' ``n_action_steps`` (8)."""
    obs_keys: tuple[str, ...] = ()
    """Vector observation features to read; empty: ``observation.state`` and
    ``observation.environment_state`` where the data has them."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden sizes of each Q (and V, and actor) MLP."""
    layer_norm: bool = True
    """LayerNorm after each hidden layer: keeps offline Q values from diverging on small datasets."""
    discount: float = 0.98
    """gamma per env step (V-GPS uses 0.98); a chunk transition of C steps bootstraps with gamma^C."""
    reward: Literal["first_success", "success"] = "first_success"
    """Sparse reward from ``next.success``: ``first_success``: 1 on the first success frame, which is
    terminal (frames after it are not used); ``success``: 1 on every frame whose success holds,
    episodes end by truncation (bootstrapped), which also values keeping the goal."""
    steps: int = 5000
    """Gradient steps."""
    batch_size: int = 256
    lr: float = 3e-4
    """Critic learning rate (Adam)."""
    actor_lr: float = 1e-4
    """Cal-QL actor and entropy-temperature learning rate."""
    tau: float = 5e-3
    """Soft target-network update rate."""
    cql_alpha: float = 5.0
    """Weight of the CQL regularizer (V-GPS: 5)."""
    cql_n_actions: int = 10
    """Actions per state sampled for the CQL regularizer from uniform, pi(s) and pi(s')."""
    cql_temp: float = 1.0
    """Temperature of the CQL logsumexp."""
    cql_importance_sample: bool = True
    """Weight the sampled actions in the logsumexp by their densities (uniform and pi); False takes
    the plain logsumexp over the sampled and the data actions (CQL(H) without importance sampling),
    which keeps the pi samples (and so Cal-QL's bound) in play when C * Da is large."""
    calql: bool = True
    """Bound the policy-sampled Q values in the regularizer below by the Monte-Carlo return."""
    max_target_backup: bool = False
    """Bootstrap from the best of ``cql_n_actions`` actor samples at s' instead of one."""
    target_entropy: float | None = None
    """SAC target entropy of the Cal-QL actor; None: -(C * Da)."""
    expectile: float = 0.7
    """IQL expectile of V(s) (V-GPS's IQL variant uses 0.7)."""
    seed: int = 0
    input_features: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Feature key -> per-frame shape (D,), filled from the data."""
    action_dim: int = 0
    """Da, filled from the data."""
    action_key: str = "action"
    """The dataset column the critic was trained on: ``action.executed`` where the data has it (DART
    demos), else ``action``."""

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise ConfigError(f"chunk: expected >= 1, found {self.chunk}")
        if not 0.0 < self.discount <= 1.0:
            raise ConfigError(f"discount: expected in (0, 1], found {self.discount}")
        if not 0.0 < self.expectile < 1.0:
            raise ConfigError(f"expectile: expected in (0, 1), found {self.expectile}")
        for name in ("steps", "batch_size", "cql_n_actions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected >= 1, found {getattr(self, name)}")

    @property
    def obs_dim(self) -> int:
        """Do: the concatenated observation size."""
        return int(sum(int(np.prod(s)) for s in self.input_features.values()))

    @property
    def flat_action_dim(self) -> int:
        """C * Da."""
        return self.chunk * self.action_dim


def mlp(in_dim: int, dims: tuple[int, ...], out_dim: int, layer_norm: bool) -> nn.Sequential:
    """Linear (+LayerNorm) + ReLU hidden layers, then a Linear head of size ``out_dim``."""
    layers: list[nn.Module] = []
    prev = in_dim
    for d in dims:
        layers.append(nn.Linear(prev, d))
        if layer_norm:
            layers.append(nn.LayerNorm(d))
        layers.append(nn.ReLU())
        prev = d
    layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


class ChunkCritic(nn.Module):
    """Twin Q(s, a_{t:t+C}) heads (+ V(s) for IQL) with the data's normalization as buffers."""

    def __init__(self, config: CriticConfig, stats: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        if not config.input_features or config.action_dim <= 0:
            raise ConfigError("input_features/action_dim: empty; build the critic from the training data")
        self.config = config
        do, da = config.obs_dim, config.flat_action_dim
        self.q1 = mlp(do + da, config.hidden_dims, 1, config.layer_norm)
        self.q2 = mlp(do + da, config.hidden_dims, 1, config.layer_norm)
        self.v = mlp(do, config.hidden_dims, 1, config.layer_norm) if config.algo == "iql" else None
        obs_stats = (stats or {}).get(OBS_STAT, {})
        act_stats = (stats or {}).get(ACTION_STAT, {})
        mean = np.asarray(obs_stats.get("mean", np.zeros(do)), dtype=np.float32).reshape(-1)
        std = np.asarray(obs_stats.get("std", np.ones(do)), dtype=np.float32).reshape(-1)
        low = np.asarray(act_stats.get("min", -np.ones(config.action_dim)), dtype=np.float32).reshape(-1)
        high = np.asarray(act_stats.get("max", np.ones(config.action_dim)), dtype=np.float32).reshape(-1)
        if mean.shape != (do,) or std.shape != (do,):
            raise ConfigError(f"norm stats {OBS_STAT!r}: expected {do} values, found {mean.shape[0]}")
        if low.shape != (config.action_dim,) or high.shape != (config.action_dim,):
            raise ConfigError(
                f"norm stats {ACTION_STAT!r}: expected {config.action_dim} values, found {low.shape[0]}"
            )
        self.register_buffer("obs_mean", torch.from_numpy(mean))
        # A feature constant in the data (a fixed goal, an unused quaternion part) keeps its raw scale:
        # dividing by its ~0 std would turn any tiny change at run time into a huge input.
        self.register_buffer(
            "obs_std", torch.from_numpy(np.where(std < _CONSTANT_STD, 1.0, std).astype(np.float32))
        )
        self.register_buffer("act_low", torch.from_numpy(low))
        self.register_buffer("act_high", torch.from_numpy(np.maximum(high, low + _EPS)))

    # ----------------------------------------------------------------------------- inputs
    @property
    def input_features(self) -> dict[str, tuple[int, ...]]:
        """Observation key -> per-frame shape the critic reads."""
        return dict(self.config.input_features)

    @property
    def device(self) -> torch.device:
        return self.obs_mean.device

    def obs_vector(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """Raw observations -> normalized (B, Do). Each feature is (B, D) or a window (B, To, D), of
        which the last (current) frame is used."""
        parts = []
        for key, shape in self.config.input_features.items():
            x = obs.get(key)
            if x is None:
                raise KeyError(f"critic observation feature {key!r}: missing (found: {sorted(obs)})")
            x = torch.as_tensor(x, device=self.device).float()
            if x.dim() == len(shape) + 2:
                x = x[:, -1]
            if tuple(x.shape[1:]) != tuple(shape):
                raise ValueError(
                    f"critic observation feature {key!r}: expected (B, *{tuple(shape)}) or (B, To, "
                    f"*{tuple(shape)}), found {tuple(x.shape)}"
                )
            parts.append(x.reshape(x.shape[0], -1))
        return (torch.cat(parts, dim=-1) - self.obs_mean) / self.obs_std

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw chunks (..., C, Da) -> flat (..., C*Da) in [-1, 1] (the data's range)."""
        x = 2.0 * (actions - self.act_low) / (self.act_high - self.act_low) - 1.0
        return x.reshape(*actions.shape[:-2], -1)

    def unnormalize_actions(self, flat: torch.Tensor) -> torch.Tensor:
        """Flat normalized (..., C*Da) -> raw chunks (..., C, Da)."""
        x = flat.reshape(*flat.shape[:-1], self.config.chunk, self.config.action_dim)
        return (x + 1.0) * 0.5 * (self.act_high - self.act_low) + self.act_low

    # ----------------------------------------------------------------------------- values
    def q_values(self, obs_n: torch.Tensor, act_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both heads on normalized inputs: ``obs_n`` (B, Do), ``act_n`` (B, N, C*Da) -> two (B, N)."""
        n = act_n.shape[1]
        x = torch.cat([obs_n.unsqueeze(1).expand(-1, n, -1), act_n], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def value(self, obs_n: torch.Tensor) -> torch.Tensor:
        """IQL's V(s) on normalized observations (B, Do) -> (B,)."""
        if self.v is None:
            raise ValueError("this critic has no V head (algo calql)")
        return self.v(obs_n).squeeze(-1)

    @torch.no_grad()
    def score(self, obs: Mapping[str, Any], chunks: torch.Tensor) -> torch.Tensor:
        """min(Q1, Q2) of each candidate chunk: ``chunks`` (B, K, >=C, Da) raw, of which the first C
        actions are scored, -> (B, K)."""
        c = self.config.chunk
        if chunks.dim() != 4 or chunks.shape[2] < c or chunks.shape[3] != self.config.action_dim:
            raise ValueError(
                f"chunks: expected (B, K, >={c}, {self.config.action_dim}), found {tuple(chunks.shape)}"
            )
        act_n = self.normalize_actions(chunks[:, :, :c].to(self.device).float())
        q1, q2 = self.q_values(self.obs_vector(obs), act_n)
        return torch.minimum(q1, q2)

    # ----------------------------------------------------------------------------- checkpoints
    def norm_stats(self) -> dict[str, dict[str, np.ndarray]]:
        """The normalization stats as ``norm_stats.json`` holds them."""
        return {
            OBS_STAT: {"mean": self.obs_mean.cpu().numpy(), "std": self.obs_std.cpu().numpy()},
            ACTION_STAT: {"min": self.act_low.cpu().numpy(), "max": self.act_high.cpu().numpy()},
        }

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` + ``norm_stats.json`` into ``folder`` (atomically)."""
        return write_checkpoint(
            folder, CRITIC_TYPE, to_dict(self.config), self.state_dict(), self.norm_stats()
        )


def load_critic(folder: str | Path, device: str | torch.device = "cpu") -> ChunkCritic:
    """Rebuild a critic from its folder alone; errors name the file that is missing or wrong."""
    folder = Path(folder)
    type_name, config_dict, stats = read_meta(folder)
    path = folder / "config.json"
    if type_name != CRITIC_TYPE:
        raise CheckpointError(f"{path}: type {type_name!r} is not a critic ({CRITIC_TYPE!r}); "
                              "make one with robolearn train-critic")  # fmt: skip
    try:
        config = from_dict(CriticConfig, config_dict, source=str(path), prefix="config.")
        config.input_features = {k: tuple(int(d) for d in v) for k, v in config.input_features.items()}
        critic = ChunkCritic(config, stats)
    except (ConfigError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{folder}: cannot rebuild the critic: {exc}") from None
    load_weights(critic, folder)
    return critic.to(device).eval()


__all__ = ["CRITIC_TYPE", "ChunkCritic", "CriticConfig", "load_critic"]
