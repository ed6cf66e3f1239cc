"""The attention interface: shapes, masking, registry."""

import pytest
import torch

from s2s_attn.model.attention import ATTENTION_REGISTRY, build_attention, masked_softmax


def make_inputs(batch=3, src_len=7, query_size=10, key_size=12):
    torch.manual_seed(0)
    lengths = torch.tensor([7, 4, 1])[:batch]
    mask = torch.arange(src_len)[None, :] < lengths[:, None]  # (batch, src_len)
    keys = torch.randn(batch, src_len, key_size)
    return torch.randn(batch, query_size), keys, mask


@pytest.mark.parametrize("name", sorted(ATTENTION_REGISTRY))
def test_padding_gets_exactly_zero_weight_and_real_tokens_sum_to_one(name):
    query, keys, mask = make_inputs()
    attention = build_attention(name, query_size=10, key_size=12, attn_size=8)
    context, weights = attention(query, attention.precompute(keys), keys, mask)
    assert context.shape == (3, 12)
    assert weights.shape == (3, 7)
    assert torch.all(weights[~mask] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))


@pytest.mark.parametrize("name", sorted(ATTENTION_REGISTRY))
def test_all_steps_at_once_equals_one_step_at_a_time(name):
    _, keys, mask = make_inputs()
    attention = build_attention(name, query_size=10, key_size=12, attn_size=8)
    queries = torch.randn(3, 5, 10)  # (batch, tgt_len, query)
    keys_proj = attention.precompute(keys)
    context_all, weights_all = attention(queries, keys_proj, keys, mask)
    assert context_all.shape == (3, 5, 12) and weights_all.shape == (3, 5, 7)
    for t in range(5):
        context_t, weights_t = attention(queries[:, t], keys_proj, keys, mask)
        torch.testing.assert_close(context_all[:, t], context_t)
        torch.testing.assert_close(weights_all[:, t], weights_t)


def test_padding_does_not_change_the_context():
    query, keys, mask = make_inputs()
    attention = build_attention("bahdanau", query_size=10, key_size=12, attn_size=8)
    context, _ = attention(query, attention.precompute(keys), keys, mask)
    garbage = keys.clone()
    garbage[~mask] = 1e3  # whatever sits on padding positions must not matter
    context2, _ = attention(query, attention.precompute(garbage), garbage, mask)
    torch.testing.assert_close(context, context2)


def test_masked_softmax_of_an_empty_row_is_zero_not_nan():
    weights = masked_softmax(torch.randn(2, 4), torch.tensor([[True, True, False, False], [False] * 4]))
    assert torch.all(weights[1] == 0)
    torch.testing.assert_close(weights[0].sum(), torch.tensor(1.0))


def test_unknown_attention_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid names: .*bahdanau"):
        build_attention("no_such_attention", query_size=4, key_size=4)


def test_wrong_query_size_fails_with_a_readable_message():
    _, keys, mask = make_inputs()
    attention = build_attention("bahdanau", query_size=10, key_size=12, attn_size=8)
    with pytest.raises(ValueError, match="query must be"):
        attention(torch.randn(3, 9), attention.precompute(keys), keys, mask)
