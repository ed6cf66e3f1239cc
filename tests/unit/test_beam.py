"""Beam search: the invariants, for every decoder style and every attention (``any_tiny_model``).

The tiny models are untrained; their output layer is sharpened and EOS made likely enough that
hypotheses of different lengths end within the length limit, so the search has real choices to make.
"""

import pytest
import torch

from s2s_attn.data.batching import make_batch
from s2s_attn.data.tokenizer import BOS_ID, EOS_ID
from s2s_attn.decoding.beam import beam_search, length_normaliser
from s2s_attn.decoding.greedy import greedy_decode

SOURCES = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15], [16, 17, 18, 19]]


@pytest.fixture
def model(any_tiny_model):
    with torch.no_grad():
        output = any_tiny_model.decoder.output
        output.weight.mul_(15.0)
        output.bias[EOS_ID] += 0.5  # hypotheses that end at once, after a few tokens, or at the limit
    return any_tiny_model


@torch.no_grad()
def teacher_forced_log_prob(model, source: list[int], tokens: list[int], ended: bool) -> float:
    """log p(tokens [+ EOS] | source) under teacher forcing: the score a hypothesis must carry."""
    target = tokens + ([EOS_ID] if ended else [])
    batch = make_batch([source], [target], [0])
    tgt_in = torch.tensor([[BOS_ID] + target[:-1]]) if target else torch.tensor([[BOS_ID]])
    logits, _ = model(batch.src, batch.src_len, tgt_in)
    log_probs = torch.log_softmax(logits.float(), dim=-1)[0]
    return float(log_probs[torch.arange(len(target)), torch.tensor(target)].sum())


def test_beam_size_one_is_greedy_decoding(model):
    batch = make_batch(SOURCES, None, list(range(len(SOURCES))))
    greedy, _ = greedy_decode(model, batch.src, batch.src_len, max_len=12)
    beam = beam_search(model, batch.src, batch.src_len, beam_size=1, max_len=12)
    assert [hyps[0].tokens for hyps in beam] == greedy


def test_a_batch_gives_the_same_translations_as_one_sentence_at_a_time(model):
    batch = make_batch(SOURCES, None, list(range(len(SOURCES))))
    batched = beam_search(model, batch.src, batch.src_len, beam_size=4, nbest=3, max_len=12)
    for i, source in enumerate(SOURCES):
        single = make_batch([source], None, [0])
        alone = beam_search(model, single.src, single.src_len, beam_size=4, nbest=3, max_len=12)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[i]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[i]], abs=1e-4)


def test_nbest_is_sorted_and_scores_are_the_models_own_log_probabilities(model):
    batch = make_batch(SOURCES, None, list(range(len(SOURCES))))
    max_len = 12
    results = beam_search(model, batch.src, batch.src_len, beam_size=5, nbest=5, max_len=max_len)
    for source, hyps in zip(SOURCES, results):
        assert len(hyps) == 5
        norms = [h.norm_score for h in hyps]
        assert norms == sorted(norms, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 5  # distinct hypotheses
        for h in hyps:
            ended = len(h.tokens) < max_len  # cut at the limit: no EOS
            assert h.score == pytest.approx(teacher_forced_log_prob(model, source, h.tokens, ended), abs=1e-4)
            length = len(h.tokens) + ended
            assert h.norm_score == pytest.approx(h.score / length_normaliser(length, "gnmt", 0.6), abs=1e-5)


def test_a_wider_beam_never_finds_a_worse_best_hypothesis_than_greedy(model):
    batch = make_batch(SOURCES, None, list(range(len(SOURCES))))
    greedy = beam_search(model, batch.src, batch.src_len, beam_size=1, max_len=12, length_penalty="none")
    wide = beam_search(model, batch.src, batch.src_len, beam_size=6, max_len=12, length_penalty="none")
    for g, w in zip(greedy, wide):
        assert w[0].score >= g[0].score - 1e-5


def test_attention_of_the_chosen_hypothesis_covers_its_tokens_and_the_real_source_only(model):
    batch = make_batch([[5, 6, 7, 8], [9]], None, [0, 1])
    results = beam_search(model, batch.src, batch.src_len, beam_size=3, max_len=8, return_attention=True)
    for hyps, n_src in zip(results, (5, 2)):  # pieces + EOS
        best = hyps[0]
        rows = len(best.tokens) + (1 if len(best.tokens) < 8 else 0)
        assert best.attention.shape == (rows, n_src)
        torch.testing.assert_close(best.attention.sum(-1), torch.ones(rows))


def test_length_penalties_and_coverage_change_the_ranking_not_the_scores(model):
    batch = make_batch(SOURCES[:2], None, [0, 1])
    for kind, alpha in (("gnmt", 1.0), ("average", 1.0), ("none", 0.0)):
        results = beam_search(model, batch.src, batch.src_len, beam_size=3, nbest=3, max_len=12,
                              length_penalty=kind, alpha=alpha, coverage_penalty=0.2)
        for hyps in results:
            assert [h.norm_score for h in hyps] == sorted((h.norm_score for h in hyps), reverse=True)


@pytest.mark.parametrize("kwargs,match", [
    (dict(beam_size=0), "beam size must be at least 1"),
    (dict(beam_size=2, nbest=3), "nbest must be between 1 and the beam size"),
    (dict(length_penalty="wu"), "valid: gnmt, average, none"),
])
def test_bad_settings_fail_clearly(tiny_model, kwargs, match):
    batch = make_batch([[5, 6]], None, [0])
    with pytest.raises(ValueError, match=match):
        beam_search(tiny_model, batch.src, batch.src_len, **kwargs)


def test_the_length_limit_is_per_sentence_so_batch_mates_do_not_change_a_translation(tiny_model):
    # untrained and without the EOS bias, the tiny model runs to the limit: 2 x (source + EOS) + 10
    sources = [[5, 6, 7, 8, 9, 10, 11, 12], [13]]
    batch = make_batch(sources, None, [0, 1])
    greedy, _ = greedy_decode(tiny_model, batch.src, batch.src_len)
    beam = beam_search(tiny_model, batch.src, batch.src_len, beam_size=3)
    for i, source in enumerate(sources):
        single = make_batch([source], None, [0])
        assert greedy_decode(tiny_model, single.src, single.src_len)[0][0] == greedy[i]
        assert beam_search(tiny_model, single.src, single.src_len, beam_size=3)[0][0].tokens == beam[i][0].tokens
        assert len(greedy[i]) <= 2 * (len(source) + 1) + 10 and len(beam[i][0].tokens) <= 2 * (len(source) + 1) + 10
    assert len(greedy[1]) < len(greedy[0])
