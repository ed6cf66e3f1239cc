"""SentencePiece: trained on train only, cached, special ids fixed, round trip."""

from pathlib import Path

import pytest

from s2s_attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer

SENTENCES_EN = ["the cat sat on the mat.", "a dog runs in the park.", "I am cold.", "we like green tea."] * 50
SENTENCES_FR = ["le chat est assis.", "un chien court dans le parc.", "J'ai froid.", "nous aimons le thé."] * 50


def write_train(tmp_path: Path) -> Path:
    (tmp_path / "train.src").write_text("\n".join(SENTENCES_EN) + "\n", encoding="utf-8")
    (tmp_path / "train.tgt").write_text("\n".join(SENTENCES_FR) + "\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
@pytest.mark.parametrize("joint", [True, False])
def test_round_trip_and_special_ids(tmp_path, model_type, joint):
    tok = Tokenizer.train_or_load(write_train(tmp_path), {"model_type": model_type, "vocab_size": 60, "joint": joint},
                                  log=lambda _: None)
    ids = tok.encode_tgt(["J'ai froid.", "le chat est assis."])
    assert tok.decode_tgt(ids) == ["J'ai froid.", "le chat est assis."]
    assert tok.tgt.pad_id() == PAD_ID and tok.tgt.unk_id() == UNK_ID
    assert tok.tgt.bos_id() == BOS_ID and tok.tgt.eos_id() == EOS_ID
    assert all(i > EOS_ID for seq in ids for i in seq)  # specials never appear inside text
    assert (tok.src_proto == tok.tgt_proto) == joint


def test_models_are_cached_and_reloaded(tmp_path):
    data = write_train(tmp_path)
    messages = []
    first = Tokenizer.train_or_load(data, {"vocab_size": 60}, log=messages.append)
    second = Tokenizer.train_or_load(data, {"vocab_size": 60}, log=messages.append)
    assert first.src_proto == second.src_proto
    assert any("cached" in m for m in messages)


def test_unknown_model_type_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="valid: bpe, unigram"):
        Tokenizer.train_or_load(write_train(tmp_path), {"model_type": "word"}, log=lambda _: None)


def test_each_side_keeps_only_the_pieces_of_its_training_text(tmp_path):
    """A joint model's English-only pieces get no row in the target vocabulary, nor French-only ones in the
    source's; the model's ids are positions in the kept lists, the specials first."""
    data = write_train(tmp_path)
    full = Tokenizer.train_or_load(data, {"vocab_size": 80, "prune_unused": False}, log=lambda _: None)
    pruned = Tokenizer.train_or_load(data, {"vocab_size": 80}, log=lambda _: None)
    assert full.src_vocab_size == full.tgt_vocab_size == full.src.get_piece_size()
    assert EOS_ID + 1 < pruned.tgt_vocab_size < full.tgt_vocab_size
    assert EOS_ID + 1 < pruned.src_vocab_size < full.src_vocab_size
    assert pruned.tgt_subset.kept[: EOS_ID + 1] == [PAD_ID, UNK_ID, BOS_ID, EOS_ID]
    french = sorted(set(SENTENCES_FR))
    ids = pruned.encode_tgt(french)
    assert all(EOS_ID < i < pruned.tgt_vocab_size for row in ids for i in row)
    assert pruned.decode_tgt(ids) == french
    assert [pruned.tgt_pieces_of(row) for row in ids] == [full.tgt_pieces_of(row) for row in full.encode_tgt(french)]
    english = sorted(set(SENTENCES_EN))
    src_ids = pruned.encode_src(english)
    assert [pruned.src_pieces_of(row) for row in src_ids] == [pruned.src_pieces(line) for line in english]


def test_a_piece_outside_a_sides_training_text_becomes_unk(tmp_path):
    pruned = Tokenizer.train_or_load(write_train(tmp_path), {"vocab_size": 80}, log=lambda _: None)
    assert UNK_ID in pruned.encode_tgt(["the park"])[0]  # English pieces are not in the French vocabulary
    assert UNK_ID not in pruned.encode_src(["the park"])[0]


def test_the_kept_pieces_are_cached_beside_the_models(tmp_path):
    data = write_train(tmp_path)
    messages = []
    first = Tokenizer.train_or_load(data, {"vocab_size": 80}, log=messages.append)
    second = Tokenizer.train_or_load(data, {"vocab_size": 80}, log=messages.append)
    assert sum("vocabularies from the training text" in m for m in messages) == 1  # counted once
    assert first.tgt_subset.kept == second.tgt_subset.kept
    assert list(data.glob("spm-*/used_pieces.json"))


def test_a_malformed_piece_list_is_refused(tmp_path):
    tok = Tokenizer.train_or_load(write_train(tmp_path), {"vocab_size": 80}, log=lambda _: None)
    with pytest.raises(ValueError, match="specials"):
        Tokenizer(tok.src_proto, tok.tgt_proto, tgt_kept=[0, 1, 3, 7])
    with pytest.raises(ValueError, match="pieces"):
        Tokenizer(tok.src_proto, tok.tgt_proto, tgt_kept=[0, 1, 2, 3, 10_000])


def test_a_damaged_list_of_kept_pieces_is_made_again(tmp_path):
    data = write_train(tmp_path)
    first = Tokenizer.train_or_load(data, {"vocab_size": 80}, log=lambda _: None)
    (used_file,) = data.glob("spm-*/used_pieces.json")
    used_file.write_text('{"src": [0, 1, 2')  # cut short
    messages = []
    again = Tokenizer.train_or_load(data, {"vocab_size": 80}, log=messages.append)
    assert again.tgt_subset.kept == first.tgt_subset.kept
    assert any("damaged" in m for m in messages)


def test_a_pruned_vocabulary_is_rounded_up_to_a_multiple_of_64_with_unused_pieces(tmp_path):
    from s2s_attn.data.tokenizer import VOCAB_MULTIPLE

    data = write_train(tmp_path)
    pruned = Tokenizer.train_or_load(data, {"vocab_size": 120, "prune_unused": True}, log=lambda _: None)
    full = Tokenizer.train_or_load(data, {"vocab_size": 120, "prune_unused": False}, log=lambda _: None)
    used = {i for row in full.encode_tgt(SENTENCES_FR) for i in row} | set(range(EOS_ID + 1))
    assert len(used) < VOCAB_MULTIPLE < full.tgt_vocab_size  # so the test shows the rounding
    assert pruned.tgt_vocab_size == VOCAB_MULTIPLE
    assert used <= set(pruned.tgt_subset.kept)
