"""A fast path claims exact classes: a user's subclass of an attention runs its own code, in training and in
decoding, never silently replaced by a fused loop that computes its parent's maths."""

import pytest
import torch

from s2s_attn.data.batching import make_batch
from s2s_attn.decoding.beam import beam_search
from s2s_attn.decoding.greedy import greedy_decode
from s2s_attn.fast.recurrence import fused_recurrence_applies
from s2s_attn.fast.step import fast_path_applies
from s2s_attn.model.attention import ATTENTION_REGISTRY, BahdanauAttention

from ..conftest import set_fast_loop


class SharperBahdanauAttention(BahdanauAttention):
    """Bahdanau's score times three: an idea the fused loops know nothing about."""

    def score(self, query, keys_proj):
        return 3.0 * super().score(query, keys_proj)


SOURCES = [[5, 6, 7, 8, 9, 10], [8, 9, 11]]
TARGETS = [[4, 5, 6, 7, 8], [9, 10]]


@pytest.fixture
def parent_and_subclass(monkeypatch, make_tiny_model):
    """The tiny Bahdanau model and the same weights with the subclass registered as ``attention=sharper``."""
    monkeypatch.setitem(ATTENTION_REGISTRY, "sharper", SharperBahdanauAttention)
    parent = make_tiny_model(attention="bahdanau", init="xavier")
    with torch.no_grad():  # scores large enough that tripling them moves the weights visibly
        parent.decoder.attention.energy_layer.weight.mul_(10)
    subclass = make_tiny_model(attention="sharper", init="xavier")
    subclass.load_state_dict(parent.state_dict())
    return parent, subclass


def teacher_forced(model, fused: bool):
    """(summed loss, attention (batch, tgt_len, src_len)) of the example batch; ``fused`` False forces the
    decoder's step loop."""
    set_fast_loop(model.decoder, fused)
    batch = make_batch(SOURCES, TARGETS, [0, 1])
    loss, attention = model(batch.src, batch.src_len, batch.tgt_in, batch.tgt_out)
    set_fast_loop(model.decoder, True)
    return loss, attention


def test_no_fast_path_claims_a_subclass(parent_and_subclass, compiled):
    parent, subclass = parent_and_subclass
    emb = torch.zeros(2, 3, parent.config.emb_size)
    assert fused_recurrence_applies(parent.decoder, emb)
    assert not fused_recurrence_applies(subclass.decoder, emb)
    with torch.inference_mode():
        assert fast_path_applies(parent) and not fast_path_applies(subclass)


def test_a_subclass_that_changes_the_score_changes_the_training_loss(parent_and_subclass):
    parent, subclass = parent_and_subclass
    parent_loss, parent_attention = teacher_forced(parent.train(), fused=True)
    loss, attention = teacher_forced(subclass.train(), fused=True)
    reference_loss, reference_attention = teacher_forced(subclass, fused=False)
    assert not torch.allclose(loss, parent_loss, rtol=1e-4)
    assert not torch.allclose(attention, parent_attention, atol=1e-4)
    torch.testing.assert_close(loss, reference_loss)  # the subclass's own score, step by step
    torch.testing.assert_close(attention, reference_attention)


def test_a_subclass_that_changes_the_score_changes_what_decoding_gives(parent_and_subclass):
    parent, subclass = parent_and_subclass
    batch = make_batch(SOURCES, None, [0, 1])
    decoded = {}
    for name, model in (("parent", parent.eval()), ("subclass", subclass.eval())):
        hyps, attentions = greedy_decode(model, batch.src, batch.src_len, max_len=6, return_attention=True)
        best = beam_search(model, batch.src, batch.src_len, beam_size=3, max_len=6)
        decoded[name] = hyps, attentions, [sentence[0].score for sentence in best]
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(decoded["parent"][1], decoded["subclass"][1]))
    assert decoded["parent"][2] != pytest.approx(decoded["subclass"][2], abs=1e-4)
    # what greedy decoding attended to is what the subclass's own step loop gives for the decoded outputs
    hyps, attentions, _ = decoded["subclass"]
    for i, (ids, attention) in enumerate(zip(hyps, attentions)):
        single = make_batch([SOURCES[i]], [ids], [0])
        set_fast_loop(subclass.decoder, False)
        with torch.no_grad():
            _, reference = subclass(single.src, single.src_len, single.tgt_in, single.tgt_out)
        set_fast_loop(subclass.decoder, True)
        torch.testing.assert_close(attention, reference[0, : attention.size(0)], atol=1e-5, rtol=1e-4)
