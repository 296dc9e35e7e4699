"""Typed training config; YAML presets in ``policies/*.yaml`` load into it strictly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    """One imitation-learning run."""

    policy: str = "flow"
    """Registered policy name (``robolearn.registry.POLICIES``)."""
    policy_config: dict[str, Any] = field(default_factory=dict)
    """Fields of the policy's config class (checked strictly against it when the policy is built)."""
    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 64
    """Samples per step (per process under accelerate)."""
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 1e-6
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.95, 0.999)
    """AdamW betas (diffusion_policy's choice)."""
    warmup_steps: int = 200
    """Linear warmup, then cosine decay to zero at ``steps``."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 disables clipping)."""
    ema_decay: float = 0.999
    """EMA of the weights (with diffusers' warmup, power 0.75); checkpoints hold the EMA weights. 0 disables."""
    val_fraction: float = 0.05
    """Share of episodes held out for the validation loss."""
    num_workers: int = 0
    """DataLoader worker processes (image datasets benefit; state datasets are fastest with 0)."""
    video_cache_mb: float = 0.0
    """Per-process budget (MB) for decoded camera frames, whole episodes, LRU. 0 decodes every sample's
    frames afresh; a budget that holds the dataset decodes each episode once (27 KB per 96x96 frame)."""
    log_every: int = 50
    """Steps between logged loss points (progress bar, TensorBoard, metrics.jsonl)."""
    save_every: int = 1000
    """Steps between checkpoints under ``RUN/checkpoints/STEP``; the final one also goes to ``RUN/``."""
    eval_every: int = 0
    """Steps between closed-loop evals during training (0: none)."""
    eval_episodes: int = 10
    """Episodes per periodic eval."""
    eval_env: str = ""
    """Registered env for periodic evals (default: the dataset's ``robolearn.env`` from its info, if any)."""
    seed: int = 0
    """Seeds model init, episode split, batch order and noise."""
    wandb: bool = False
    """Also log to Weights & Biases (needs ``wandb`` installed and configured)."""
