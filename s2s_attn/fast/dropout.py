"""Dropout's mask and scaling in one compiled pass (float32 on the CPU), the mask as bytes for the backward.

It computes `s2s_attn.model.dropout`'s mask (the same counter-based hash of the same seed), so a run draws the same
masks with and without the kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model.dropout import threshold
from . import kernels


class _CompiledDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float, seed: int, ops) -> Tensor:
        x = x.contiguous()
        out, keep = torch.empty_like(x), torch.empty(x.shape, dtype=torch.uint8)
        ctx.scale, ctx.ops = 1.0 / (1.0 - p), ops
        ops.dropout_forward(x, out, keep, seed, threshold(p), ctx.scale)
        ctx.save_for_backward(keep)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (keep,) = ctx.saved_tensors
        out = torch.empty_like(grad := grad.contiguous())
        ctx.ops.dropout_backward(grad, keep, out, ctx.scale)
        return out, None, None, None


def compiled_dropout(x: Tensor, p: float, seed: int) -> Tensor | None:
    """`Dropout.fast`: the dropped-out x through the kernel, or None where it does not apply (not float32 on the
    CPU, or the kernels unavailable)."""
    ops = kernels.applies(x)
    return None if ops is None else _CompiledDropout.apply(x, p, seed, ops)
