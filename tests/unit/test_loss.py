"""The blockwise output layer + cross-entropy (`s2s_attn.fast.loss`) is the plain ``cross_entropy(linear(x, W, b),
y)``: same value, same gradients, for any block size, with label smoothing, without a bias, and without
gradients, under bf16 autocast too (a vocabulary of 50 is not a multiple of the vector width: the compiled kernel's
row tails run too)."""

import pytest
import torch
import torch.nn.functional as F

from s2s_attn.fast.loss import blockwise_cross_entropy

pytestmark = pytest.mark.usefixtures("compiled")  # it needs the compiled kernels (conftest.py)


def plain(x, weight, bias, y, label_smoothing=0.0):
    return F.cross_entropy(F.linear(x, weight, bias), y, label_smoothing=label_smoothing, reduction="sum")


def problem(rows=300, dim=16, vocab=50, bias=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=generator, requires_grad=True)
    weight = torch.randn(vocab, dim, generator=generator, requires_grad=True)
    b = torch.randn(vocab, generator=generator, requires_grad=True) if bias else None
    y = torch.randint(0, vocab, (rows,), generator=generator)
    return x, weight, b, y


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk_rows", [1, 64, 128, 1000, None])  # 64, 128: a ragged last block; None: one
def test_value_and_gradients_equal_the_plain_linear_then_cross_entropy(label_smoothing, bias, chunk_rows):
    x, weight, b, y = problem(bias=bias)
    inputs = [x, weight] + ([b] if bias else [])
    expected = plain(x, weight, b, y, label_smoothing)
    expected_grads = torch.autograd.grad(expected * 0.37, inputs)  # a non-unit incoming gradient
    fused = blockwise_cross_entropy(x, weight, b, y, label_smoothing, chunk_rows=chunk_rows)
    grads = torch.autograd.grad(fused * 0.37, inputs)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-3)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_extreme_logits_give_a_finite_loss_like_the_plain_one():
    x, weight, b, y = problem()
    with torch.no_grad():
        weight.mul_(200.0)  # logits in the thousands: exp() would overflow without the max shift
    torch.testing.assert_close(blockwise_cross_entropy(x, weight, b, y), plain(x, weight, b, y), rtol=1e-5, atol=1e-2)


def test_without_gradients_it_only_computes_the_loss():
    x, weight, b, y = problem()
    with torch.no_grad():
        loss = blockwise_cross_entropy(x, weight, b, y)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, plain(x, weight, b, y).detach(), rtol=1e-5, atol=1e-3)


def test_bf16_features_under_autocast_get_a_bf16_gradient_and_a_close_loss():
    x, weight, b, y = problem()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = x.to(torch.bfloat16)  # what a bf16 layer before the output layer hands over
        loss = blockwise_cross_entropy(features, weight, b, y)
    loss.backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32
    torch.testing.assert_close(loss, plain(x, weight, b, y).detach(), rtol=2e-2, atol=1.0)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk_rows", [64, 1000, None])  # None: 128 rows under bf16
def test_bf16_products_give_the_loss_and_gradients_of_bf16_rounded_operands(label_smoothing, bias, chunk_rows):
    # 300 rows in blocks of 64: the last block is padded with zero rows, which must add nothing
    x, weight, b, y = problem(bias=bias)
    with torch.no_grad():
        weight.mul_(0.1)  # logits of a few units, as in a trained model: their bf16 rounding moves p(j) by ~0.3%
    inputs = [x, weight] + ([b] if bias else [])
    rounded = [t.detach().to(torch.bfloat16).float().requires_grad_() for t in (x, weight)]
    expected = plain(rounded[0], rounded[1], b, y, label_smoothing)
    expected_grads = torch.autograd.grad(expected * 0.37, rounded + ([b] if bias else []))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = blockwise_cross_entropy(x, weight, b, y, label_smoothing, chunk_rows=chunk_rows)
    grads = torch.autograd.grad(fused * 0.37, inputs)
    assert fused.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    torch.testing.assert_close(fused, expected, rtol=1e-3, atol=0.0)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-2, atol=2e-3 * float(want.abs().max()))


def test_rows_and_targets_must_match():
    x, weight, b, y = problem()
    with pytest.raises(ValueError, match="300 feature rows but 299 targets"):
        blockwise_cross_entropy(x, weight, b, y[:-1])


def test_a_block_needs_at_least_one_row():
    x, weight, b, y = problem()
    with pytest.raises(ValueError, match="chunk_rows must be a positive number of rows, got 0"):
        blockwise_cross_entropy(x, weight, b, y, chunk_rows=0)
