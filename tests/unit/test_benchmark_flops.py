"""scripts/benchmark.py counts the FLOPs of MKL's packed products (the decoder loops' forward products in float32
on the CPU), which PyTorch's FLOP counter does not know: without them it reported 26.1 MFLOP per target token
for a step that does 29.6."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode


@pytest.mark.skipif(not (torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")),
                    reason="this PyTorch build has no MKL packed product")
def test_packed_products_are_counted_as_two_flops_per_multiply_add(benchmark_script):
    benchmark = benchmark_script
    benchmark._count_packed_products()
    benchmark._count_packed_products()  # a second call (a second configuration) registers nothing twice
    rows, inner, outer = 6, 5, 7
    weight = torch.randn(outer, inner)
    packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, rows)
    with FlopCounterMode(display=False) as counter:
        torch.ops.mkl._mkl_linear(torch.randn(rows, inner), packed, weight, None, rows)
    assert counter.get_total_flops() == 2 * rows * inner * outer


@pytest.mark.skipif(not hasattr(torch.ops.mkldnn, "_linear_pointwise"), reason="this PyTorch build has no oneDNN")
def test_onednn_products_are_counted_as_two_flops_per_multiply_add(benchmark_script):
    benchmark = benchmark_script
    benchmark._count_packed_products()
    benchmark._count_packed_products()
    rows, inner, outer = 6, 5, 7
    with FlopCounterMode(display=False) as counter:
        torch.ops.mkldnn._linear_pointwise(torch.randn(rows, inner), torch.randn(outer, inner), None, "none", [], "")
    assert counter.get_total_flops() == 2 * rows * inner * outer
