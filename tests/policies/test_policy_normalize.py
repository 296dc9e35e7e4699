"""Normalizer modes, constant dimensions, stats errors; fast convolutions match PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robolearn.policies.common.fastconv import FastConv1d, FastConvTranspose1d
from robolearn.policies.common.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalizer

STATS = {
    "observation.state": {
        "min": np.array([0.0, -2.0, 3.0]),
        "max": np.array([10.0, 2.0, 3.0]),
        "mean": np.array([5.0, 0.0, 3.0]),
        "std": np.array([2.0, 0.5, 0.0]),
    },
    "observation.images.front": {
        "mean": np.full((3, 1, 1), 0.5),
        "std": np.full((3, 1, 1), 0.25),
        "min": np.zeros((3, 1, 1)),
        "max": np.ones((3, 1, 1)),
    },
}
FEATS = {"observation.state": (3,), "observation.images.front": (3, 4, 4)}


def test_min_max_maps_range_to_minus_one_one_and_back():
    norm = Normalizer(FEATS, {"observation.state": "min_max", "observation.images.front": "none"}, STATS)
    x = torch.tensor([[0.0, -2.0, 3.0], [10.0, 2.0, 3.0], [5.0, 0.0, 3.0]])
    y = norm.normalize("observation.state", x)
    assert torch.allclose(y, torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), atol=1e-6)
    assert torch.allclose(norm.unnormalize("observation.state", y), x, atol=1e-5)


def test_mean_std_and_image_modes():
    norm = Normalizer(FEATS, {"observation.state": "mean_std", "observation.images.front": "imagenet"}, STATS)
    y = norm.normalize("observation.state", torch.tensor([7.0, 1.0, 3.0]))
    assert torch.allclose(y, torch.tensor([1.0, 2.0, 0.0]))  # zero std: centred, not divided
    img = torch.rand(2, 3, 4, 4)
    expected = (img - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    assert torch.allclose(norm.normalize("observation.images.front", img), expected, atol=1e-6)
    ds = Normalizer(FEATS, {"observation.state": "none", "observation.images.front": "mean_std"}, STATS)
    assert torch.allclose(
        ds.normalize("observation.images.front", torch.full((3, 4, 4), 0.75)), torch.ones(3, 4, 4)
    )


def test_stats_errors_name_the_feature():
    with pytest.raises(KeyError, match="observation.state"):
        Normalizer(
            FEATS,
            {"observation.state": "min_max", "observation.images.front": "none"},
            {"observation.images.front": STATS["observation.images.front"]},
        )
    bad = {**STATS, "observation.state": {**STATS["observation.state"], "max": np.ones(4)}}
    with pytest.raises(ValueError, match=r"'observation.state': 'max' expected 3 values, found 4"):
        Normalizer(FEATS, {"observation.state": "min_max", "observation.images.front": "none"}, bad)


def test_no_stats_means_identity():
    norm = Normalizer(FEATS, {"observation.state": "min_max", "observation.images.front": "imagenet"}, None)
    x = torch.randn(3)
    assert torch.equal(norm.normalize("observation.state", x), x)


@pytest.mark.parametrize(
    "c_in,c_out,k,stride,pad,length", [(7, 16, 5, 1, 2, 16), (16, 16, 3, 2, 1, 8), (8, 4, 1, 1, 0, 5)]
)
def test_fast_conv_matches_torch(c_in, c_out, k, stride, pad, length):
    conv = FastConv1d(c_in, c_out, k, stride=stride, padding=pad)
    x = torch.randn(3, c_in, length)
    with torch.inference_mode():
        fast = conv(x)
    assert torch.allclose(fast, torch.nn.Conv1d.forward(conv, x), atol=1e-5)
    with torch.no_grad():  # a weight update invalidates the packed copy
        conv.weight.mul_(2.0)
        assert torch.allclose(conv(x), torch.nn.Conv1d.forward(conv, x), atol=1e-5)


@pytest.mark.parametrize("length", [3, 4, 8])
def test_fast_conv_transpose_matches_torch(length):
    conv = FastConvTranspose1d(8, 6, 4, stride=2, padding=1)
    x = torch.randn(2, 8, length)
    with torch.inference_mode():
        fast = conv(x)
    assert torch.allclose(fast, torch.nn.ConvTranspose1d.forward(conv, x), atol=1e-5)
