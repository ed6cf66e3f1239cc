"""PyTorch's private operators sit behind probes: a PyTorch that lacks one, or where one misbehaves, costs speed,
never correctness."""

import logging

import pytest
import torch

from s2s_attn.fast import gemm, torch_private


@pytest.fixture
def fresh_probes():
    """Forget the probes' cached answers before and after a test that changes what they see."""
    for probe in (torch_private.onednn_linear_works, torch_private.mkl_packed_linear_works):
        probe.cache_clear()
    yield
    for probe in (torch_private.onednn_linear_works, torch_private.mkl_packed_linear_works):
        probe.cache_clear()


def test_the_module_says_which_private_operators_are_in_use():
    used = torch_private.in_use()
    assert set(used) == {"mkldnn._linear_pointwise", "mkl._mkl_linear"}
    assert all(isinstance(flag, bool) for flag in used.values())
    print("private PyTorch operators in use:", used)  # shown with pytest -s: which this PyTorch build offers


def test_each_private_operator_in_use_computes_its_public_products_result():
    generator = torch.Generator().manual_seed(1)
    x, weight, bias = (torch.randn(shape, generator=generator) for shape in ((64, 48), (32, 48), (32,)))
    expected = torch.addmm(bias, x, weight.t())
    if torch_private.onednn_linear_works():
        torch.testing.assert_close(torch_private.onednn_linear(x, weight, bias), expected, rtol=1e-5, atol=1e-5)
    if torch_private.mkl_packed_linear_works():
        packed = torch_private.mkl_pack(weight, 64)
        torch.testing.assert_close(torch_private.mkl_packed_linear(x, packed, weight, bias, 64), expected,
                                   rtol=1e-5, atol=1e-5)


def broken(*args, **kwargs):
    raise RuntimeError("this private operator was removed")


def wrong(x, weight, bias, *args):
    return torch.zeros(x.size(0), weight.size(0))


@pytest.mark.parametrize("replacement", [broken, wrong], ids=["missing", "disagreeing"])
def test_a_private_operator_that_fails_its_probe_is_replaced_by_the_public_product(
    monkeypatch, fresh_probes, caplog, replacement
):
    monkeypatch.setattr(torch_private, "onednn_linear", replacement)
    monkeypatch.setattr(torch_private, "mkl_packed_linear", replacement)
    monkeypatch.setattr(gemm, "_choice", "auto")
    with caplog.at_level(logging.WARNING, logger="s2s_attn.fast.torch_private"):
        assert torch_private.in_use() == {"mkldnn._linear_pointwise": False, "mkl._mkl_linear": False}
    assert "public product is used instead" in caplog.text
    assert gemm.backend() == "blas"  # whatever the CPU: oneDNN's product is not used
    with pytest.raises(ValueError, match="oneDNN's product is not available"):
        gemm.configure("onednn")
    generator = torch.Generator().manual_seed(2)
    x, weight, bias = (torch.randn(shape, generator=generator) for shape in ((8, 6), (4, 6), (4,)))
    torch.testing.assert_close(gemm.linear(x, weight, bias), torch.addmm(bias, x, weight.t()))
