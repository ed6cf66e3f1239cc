"""The statistical aligner's side of guided alignment: words as the gold sets count them, symmetrisation, eflomal
run and cached, links carried to SentencePiece pieces, and the loss that pulls the attention towards them."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from s2s_attn.data import aligner
from s2s_attn.data.aligner import aligner_words, cached_alignment, grow_diag_final_and, symmetrize
from s2s_attn.data.guidance import piece_words, target_distribution
from s2s_attn.model.loss import guided_alignment_loss

if not aligner.eflomal_available() and os.environ.get("CI") == "true":  # make test installs it: missing is a bug
    raise RuntimeError("eflomal is not installed; make install (pip install '.[align]') installs it")
needs_eflomal = pytest.mark.skipif(not aligner.eflomal_available(), reason="eflomal is not installed (pip install "
                                                                           "eflomal)")


# ---- words ----------------------------------------------------------------------------------------


def test_french_words_are_written_out_as_in_the_hansards_gold_text():
    text = "L'homme n'a pas vu l'arbre du jardin aujourd'hui."
    words, spans = aligner_words(text, "fr")
    assert words == ["le", "homme", "ne", "a", "pas", "vu", "le", "arbre", "de", "le", "jardin", "aujourd'", "hui",
                     "."]
    assert [text[a:b] for a, b in spans][:3] == ["L'", "homme", "n'"]
    assert spans[8] == spans[9] == (text.index("du"), text.index("du") + 2)  # both words of "du" span its letters


def test_english_possessives_chinese_characters_and_punctuation_are_words_of_their_own():
    assert aligner_words("John's dog-house, isn't it?", "en")[0] == [
        "john", "'s", "dog", "-", "house", ",", "isn", "'", "t", "it", "?"]
    assert aligner_words("我们在这里。", "zh")[0] == ["我", "们", "在", "这", "里", "。"]
    assert aligner_words("   ", "en") == ([], [])


def test_pieces_are_mapped_to_the_words_whose_characters_they_cover():
    text = "L'homme du jardin."
    _, spans = aligner_words(text, "fr")  # le homme de le jardin .
    pieces = ["\u2581L", "'", "hom", "me", "\u2581du", "\u2581jar", "din", "."]
    assert piece_words(pieces, text, spans) == [[0], [0], [1], [1], [2, 3], [4], [4], [5]]
    assert piece_words(["\u2581L", "'", "homme", "\u2581x"], "L'homme du", aligner_words("L'homme du", "fr")[1]) \
        is None  # the pieces do not spell the text: no links rather than wrong ones


# ---- symmetrisation -------------------------------------------------------------------------------


def test_grow_diag_final_and_grows_the_intersection_by_neighbouring_union_links():
    forward = {(0, 0), (1, 1), (2, 1), (3, 3)}
    reverse = {(0, 0), (1, 1), (1, 2), (4, 4)}
    # (2, 1) and (1, 2) neighbour (1, 1) and each aligns a word not yet aligned; (3, 3) and (4, 4) join at the end
    # ("final-and": both of their words unaligned)
    assert grow_diag_final_and(forward, reverse) == {(0, 0), (1, 1), (2, 1), (1, 2), (3, 3), (4, 4)}
    assert symmetrize(forward, reverse, "intersection") == {(0, 0), (1, 1)}
    assert symmetrize(forward, reverse, "union") == forward | reverse
    assert symmetrize(forward, reverse, "reverse") == reverse
    with pytest.raises(ValueError, match="grow-diag-final-and"):
        symmetrize(forward, reverse, "grow-diag")


# ---- eflomal --------------------------------------------------------------------------------------


def _reordering_corpus(pairs: int = 400) -> tuple[list[list[str]], list[list[str]]]:
    """A language whose words translate one to one, the target in reverse order: gold link (i, n - 1 - i)."""
    rng = random.Random(3)
    src, tgt = [], []
    for _ in range(pairs):
        words = [f"w{rng.randrange(30)}" for _ in range(rng.randint(3, 8))]
        src.append(words)
        tgt.append([f"T{w[1:]}" for w in reversed(words)])
    return src, tgt


@needs_eflomal
def test_eflomal_finds_the_links_of_a_reordering_language_and_is_run_once(tmp_path, monkeypatch):
    src, tgt = _reordering_corpus()
    forward, reverse = cached_alignment(tmp_path / "eflomal", src, tgt, log=lambda message: None)
    gold = [{(i, len(s) - 1 - i) for i in range(len(s))} for s in src]
    for links in (forward, reverse):
        hits = sum(len(found & want) for found, want in zip(links, gold))
        assert hits / sum(map(len, gold)) > 0.9
    monkeypatch.setattr(aligner, "align_words", lambda *args: pytest.fail("the cached links were not reused"))
    assert cached_alignment(tmp_path / "eflomal", src, tgt, log=lambda message: None) == (forward, reverse)
    calls = []
    monkeypatch.setattr(aligner, "align_words", lambda s, t: calls.append(1) or ([set()] * len(s), [set()] * len(s)))
    cached_alignment(tmp_path / "eflomal", src[:-1], tgt[:-1], log=lambda message: None)  # other text: again
    assert calls == [1]


@needs_eflomal
def test_a_pair_with_an_empty_side_gets_no_links():
    src, tgt = _reordering_corpus(50)
    src[3], tgt[7] = [], []
    forward, reverse = aligner.align_words(src, tgt)
    assert forward[3] == reverse[3] == forward[7] == set()
    assert forward[4]


def test_without_eflomal_the_message_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_eflomal(name, *args, **kwargs):
        if name == "eflomal":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_eflomal)
    with pytest.raises(aligner.AlignerMissing, match="pip install eflomal"):
        aligner.align_words([["a"]], [["b"]])


# ---- the target attention and the loss ------------------------------------------------------------


def test_the_target_spreads_each_linked_row_evenly_and_leaves_the_rest_unsupervised():
    links = [np.array([[0, 0], [1, 0], [2, 1]], dtype=np.int16), np.zeros((0, 2), dtype=np.int16)]
    target = target_distribution(links, tgt_len=3, src_len=4)
    assert target.shape == (2, 3, 4)
    assert target[0, 0].tolist() == [0.5, 0.5, 0.0, 0.0]  # target piece 0 <- source pieces 0 and 1
    assert target[0, 1].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert target[0, 2].sum() == 0 and target[1].sum() == 0


def test_the_guided_loss_is_the_cross_entropy_of_the_attention_on_supervised_rows():
    attention = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]], requires_grad=True)
    target = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]])
    loss = guided_alignment_loss(attention, target)
    assert float(loss.detach()) == pytest.approx(-(0.5 * np.log(0.7 + 1e-6) + 0.5 * np.log(0.2 + 1e-6)), rel=1e-6)
    loss.backward()
    assert attention.grad[0, 1].abs().sum() == 0  # an unsupervised row gets no gradient
    assert attention.grad[0, 0, 1] < attention.grad[0, 0, 0] < 0  # the less attended linked piece is pulled harder
    with pytest.raises(ValueError, match="shape"):
        guided_alignment_loss(attention, target[:, :1])


# ---- the baseline beside the attention ------------------------------------------------------------


@needs_eflomal
def test_the_baseline_is_eflomal_trained_on_the_training_text_plus_the_gold_sentences(tmp_path):
    from s2s_attn.evaluation.alignment import AlignmentMonitor, Gold

    src, tgt = _reordering_corpus(300)
    (tmp_path / "train.src").write_text("".join(" ".join(s) + "\n" for s in src[:250]))
    (tmp_path / "train.tgt").write_text("".join(" ".join(t) + "\n" for t in tgt[:250]))
    gold_src, gold_tgt = [" ".join(s) for s in src[250:]], [" ".join(t) for t in tgt[250:]]
    gold = {k: Gold({(i, len(s) - 1 - i) for i in range(len(s))}, set()) for k, s in enumerate(src[250:])}
    for g in gold.values():
        g.possible.update(g.sure)
    monitor = AlignmentMonitor(gold_src, gold_tgt, gold, name="reordering")
    messages = []
    monitor.compute_baseline(tmp_path, "xx", "yy", log=messages.append)
    rows = monitor.aligner_rows
    assert list(rows) == ["forward", "reverse", "intersection", "union", "grow-diag-final-and"]
    assert rows["intersection"]["aer"] < 0.1 and rows["intersection"]["precision"] > 0.9
    assert f"intersection {rows['intersection']['aer']:.3f}" in messages[-1]  # the rows, logged once
    assert list(tmp_path.glob("eflomal-eval-*/alignment.json"))  # cached beside the training text
    monitor.aligner = "none"  # alignment.aligner=none: no baseline, no work
    monitor.aligner_rows = None
    monitor.compute_baseline(tmp_path, "xx", "yy", log=messages.append)
    assert monitor.aligner_rows is None
