"""Inverted dropout whose mask is a function of one seed: the same mask on every device and implementation.

    y = x * m / (1 - p),   m_i ~ Bernoulli(1 - p), independently

Each call draws one seed from torch's generator (so ``torch.manual_seed`` reproduces a run) and derives the mask
from it with a counter-based hash: element i is kept when its 16-bit random number, bits 16 (i % 4) .. 16 (i % 4)
+ 15 of ``splitmix64(seed + i // 4)``, is at least ``p * 65536`` (p is rounded to a multiple of 1/65536: 0.1
becomes 0.100006). Because the mask depends on the seed and the element's index only, it is the same on every device
and thread count. (A compiled kernel of the same mask gained under 2% of a training step's time, and was removed.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_UINT64 = 1 << 64


def _int64(constant: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    return constant - _UINT64 if constant >= 1 << 63 else constant


_GOLDEN_GAMMA = _int64(0x9E3779B97F4A7C15)
_MIX_1 = _int64(0xBF58476D1CE4E5B9)
_MIX_2 = _int64(0x94D049BB133111EB)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 values (torch's ``>>`` is arithmetic: it copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(counter: Tensor) -> Tensor:
    """splitmix64's output function for each int64 counter (multiplications wrap modulo 2^64, as in C)."""
    x = counter + _GOLDEN_GAMMA
    x = (x ^ _shift_right(x, 30)) * _MIX_1
    x = (x ^ _shift_right(x, 27)) * _MIX_2
    return x ^ _shift_right(x, 31)


def draw_seed() -> int:
    """One dropout seed from torch's default generator, below 2^62 so that seed + counter never wraps."""
    return int(torch.randint(0, 2**62, (1,), dtype=torch.int64))


def threshold(p: float) -> int:
    """The 16-bit random numbers below this are dropped: a share of ``round(p * 65536) / 65536``."""
    return round(p * 65536)


def keep_mask(shape: torch.Size, p: float, seed: int, device: torch.device) -> Tensor:
    """The mask of module-doc: a bool tensor of ``shape``, True where an element is kept."""
    count = shape.numel()
    groups = torch.arange((count + 3) // 4, dtype=torch.int64, device=device) + seed  # four elements per number
    random = splitmix64(groups).view(torch.int16).to(torch.int32) & 0xFFFF  # (4 * groups,) each number's 16-bit words
    return (random[:count] >= threshold(p)).view(shape)


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
        keep = keep_mask(x.shape, self.p, draw_seed(), x.device)
        return torch.where(keep, x * (1.0 / (1.0 - self.p)), 0.0)  # (x.shape)

    def extra_repr(self) -> str:
        return f"p={self.p}"
