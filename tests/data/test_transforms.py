"""Image augmentations: shapes, determinism under a seeded generator, one draw per sample, ranges."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from robolearn.data.transforms import CenterCrop, ColorJitter, Compose, Identity, RandomCrop, RandomShift

RANDOM = [RandomShift(pad=4), RandomCrop((20, 24)), ColorJitter(0.4, 0.4, 0.4, 0.1)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(*lead: int, h: int = 28, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(*lead, 3, h, w, generator=gen(seed))


def out_hw(tf) -> tuple[int, int]:
    return tf.size if isinstance(tf, RandomCrop | CenterCrop) else (28, 32)


@pytest.mark.parametrize("tf", RANDOM, ids=lambda t: type(t).__name__)
@pytest.mark.parametrize("lead", [(), (2,), (5, 2)], ids=["frame", "window", "batch"])
def test_shapes_dtype_and_range(tf, lead):
    x = images(*lead)
    y = tf(x, generator=gen(1))
    assert y.shape == (*lead, 3, *out_hw(tf)) and y.dtype == x.dtype
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


@pytest.mark.parametrize("tf", RANDOM, ids=lambda t: type(t).__name__)
def test_deterministic_under_a_seeded_generator(tf):
    x = images(6, 2)
    assert torch.equal(tf(x, generator=gen(7)), tf(x, generator=gen(7)))
    outs = [tf(x, generator=gen(s)) for s in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # the seed matters


@pytest.mark.parametrize("tf", RANDOM, ids=lambda t: type(t).__name__)
def test_one_draw_per_sample_shared_by_its_frames(tf):
    frame = images(seed=3)
    window = torch.stack([frame, frame, frame])[None].repeat(4, 1, 1, 1, 1)  # (B=4, To=3, 3, H, W)
    y = tf(window, generator=gen(0))
    for b in range(4):
        assert torch.equal(y[b, 0], y[b, 1]) and torch.equal(y[b, 0], y[b, 2])
    assert any(not torch.equal(y[0], y[b]) for b in range(1, 4))  # samples differ


def test_random_shift_is_a_crop_of_the_replicate_padded_image():
    x = images(2, h=12, w=12)
    y = RandomShift(pad=2)(x, generator=gen(5))
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    offsets = [
        (dy, dx)
        for dy in range(5)
        for dx in range(5)
        if torch.equal(padded[..., dy : dy + 12, dx : dx + 12], y)
    ]
    assert len(offsets) == 1


def test_crops_take_windows_of_the_input():
    x = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).reshape(2, 3, 6, 8)
    assert torch.equal(CenterCrop((2, 4))(x), x[..., 2:4, 2:6])
    y = RandomCrop((2, 4))(x, generator=gen(0))
    found = [(t, c) for t in range(5) for c in range(5) if torch.equal(x[..., t : t + 2, c : c + 4], y)]
    assert len(found) == 1
    with pytest.raises(ValueError, match="crop size"):
        RandomCrop((7, 4))(x)


def test_colour_jitter_limits():
    x = images(3, 2)
    assert torch.allclose(ColorJitter(0, 0, 0, 0)(x, generator=gen(0)), x, atol=1e-6)
    grey = images(3, 2)[:, :, :1].expand(-1, -1, 3, -1, -1).contiguous()
    y = ColorJitter(brightness=0, contrast=0, saturation=0.5, hue=0.5)(grey, generator=gen(0))
    assert torch.allclose(y, grey, atol=1e-5)  # saturation and hue leave grey alone
    bright = ColorJitter(brightness=0.5, contrast=0, saturation=0, hue=0)(
        torch.full((1, 3, 4, 4), 0.4), generator=gen(2)
    )
    assert 0.2 - 1e-6 <= float(bright.min()) and float(bright.max()) <= 0.6 + 1e-6
    with pytest.raises(ValueError, match="hue"):
        ColorJitter(hue=0.7)


def test_eval_counterparts_and_compose():
    train = Compose((RandomShift(4), RandomCrop((20, 24)), ColorJitter()))
    assert train.eval() == Compose((Identity(), CenterCrop((20, 24)), Identity()))
    x = images(2)
    assert torch.equal(train.eval()(x), x[..., 4:24, 4:28])
    assert torch.equal(train(x, generator=gen(3)), train(x, generator=gen(3)))
    assert train(images(4, 2), generator=gen(3)).shape == (4, 2, 3, 20, 24)
    with pytest.raises(dataclasses.FrozenInstanceError):
        train.transforms = ()  # type: ignore[misc]
    with pytest.raises(ValueError, match="expected"):
        RandomShift()(torch.zeros(2, 2, 2, 2, 3, 4, 4))
