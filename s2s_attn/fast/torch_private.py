"""The private PyTorch operators the fast paths call, in one place, each behind a probe with a public fallback.

PyTorch may rename, change or drop a private operator in any release. Each one here is tried once, on a small
input, against the public operator that computes the same thing; where it is missing, fails or disagrees, the fast
paths multiply with the public one instead (and say so once in the log): a PyTorch upgrade can cost speed, never
correctness.

    private operator                                        what it computes             public fallback
    torch.ops.mkldnn._linear_pointwise                      bias + x @ W.T with oneDNN   torch.addmm
    torch.ops.mkl._mkl_reorder_linear_weight, _mkl_linear   bias + x @ W.T with MKL's    torch.addmm
                                                            packed weight

The compiled GRU layer loops (csrc/cpu_kernels.cpp) call ``mkldnn::_linear_pointwise`` from C++ only where
`s2s_attn.fast.gemm` gives them oneDNN, which follows this module's probe. `in_use` says which are in use.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def _probe(name: str, private: Callable[[Tensor, Tensor, Tensor], Tensor]) -> bool:
    """Whether ``private(x, weight, bias)`` runs and gives ``torch.addmm(bias, x, weight.T)`` on a small input."""
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(shape, generator=generator) for shape in ((5, 7), (3, 7), (3,)))
    try:
        result = private(x, weight, bias)
    except Exception as error:  # missing, renamed, or a new signature: any failure means "do not use it"
        log.warning("PyTorch's private %s does not work here (%s); the public product is used instead",
                    name, type(error).__name__)
        return False
    if result.shape != (5, 3) or not torch.allclose(result, torch.addmm(bias, x, weight.t()), rtol=1e-4, atol=1e-5):
        log.warning("PyTorch's private %s disagrees with torch.addmm here; the public product is used instead", name)
        return False
    return True


@functools.cache
def onednn_linear_works() -> bool:
    """Whether `onednn_linear` may be used in this process (oneDNN in this build, and the probe passed)."""
    if not torch.backends.mkldnn.is_available():
        return False
    return _probe("mkldnn._linear_pointwise", onednn_linear)


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """bias + x @ weight.T through oneDNN: x (M, K), weight (N, K), bias (N,) or None -> (M, N)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@functools.cache
def mkl_packed_linear_works() -> bool:
    """Whether `mkl_pack` and `mkl_packed_linear` may be used (MKL in this build, and the probe passed)."""
    if not torch.backends.mkl.is_available():
        return False
    return _probe("mkl._mkl_linear", lambda x, weight, bias: mkl_packed_linear(x, mkl_pack(weight, 5), weight, bias, 5))


def mkl_pack(weight: Tensor, rows: int) -> Tensor:
    """``weight`` (N, K), contiguous, packed for products with ``rows`` rows (MKL's packed GEMM)."""
    return torch.ops.mkl._mkl_reorder_linear_weight(weight, rows)


def mkl_packed_linear(x: Tensor, packed: Tensor, weight: Tensor, bias: Tensor | None, rows: int) -> Tensor:
    """bias + x @ weight.T with ``packed`` = `mkl_pack` (weight, rows): x (rows, K) -> (rows, N)."""
    return torch.ops.mkl._mkl_linear(x, packed, weight, bias, rows)


def in_use() -> dict[str, bool]:
    """Each private operator and whether this process may use it."""
    return {"mkldnn._linear_pointwise": onednn_linear_works(), "mkl._mkl_linear": mkl_packed_linear_works()}
