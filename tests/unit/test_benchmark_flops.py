"""scripts/benchmark.py counts the FLOPs of the products PyTorch's FLOP counter does not know or cannot see: MKL's
packed products and oneDNN's, and the per-step products inside the compiled GRU layer loops (without them a step's
FLOPs are undercounted)."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode


@pytest.mark.skipif(not (torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")),
                    reason="this PyTorch build has no MKL packed product")
def test_packed_products_are_counted_as_two_flops_per_multiply_add(benchmark_script):
    benchmark = benchmark_script
    benchmark._count_uncounted_products()
    benchmark._count_uncounted_products()  # a second call (a second configuration) registers nothing twice
    rows, inner, outer = 6, 5, 7
    weight = torch.randn(outer, inner)
    packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, rows)
    with FlopCounterMode(display=False) as counter:
        torch.ops.mkl._mkl_linear(torch.randn(rows, inner), packed, weight, None, rows)
    assert counter.get_total_flops() == 2 * rows * inner * outer


@pytest.mark.skipif(not hasattr(torch.ops.mkldnn, "_linear_pointwise"), reason="this PyTorch build has no oneDNN")
def test_onednn_products_are_counted_as_two_flops_per_multiply_add(benchmark_script):
    benchmark = benchmark_script
    benchmark._count_uncounted_products()
    benchmark._count_uncounted_products()
    rows, inner, outer = 6, 5, 7
    with FlopCounterMode(display=False) as counter:
        torch.ops.mkldnn._linear_pointwise(torch.randn(rows, inner), torch.randn(outer, inner), None, "none", [], "")
    assert counter.get_total_flops() == 2 * rows * inner * outer


def test_the_compiled_layer_loops_are_counted_as_their_per_step_products(benchmark_script):
    from s2s_attn.fast import kernels

    if kernels.ops() is None:
        pytest.skip("the compiled kernels could not be built here (they need a C++ compiler and ninja)")
    benchmark_script._count_uncounted_products()
    benchmark_script._count_uncounted_products()
    steps, directions, batch, size = 3, 2, 4, 5
    gates = 3 * size
    input_gates = torch.randn(steps, directions, batch, gates)
    weight, bias = torch.randn(directions, gates, size), torch.randn(directions, gates)
    states = torch.zeros(steps + 1, directions, batch, size)
    record = [torch.empty(steps, directions, batch, width) for width in (2 * size, size, size)]
    per_layer = 2 * steps * directions * batch * size * gates  # one (B, H) x (H, 3H) product per step and direction
    with FlopCounterMode(display=False) as counter:
        torch.ops.s2s_attn.gru_layer_forward(input_gates, weight, bias, None, states, *record, False)
    assert counter.get_total_flops() == per_layer
    with FlopCounterMode(display=False) as counter:
        torch.ops.s2s_attn.gru_layer_inference(input_gates, weight, bias, None, states, False)
    assert counter.get_total_flops() == per_layer
    with FlopCounterMode(display=False) as counter:
        torch.ops.s2s_attn.gru_layer_backward(states[:-1], *record, weight, None, None,
                                              torch.zeros(directions, batch, size), torch.empty_like(input_gates),
                                              torch.empty_like(input_gates), False)
    assert counter.get_total_flops() == per_layer
