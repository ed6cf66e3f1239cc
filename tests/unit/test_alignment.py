"""Attention as word alignment: AER, gold readers, piece -> word aggregation, link extraction, baseline."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from s2s_attn.evaluation.alignment import (
    AlignmentMonitor,
    Gold,
    aer,
    aggregate_to_words,
    attention_matrices,
    combine,
    detect_format,
    diagonal_alignment,
    evaluate_alignment,
    extract_argmax,
    extract_links,
    extract_threshold,
    piece_word_map,
    read_gold,
    read_naacl,
    read_pharaoh,
    swap,
    validate_gold,
    word_attention,
)

# ---- AER ------------------------------------------------------------------------------------------


def test_perfect_alignment_has_zero_aer():
    sure = {(0, 0), (1, 1), (2, 2)}
    assert aer(sure, sure, sure) == (0.0, 1.0, 1.0)


def test_predicting_exactly_the_sure_links_is_perfect_even_with_extra_possible_ones():
    sure = {(0, 0), (1, 1)}
    possible = sure | {(1, 2), (2, 1)}
    assert aer(sure, sure, possible) == (0.0, 1.0, 1.0)


def test_predicting_only_possible_links():
    # S = {(0,0)}, P = S ∪ {(1,1)}, A = {(1,1)}: |A∩P| = 1, |A∩S| = 0
    # precision 1/1, recall 0/1, AER = 1 - (0 + 1) / (1 + 1) = 0.5
    assert aer({(1, 1)}, {(0, 0)}, {(0, 0), (1, 1)}) == pytest.approx((0.5, 1.0, 0.0))
    # a gold with possible links only (S empty): hitting them costs nothing; recall has no denominator
    assert aer({(1, 1)}, set(), {(1, 1), (2, 2)}) == pytest.approx((0.0, 1.0, 0.0))


def test_worked_example():
    # S = {(0,0), (1,1)};  P = S ∪ {(1,2), (2,2)};  A = {(0,0), (1,2), (2,1)}
    # |A| = 3, |S| = 2, A∩S = {(0,0)} -> 1, A∩P = {(0,0), (1,2)} -> 2
    # precision = 2/3, recall = 1/2, AER = 1 - (1 + 2) / (3 + 2) = 0.4
    sure = {(0, 0), (1, 1)}
    possible = sure | {(1, 2), (2, 2)}
    error, precision, recall = aer({(0, 0), (1, 2), (2, 1)}, sure, possible)
    assert error == pytest.approx(0.4)
    assert precision == pytest.approx(2 / 3)
    assert recall == pytest.approx(0.5)


def test_sure_links_count_as_possible_even_when_the_caller_forgets():
    assert aer({(0, 0)}, {(0, 0)}, set()) == (0.0, 1.0, 1.0)


def test_corpus_level_sums_counts_instead_of_averaging_sentences():
    # sentence 1: A = S = {(0,0)} -> AER 0;  sentence 2: 3 wrong links, S = P = {(0,1)} -> AER 1
    # corpus: |A| = 4, |S| = 2, |A∩S| = |A∩P| = 1 -> AER = 1 - 2/6 = 2/3 (the mean would be 0.5)
    predicted = [{(0, 0)}, {(0, 0), (1, 1), (2, 2)}]
    sure = [{(0, 0)}, {(0, 1)}]
    error, precision, recall = aer(predicted, sure, sure)
    assert error == pytest.approx(2 / 3)
    assert precision == pytest.approx(1 / 4)
    assert recall == pytest.approx(1 / 2)


def test_empty_prediction_and_mismatched_corpora():
    assert aer(set(), {(0, 0)}, {(0, 0)}) == (1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="numbers of sentences"):
        aer([set()], [set(), set()], [set(), set()])


# ---- gold readers ---------------------------------------------------------------------------------


def test_read_naacl_zero_padded_one_based_and_sure_subset_of_possible(tmp_path):
    path = tmp_path / "dev.wa"
    path.write_text("0001 1 1 S\n0001 2 3 P\n\n0002 3 2 S\n0002 3 3 P\n0002 1 1\n0002 0 4 P\n")
    gold = read_naacl(path)
    assert sorted(gold) == [0, 1]  # sentence 0001 -> index 0
    assert gold[0] == Gold({(0, 0)}, {(0, 0), (1, 2)})
    assert gold[1].sure == {(2, 1), (0, 0)}  # no tag means S
    assert gold[1].possible == {(2, 1), (2, 2), (0, 0)}  # the NULL link (position 0) is skipped
    assert all(g.sure <= g.possible for g in gold.values())


def test_read_naacl_plain_numbers_like_the_trial_file(tmp_path):
    path = tmp_path / "trial.wa"
    path.write_text("1 1 1 S\n1 2 2 P\n37 4 5 S\n")
    gold = read_naacl(path)
    assert sorted(gold) == [0, 36]
    assert gold[36] == Gold({(3, 4)}, {(3, 4)})


@pytest.mark.parametrize("line,match", [("0001 1\n", "expected"), ("0001 a 1 S\n", "non-integer"),
                                        ("0001 1 1 X\n", "S or P"), ("0000 1 1 S\n", "start at 1")])
def test_read_naacl_reports_the_bad_line(tmp_path, line, match):
    path = tmp_path / "bad.wa"
    path.write_text("0001 1 1 S\n" + line)
    with pytest.raises(ValueError, match=f"line 2: .*{match}"):
        read_naacl(path)


def test_read_pharaoh_zero_based_with_possible_links_and_empty_lines(tmp_path):
    path = tmp_path / "dev.align"
    path.write_text("0-0 1-0 2-1-P \n\n3-4 3-5-P\n")
    gold = read_pharaoh(path)
    assert sorted(gold) == [0, 1, 2]
    assert gold[0] == Gold({(0, 0), (1, 0)}, {(0, 0), (1, 0), (2, 1)})
    assert gold[1] == Gold(set(), set())
    assert gold[2] == Gold({(3, 4)}, {(3, 4), (3, 5)})
    flipped = read_pharaoh(path, src_first=False)
    assert flipped[2] == Gold({(4, 3)}, {(4, 3), (5, 3)})
    with pytest.raises(ValueError, match="line 1"):
        (tmp_path / "bad.align").write_text("0:1\n")
        read_pharaoh(tmp_path / "bad.align")


def test_read_gold_detects_the_format_and_reverse_swaps(tmp_path):
    naacl, pharaoh = tmp_path / "a.wa", tmp_path / "a.align"
    naacl.write_text("0001 1 2 S\n")
    pharaoh.write_text("0-1\n")
    assert detect_format(naacl) == "naacl" and detect_format(pharaoh) == "pharaoh"
    assert read_gold(naacl) == read_gold(pharaoh) == {0: Gold({(0, 1)}, {(0, 1)})}
    flipped = {0: Gold({(1, 0)}, {(1, 0)})}
    assert read_gold(naacl, reverse=True) == read_gold(pharaoh, "pharaoh", reverse=True) == flipped
    with pytest.raises(ValueError, match="valid: auto, naacl, pharaoh"):
        read_gold(naacl, "giza")


def test_swap_links_and_gold():
    assert swap({(0, 1), (2, 3)}) == {(1, 0), (3, 2)}
    assert swap({4: Gold({(0, 1)}, {(0, 1), (1, 1)})}) == {4: Gold({(1, 0)}, {(1, 0), (1, 1)})}


def test_validate_gold_rejects_sentences_and_links_outside_the_text():
    src, tgt = [["a", "b"], ["c"]], [["x"], ["y", "z"]]
    validate_gold({0: Gold({(1, 0)}, {(1, 0)}), 1: Gold(set(), {(0, 1)})}, src, tgt)
    with pytest.raises(ValueError, match="sentence 3 but the text has only 2 lines"):
        validate_gold({2: Gold(set(), set())}, src, tgt)
    with pytest.raises(ValueError, match="sentence 1 is outside"):
        validate_gold({0: Gold({(0, 1)}, {(0, 1)})}, src, tgt)


# ---- pieces -> words ------------------------------------------------------------------------------


def test_piece_word_map_by_character_offsets():
    assert piece_word_map(["▁the", "▁un", "believ", "able", "▁cat"], ["the", "unbelievable", "cat"]) == [0, 1, 1, 1, 2]
    assert piece_word_map(["▁", "2", "▁", "."], ["2", "."]) == [0, 0, 1, 1]  # bare "▁" -> the next word
    assert piece_word_map(["▁", "f", "i", "n", "e", "▁do", "g"], ["ﬁne", "dog"]) == [0, 0, 0, 0, 0, 1, 1]  # NFKC
    assert piece_word_map(["▁a", "b", "c"], ["ab", "c"]) == [0, 0, 1]  # pieces need not follow "▁" word starts


def test_piece_word_map_fallbacks():
    assert piece_word_map(["▁a", "▁<unk>"], ["a", "bc"]) == [0, 1]  # characters differ: "▁" word starts
    assert piece_word_map(["ab", "cd"], ["a", "b", "c"]) == [0, 2]  # nothing matches: relative position
    assert piece_word_map(["▁a"], []) == [-1]
    assert piece_word_map([], ["a"]) == []


def _piece_attention(rng, n_tgt_pieces, n_src_pieces):
    """Random rows that sum to 1 over source pieces + EOS, one row per target piece + EOS."""
    att = rng.random((n_tgt_pieces + 1, n_src_pieces + 1))
    return att / att.sum(axis=1, keepdims=True)


def test_word_attention_sums_source_pieces_averages_target_pieces_and_drops_eos():
    src_words, src_pieces = ["the", "unbelievable", "cat"], ["▁the", "▁un", "believ", "able", "▁cat"]
    tgt_words, tgt_pieces = ["le", "chat", "incroyable"], ["▁le", "▁ch", "at", "▁incroyable"]
    att = _piece_attention(np.random.default_rng(0), len(tgt_pieces), len(src_pieces))  # (5, 6)
    words = word_attention(att, src_pieces, tgt_pieces, src_words, tgt_words, pieces="sum")
    assert words.shape == (3, 3)
    # "unbelievable" = 3 source pieces: their mass adds up; "chat" = 2 target pieces: their rows are averaged
    assert words[0, 1] == pytest.approx(att[0, 1:4].sum())
    assert words[1, 1] == pytest.approx((att[1, 1:4].sum() + att[2, 1:4].sum()) / 2)
    assert words[2, 0] == pytest.approx(att[3, 0])
    assert words[2, 2] == pytest.approx(att[3, 4])
    # the EOS row and column are gone: each row keeps all its mass except what went to the source EOS
    expected_rows = [1 - att[0, 5], 1 - (att[1, 5] + att[2, 5]) / 2, 1 - att[3, 5]]
    assert words.sum(axis=1) == pytest.approx(expected_rows)
    assert np.all(words.sum(axis=1) <= 1 + 1e-9)


def test_first_and_max_pool_the_pieces_of_a_word_and_read_shifts_the_rows():
    src_words, src_pieces = ["the", "unbelievable", "cat"], ["▁the", "▁un", "believ", "able", "▁cat"]
    tgt_words, tgt_pieces = ["le", "chat", "incroyable"], ["▁le", "▁ch", "at", "▁incroyable"]
    att = _piece_attention(np.random.default_rng(1), len(tgt_pieces), len(src_pieces))  # (5, 6)
    first = word_attention(att, src_pieces, tgt_pieces, src_words, tgt_words)  # the default
    assert first[1, 1] == pytest.approx(att[1, 1])  # "chat"'s first piece row, "unbelievable"'s first piece
    assert first[2, 2] == pytest.approx(att[3, 4])
    largest = word_attention(att, src_pieces, tgt_pieces, src_words, tgt_words, pieces="max")
    assert largest[1, 1] == pytest.approx(att[1:3, 1:4].max())
    read = word_attention(att, src_pieces, tgt_pieces, src_words, tgt_words, shift="read")
    assert read[0, 0] == pytest.approx(att[1, 0])  # "le" is read at the step after the one that predicts it
    assert read[2, 2] == pytest.approx(att[4, 4])  # the last word's: the EOS row
    with pytest.raises(ValueError, match="EOS row"):
        aggregate_to_words(att[:4], [0, 1, 1, 1, 2], [0, 1, 1, 2], 3, 3, shift="read")
    with pytest.raises(ValueError, match="piece pooling"):
        aggregate_to_words(att, [0, 1, 1, 1, 2], [0, 1, 1, 2], 3, 3, pieces="mean")


def test_aggregate_accepts_matrices_without_eos_and_checks_shapes():
    att = np.eye(3)
    # pieces (0, 1) form both the first source word and the first target word: an exact diagonal
    assert np.allclose(aggregate_to_words(att, [0, 0, 1], [0, 0, 1], 2, 2, "sum"), [[1.0, 0.0], [0.0, 1.0]])
    # target row (1, 0, 0) and (0, 1, 0) averaged; source pieces 1 and 2 summed into word 1
    assert np.allclose(aggregate_to_words(att, [0, 1, 1], [0, 0, 1], 2, 2, "sum"), [[0.5, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="does not match"):
        aggregate_to_words(np.eye(5), [0, 1], [0, 1], 2, 2)


# ---- extraction, combination, baseline ------------------------------------------------------------

WORD_ATT = np.array([  # rows: target words, columns: source words
    [0.70, 0.20, 0.05],
    [0.10, 0.45, 0.40],
    [0.00, 0.00, 0.00],  # a target word without pieces: no link
    [0.05, 0.05, 0.90],
])


def test_argmax_links_each_target_word_to_its_most_attended_source_word():
    assert extract_argmax(WORD_ATT) == {(0, 0), (1, 1), (2, 3)}
    assert extract_links(WORD_ATT, "argmax") == extract_argmax(WORD_ATT)
    assert extract_argmax(np.zeros((0, 0))) == set()


def test_threshold_keeps_every_link_above_it():
    assert extract_threshold(WORD_ATT) == {(0, 0), (1, 1), (2, 1), (2, 3)}  # default 0.3
    assert extract_threshold(WORD_ATT, 0.45) == {(0, 0), (1, 1), (2, 3)}
    assert extract_links(WORD_ATT, "threshold", 0.8) == {(2, 3)}
    with pytest.raises(ValueError, match="valid: argmax, threshold"):
        extract_links(WORD_ATT, "softmax")


def test_combine_forward_and_backward_links():
    forward, backward = {(0, 0), (1, 1)}, swap({(0, 0), (2, 1)})  # backward model: (target, source) links
    assert combine(forward, backward, "intersection") == {(0, 0)}
    assert combine(forward, backward, "union") == {(0, 0), (1, 1), (1, 2)}
    with pytest.raises(ValueError, match="valid: intersection, union"):
        combine(forward, backward, "grow-diag")


def test_diagonal_baseline():
    assert diagonal_alignment(3, 3) == {(0, 0), (1, 1), (2, 2)}
    assert diagonal_alignment(4, 2) == {(0, 0), (2, 1)}  # round(1 * 4/2) = 2
    assert diagonal_alignment(2, 4) == {(0, 0), (1, 1), (1, 2), (1, 3)}  # 0, 0.5 -> 1, 1, 1.5 -> 2 clipped to 1
    assert diagonal_alignment(0, 3) == set()
    assert len(diagonal_alignment(7, 11)) == 11  # one link per target word


# ---- teacher-forced attention from a (tiny, untrained) model --------------------------------------

SRC = ["the cat sat on the mat .", "a dog runs in the park .", "i am cold .", "we like green tea ."] * 30
TGT = ["le chat est assis .", "un chien court dans le parc .", "j' ai froid .", "nous aimons le thé ."] * 30


@pytest.fixture(scope="module")
def tiny_translator(tmp_path_factory):
    from s2s_attn.data.tokenizer import Tokenizer
    from s2s_attn.model.seq2seq import ModelConfig, Seq2Seq

    data = tmp_path_factory.mktemp("spm")
    (data / "train.src").write_text("\n".join(SRC) + "\n", encoding="utf-8")
    (data / "train.tgt").write_text("\n".join(TGT) + "\n", encoding="utf-8")
    tok = Tokenizer.train_or_load(data, {"vocab_size": 60, "joint": False}, log=lambda _: None)
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(src_vocab_size=tok.src_vocab_size, tgt_vocab_size=tok.tgt_vocab_size, emb_size=16,
                                encoder_hidden=12, decoder_hidden=20, output_size=16, attention_size=10, dropout=0.0))
    return SimpleNamespace(model=model, tokenizer=tok, device=torch.device("cpu"))


def test_attention_matrices_shapes_order_and_batching(tiny_translator):
    src = [line.split() for line in SRC[:4]] + ["the unbelievable cat".split()]
    tgt = [line.split() for line in TGT[:4]] + ["le chat incroyable".split()]
    tiny_translator.model.train()
    sents = attention_matrices(tiny_translator, src, tgt, batch_size=2)
    assert tiny_translator.model.training  # the caller's mode is restored
    for sent, s_words, t_words in zip(sents, src, tgt):
        assert sent.matrix.shape == (len(sent.tgt_pieces) + 1, len(sent.src_pieces) + 1)
        assert np.allclose(sent.matrix.sum(axis=1), 1.0, atol=1e-5)
        assert "".join(sent.src_pieces).replace("▁", "") == "".join(s_words)
        assert "".join(sent.tgt_pieces).replace("▁", "") == "".join(t_words)
    one_by_one = attention_matrices(tiny_translator, src, tgt, batch_size=1)  # padding changes nothing
    for a, b in zip(sents, one_by_one):
        assert np.allclose(a.matrix, b.matrix, atol=1e-5)


def test_evaluate_alignment_reports_model_and_diagonal_scores(tiny_translator):
    src, tgt = SRC[:4], TGT[:4]
    gold = {0: Gold({(0, 0), (1, 1)}, {(0, 0), (1, 1), (2, 2), (3, 3)}), 2: Gold({(2, 2)}, {(2, 2)}),
            9: Gold({(0, 0)}, {(0, 0)})}  # sentence 9 is not among the lines given: ignored
    result = evaluate_alignment(tiny_translator, src, tgt, gold)
    assert result["sentences"] == 4 and result["method"] == "argmax"
    assert result["gold_sure"] == 3 and result["gold_possible"] == 5
    assert result["links"] == sum(len(t.split()) for t in tgt)  # argmax: one link per target word
    diag = [diagonal_alignment(len(s.split()), len(t.split())) for s, t in zip(src, tgt)]
    sure = [gold.get(i, Gold(set(), set())).sure for i in range(4)]
    possible = [gold.get(i, Gold(set(), set())).possible for i in range(4)]
    assert (result["diagonal_aer"], result["diagonal_precision"], result["diagonal_recall"]) == pytest.approx(
        aer(diag, sure, possible))
    for key in ("aer", "precision", "recall"):
        assert 0.0 <= result[key] <= 1.0
    both = evaluate_alignment(tiny_translator, src, tgt, gold, method="threshold", threshold=0.2,
                              backward=tiny_translator, how="union")
    assert both["threshold"] == 0.2 and both["combined"] == "union"
    with pytest.raises(ValueError, match="outside the sentence"):
        evaluate_alignment(tiny_translator, src, tgt, {0: Gold({(40, 0)}, {(40, 0)})})


def write_gold_set(root):
    """A two-sentence en-fr gold set in the layout of the shared Hansards files (NAACL, 1-based)."""
    (root / "dev.e").write_text(f"{SRC[0]}\n{SRC[2]}\n", encoding="utf-8")
    (root / "dev.f").write_text(f"{TGT[0]}\n{TGT[2]}\n", encoding="utf-8")
    # "the cat ..." -> "le chat ...": the -> le sure, cat -> chat sure; "i am cold ." -> "j' ai froid .": am -> ai
    (root / "dev.wa").write_text("0001 1 1 S\n0001 2 2 S\n0002 2 2 P\n", encoding="utf-8")
    return OmegaConf.create({"name": "tiny_en_fr", "text": {"en": str(root / "dev.e"), "fr": str(root / "dev.f")},
                             "gold": str(root / "dev.wa"), "gold_langs": ["en", "fr"], "method": "argmax"})


def test_alignment_monitor_follows_the_data_direction(tmp_path, tiny_translator):
    acfg = write_gold_set(tmp_path)
    forward = AlignmentMonitor.from_config(acfg, "en", "fr")
    assert forward.src_lines[0] == SRC[0] and (0, 0) in forward.gold[0].sure and (1, 1) in forward.gold[1].possible
    backward = AlignmentMonitor.from_config(acfg, "fr", "en")  # French source: the gold links are swapped
    assert backward.src_lines[0] == TGT[0] and backward.gold[0].sure == {(0, 0), (1, 1)}
    result = forward(tiny_translator.model, tiny_translator.tokenizer, tiny_translator.device)
    assert result["sentences"] == 2 and 0.0 <= result["aer"] <= 1.0 and 0.0 <= result["diagonal_aer"] <= 1.0


def test_alignment_monitor_off_wrong_pair_and_missing_files(tmp_path):
    acfg = write_gold_set(tmp_path)
    assert AlignmentMonitor.from_config(None, "en", "fr") is None
    assert AlignmentMonitor.from_config(OmegaConf.create({"name": "none"}), "en", "fr") is None
    with pytest.raises(ValueError, match="en-fr gold links, but the data is en->zh"):
        AlignmentMonitor.from_config(acfg, "en", "zh")
    acfg.gold = str(tmp_path / "missing.wa")
    with pytest.raises(FileNotFoundError, match="missing.wa"):
        AlignmentMonitor.from_config(acfg, "en", "fr")
    acfg = write_gold_set(tmp_path)
    acfg.method = "best"
    with pytest.raises(ValueError, match="valid: argmax, threshold"):
        AlignmentMonitor.from_config(acfg, "en", "fr")
