"""Inverted dropout with a cheaper random mask than ``nn.Dropout`` on the CPU.

    y = x * m / (1 - p),   m_i ~ Bernoulli(1 - p), independently

``nn.Dropout`` draws its mask with ``bernoulli_``, which on the CPU costs more than the rest of a decoder
step's element-wise work.
Here the mask comes from random 16-bit integers: one 64-bit draw gives three of them (its low 48 bits;
``random_`` on int64 leaves the top bit 0), and an element is kept when its integer is at least
``p * 65536`` (p is rounded to a multiple of 1/65536: 0.1 becomes 0.100006). Same distribution, same
generator (``torch.manual_seed`` reproduces it), a cheaper draw, and the backward is one multiplication by the
saved mask.

With the compiled CPU kernels (`s2s_attn.model.kernels`, float32 on the CPU) one pass draws the mask and scales:
the random numbers are a counter-based hash (splitmix64) of a seed drawn from torch's generator, so
``torch.manual_seed`` still reproduces a run (the masks differ from the Python path's). The mask is kept as bytes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import kernels


def dropout_scale(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A tensor of ``shape`` whose elements are 1 / (1 - p) with probability 1 - p and 0 otherwise."""
    count = shape.numel()
    draws = (count + 2) // 3  # three 16-bit numbers per 64-bit draw
    bits = torch.empty(draws, dtype=torch.int64, device=device).random_()
    bits = bits.view(torch.int16).view(draws, 4)[:, :3]  # the low 48 bits: uniform over all 16-bit patterns
    threshold = round(p * 65536) - 32768  # int16 values below it are dropped: a share of threshold / 65536
    scale = torch.where(bits >= threshold, 1.0 / (1.0 - p), 0.0).to(dtype)  # (draws, 3)
    return scale.view(-1)[:count].view(shape)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        ctx.kernels = kernels.applies(x)
        if ctx.kernels is not None:
            x = x.contiguous()
            seed = int(torch.randint(0, 2**62, (1,), dtype=torch.int64))  # from torch's generator: seeded runs repeat
            out, keep = torch.empty_like(x), torch.empty(x.shape, dtype=torch.uint8)
            ctx.scale = 1.0 / (1.0 - p)
            ctx.kernels.dropout_forward(x, out, keep, seed, round(p * 65536), ctx.scale)
            ctx.save_for_backward(keep)
            return out
        scale = dropout_scale(x.shape, p, x.dtype, x.device)
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx, grad: Tensor):
        (saved,) = ctx.saved_tensors
        if ctx.kernels is not None:
            grad = grad.contiguous()
            out = torch.empty_like(grad)
            ctx.kernels.dropout_backward(grad, saved, out, ctx.scale)
            return out, None
        return grad * saved, None


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout(p)``: zeroes each element with probability p in training and scales the
    rest by 1 / (1 - p); the identity in evaluation mode or when p is 0."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return _Dropout.apply(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
