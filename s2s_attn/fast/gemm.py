"""Which library multiplies the float32 matrices of the training loops and of decoding on the CPU: PyTorch's BLAS
(MKL) or oneDNN.

The hot products of a training step (`s2s_attn.fast.recurrence`'s per-step GRU and attention-query products,
`s2s_attn.fast.loss`'s vocabulary projection and its input's gradient) go through `linear` and `matmul` here, and
decoding's per-step products (`s2s_attn.decoding.step`: the output layer, the state's and the context's products)
through `table_product`. PyTorch multiplies float32 matrices on the CPU with its BLAS (MKL in the official wheels); it
also ships oneDNN, which it uses for bf16 and convolutions. oneDNN multiplies these float32 shapes faster than MKL
on AMD CPUs.

``fast.gemm`` (`configure`): ``auto`` uses oneDNN on AMD CPUs and the BLAS elsewhere (oneDNN's lead was only
shown on AMD); ``onednn`` or ``blas`` force one (`s2s-translate` and `s2s-evaluate` use ``auto``, or the
``S2S_GEMM`` variable's value). Both compute the same products; their sums are ordered differently, so results
differ in the last bits, and a run is reproducible with the same setting on the same machine.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import Tensor

from . import torch_private

CHOICES = ("auto", "blas", "onednn")

_choice = os.environ.get("S2S_GEMM", "auto")


def configure(choice: str) -> None:
    """Set ``fast.gemm``: auto, blas or onednn (oneDNN must then be in this PyTorch build)."""
    global _choice
    choice = str(choice).lower()
    if choice not in CHOICES:
        raise ValueError(f"fast.gemm must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "onednn" and not onednn_available():
        raise ValueError("fast.gemm=onednn, but oneDNN's product is not available in this PyTorch build; "
                         "use auto or blas")
    _choice = choice


def onednn_available() -> bool:
    """Whether oneDNN's product may be used here (`torch_private.onednn_linear_works`)."""
    return torch_private.onednn_linear_works()


@functools.cache
def cpu_vendor() -> str:
    """The CPU's vendor string (``AuthenticAMD``, ``GenuineIntel``, ...), or "" where /proc/cpuinfo does not say."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def backend() -> str:
    """The library in use for the CPU's float32 products: ``onednn`` or ``blas``."""
    if _choice == "auto":
        return "onednn" if cpu_vendor() == "AuthenticAMD" and onednn_available() else "blas"
    if _choice not in CHOICES:  # only the S2S_GEMM variable can set one (`configure` checks its value)
        raise ValueError(f"S2S_GEMM must be one of {', '.join(CHOICES)}, got {_choice!r}")
    return _choice


def _onednn(*tensors: Tensor | None) -> bool:
    """Whether oneDNN multiplies these: float32 CPU tensors, and oneDNN chosen."""
    if any(t is not None and (t.device.type != "cpu" or t.dtype != torch.float32) for t in tensors):
        return False
    return backend() == "onednn"


def _dense(weight: Tensor) -> bool:
    """Whether oneDNN takes this weight as it is: contiguous, or the transpose of a contiguous matrix. A slice of
    columns (W_ih's embedding part, say) sends it to a slow reference kernel; `linear` gives such a weight to the
    BLAS, and `loop_weight` copies it once."""
    return weight.dim() == 2 and (weight.is_contiguous() or weight.t().is_contiguous())


def loop_weight(weight: Tensor) -> Tensor:
    """A weight that a loop multiplies by at every step, as `linear` should get it: a contiguous copy of a slice
    where oneDNN multiplies (one copy instead of the BLAS at every step), else the weight itself."""
    return weight.contiguous() if _onednn(weight) and not _dense(weight) else weight


def _admit(x: Tensor) -> bool:
    """Whether oneDNN takes a product of this many rows: one of `padded_rows`'s sizes (8, 16, ..., 64, 80, 96, ...).
    oneDNN builds and caches a primitive, costing time and memory, for every shape; with token budgets a batch's
    number of sentences, and so every per-step product's shape, changes from batch to batch, and taking them all
    would keep growing a run's memory. The rule depends on the shape alone, never on what the process
    multiplied before, so that a resumed run computes every product with the same library as an uninterrupted one."""
    rows = x.size(0)
    return rows > 0 and padded_rows(rows) == rows


def onednn_takes(x: Tensor, weight: Tensor) -> bool:
    """Whether `linear` would give x @ weight.T to oneDNN (see `_admit`): for the compiled loops, which make
    the same choice in C++ (`s2s_attn.fast.kernels`)."""
    return _onednn(x, weight) and _dense(weight) and _admit(x)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """bias + x @ weight.T: x (M, K), weight (N, K) (contiguous or a transposed view of a contiguous matrix for
    oneDNN: see `_dense`), bias (N,), (M, N) or None; written into ``out`` (M, N) if given -> (M, N). oneDNN
    multiplies where `_admit` takes the row count, the BLAS elsewhere. Not differentiable: for the autograd
    functions' own forward and backward."""
    if _onednn(x, weight, bias) and _dense(weight) and _admit(x):
        result = torch_private.onednn_linear(x, weight, bias if bias is None or bias.dim() == 1 else None)
        if bias is not None and bias.dim() == 2:
            result.add_(bias)
        return result if out is None else out.copy_(result)
    if bias is None:
        return torch.mm(x, weight.t(), out=out)
    return torch.addmm(bias, x, weight.t(), out=out)


def matmul(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """a @ b: a (M, K), b (K, N) -> (M, N) (`linear` with b's transpose as the weight)."""
    return linear(a, b.t(), out=out)


def padded_rows(rows: int) -> int:
    """The number of rows `table_product` multiplies ``rows`` rows with under oneDNN: up to 64 the next multiple of 8,
    beyond that the next multiple of a quarter of the power of two below (80, 96, 112, 128, 160, ..., 320, 384):
    at most four shapes per doubling, so a decoding run's ever-changing row counts (sentences leave and join the
    batch every few steps) make a few dozen oneDNN primitives, not hundreds (each costs memory and time to build)."""
    if rows <= 64:
        return -(-rows // 8) * 8
    step = 1 << (rows.bit_length() - 3)  # rows in (2^k, 2^(k+1)] -> multiples of 2^(k-2)
    return -(-rows // step) * step


def table_product(x: Tensor, table: Tensor, bias: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """bias + x @ table for decoding's per-step products: x (M, K), table (K, N) contiguous (decoding keeps its
    weights as (inputs, outputs)), bias (N,) or None; written into ``out`` (M, N) if given -> (M, N).

    Where oneDNN multiplies (`backend`), x gets zero rows up to `padded_rows` (each row's result depends on its
    own row only: bitwise the same whatever the row count, tested) and the result is the first M rows: oneDNN's
    few-row products beat MKL's on AMD CPUs. Elsewhere the BLAS (``torch.mm``)."""
    rows = x.size(0)
    if rows == 0 or x.dim() != 2 or not table.is_contiguous() or not _onednn(x, table, bias):
        if bias is None:
            return torch.mm(x, table, out=out)
        return torch.addmm(bias, x, table, out=out)
    padded = padded_rows(rows)
    if padded != rows:
        x = torch.nn.functional.pad(x, (0, 0, 0, padded - rows))
    result = torch_private.onednn_linear(x.contiguous(), table.t(), bias)[:rows]
    return result if out is None else out.copy_(result)

