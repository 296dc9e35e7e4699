"""Image augmentations in plain torch, as small frozen dataclasses.

Every transform takes float images in [0, 1], either one sample's window ``(To, 3, H, W)`` or a
batch ``(B, To, 3, H, W)`` (a single ``(3, H, W)`` frame works too), and returns the same layout.
Random parameters are drawn once per sample and applied to all ``To`` frames of that sample, so a
history of frames stays temporally consistent. Pass a seeded ``torch.Generator`` for reproducible
draws (otherwise torch's global generator is used, which DataLoader seeds per worker).

``eval()`` gives the deterministic transform to use at evaluation (e.g. ``RandomCrop`` ->
``CenterCrop``; pure augmentations -> ``Identity``)::

    train_tf = Compose((RandomShift(pad=4), ColorJitter(0.2, 0.2, 0.2, 0.02)))
    eval_tf = train_tf.eval()
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["CenterCrop", "ColorJitter", "Compose", "Identity", "RandomCrop", "RandomShift"]

# ITU-R BT.601 luma weights (what torchvision's rgb_to_grayscale uses).
_LUMA = (0.299, 0.587, 0.114)
# RGB <-> YIQ: hue rotation is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def _as_batch(images: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """View ``(3,H,W)`` / ``(To,3,H,W)`` / ``(B,To,3,H,W)`` as ``(B, To, C, H, W)`` and a function undoing it."""
    if images.ndim == 5:
        return images, lambda x: x
    if images.ndim == 4:
        return images[None], lambda x: x[0]
    if images.ndim == 3:
        return images[None, None], lambda x: x[0, 0]
    raise ValueError(
        f"images: expected (3, H, W), (To, 3, H, W) or (B, To, 3, H, W), found {tuple(images.shape)}"
    )


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> torch.Tensor:
    """``(n,)`` float draws in [lo, hi) on the CPU (the generator's device), one per sample."""
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def _randint(n: int, high: int, generator: torch.Generator | None) -> list[int]:
    return torch.randint(0, high, (n,), generator=generator).tolist()


@dataclass(frozen=True)
class Identity:
    """No change."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return images

    def eval(self) -> Identity:
        return self


@dataclass(frozen=True)
class RandomShift:
    """DrQ's random shift: pad each side by ``pad`` pixels (edge replicate), crop back to (H, W) at a
    random integer offset per sample."""

    pad: int = 4

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x, undo = _as_batch(images)
        if self.pad <= 0:
            return images
        b, t, c, h, w = x.shape
        p = self.pad
        padded = F.pad(x.reshape(b, t * c, h, w), (p, p, p, p), mode="replicate")
        dy, dx = _randint(b, 2 * p + 1, generator), _randint(b, 2 * p + 1, generator)
        out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
        return undo(out.reshape(b, t, c, h, w))

    def eval(self) -> Identity:
        return Identity()


def _check_size(size: tuple[int, int], h: int, w: int, name: str) -> tuple[int, int]:
    ch, cw = size
    if not (0 < ch <= h and 0 < cw <= w):
        raise ValueError(f"{name}: crop size {tuple(size)} does not fit images of size {(h, w)}")
    return ch, cw


@dataclass(frozen=True)
class CenterCrop:
    """Crop the central ``size = (h, w)`` window (the eval-time counterpart of :class:`RandomCrop`)."""

    size: tuple[int, int]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h, w = images.shape[-2:]
        ch, cw = _check_size(self.size, h, w, "CenterCrop")
        top, left = (h - ch) // 2, (w - cw) // 2
        return images[..., top : top + ch, left : left + cw]

    def eval(self) -> CenterCrop:
        return self


@dataclass(frozen=True)
class RandomCrop:
    """Crop a ``size = (h, w)`` window at a random offset per sample (diffusion_policy's crop)."""

    size: tuple[int, int]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x, undo = _as_batch(images)
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        ch, cw = _check_size(self.size, h, w, "RandomCrop")
        top, left = _randint(b, h - ch + 1, generator), _randint(b, w - cw + 1, generator)
        return undo(torch.stack([x[i, ..., top[i] : top[i] + ch, left[i] : left[i] + cw] for i in range(b)]))

    def eval(self) -> CenterCrop:
        return CenterCrop(self.size)


@dataclass(frozen=True)
class ColorJitter:
    """Random brightness, contrast, saturation and hue, applied in that order, clamped to [0, 1].

    Factors are drawn per sample: brightness/contrast/saturation from ``[1 - v, 1 + v]``, hue shift
    from ``[-hue, hue]`` turns (``hue <= 0.5``). The hue shift is a rotation of the chroma plane in
    YIQ space (one 3x3 matrix; cheaper than an HSV round trip and close to it for small shifts).
    Contrast blends with the mean grey level of the sample's whole window, so all frames of a sample
    get exactly the same affine map.
    """

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ColorJitter.{name}: expected in [0, 1], found {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"ColorJitter.hue: expected in [0, 0.5], found {self.hue}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x, undo = _as_batch(images)
        if x.shape[2] != 3:
            raise ValueError(f"ColorJitter: expected 3 channels, found {x.shape[2]}")
        b = x.shape[0]
        bright = _uniform(b, 1 - self.brightness, 1 + self.brightness, generator)
        contrast = _uniform(b, 1 - self.contrast, 1 + self.contrast, generator)
        sat = _uniform(b, 1 - self.saturation, 1 + self.saturation, generator)
        hue = _uniform(b, -self.hue, self.hue, generator)

        def per_sample(v: torch.Tensor) -> torch.Tensor:  # (B,) -> broadcastable against (B, To, C, H, W)
            return v.to(device=x.device, dtype=x.dtype).view(b, 1, 1, 1, 1)

        luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 1, 3, 1, 1)
        x = (x * per_sample(bright)).clamp(0, 1)
        grey_mean = (x * luma).sum(dim=2, keepdim=True).mean(dim=(1, 2, 3, 4), keepdim=True)
        x = (grey_mean + per_sample(contrast) * (x - grey_mean)).clamp(0, 1)
        grey = (x * luma).sum(dim=2, keepdim=True)
        x = (grey + per_sample(sat) * (x - grey)).clamp(0, 1)
        if self.hue > 0:
            x = torch.einsum("bij,btjhw->btihw", _hue_matrices(hue).to(x.device, x.dtype), x).clamp(0, 1)
        return undo(x)

    def eval(self) -> Identity:
        return Identity()


def _hue_matrices(shift: torch.Tensor) -> torch.Tensor:
    """``(B,)`` hue shifts in turns -> ``(B, 3, 3)`` RGB matrices rotating chroma in YIQ space."""
    to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    from_yiq = torch.linalg.inv(to_yiq)
    angle = shift.double() * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(len(shift), 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    return (from_yiq @ rot @ to_yiq).float()


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order, passing the same generator along."""

    transforms: tuple

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for tf in self.transforms:
            images = tf(images, generator=generator)
        return images

    def eval(self) -> Compose:
        return Compose(tuple(tf.eval() for tf in self.transforms))
