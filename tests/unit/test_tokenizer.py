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
