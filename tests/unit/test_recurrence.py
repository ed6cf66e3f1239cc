"""The training loops as autograd functions with their own backward: the Bahdanau decoder's teacher-forced
loop (`AdditiveRecurrence`) gives the same outputs and gradients as the plain step-by-step loop, with exactly
0 attention on padding, and the bidirectional encoder (`BidirectionalGRU`) the same as ``nn.GRU`` over packed
sequences; the plain versions run wherever these do not apply."""

import pytest
import torch

from s2s_attn.data.batching import make_batch
from s2s_attn.fast.recurrence import AdditiveRecurrence, fused_recurrence_applies

from ..conftest import set_fast_loop

SOURCES = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
TARGETS = [[4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15]]


def run_decoder(model, fused: bool, dtype: torch.dtype, bf16: bool = False):
    """Features, attention and every parameter's gradient of a random linear function of the features (the
    forward under bf16 autocast if asked)."""
    set_fast_loop(model.decoder, fused)
    model.zero_grad()
    batch = make_batch(SOURCES, TARGETS, [0, 1, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        values, final, keys_proj, mask = model.encode(batch.src, batch.src_len)
        if model.decoder.name == "bahdanau":
            assert fused_recurrence_applies(model.decoder, keys_proj)  # claimed: fused picks the path
        features, attention = model.decoder.features(batch.tgt_in, final, keys_proj, values, mask)
    probe = torch.randn(features.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    (features * probe).sum().backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    return features.detach(), attention.detach(), grads


@pytest.mark.parametrize("attention", ["bahdanau", "luong_concat"])
def test_the_fused_loop_gives_the_plain_loops_outputs_and_gradients_in_float64(make_tiny_model, attention):
    model = make_tiny_model(attention=attention).double().train()  # dropout 0 in the tiny model
    fused_features, fused_attention, fused_grads = run_decoder(model, True, torch.float64)
    plain_features, plain_attention, plain_grads = run_decoder(model, False, torch.float64)
    torch.testing.assert_close(fused_features, plain_features, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fused_attention, plain_attention, rtol=1e-10, atol=1e-12)
    assert fused_grads.keys() == plain_grads.keys()
    assert any(name.startswith("encoder.") for name in fused_grads)  # through keys_proj, values and h0
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-8, atol=1e-12, msg=name)


def test_the_fused_loop_agrees_in_float32_and_keeps_padding_at_exactly_zero(make_tiny_model):
    model = make_tiny_model().train()
    fused_features, fused_attention, _ = run_decoder(model, True, torch.float32)
    plain_features, plain_attention, _ = run_decoder(model, False, torch.float32)
    torch.testing.assert_close(fused_features, plain_features, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused_attention, plain_attention, rtol=1e-5, atol=1e-6)
    assert torch.all(fused_attention[1, :, 3:] == 0)  # the second source: two pieces and EOS, then padding
    torch.testing.assert_close(fused_attention.sum(-1), torch.ones(fused_attention.shape[:2]))


def largest_error(got, want) -> float:
    return float((got.float() - want).abs().max() / want.abs().max())


def test_under_bf16_autocast_the_fused_loop_is_as_close_to_float32_as_the_plain_loop(make_tiny_model):
    # bf16 products, float32 state: no further from the float32 loop than autocast's own step-by-step loop
    model = make_tiny_model().train()
    exact_features, exact_attention, exact_grads = run_decoder(model, True, torch.float32)
    fused_features, fused_attention, fused_grads = run_decoder(model, True, torch.float32, bf16=True)
    plain_features, plain_attention, plain_grads = run_decoder(model, False, torch.float32, bf16=True)
    assert fused_attention.dtype == torch.float32
    assert torch.all(fused_attention[1, :, 3:] == 0)
    pairs = [(fused_features, plain_features, exact_features), (fused_attention, plain_attention, exact_attention)]
    pairs += [(fused_grads[name], plain_grads[name], exact) for name, exact in exact_grads.items()]
    for fused, plain, exact in pairs:
        assert largest_error(fused, exact) < 0.1  # the attention's gradients are ~1e-5: bf16 rounding shows
        assert largest_error(fused, exact) <= 1.5 * largest_error(plain, exact) + 1e-3


def test_under_bf16_autocast_the_fused_encoder_is_as_close_to_float32_as_nn_gru():
    from s2s_attn.model.encoder import GRUEncoder

    torch.manual_seed(0)
    encoder = GRUEncoder(30, 8, 6, dropout=0.0)
    lengths = torch.tensor([7, 3, 5, 1])
    src = torch.randint(4, 30, (4, 7))
    exact = run_encoder(encoder, True, src, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = run_encoder(encoder, True, src, lengths)
        plain = run_encoder(encoder, False, src, lengths)
    assert torch.all(fused[0][1, 3:] == 0)
    pairs = [(fused[0], plain[0], exact[0]), (fused[1], plain[1], exact[1])]
    pairs += [(fused[2][name], plain[2][name], grad) for name, grad in exact[2].items()]
    for got, other, want in pairs:
        assert largest_error(got, want) < 0.05
        assert largest_error(got, want) <= 1.5 * largest_error(other, want) + 1e-3


def test_the_backward_matches_finite_differences():
    torch.manual_seed(0)
    batch, steps, src, hidden, ctx, attn, emb = 2, 3, 4, 3, 5, 2, 3
    gates = 3 * hidden

    def leaf(*shape):
        return (0.5 * torch.randn(*shape, dtype=torch.float64)).requires_grad_()

    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    inputs = (leaf(batch, steps, emb), leaf(batch, hidden), leaf(batch, src, attn), leaf(batch, src, ctx), mask,
              leaf(gates, emb + ctx), leaf(gates), leaf(gates + attn, hidden), leaf(gates + attn), leaf(attn), None)
    assert torch.autograd.gradcheck(AdditiveRecurrence.apply, inputs)


def test_the_plain_loop_runs_where_the_fused_one_does_not_apply(make_tiny_model):
    emb_gates = torch.zeros(2, 3, 6)
    assert fused_recurrence_applies(make_tiny_model().decoder, emb_gates)
    assert not fused_recurrence_applies(make_tiny_model(decoder_layers=2).decoder, emb_gates)
    assert not fused_recurrence_applies(make_tiny_model(attention="luong_general").decoder, emb_gates)
    assert not fused_recurrence_applies(make_tiny_model(decoder="luong").decoder, emb_gates)
    with torch.autocast("cpu", dtype=torch.float16):
        assert not fused_recurrence_applies(make_tiny_model().decoder, emb_gates)


def run_encoder(encoder, fused: bool, src: torch.Tensor, lengths: torch.Tensor):
    set_fast_loop(encoder, fused)
    encoder.zero_grad()
    outputs, final = encoder(src, lengths)
    generator = torch.Generator().manual_seed(1)
    probe_out = torch.randn(outputs.shape, generator=generator, dtype=outputs.dtype)
    probe_final = torch.randn(final.shape, generator=generator, dtype=final.dtype)
    ((outputs * probe_out).sum() + (final * probe_final).sum()).backward()
    return outputs.detach(), final.detach(), {name: param.grad.clone() for name, param in encoder.named_parameters()}


def test_the_fused_encoder_gives_nn_grus_outputs_and_gradients_over_packed_sequences():
    from s2s_attn.model.encoder import GRUEncoder

    torch.manual_seed(0)
    encoder = GRUEncoder(30, 8, 6, dropout=0.0).double()
    lengths = torch.tensor([7, 3, 5, 1])  # unsorted, and a one-piece sentence
    src = torch.randint(4, 30, (4, 7))
    for b, length in enumerate(lengths.tolist()):
        src[b, length:] = 0
    fused_out, fused_final, fused_grads = run_encoder(encoder, True, src, lengths)
    plain_out, plain_final, plain_grads = run_encoder(encoder, False, src, lengths)
    torch.testing.assert_close(fused_out, plain_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fused_final, plain_final, rtol=1e-10, atol=1e-12)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-8, atol=1e-12, msg=name)
    assert torch.all(fused_out[1, 3:] == 0) and torch.all(fused_out[3, 1:] == 0)  # padding


def test_the_gru_layers_backward_matches_finite_differences():
    from s2s_attn.fast.recurrence import GRULayer

    torch.manual_seed(0)
    steps, batch, size = 4, 3, 2
    real = torch.tensor([[True, True, True], [True, True, False], [True, False, False], [True, False, False]])
    step_mask = torch.stack([real, real.flip(0)], dim=1).unsqueeze(-1)  # (S, 2, B, 1)

    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    # the encoder's two directions over sentences of different lengths, from zeros
    encoder = (leaf(steps, 2, batch, 3 * size), leaf(2, 3 * size, size), leaf(2, 3 * size), step_mask, None, None)
    assert torch.autograd.gradcheck(GRULayer.apply, encoder)
    # the Luong decoder's one direction over every step, from a given state
    decoder = (leaf(steps, 1, batch, 3 * size), leaf(1, 3 * size, size), leaf(1, 3 * size), None,
               leaf(1, batch, size), None)
    assert torch.autograd.gradcheck(GRULayer.apply, decoder)


def test_nn_gru_runs_where_the_fused_gru_does_not_apply():
    from s2s_attn.fast.recurrence import fused_gru_applies

    x = torch.zeros(2, 3, 8)
    assert fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True, bidirectional=True), x)
    assert fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True), x)
    assert not fused_gru_applies(torch.nn.GRU(8, 6, num_layers=2, batch_first=True, bidirectional=True), x)
    assert not fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True, bias=False), x)
    assert not fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True), x.to("meta"))  # off the CPU: cuDNN's GRU
    with torch.autocast("cpu", dtype=torch.float16):
        assert not fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True, bidirectional=True), x)
    with torch.inference_mode():  # decoding: nn.GRU's C++ loop, unless the compiled layer loop runs (float32)
        assert not fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True, bidirectional=True).double(), x.double())


def test_without_gradients_the_python_loop_gives_way_to_nn_gru(monkeypatch):
    from s2s_attn.fast import kernels
    from s2s_attn.fast.recurrence import fused_gru_applies

    monkeypatch.setattr(kernels, "_mode", "false")  # no compiled layer loop: nn.GRU's is faster than Python's
    with torch.inference_mode():
        assert not fused_gru_applies(torch.nn.GRU(8, 6, batch_first=True, bidirectional=True), torch.zeros(2, 3, 8))


def test_the_luong_decoders_fused_gru_gives_nn_grus_outputs_and_gradients(make_tiny_model):
    model = make_tiny_model(decoder="luong", attention="luong_general", input_feeding=False).double().train()
    fused_features, fused_attention, fused_grads = run_decoder(model, True, torch.float64)
    plain_features, plain_attention, plain_grads = run_decoder(model, False, torch.float64)
    torch.testing.assert_close(fused_features, plain_features, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fused_attention, plain_attention, rtol=1e-10, atol=1e-12)
    assert fused_grads.keys() == plain_grads.keys()
    assert "decoder.bridge.weight" in fused_grads  # through the initial state
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-8, atol=1e-12, msg=name)
