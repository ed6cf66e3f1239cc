"""The fused training loops (`s2s_attn.fast.recurrence`), autograd functions with their own backward over the
compiled kernels, against the reference model's loops: the Bahdanau decoder's teacher-forced loop
(`AdditiveRecurrence`), the bidirectional encoder and the Luong decoder's GRU without input feeding (`GRULayer`, as
``nn.GRU`` over packed sequences or from a given state). In float32 each is as close to the reference in float64 as
the reference's own float32 loop is (the backward is checked against autograd's through the reference, in float64);
padding keeps exactly 0 attention and outputs; under bf16 autocast they stay as close to float32 as autocast's
reference loops; and the reference runs wherever the fused loops do not apply."""

import pytest
import torch

from s2s_attn.data.batching import make_batch
from s2s_attn.fast import gemm, kernels
from s2s_attn.fast.recurrence import fused_gru_applies, fused_recurrence_applies
from s2s_attn.model.encoder import GRUEncoder

from ..conftest import set_fast_loop

pytestmark = pytest.mark.usefixtures("compiled")  # the fused loops need the compiled kernels (conftest.py)

SOURCES = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
TARGETS = [[4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15]]


@pytest.fixture(autouse=True)
def blas_products(monkeypatch):
    """The products from the BLAS unless a test asks for oneDNN: the attention's gradients, differences of nearly
    equal terms, turn another library's rounding into 2-4x the error (still ~1e-4 relative), a difference of
    libraries, not of the loops' formulas."""
    monkeypatch.setattr(gemm, "_choice", "blas")


def run_decoder(model, fused: bool, bf16: bool = False):
    """Features, attention and every parameter's gradient of a random linear function of the features, with the
    fused loops of the encoder and decoder or the reference's (the forward under bf16 autocast if asked)."""
    set_fast_loop(model.encoder, fused)
    set_fast_loop(model.decoder, fused)
    model.zero_grad()
    batch = make_batch(SOURCES, TARGETS, [0, 1, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        values, final, keys_proj, mask = model.encode(batch.src, batch.src_len)
        features, attention = model.decoder.features(batch.tgt_in, final, keys_proj, values, mask)
    probe = torch.randn(features.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (features * probe.to(features.dtype)).sum().backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    return features.detach(), attention.detach(), grads


def run_encoder(encoder, fused: bool, src: torch.Tensor, lengths: torch.Tensor):
    set_fast_loop(encoder, fused)
    encoder.zero_grad()
    outputs, final = encoder(src, lengths)
    generator = torch.Generator().manual_seed(1)
    probe_out = torch.randn(outputs.shape, generator=generator, dtype=torch.float64).to(outputs.dtype)
    probe_final = torch.randn(final.shape, generator=generator, dtype=torch.float64).to(final.dtype)
    ((outputs * probe_out).sum() + (final * probe_final).sum()).backward()
    return outputs.detach(), final.detach(), {name: param.grad.clone() for name, param in encoder.named_parameters()}


def relative_error(got, exact) -> float:
    return float((got.double() - exact.double()).abs().max() / exact.double().abs().max())


def assert_as_accurate(fused, reference, exact, name):
    """The fused float32 result is as close to the reference's float64 one as the reference's float32 result (some
    gradients, the attention's above all, are differences of nearly equal terms: float32 leaves ~1e-4 of them, so
    a fixed tolerance could not tell rounding from a wrong formula)."""
    error, reference_error = relative_error(fused, exact), relative_error(reference, exact)
    assert error <= 3 * reference_error + 1e-5, f"{name}: {error:.3g} from float64, the reference {reference_error:.3g}"


def assert_float32_as_accurate_as_the_reference(model, run):
    """``run(model, fused)`` -> (tensors..., {name: gradient}): fused and reference in float32 against the reference
    in float64, every output and gradient."""
    *exact, exact_grads = run(model.double(), False)
    model.float()
    *fused, fused_grads = run(model, True)
    *reference, reference_grads = run(model, False)
    for index, (got, plain, want) in enumerate(zip(fused, reference, exact, strict=True)):
        assert_as_accurate(got, plain, want, f"output {index}")
    assert fused_grads.keys() == reference_grads.keys() == exact_grads.keys()
    for name, want in exact_grads.items():
        assert_as_accurate(fused_grads[name], reference_grads[name], want, name)
    return fused, fused_grads


@pytest.mark.parametrize("attention", ["bahdanau", "luong_concat"])
def test_the_fused_decoder_loop_is_as_accurate_as_the_reference_loop(make_tiny_model, attention):
    model = make_tiny_model(attention=attention).train()  # dropout 0 in the tiny model
    with torch.no_grad():  # sharper attention than the initialisation's near-uniform one: gradients worth comparing
        for name, param in model.decoder.attention.named_parameters():
            param.mul_(20.0 if "energy" in name else 3.0)
    (features, attention_weights), grads = assert_float32_as_accurate_as_the_reference(model, run_decoder)
    assert any(name.startswith("encoder.") for name in grads)  # through keys_proj, values and h0
    assert torch.all(attention_weights[1, :, 3:] == 0)  # the second source: two pieces and EOS, then padding
    torch.testing.assert_close(attention_weights.sum(-1), torch.ones(attention_weights.shape[:2]))


def test_the_luong_decoders_fused_gru_is_as_accurate_as_nn_gru(make_tiny_model):
    model = make_tiny_model(decoder="luong", attention="luong_general", input_feeding=False).train()
    _, grads = assert_float32_as_accurate_as_the_reference(model, run_decoder)
    assert "decoder.bridge.weight" in grads  # through the initial state


@pytest.mark.parametrize("choice", ["blas", "onednn"])
def test_the_fused_encoder_is_as_accurate_as_nn_gru_over_packed_sequences(monkeypatch, choice):
    """The encoder's two directions side by side in C++, with either library's products."""
    if choice == "onednn" and not gemm.onednn_available():
        pytest.skip("this PyTorch build has no oneDNN")
    monkeypatch.setattr(gemm, "_choice", choice)
    torch.manual_seed(0)
    encoder = GRUEncoder(30, 8, 20, dropout=0.0)  # 20: not a multiple of the vector width, the row tails run
    lengths = torch.tensor([7, 3, 5, 1])  # unsorted, and a one-piece sentence
    src = torch.randint(4, 30, (4, 7))
    for b, length in enumerate(lengths.tolist()):
        src[b, length:] = 0

    def run(module, fused):
        outputs, final, grads = run_encoder(module, fused, src, lengths)
        return outputs, final, grads

    (outputs, _), _ = assert_float32_as_accurate_as_the_reference(encoder, run)
    assert torch.all(outputs[1, 3:] == 0) and torch.all(outputs[3, 1:] == 0)  # padding


def largest_error(got, want) -> float:
    return float((got.float() - want).abs().max() / want.abs().max())


def test_under_bf16_autocast_the_fused_loop_is_as_close_to_float32_as_the_reference_loop(make_tiny_model):
    # bf16 products, float32 state: no further from float32 than autocast's own step-by-step loop
    model = make_tiny_model().train()
    exact_features, exact_attention, exact_grads = run_decoder(model, False)
    fused_features, fused_attention, fused_grads = run_decoder(model, True, bf16=True)
    plain_features, plain_attention, plain_grads = run_decoder(model, False, bf16=True)
    assert fused_attention.dtype == torch.float32
    assert torch.all(fused_attention[1, :, 3:] == 0)
    pairs = [(fused_features, plain_features, exact_features), (fused_attention, plain_attention, exact_attention)]
    pairs += [(fused_grads[name], plain_grads[name], exact) for name, exact in exact_grads.items()]
    for fused, plain, exact in pairs:
        assert largest_error(fused, exact) < 0.1  # the attention's gradients are ~1e-5: bf16 rounding shows
        assert largest_error(fused, exact) <= 1.5 * largest_error(plain, exact) + 1e-3


def test_under_bf16_autocast_the_fused_encoder_is_as_close_to_float32_as_nn_gru():
    torch.manual_seed(0)
    encoder = GRUEncoder(30, 8, 6, dropout=0.0)
    lengths = torch.tensor([7, 3, 5, 1])
    src = torch.randint(4, 30, (4, 7))
    exact = run_encoder(encoder, False, src, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = run_encoder(encoder, True, src, lengths)
        plain = run_encoder(encoder, False, src, lengths)
    assert torch.all(fused[0][1, 3:] == 0)
    pairs = [(fused[0], plain[0], exact[0]), (fused[1], plain[1], exact[1])]
    pairs += [(fused[2][name], plain[2][name], grad) for name, grad in exact[2].items()]
    for got, other, want in pairs:
        assert largest_error(got, want) < 0.05
        assert largest_error(got, want) <= 1.5 * largest_error(other, want) + 1e-3


def test_the_reference_loop_runs_where_the_fused_one_does_not_apply(make_tiny_model, monkeypatch):
    emb = torch.zeros(2, 3, 6)
    assert fused_recurrence_applies(make_tiny_model().decoder, emb)
    assert not fused_recurrence_applies(make_tiny_model(decoder_layers=2).decoder, emb)
    assert not fused_recurrence_applies(make_tiny_model(attention="luong_general").decoder, emb)
    assert not fused_recurrence_applies(make_tiny_model(decoder="luong").decoder, emb)
    assert not fused_recurrence_applies(make_tiny_model().decoder, emb.double())  # the kernels are float32
    with torch.autocast("cpu", dtype=torch.float16):
        assert not fused_recurrence_applies(make_tiny_model().decoder, emb)
    monkeypatch.setattr(kernels, "_mode", "false")
    assert not fused_recurrence_applies(make_tiny_model().decoder, emb)  # no kernels: the reference, not a copy


def test_nn_gru_runs_where_the_fused_gru_does_not_apply(monkeypatch):
    x = torch.zeros(2, 3, 8)
    assert fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True, bidirectional=True), x)
    assert fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True), x)
    assert not fused_gru_applies(torch.nn.GRU(8, 6, num_layers=2, batch_first=True, bidirectional=True), x)
    assert not fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True, bias=False), x)
    assert not fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True), x.to("meta"))  # off the CPU: cuDNN's GRU
    assert not fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True).double(), x.double())
    with torch.autocast("cpu", dtype=torch.float16):
        assert not fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True, bidirectional=True), x)
    with torch.inference_mode():  # decoding: the compiled forward loop in float32 without autocast only
        assert fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True, bidirectional=True), x)
        assert not fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True, bidirectional=True).double(), x.double())
    monkeypatch.setattr(kernels, "_mode", "false")
    assert not fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True, bidirectional=True), x)
    with torch.inference_mode():
        assert not fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True, bidirectional=True), x)
