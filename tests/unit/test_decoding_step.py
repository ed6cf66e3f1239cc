"""The pieces that make decoding fast compute what the plain operations compute: the block-wise argmax and
candidate selection, the in-place log-softmax, and the Bahdanau decoder's decoding step from its tables."""

import pytest
import torch

from s2s_attn.data.batching import make_batch
from s2s_attn.data.tokenizer import BOS_ID
from s2s_attn.decoding.beam import block_log_probs, select_candidates
from s2s_attn.decoding.greedy import chunk_size, first_argmax
from s2s_attn.decoding.step import (
    GenericStepper,
    OutputTable,
    decoder_tables,
    make_stepper,
    reorder_state,
    shared_tables,
)
from s2s_attn.decoding.stream import Compaction
from s2s_attn.fast import kernels
from s2s_attn.fast.step import (
    AdditiveBahdanauStepper,
    LuongStepper,
    bahdanau_tables,
    fast_path_applies,
    gru_update,
    luong_path_applies,
)


@pytest.mark.parametrize("vocab", [1, 2, 7, 25, 64, 100, 8000, 16000, 31999])
def test_chunk_size_divides_the_vocabulary(vocab):
    size = chunk_size(vocab)
    assert vocab % size == 0 and 1 <= size <= max(1, 2 * int(vocab**0.5))
    if vocab == 8000:
        assert size == 160


@pytest.mark.parametrize("vocab", [2, 25, 8000])
def test_first_argmax_is_argmax_ties_included(vocab):
    torch.manual_seed(0)
    logits = torch.randn(37, vocab)
    logits[3] = 1.0  # all equal: the first index
    logits[5, vocab // 2 :] = 50.0  # a tie across blocks
    logits[6, -1] = 60.0
    assert torch.equal(first_argmax(logits), logits.argmax(dim=-1))


@pytest.mark.parametrize("vocab,width,count", [(8000, 5, 10), (8000, 1, 10), (25, 4, 8), (7, 3, 6), (3, 1, 3)])
def test_select_candidates_gives_the_best_extensions_of_each_sentence(kernel_path, vocab, width, count):
    torch.manual_seed(1)
    n = 6
    logits = torch.randn(n * width, vocab) * 4
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    scores = -torch.rand(n, width) * 5
    scores[2, -1] = float("-inf")  # a dead row never wins
    top_scores, origin, token = select_candidates(logits.clone(), scores, count)
    every = (scores.double().view(-1, 1) + log_probs).view(n, width * vocab)
    expected, expected_index = every.topk(count, dim=1)
    torch.testing.assert_close(top_scores.double(), expected, rtol=0, atol=1e-5)
    live = torch.isfinite(expected)  # (a dead row's extensions are all -inf, in any order)
    assert torch.equal((origin * vocab + token)[live], expected_index[live])  # the same extensions, best first
    rows = torch.arange(n).unsqueeze(1) * width + origin
    torch.testing.assert_close(top_scores.double(), scores.double().gather(1, origin) + log_probs[rows, token],
                               rtol=0, atol=1e-5)
    pairs = origin * vocab + token
    assert all(len(set(row)) == count for row in pairs.tolist())  # distinct extensions


@pytest.mark.parametrize("vocab,size", [(8000, 160), (25, 5), (7, 7), (40, 20)])
def test_block_log_probs_gives_log_softmax_and_its_block_maxima(kernel_path, vocab, size):
    torch.manual_seed(2)
    logits = torch.randn(9, vocab) * 5
    expected = torch.log_softmax(logits.double(), dim=-1)
    values, block_best, lse = block_log_probs(logits.clone(), size)
    assert (lse is None) == (kernel_path == "general")
    log_probs = values if lse is None else values - lse.unsqueeze(1)
    # float32 rounding at the scale of the log-sum-exp, which is about the row's largest logit (~20 here, where one
    # ulp is 1.9e-6): x - lse, in the kernel and in ATen's log_softmax alike, is good to a few of its ulps
    atol = 4 * torch.finfo(torch.float32).eps * logits.abs().max().item()
    torch.testing.assert_close(log_probs.double(), expected, rtol=1e-6, atol=atol)
    best = expected.view(9, vocab // size, size).amax(-1)
    torch.testing.assert_close(block_best.double(), best, rtol=1e-6, atol=atol)
    # the block's best entry is its maximum, to the bit (select_candidates relies on it)
    assert torch.equal(block_best, log_probs.view(9, vocab // size, size).amax(-1))


def test_block_log_probs_takes_minus_infinity_logits(kernel_path):
    """A logit of -inf (a token ruled out) has probability 0: the log-sum-exp stays finite and exact."""
    logits = torch.randn(3, 256)
    logits[0, 5:40] = float("-inf")
    logits[1] = float("-inf")
    logits[1, 7] = 0.0
    values, _, lse = block_log_probs(logits.clone(), 64)
    log_probs = values if lse is None else values - lse.unsqueeze(1)
    torch.testing.assert_close(log_probs.double(), torch.log_softmax(logits.double(), dim=-1), rtol=1e-6, atol=1e-6)


def test_log_softmax_in_place_equals_the_plain_one():
    logits = torch.randn(40, 8000) * 3
    expected = torch.log_softmax(logits, dim=-1)
    buffer = logits.clone()
    result = torch.log_softmax(buffer, dim=-1, out=buffer)
    assert result.data_ptr() == buffer.data_ptr() and torch.equal(result, expected)


def compiled_ops():
    ops = kernels.ops()
    if ops is None:
        pytest.skip("the compiled kernels could not be built here (they need a C++ compiler and ninja)")
    return ops


@pytest.mark.parametrize("width", [1, 4, 5, 7])  # beam_mix takes up to 5 of a sentence's rows at a time
def test_the_beam_kernels_compute_the_steps_formulas_on_views_of_the_pools_buffers(width):
    """Beam search's attention and value mixture kernels, on the pool's tensors as they are: views of buffers
    wider than the sentences' sources, one copy per sentence for its ``width`` rows; a sentence with no real
    position gets all-zero weights; sizes (20, 70) that are not multiples of the vector width."""
    ops = compiled_ops()
    torch.manual_seed(3)
    n, src, attn, size, vocab = 3, 5, 20, 70, 11
    keys = torch.randn(n + 1, src + 2, attn)[:n, :src]  # (n, S, A) views, as `SentenceStepper.merge` keeps them
    values = torch.randn(n + 1, src + 2, size)[:n, :src]
    mask = torch.ones(n + 1, src + 2, dtype=torch.bool)[:n, :src]
    mask[0, 3:] = False
    mask[2] = False  # no real position
    query = torch.randn(n * width, attn + 6)[:, 6:]  # a row-strided view, as the state's query part
    v = torch.randn(attn)

    weights = torch.empty(n * width, src)
    ops.beam_additive_attention(query, keys, v, mask, width, weights)
    sentence = torch.arange(n * width) // width
    scores = (torch.tanh(query.double().unsqueeze(1) + keys.double()[sentence]) @ v.double())  # (rows, S)
    expected = torch.softmax(scores.masked_fill(~mask[sentence], float("-inf")), dim=-1).nan_to_num(0.0)
    torch.testing.assert_close(weights.double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.all(weights[~mask[sentence]] == 0)  # exactly 0 on padding, and for the sentence without a position
    torch.testing.assert_close(weights.sum(-1)[: 2 * width], torch.ones(2 * width))

    table = torch.randn(vocab, size)
    prev = torch.randint(0, vocab, (n * width,))
    out = torch.empty(n * width, size)
    ops.beam_mix(weights, values, width, table, prev, out)
    expected = table.double()[prev] + torch.bmm(weights.double().unsqueeze(1), values.double()[sentence]).squeeze(1)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="out of range"):
        ops.beam_mix(weights, values, width, table, prev.clone().fill_(vocab), out)


def test_decodings_tanh_is_within_a_few_float32_rounding_errors_everywhere():
    """Decoding's kernels (no gradient through them) use a rational tanh, cheaper than SLEEF's, and
    sigmoid(x) = (1 + tanh(x / 2)) / 2: through `gru_step` with z = sigmoid(-200) and h = gh = 0 the new state is
    (1 - z) tanh(gi_n), which stays within 4e-7 of tanh (float64) from -12 to 12 (the rational function saturates
    at 1 - 3e-7, so z at 1.5e-7), keeps its sign, never leaves [-1, 1], and is odd."""
    ops = compiled_ops()
    size = 512
    x = torch.cat([torch.linspace(-12, 12, 200 * size), torch.logspace(-10, 1, 28 * size)])
    x = torch.cat([x, -x]).view(-1, size)
    rows = x.size(0)
    gi = torch.cat([torch.zeros(rows, size), torch.full((rows, size), -200.0), x], dim=1)
    state = torch.empty(rows, size)
    ops.gru_step(gi, torch.zeros(rows, 3 * size), torch.zeros(rows, size), state)
    assert (state.double() - torch.tanh(x.double())).abs().max() <= 4e-7
    assert torch.equal(torch.sign(state), torch.sign(x)) and state.abs().max() <= 1.0
    torch.testing.assert_close(state[: rows // 2], -state[rows // 2 :], rtol=0, atol=0)


def test_the_gru_update_is_nn_grus_cell(compiled):
    torch.manual_seed(4)
    cell = torch.nn.GRUCell(6, 20)
    x, h = torch.randn(7, 6), torch.randn(7, 20)
    gi = torch.nn.functional.linear(x, cell.weight_ih, cell.bias_ih)
    gh = torch.cat([torch.nn.functional.linear(h, cell.weight_hh, cell.bias_hh), torch.randn(7, 3)], dim=1)[:, :60]
    with torch.no_grad():
        torch.testing.assert_close(gru_update(gi.clone(), gh, h), cell(x, h), rtol=1e-5, atol=1e-6)


THREE_SOURCES = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]


def assert_steps_agree(fast, plain, state_fast, state_plain, width: int) -> None:
    """Four steps of the fast stepper give the generic one's logits (into the given buffer), states and
    attention (0 on padding) for the three sentences of `THREE_SOURCES`, ``width`` rows each; after the second
    step the second sentence is done and the third moves into its place. The states: the same initial state as
    each stepper's ``prime_state`` gives it."""
    for step in range(4):
        prev = torch.randint(4, 25, (state_fast[0].size(1),))
        out = torch.empty(prev.size(0), 25)
        logits_f, state_fast, weights_f = fast.step(prev, state_fast, width, out=out)
        logits_p, state_plain, weights_p = plain.step(prev, state_plain, width)
        assert logits_f.data_ptr() == out.data_ptr()
        torch.testing.assert_close(logits_f, logits_p, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state_fast[0], state_plain[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(weights_f, weights_p, rtol=1e-5, atol=1e-6)
        if step <= 1:
            assert torch.all(weights_f.view(3, width, -1)[1, :, 3:] == 0)  # padding of the 2-piece source
        if step == 1:  # the second sentence is done
            keep = Compaction([0, 2], 3)  # the third sentence moves into the second one's place
            fast.keep(keep)
            plain.keep(keep)
            rows = torch.tensor([0, 1, 2, 6, 7, 8])
            state_fast, state_plain = reorder_state(state_fast, rows), reorder_state(state_plain, rows)


@pytest.mark.parametrize("attention", ["bahdanau", "luong_concat"])
@pytest.mark.parametrize("project_values", [False, True])
def test_the_bahdanau_tables_step_equals_the_decoder_step(make_tiny_model, compiled, attention, project_values):
    model = make_tiny_model(attention=attention)
    batch = make_batch(THREE_SOURCES, None, [0, 1, 2])
    width = 3
    with torch.inference_mode():
        assert fast_path_applies(model)
        values, final, keys_proj, mask = model.encode(batch.src, batch.src_len)
        fast = make_stepper(model, keys_proj, values, mask, project_values=project_values)
        plain = GenericStepper(model, keys_proj, values, mask)
        assert isinstance(fast, AdditiveBahdanauStepper)
        hidden = model.decoder.init_state(final)[0].repeat_interleave(width, dim=1)  # (1, 9, H)
        state = (hidden + 0.1 * torch.randn_like(hidden), None)
        assert_steps_agree(fast, plain, fast.prime_state(state), plain.prime_state(state), width)


@pytest.mark.parametrize("attention", ["luong_general", "luong_dot", "scaled_dot", "luong_concat"])
@pytest.mark.parametrize("input_feeding", [False, True])
@pytest.mark.parametrize("project_values", [False, True])
def test_the_luong_tables_step_equals_the_decoder_step(make_tiny_model, compiled, attention, input_feeding,
                                                      project_values):
    model = make_tiny_model(decoder="luong", attention=attention, input_feeding=input_feeding)
    batch = make_batch(THREE_SOURCES, None, [0, 1, 2])
    width = 3
    with torch.inference_mode():
        assert luong_path_applies(model) and not fast_path_applies(model)
        values, final, keys_proj, mask = model.encode(batch.src, batch.src_len)
        fast = make_stepper(model, keys_proj, values, mask, project_values=project_values)
        plain = GenericStepper(model, keys_proj, values, mask)
        assert isinstance(fast, LuongStepper)
        hidden, feed = model.decoder.init_state(final)
        hidden = hidden.repeat_interleave(width, dim=1)  # (1, 9, H)
        hidden = hidden + 0.1 * torch.randn_like(hidden)
        feed = None if feed is None else 0.1 * torch.randn(hidden.size(1), feed.size(1))  # a fed h~ that is not 0
        assert_steps_agree(fast, plain, fast.prime_state((hidden, feed)), plain.prime_state((hidden, feed)), width)


def test_the_luong_step_applies_to_one_layer_of_every_attention_but_multihead(make_tiny_model):
    model = make_tiny_model(decoder="luong", attention="luong_general")
    assert not luong_path_applies(model)  # not under inference_mode
    with torch.inference_mode():
        assert luong_path_applies(model)
        assert not luong_path_applies(model.train())
        assert not luong_path_applies(make_tiny_model(decoder="luong", attention="multihead"))
        assert not luong_path_applies(make_tiny_model(decoder="luong", decoder_layers=2))
        assert not luong_path_applies(make_tiny_model())  # the Bahdanau decoder has its own


def test_the_generic_step_gives_the_output_layers_logits_from_its_kept_weight(make_tiny_model):
    model = make_tiny_model(decoder="luong", attention="luong_general")
    batch = make_batch([[5, 6, 7], [8, 9]], [[4], [4]], [0, 1])
    with torch.inference_mode(), shared_tables(model):
        table = decoder_tables(model.decoder, OutputTable)
        assert decoder_tables(model.decoder, OutputTable) is table  # one per block
        assert table.output_weight_t.is_contiguous()
        values, final, keys_proj, mask = model.encode(batch.src, batch.src_len)
        state = model.decoder.init_state(final)
        prev = torch.full((2,), BOS_ID)
        out = torch.empty(2, model.decoder.output.out_features)
        kept, _, _ = GenericStepper(model, keys_proj, values, mask).step(prev, state, 1, out=out)
        plain, _, _ = model.decoder.step_logits(prev, state, keys_proj, values, mask)  # nn.Linear
    torch.testing.assert_close(kept, plain, rtol=1e-5, atol=1e-6)


def test_the_tables_are_built_once_per_block_and_follow_a_fused_adam_step(make_tiny_model):
    model = make_tiny_model()
    with torch.inference_mode(), shared_tables(model):  # what Translator.translate_ids opens per call
        first = bahdanau_tables(model.decoder)
        assert bahdanau_tables(model.decoder) is first  # every batch of the call shares them
    # fused Adam changes the weights in place without bumping their version counters: the next block must
    # still see the new weights (stale tables once took validation BLEU from 34 to 26 during training)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    optimizer.step()
    with torch.inference_mode(), shared_tables(model):
        second = bahdanau_tables(model.decoder)
        assert second is not first
        expected = model.decoder.rnn.embed_gates(model.decoder.embedding.weight[5])
        torch.testing.assert_close(second.emb_gates[5], expected)
    assert not fast_path_applies(model)  # not under inference_mode
    with torch.inference_mode():
        assert not fast_path_applies(model.train())
        assert not fast_path_applies(make_tiny_model(decoder="luong").eval())
        assert not fast_path_applies(make_tiny_model(attention="luong_general"))
