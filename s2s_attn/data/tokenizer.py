"""SentencePiece subword tokenisation, trained on the train split only and cached.

Special ids are the same in every model: pad=0, unk=1, bos=2, eos=3.
The serialized SentencePiece models travel inside checkpoints, so ``translate`` needs no other file.

Vocabularies from the training text
-----------------------------------
With ``data.spm.prune_unused`` (the default) each side's vocabulary is the pieces that occur in that side's
training text, plus the four specials, as OpenNMT-py builds its vocabularies, rounded up to a multiple of
`VOCAB_MULTIPLE` with the most frequent unused pieces. A joint SentencePiece model of 8,000 pieces for
English and French leaves 5,809 pieces that ever occur in the French training text and 4,771 in the English
(vocabularies of 5,824 and 4,800): the embeddings and the output layer need no rows for the others, which
could never be seen in training (their output logits would only learn to be low). The model's ids are then
positions in the kept list (the specials keep ids 0-3); a piece outside it (a new piece in a test sentence)
becomes <unk>. The lists are cached beside the SentencePiece models and saved in checkpoints.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sentencepiece as spm

from .stream import release_freed_memory

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
#: A pruned vocabulary's size is rounded up to a multiple of this with pieces the text does not use: the
#: vocabulary-wide work (the output product, the block-wise top-k of decoding, `chunk_size`) is fast on sizes
#: with large power-of-two divisors and slow on others (a prime size leaves blocks of one).
VOCAB_MULTIPLE = 64


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


class PieceSubset:
    """The SentencePiece ids one side's model keeps (``kept``, ascending, the specials 0-3 first): model id i
    is piece ``kept[i]``; any other piece maps to <unk>."""

    def __init__(self, kept: list[int], piece_size: int) -> None:
        if kept[: EOS_ID + 1] != list(range(EOS_ID + 1)) or any(b <= a for a, b in zip(kept, kept[1:])):
            raise ValueError("a vocabulary subset must be ascending SentencePiece ids starting with the specials")
        if kept[-1] >= piece_size:
            raise ValueError(f"a vocabulary subset names piece {kept[-1]}, but the SentencePiece model has "
                             f"{piece_size} pieces")
        self.kept = list(kept)
        self.to_model = [UNK_ID] * piece_size  # SentencePiece id -> model id
        for model_id, piece_id in enumerate(self.kept):
            self.to_model[piece_id] = model_id

    def encode(self, ids: list[int]) -> list[int]:
        return [self.to_model[i] for i in ids]

    def decode(self, ids: list[int]) -> list[int]:
        return [self.kept[i] for i in ids]


def kept_pieces(counts: Any) -> list[int]:
    """A pruned vocabulary from the number of times each SentencePiece id occurs in the training text: the used
    pieces and the specials, rounded up to a multiple of `VOCAB_MULTIPLE` with the most frequent unused pieces
    (SentencePiece numbers pieces from the most frequent), ascending."""
    size = len(counts)
    pieces = set(range(EOS_ID + 1)) | {i for i in range(size) if counts[i] > 0}
    unused = (i for i in range(size) if i not in pieces)
    for _ in range(min(-len(pieces) % VOCAB_MULTIPLE, size - len(pieces))):
        pieces.add(next(unused))
    return sorted(pieces)


class Tokenizer:
    """Source and target SentencePiece processors (the same one when the vocabulary is joint), and, with
    ``src_kept`` / ``tgt_kept``, each side's vocabulary as a subset of its model's pieces (see the module
    doc); ids in and out of every method are the model's ids."""

    def __init__(self, src_proto: bytes, tgt_proto: bytes, src_kept: list[int] | None = None,
                 tgt_kept: list[int] | None = None) -> None:
        self.src_proto, self.tgt_proto = src_proto, tgt_proto
        self.src = spm.SentencePieceProcessor(model_proto=src_proto)
        self.tgt = spm.SentencePieceProcessor(model_proto=tgt_proto)
        self.src_subset = None if src_kept is None else PieceSubset(src_kept, self.src.get_piece_size())
        self.tgt_subset = None if tgt_kept is None else PieceSubset(tgt_kept, self.tgt.get_piece_size())

    @property
    def src_vocab_size(self) -> int:
        return self.src.get_piece_size() if self.src_subset is None else len(self.src_subset.kept)

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt.get_piece_size() if self.tgt_subset is None else len(self.tgt_subset.kept)

    def _side(self, side: str) -> tuple[spm.SentencePieceProcessor, PieceSubset | None]:
        return (self.src, self.src_subset) if side == "src" else (self.tgt, self.tgt_subset)

    def _encode(self, lines: list[str], side: str) -> list[list[int]]:
        model, subset = self._side(side)
        encoded = model.encode(lines)
        return encoded if subset is None else [subset.encode(ids) for ids in encoded]

    def encode_src(self, lines: list[str]) -> list[list[int]]:
        return self._encode(lines, "src")

    def encode_tgt(self, lines: list[str]) -> list[list[int]]:
        return self._encode(lines, "tgt")

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        if self.tgt_subset is not None:
            ids = [self.tgt_subset.decode(row) for row in ids]
        return self.tgt.decode(ids)

    def src_pieces(self, line: str) -> list[str]:
        return self.src.encode(line, out_type=str)

    def _pieces_of(self, ids: list[int], side: str) -> list[str]:
        model, subset = self._side(side)
        return [model.id_to_piece(i) for i in (ids if subset is None else subset.decode(ids))]

    def src_pieces_of(self, ids: list[int]) -> list[str]:
        return self._pieces_of(ids, "src")

    def tgt_pieces_of(self, ids: list[int]) -> list[str]:
        return self._pieces_of(ids, "tgt")

    @classmethod
    def train_or_load(cls, data_dir: Path, spm_cfg: Mapping[str, Any], log=print, workers: int | None = None
                      ) -> Tokenizer:
        """Train on ``data_dir/train.{src,tgt}`` (cached in ``data_dir``) or load the cached models.

        With ``prune_unused`` (the default) the vocabularies are cut to the pieces of the training text, listed in
        the cache's ``used_pieces.json``; they are counted while the training split is encoded into its token
        store (`s2s_attn.data.store.build_store`, with ``workers`` threads), so the text is encoded once."""
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
        prune = bool(spm_cfg.get("prune_unused", True))
        workers = workers or os.cpu_count() or 1
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        cache = Path(data_dir) / f"spm-{key}"
        src_file, tgt_file = cache / "src.model", cache / "tgt.model"
        if src_file.exists() and tgt_file.exists():
            log(f"using cached SentencePiece models in {cache}")
            tok = cls(src_file.read_bytes(), tgt_file.read_bytes())
            return tok.pruned(data_dir, cache, workers, log) if prune else tok

        def read(side: str) -> Iterable[str]:  # streamed: SentencePiece samples what it trains on
            with open(Path(data_dir) / f"train.{side}", encoding="utf-8", newline="\n") as f:
                yield from (line.rstrip("\n") for line in f)

        log(f"training SentencePiece ({settings['model_type']}, "
            f"{'joint' if settings['joint'] else 'separate'} vocabulary) on the train split ...")
        common = (settings["model_type"], settings["character_coverage"], settings["seed"])
        if settings["joint"]:
            src_proto = tgt_proto = _train_model(itertools.chain(read("src"), read("tgt")), settings["vocab_size"],
                                                 *common)
        else:
            src_proto = _train_model(read("src"), int(settings["src_vocab_size"] or settings["vocab_size"]), *common)
            tgt_proto = _train_model(read("tgt"), int(settings["tgt_vocab_size"] or settings["vocab_size"]), *common)
        release_freed_memory()  # the trainer's heap, before the encoding pass needs its own
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
        return tok.pruned(data_dir, cache, workers, log) if prune else tok

    def pruned(self, data_dir: Path, cache: Path, workers: int, log=print) -> Tokenizer:
        """This tokenizer with each side's vocabulary cut to the pieces of its training text
        (``data_dir/train.{src,tgt}``), the lists cached in ``cache/used_pieces.json``. When they are not cached
        yet, the training split is encoded into its token store and the pieces are counted on the way."""
        from .store import build_store

        used_file = cache / "used_pieces.json"
        try:
            used = json.loads(used_file.read_text())
            if used.get("multiple") == VOCAB_MULTIPLE:
                return Tokenizer(self.src_proto, self.tgt_proto, used["src"], used["tgt"])
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, IndexError):  # a damaged cache file: count the pieces again
            log(f"{used_file} is damaged; listing the used pieces again")
        _, tok = build_store(Path(data_dir), self, workers, log, prune=True)
        used = {"multiple": VOCAB_MULTIPLE, "src": tok.src_subset.kept, "tgt": tok.tgt_subset.kept}
        tmp = used_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(used))
        os.replace(tmp, used_file)
        log(f"vocabularies from the training text: source {len(used['src'])} of {self.src.get_piece_size()} "
            f"pieces, target {len(used['tgt'])} of {self.tgt.get_piece_size()} (with the specials, rounded up to a "
            f"multiple of {VOCAB_MULTIPLE})")
        return tok
