"""PackedConv2d: the ResNet backbones' fast CPU inference path gives the same outputs as nn.Conv2d,
keeps checkpoint keys, refreshes its packed weight when the weights change, and survives copies."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from robolearn.policies.common.backbones import PackedConv2d, _packed_conv_available, build_backbone
from robolearn.policies.common.config import ImageEncoderConfig

pytestmark = pytest.mark.skipif(not _packed_conv_available(), reason="this PyTorch has no oneDNN")


def _unpacked(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every PackedConv2d turned back into a plain nn.Conv2d."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PackedConv2d):
                plain = nn.Conv2d(
                    child.in_channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.dilation, child.groups, child.bias is not None,
                )  # fmt: skip
                plain.load_state_dict(child.state_dict())
                setattr(parent, name, plain)
    return module


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_resnet18_packed_matches_plain(norm):
    torch.manual_seed(0)
    backbone = build_backbone(ImageEncoderConfig(backbone="resnet18", norm=norm), 3, (84, 84)).eval()
    assert sum(isinstance(m, PackedConv2d) for m in backbone.modules()) == 20
    plain = _unpacked(backbone)
    x = torch.rand(4, 3, 96, 96)[..., 6:90, 6:90]  # a centred-crop view, as the encoder passes it
    with torch.inference_mode():
        ref = plain(x)
        for _ in range(2):  # first call packs, second reuses the packed weights
            out = backbone(x)
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        # another batch size and spatial size
        x2 = torch.rand(2, 3, 64, 64)
        torch.testing.assert_close(backbone(x2), plain(x2), rtol=1e-4, atol=1e-5)
    # training path is nn.Conv2d itself: identical output, gradients flow
    backbone.train()
    plain.train()
    y = backbone(x)
    assert torch.equal(y, plain(x))
    y.sum().backward()
    assert backbone.embedder.embedder.convolution.weight.grad is not None


def test_packed_backbone_keeps_state_dict_keys():
    from transformers import ResNetConfig, ResNetModel

    from robolearn.policies.common.backbones import _PRESETS

    backbone = build_backbone(ImageEncoderConfig(backbone="resnet_tiny", norm="batch"), 3, (32, 32))
    model = ResNetModel(ResNetConfig(num_channels=3, **_PRESETS["resnet_tiny"]))
    expected = {k for k in model.state_dict() if k.startswith(("embedder.", "encoder."))}
    assert set(backbone.state_dict()) == expected
    backbone.load_state_dict({k: v for k, v in model.state_dict().items() if k in expected})


def test_packed_weight_refreshes_and_survives_copies():
    torch.manual_seed(0)
    backbone = build_backbone(ImageEncoderConfig(backbone="resnet_tiny"), 3, (32, 32)).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        before = backbone(x)
        for p in backbone.parameters():  # in-place update, as an optimizer step or EMA swap does
            p.mul_(1.5)
        torch.testing.assert_close(backbone(x), _unpacked(backbone)(x), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(backbone(x), before)
        clone = copy.deepcopy(backbone)  # after packing: the opaque packed weights are not copied
        torch.testing.assert_close(clone(x), backbone(x))
        # The state dict holds plain tensors only (no packed copies) and rebuilds the same backbone.
        buf = io.BytesIO()
        torch.save(backbone.state_dict(), buf)
        buf.seek(0)
        fresh = build_backbone(ImageEncoderConfig(backbone="resnet_tiny"), 3, (32, 32)).eval()
        fresh.load_state_dict(torch.load(buf, weights_only=True))
        torch.testing.assert_close(fresh(x), backbone(x))


@pytest.mark.parametrize("name", ["flow", "diffusion"])
def test_image_policy_chunks_unchanged(fakes, name):
    policy = fakes.tiny_policy(name, images=True).eval()
    plain = _unpacked(policy)
    assert any(isinstance(m, PackedConv2d) for m in policy.modules())
    assert not any(isinstance(m, PackedConv2d) for m in plain.modules())
    obs = fakes.obs_of(fakes.make_batch(n=3, images=True))
    noise = torch.randn(3, fakes.H, fakes.DA, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        policy.predict_action_chunk(obs, noise=noise), plain.predict_action_chunk(obs, noise=noise),
        rtol=1e-4, atol=1e-5,
    )  # fmt: skip
    # select_action on single frames (cached features); the same noise for both through the seed
    frame = {k: v[:1, -1] for k, v in obs.items()}
    policy.reset()
    plain.reset()
    for i in range(2 * fakes.N_EXEC):
        torch.manual_seed(i)
        ours = policy.select_action(frame)
        torch.manual_seed(i)
        torch.testing.assert_close(ours, plain.select_action(frame), rtol=1e-4, atol=1e-5)
