"""1D convolutions with a fast CPU inference path for tiny inputs.

For batch-1 action chunks (length 4–16) PyTorch's CPU convolution spends most of its time in
per-call setup (measured here: ~420 µs for 256→256 channels at length 4, against ~90 µs for an
unfold + matrix multiply). These subclasses keep ``nn.Conv1d`` / ``nn.ConvTranspose1d`` parameters
and state-dict keys and switch to the matrix-multiply form only when no gradient is needed, the
tensor is on the CPU and batch·length is small; the weight is re-packed only when it changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FAST_MAX_POSITIONS = 256
"""Use the fast path while batch·length <= this."""


def _use_fast(module: nn.Module, x: torch.Tensor) -> bool:
    return (
        not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.shape[0] * x.shape[-1] <= FAST_MAX_POSITIONS
        and module.groups == 1
        and module.dilation == (1,)
        and module.padding_mode == "zeros"
    )


class _PackedWeight:
    """Caches a re-laid-out copy of a weight, refreshed when the weight's storage or version changes."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: torch.Tensor | None = None

    def get(self, weight: torch.Tensor, pack) -> torch.Tensor:
        # Inference tensors (modules built under inference_mode) have no version counter.
        version = None if weight.is_inference() else weight._version
        key = (weight.data_ptr(), version, weight.dtype, weight.device)
        if key != self.key or self.value is None:
            with torch.no_grad():
                self.value = pack(weight.detach())
            self.key = key
        return self.value


class FastConv1d(nn.Conv1d):
    """``nn.Conv1d`` (B, Cin, L) -> (B, Cout, L'), with the im2col fast path for small inference calls."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._packed = _PackedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _use_fast(self, x):
            return super().forward(x)
        b, c_in, _ = x.shape
        (k,), (s,), (p,) = self.kernel_size, self.stride, self.padding
        # (Cout, Cin, k) -> (k·Cin, Cout), matching the (position, tap, channel) unfold order below.
        w = self._packed.get(self.weight, lambda w: w.permute(2, 1, 0).reshape(k * c_in, -1).contiguous())
        cols = F.pad(x, (p, p)).unfold(2, k, s)  # (B, Cin, L', k)
        length = cols.shape[2]
        cols = cols.permute(0, 2, 3, 1).reshape(b * length, k * c_in)
        out = torch.mm(cols, w) if self.bias is None else torch.addmm(self.bias, cols, w)
        return out.view(b, length, -1).transpose(1, 2)


class FastConvTranspose1d(nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` with a matmul + overlap-add fast path for small inference calls."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._packed = _PackedWeight()

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or not _use_fast(self, x):
            return super().forward(x, output_size)
        b, c_in, length = x.shape
        (k,), (s,), (p,), (op,) = self.kernel_size, self.stride, self.padding, self.output_padding
        c_out = self.out_channels
        # (Cin, Cout, k) -> (Cin, Cout·k)
        w = self._packed.get(self.weight, lambda w: w.reshape(c_in, c_out * k).contiguous())
        cols = torch.mm(x.transpose(1, 2).reshape(b * length, c_in), w)  # (B·L, Cout·k)
        cols = cols.view(b, length, c_out * k).transpose(1, 2)  # (B, Cout·k, L)
        full = (length - 1) * s + k
        out = F.fold(cols, output_size=(1, full + op), kernel_size=(1, k), stride=(1, s)).view(b, c_out, -1)
        out = out[:, :, p : full + op - p]
        return out if self.bias is None else out + self.bias[:, None]
