"""SentencePiece subword tokenisation, trained on the train split only and cached.

Special ids are the same in every model: pad=0, unk=1, bos=2, eos=3.
The serialized SentencePiece models travel inside checkpoints, so ``translate`` needs no other file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from array import array
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def _train_model(lines: Iterable[str], vocab_size: int, model_type: str, coverage: float, seed: int) -> bytes:
    """Train one SentencePiece model in memory and return its serialized proto.

    ``vocab_size`` is an upper limit: a corpus too small for it gives a smaller vocabulary (see
    `Tokenizer.train_or_load`, which says so). SentencePiece's own errors (a vocabulary too small for the
    corpus's characters) become a ValueError that names the setting.
    """
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)  # the input sampling/shuffling is then reproducible
    try:
        _run_trainer(model, lines, vocab_size, model_type, coverage)
    except RuntimeError as error:
        reason = str(error).split("]")[-1].strip() or str(error).strip()
        raise ValueError(f"SentencePiece cannot build a vocabulary of {vocab_size} pieces (data.spm.vocab_size): "
                         f"{reason}") from None
    return model.getvalue()


def _run_trainer(model: io.BytesIO, lines: Iterable[str], vocab_size: int, model_type: str, coverage: float) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=coverage,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        hard_vocab_limit=False,  # a small corpus (or the toy task) may not support the full size
        input_sentence_size=2_000_000,
        shuffle_input_sentence=True,
        seed_sentencepiece_size=1_000_000,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )


class Tokenizer:
    """Source and target SentencePiece processors (the same one when the vocabulary is joint)."""

    def __init__(self, src_proto: bytes, tgt_proto: bytes) -> None:
        self.src_proto, self.tgt_proto = src_proto, tgt_proto
        self.src = spm.SentencePieceProcessor(model_proto=src_proto)
        self.tgt = spm.SentencePieceProcessor(model_proto=tgt_proto)

    @property
    def src_vocab_size(self) -> int:
        return self.src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt.get_piece_size()

    def encode_compact(self, lines: list[str], side: str = "src", chunk: int = 8192) -> list[array]:
        """Encode many lines (a training corpus) into int32 arrays, ``chunk`` lines at a time: 4 bytes
        per id instead of a list slot and an int object (about 4x less memory for 160k pairs)."""
        model = self.src if side == "src" else self.tgt
        compact: list[array] = []
        for start in range(0, len(lines), chunk):
            compact.extend(array("i", ids) for ids in model.encode(lines[start : start + chunk]))
        return compact

    def encode_src(self, lines: list[str]) -> list[list[int]]:
        return self.src.encode(lines)

    def encode_tgt(self, lines: list[str]) -> list[list[int]]:
        return self.tgt.encode(lines)

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        return self.tgt.decode(ids)

    def src_pieces(self, line: str) -> list[str]:
        return self.src.encode(line, out_type=str)

    def tgt_pieces_of(self, ids: list[int]) -> list[str]:
        return [self.tgt.id_to_piece(i) for i in ids]

    @classmethod
    def train_or_load(cls, data_dir: Path, spm_cfg: Mapping[str, Any], log=print) -> Tokenizer:
        """Train on ``data_dir/train.{src,tgt}`` (cached in ``data_dir``) or load the cached models."""
        settings = {
            "model_type": str(spm_cfg.get("model_type", "bpe")),
            "vocab_size": int(spm_cfg.get("vocab_size", 8000)),
            "joint": bool(spm_cfg.get("joint", True)),
            "src_vocab_size": spm_cfg.get("src_vocab_size"),
            "tgt_vocab_size": spm_cfg.get("tgt_vocab_size"),
            "character_coverage": float(spm_cfg.get("character_coverage", 1.0)),
            "seed": int(spm_cfg.get("seed", 1)),
        }
        if settings["model_type"] not in ("bpe", "unigram"):
            raise ValueError(f"unknown data.spm.model_type {settings['model_type']!r}; valid: bpe, unigram")
        for key in ("vocab_size", "src_vocab_size", "tgt_vocab_size"):
            if settings[key] is not None and int(settings[key]) <= 0:
                raise ValueError(f"data.spm.{key} must be a positive number, got {settings[key]}")
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        cache = Path(data_dir) / f"spm-{key}"
        src_file, tgt_file = cache / "src.model", cache / "tgt.model"
        if src_file.exists() and tgt_file.exists():
            log(f"using cached SentencePiece models in {cache}")
            return cls(src_file.read_bytes(), tgt_file.read_bytes())

        def read(side: str) -> list[str]:
            return (Path(data_dir) / f"train.{side}").read_text(encoding="utf-8").splitlines()

        log(f"training SentencePiece ({settings['model_type']}, "
            f"{'joint' if settings['joint'] else 'separate'} vocabulary) on the train split ...")
        common = (settings["model_type"], settings["character_coverage"], settings["seed"])
        if settings["joint"]:
            src_proto = tgt_proto = _train_model(read("src") + read("tgt"), settings["vocab_size"], *common)
        else:
            src_proto = _train_model(read("src"), int(settings["src_vocab_size"] or settings["vocab_size"]), *common)
            tgt_proto = _train_model(read("tgt"), int(settings["tgt_vocab_size"] or settings["vocab_size"]), *common)
        cache.mkdir(parents=True, exist_ok=True)
        for path, proto in ((src_file, src_proto), (tgt_file, tgt_proto)):
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(proto)
            os.replace(tmp, path)
        (cache / "settings.json").write_text(json.dumps(settings, indent=1))
        tok = cls(src_proto, tgt_proto)
        log(f"SentencePiece vocabularies: source {tok.src_vocab_size}, target {tok.tgt_vocab_size} -> {cache}")
        for side, size in (("src", tok.src_vocab_size), ("tgt", tok.tgt_vocab_size)):
            asked = int(settings["vocab_size"] if settings["joint"] else settings[f"{side}_vocab_size"] or
                        settings["vocab_size"])
            if size < asked:
                log(f"note: the {side} vocabulary has {size} pieces, fewer than the {asked} of data.spm: the "
                    "training text does not support more")
        return tok
