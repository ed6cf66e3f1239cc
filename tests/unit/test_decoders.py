"""Decoder styles: the registry, and the Luong decoder's input feeding and one-call parallel path.

The properties every decoder x attention pair must have (teacher forcing == step by step, batched
greedy == one at a time) are in test_model.py; these are the Luong-specific ones.
"""

import pytest
import torch
from torch.nn import functional as F

from s2s_attn.data.batching import make_batch
from s2s_attn.data.tokenizer import PAD_ID
from s2s_attn.model.attention import ATTENTION_REGISTRY
from s2s_attn.model.decoder import DECODER_REGISTRY, BahdanauDecoder, LuongDecoder

from ..conftest import set_fast_loop

ALL_ATTENTIONS = sorted(ATTENTION_REGISTRY)


def example_batch():
    return make_batch([[5, 6, 7, 8], [8, 9]], [[4, 5, 6, 7, 8], [9, 10]], [0, 1])  # target padded


def count_calls(module):
    """Record the input shape of every call of ``module``."""
    shapes = []
    module.register_forward_hook(lambda _module, inputs, _output: shapes.append(tuple(inputs[0].shape)))
    return shapes


def loss_teacher_forced(model, batch):
    logits, _ = model(batch.src, batch.src_len, batch.tgt_in)  # (batch, tgt_len, vocab)
    return F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD_ID, reduction="sum")


def loss_step_by_step(model, batch):
    values, final, keys_proj, mask = model.encode(batch.src, batch.src_len)
    state = model.decoder.init_state(final)
    log_probs = []
    for t in range(batch.tgt_in.size(1)):
        step_log_probs, state, _ = model.decoder.step(batch.tgt_in[:, t], state, keys_proj, values, mask)
        log_probs.append(step_log_probs)
    log_probs = torch.stack(log_probs, dim=1)  # (batch, tgt_len, vocab)
    return F.nll_loss(log_probs.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD_ID, reduction="sum")


def test_both_decoder_styles_are_registered():
    assert DECODER_REGISTRY == {"bahdanau": BahdanauDecoder, "luong": LuongDecoder}


@pytest.mark.parametrize("input_feeding", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("attention", ALL_ATTENTIONS)
def test_teacher_forcing_gives_the_loss_and_gradients_of_a_step_by_step_loop(
    make_tiny_model, attention, layers, input_feeding
):
    """Without input feeding the GRU runs once over the whole target; with it, one layer's loop takes the
    embeddings' part of the input gates for all steps at once. Both equal `step` called step by step."""
    model = make_tiny_model(attention=attention, decoder="luong", input_feeding=input_feeding,
                            decoder_layers=layers).train()
    batch = example_batch()
    parallel = loss_teacher_forced(model, batch)
    parallel_grads = torch.autograd.grad(parallel, list(model.parameters()), allow_unused=True)
    stepwise = loss_step_by_step(model, batch)
    stepwise_grads = torch.autograd.grad(stepwise, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(parallel, stepwise, rtol=1e-5, atol=1e-4)
    for (name, _), got, expected in zip(model.named_parameters(), parallel_grads, stepwise_grads):
        assert (got is None) == (expected is None), name
        if got is not None:
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("fused", [True, False], ids=["GRULayer", "nn.GRU"])
def test_without_input_feeding_teacher_forcing_runs_the_gru_once_over_the_whole_target(make_tiny_model, fused):
    from s2s_attn.fast import recurrence

    model = make_tiny_model(decoder="luong", input_feeding=False)
    set_fast_loop(model.decoder, fused)
    module_calls = count_calls(model.decoder.rnn)
    layer_calls = []
    original_apply = recurrence.GRULayer.apply

    def recording_apply(input_gates, *args):
        layer_calls.append(tuple(input_gates.shape))
        return original_apply(input_gates, *args)

    batch = example_batch()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recurrence.GRULayer, "apply", recording_apply)
        model(batch.src, batch.src_len, batch.tgt_in)
    if fused:  # the encoder's layer, then the decoder's: (tgt_len, one direction, batch, 3 x hidden)
        assert module_calls == [] and layer_calls[1:] == [(6, 1, 2, 60)]
    else:
        assert module_calls == [(2, 6, 16)]  # one call: (batch, tgt_len, emb_size)


def test_with_input_feeding_the_embeddings_input_gates_are_one_product_over_the_whole_target(make_tiny_model):
    model = make_tiny_model(decoder="luong", input_feeding=True)
    calls = count_calls(model.decoder.rnn)
    linear_inputs = []
    original_linear = F.linear
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(F, "linear", lambda x, *args: linear_inputs.append(tuple(x.shape)) or original_linear(x, *args))
        batch = example_batch()
        model(batch.src, batch.src_len, batch.tgt_in)
    assert calls == []  # one layer: the loop uses the GRU's weights, not the module
    assert (2, 6, 16) in linear_inputs  # (batch, tgt_len, emb_size): all steps' embeddings at once
    assert linear_inputs.count((2, 16)) == 6  # per step, only the fed h~ (batch, output_size) for its gates


def test_with_input_feeding_a_deeper_gru_runs_once_per_step_on_the_embedding_and_previous_output(make_tiny_model):
    model = make_tiny_model(decoder="luong", input_feeding=True, decoder_layers=2)
    calls = count_calls(model.decoder.rnn)
    batch = example_batch()
    model(batch.src, batch.src_len, batch.tgt_in)
    assert calls == [(2, 1, 16 + 16)] * 6  # (batch, 1, emb_size + output_size) at each of 6 steps


@pytest.mark.parametrize("input_feeding", [True, False])
def test_the_state_carries_the_previous_attentional_vector_only_with_input_feeding(make_tiny_model, input_feeding):
    model = make_tiny_model(decoder="luong", input_feeding=input_feeding, decoder_layers=2)
    batch = example_batch()
    values, final, keys_proj, mask = model.encode(batch.src, batch.src_len)
    hidden, extra = model.decoder.init_state(final)
    assert hidden.shape == (2, 2, 20)  # (layers, batch, decoder_hidden)
    if input_feeding:
        assert torch.all(extra == 0) and extra.shape == (2, 16)  # h~_0 = 0: (batch, output_size)
    else:
        assert extra is None
    _, (hidden, extra), _ = model.decoder.step(batch.tgt_in[:, 0], (hidden, extra), keys_proj, values, mask)
    assert hidden.shape == (2, 2, 20)
    assert (extra.shape == (2, 16)) if input_feeding else (extra is None)


def test_input_feeding_changes_the_translation_model(make_tiny_model):
    batch = example_batch()
    with_feeding = make_tiny_model(decoder="luong", input_feeding=True)
    without = make_tiny_model(decoder="luong", input_feeding=False)
    logits_with, _ = with_feeding(batch.src, batch.src_len, batch.tgt_in)
    logits_without, _ = without(batch.src, batch.src_len, batch.tgt_in)
    assert not torch.allclose(logits_with[:, 1:], logits_without[:, 1:])


def test_the_bahdanau_decoder_ignores_input_feeding(make_tiny_model):
    batch = example_batch()
    on = make_tiny_model(decoder="bahdanau", input_feeding=True)
    off = make_tiny_model(decoder="bahdanau", input_feeding=False)
    torch.testing.assert_close(on(batch.src, batch.src_len, batch.tgt_in), off(batch.src, batch.src_len, batch.tgt_in))


@pytest.mark.parametrize("input_feeding", [True, False])
def test_luong_padding_of_the_source_gets_no_attention(make_tiny_model, input_feeding):
    model = make_tiny_model(decoder="luong", input_feeding=input_feeding, attention="multihead")
    batch = example_batch()
    _, attention = model(batch.src, batch.src_len, batch.tgt_in)
    assert torch.all(attention[1, :, 3:] == 0)  # the second source is 2 pieces + EOS
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 6))
