"""The attention interface: every registered variant masks, normalises, batches and learns the same
way; the scores of each variant are checked on hand-made inputs; the registry matches the configs."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from s2s_attn.cli import config_dir
from s2s_attn.model.attention import ATTENTION_REGISTRY, build_attention, masked_softmax

ALL = sorted(ATTENTION_REGISTRY)
QUERY, KEY, SIZE, HEADS = 10, 12, 8, 2  # decoder state, encoder output, attention.size, attention.heads
LENGTHS = [7, 4, 1]  # real tokens of the three test sentences (src_len 7)


def make_attention(name, **kwargs):
    """A seeded attention of the test sizes (luong_dot, which needs query size == key size, gets 12)."""
    torch.manual_seed(0)
    sizes = dict(query_size=KEY if name == "luong_dot" else QUERY, key_size=KEY, attn_size=SIZE, heads=HEADS)
    return build_attention(name, **{**sizes, **kwargs})


def make_inputs(attention, tgt_len=None, src_len=7):
    """query (3, [tgt_len,] query_size), keys (3, src_len, key_size), mask (3, src_len)."""
    torch.manual_seed(1)
    mask = torch.arange(src_len)[None, :] < torch.tensor(LENGTHS)[:, None]  # (batch, src_len)
    keys = torch.randn(3, src_len, attention.key_size)
    query_shape = (3, attention.query_size) if tgt_len is None else (3, tgt_len, attention.query_size)
    return torch.randn(*query_shape), keys, mask


def attend(attention, query, keys, mask):
    return attention(query, attention.precompute(keys), keys, mask)


# --- the interface, for every registered attention ------------------------------------------------


def test_every_attention_has_a_config_and_every_config_names_a_registered_attention():
    configs = {p.stem: OmegaConf.load(p) for p in (Path(config_dir()) / "attention").glob("*.yaml")}
    assert sorted(configs) == ALL
    for stem, cfg in configs.items():
        assert cfg.name == stem and int(cfg.size) > 0
    assert configs["multihead"].heads == 4 and configs["multihead"].size % configs["multihead"].heads == 0


@pytest.mark.parametrize("tgt_len", [None, 5], ids=["one-step", "all-steps"])
@pytest.mark.parametrize("name", ALL)
def test_shapes_for_one_step_and_for_all_steps(name, tgt_len):
    attention = make_attention(name)
    query, keys, mask = make_inputs(attention, tgt_len)
    context, weights = attend(attention, query, keys, mask)
    steps = () if tgt_len is None else (tgt_len,)
    assert context.shape == (3, *steps, KEY)  # (batch, [tgt_len,] value_size)
    assert weights.shape == (3, *steps, 7)  # (batch, [tgt_len,] src_len)


@pytest.mark.parametrize("tgt_len", [None, 5], ids=["one-step", "all-steps"])
@pytest.mark.parametrize("name", ALL)
def test_padding_gets_exactly_zero_weight_and_real_tokens_sum_to_one(name, tgt_len):
    attention = make_attention(name)
    query, keys, mask = make_inputs(attention, tgt_len)
    _, weights = attend(attention, query, keys, mask)
    pad = ~mask if tgt_len is None else (~mask)[:, None, :].expand_as(weights)
    assert torch.all(weights[pad] == 0)
    assert torch.all(weights[~pad] > 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


@pytest.mark.parametrize("name", ALL)
def test_all_steps_at_once_equals_one_step_at_a_time(name):
    attention = make_attention(name)
    queries, keys, mask = make_inputs(attention, tgt_len=5)  # (batch, tgt_len, query)
    keys_proj = attention.precompute(keys)
    context_all, weights_all = attention(queries, keys_proj, keys, mask)
    for t in range(5):
        context_t, weights_t = attention(queries[:, t], keys_proj, keys, mask)
        torch.testing.assert_close(context_all[:, t], context_t)
        torch.testing.assert_close(weights_all[:, t], weights_t)


@pytest.mark.parametrize("name", ALL)
def test_whatever_sits_on_padding_does_not_change_the_context(name):
    attention = make_attention(name)
    query, keys, mask = make_inputs(attention)
    context, _ = attend(attention, query, keys, mask)
    garbage = keys.clone()
    garbage[~mask] = 1e3
    context2, _ = attend(attention, query, garbage, mask)
    torch.testing.assert_close(context, context2)


@pytest.mark.parametrize("name", ALL)
def test_extra_padding_appended_gives_the_same_context_and_weights(name):
    attention = make_attention(name)
    query, keys, mask = make_inputs(attention, tgt_len=4)
    context, weights = attend(attention, query, keys, mask)
    longer_keys = torch.cat([keys, torch.randn(3, 3, KEY)], dim=1)  # (batch, src_len + 3, key)
    longer_mask = torch.cat([mask, torch.zeros(3, 3, dtype=torch.bool)], dim=1)
    context2, weights2 = attend(attention, query, longer_keys, longer_mask)
    torch.testing.assert_close(context2, context)
    torch.testing.assert_close(weights2[..., :7], weights)
    assert torch.all(weights2[..., 7:] == 0)


@pytest.mark.parametrize("tgt_len", [None, 5], ids=["one-step", "all-steps"])
@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_every_parameter_the_query_and_the_keys(name, tgt_len):
    attention = make_attention(name)
    query, keys, mask = make_inputs(attention, tgt_len)
    query.requires_grad_(True)
    keys.requires_grad_(True)
    context, _ = attend(attention, query, keys, mask)
    (context * torch.randn_like(context)).sum().backward()
    for tensor_name, tensor in [*attention.named_parameters(), ("query", query), ("keys", keys)]:
        assert tensor.grad is not None, tensor_name
        assert torch.any(tensor.grad != 0), tensor_name


@pytest.mark.parametrize("name", [name for name in ALL if name != "luong_dot"])  # dot has no key layer
def test_keys_are_transformed_by_precompute_only_not_at_every_step(name):
    attention = make_attention(name)
    query, keys, mask = make_inputs(attention, tgt_len=2)
    keys_proj = attention.precompute(keys)
    calls = []
    attention.key_layer.register_forward_hook(lambda *_: calls.append(1))
    attention(query, keys_proj, keys, mask)
    attention(query[:, 0], keys_proj, keys, mask)
    assert calls == []


def test_masked_softmax_of_an_empty_row_is_zero_not_nan():
    weights = masked_softmax(torch.randn(2, 4), torch.tensor([[True, True, False, False], [False] * 4]))
    assert torch.all(weights[1] == 0)
    torch.testing.assert_close(weights[0].sum(), torch.tensor(1.0))


def test_unknown_attention_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid names: .*bahdanau.*luong_dot.*multihead"):
        build_attention("no_such_attention", query_size=4, key_size=4)


def test_wrong_query_size_fails_with_a_readable_message():
    attention = make_attention("bahdanau")
    _, keys, mask = make_inputs(attention)
    with pytest.raises(ValueError, match="query must be"):
        attention(torch.randn(3, 9), attention.precompute(keys), keys, mask)


# --- known values on hand-made inputs ---------------------------------------------------------------


def test_dot_attention_puts_almost_all_weight_on_the_key_equal_to_the_query():
    attention = build_attention("luong_dot", query_size=4, key_size=4)
    keys = torch.eye(4).unsqueeze(0)  # (1, 4 keys, 4): orthonormal keys
    query = 10 * keys[:, 2]  # (1, 4): key 2, scaled up -> scores (0, 0, 10, 0)
    context, weights = attend(attention, query, keys, torch.ones(1, 4, dtype=torch.bool))
    expected = math.exp(10) / (math.exp(10) + 3)
    torch.testing.assert_close(weights[0, 2], torch.tensor(expected))
    assert weights[0, 2] > 0.999
    torch.testing.assert_close(context, keys[:, 2], atol=1e-3, rtol=0)


def test_luong_dot_with_different_sizes_fails_and_suggests_luong_general():
    with pytest.raises(ValueError, match="luong_general"):
        build_attention("luong_dot", query_size=10, key_size=12)


def test_luong_general_with_identity_matrix_equals_dot():
    general, dot = make_attention("luong_general", query_size=KEY), make_attention("luong_dot")
    with torch.no_grad():
        general.key_layer.weight.copy_(torch.eye(KEY))
    query, keys, mask = make_inputs(dot, tgt_len=3)
    for got, expected in zip(attend(general, query, keys, mask), attend(dot, query, keys, mask)):
        torch.testing.assert_close(got, expected)


def test_luong_concat_is_bahdanau_attention_without_the_query_bias():
    concat, additive = make_attention("luong_concat"), make_attention("bahdanau")
    assert concat.query_layer.bias is None
    additive.load_state_dict({**concat.state_dict(), "query_layer.bias": torch.zeros(SIZE)})
    query, keys, mask = make_inputs(concat, tgt_len=3)
    for got, expected in zip(attend(concat, query, keys, mask), attend(additive, query, keys, mask)):
        torch.testing.assert_close(got, expected)


def test_scaled_dot_with_identity_projections_equals_dot_divided_by_sqrt_d():
    scaled = make_attention("scaled_dot", query_size=KEY, attn_size=KEY)
    with torch.no_grad():
        scaled.query_layer.weight.copy_(torch.eye(KEY))
        scaled.key_layer.weight.copy_(torch.eye(KEY))
    query, keys, mask = make_inputs(scaled, tgt_len=3)
    expected_weights = masked_softmax(torch.bmm(query, keys.transpose(1, 2)) / math.sqrt(KEY), mask)
    context, weights = attend(scaled, query, keys, mask)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(context, torch.bmm(expected_weights, keys))


def test_multihead_with_one_head_equals_scaled_dot_with_the_same_weights():
    # size == key size so that the value and output projections can be the identity
    scaled = make_attention("scaled_dot", attn_size=KEY)
    multi = make_attention("multihead", attn_size=KEY, heads=1)
    with torch.no_grad():
        multi.query_layer.weight.copy_(scaled.query_layer.weight)
        multi.key_layer.weight.copy_(scaled.key_layer.weight)
        multi.value_layer.weight.copy_(torch.eye(KEY))
        multi.output_layer.weight.copy_(torch.eye(KEY))
    for tgt_len in (None, 3):
        query, keys, mask = make_inputs(scaled, tgt_len)
        for got, expected in zip(attend(multi, query, keys, mask), attend(scaled, query, keys, mask)):
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("tgt_len", [None, 5], ids=["one-step", "all-steps"])
def test_multihead_keeps_each_heads_weights_and_returns_their_mean(tgt_len):
    attention = make_attention("multihead", heads=2)
    query, keys, mask = make_inputs(attention, tgt_len)
    _, weights = attend(attention, query, keys, mask)
    per_head = attention.last_head_weights  # (batch, heads, [tgt_len,] src_len)
    steps = () if tgt_len is None else (tgt_len,)
    assert per_head.shape == (3, 2, *steps, 7)
    torch.testing.assert_close(per_head.sum(-1), torch.ones(per_head.shape[:-1]))
    torch.testing.assert_close(per_head.mean(dim=1), weights)
    pad = (~mask).view(3, 1, *[1] * len(steps), 7).expand_as(per_head)
    assert torch.all(per_head[pad] == 0)
    assert not torch.allclose(per_head[:, 0], per_head[:, 1])  # the heads look at different things


def test_multihead_size_must_be_divisible_by_the_number_of_heads():
    with pytest.raises(ValueError, match="divisible"):
        make_attention("multihead", attn_size=10, heads=4)
