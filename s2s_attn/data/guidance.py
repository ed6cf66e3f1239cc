"""Guided alignment's targets: for each training pair, the source pieces that each target piece should attend to.

The statistical aligner's word links (`s2s_attn.data.aligner`, computed once per prepared data set and cached in
``<prepared data>/eflomal-train/``) are symmetrised and carried to SentencePiece pieces: target piece t is linked to
every source piece of every source word linked to a word that t covers. A pair whose pieces do not spell its words'
characters (a normalisation the words did not see) gets no links; such pairs are counted and reported.

`piece_links` gives one int16 array (links, 2) of (source piece, target piece) per pair; `target_distribution` turns
a batch's links into the attention it is pulled towards.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..outputs import write_atomic
from .aligner import aligner_words, cached_alignment, symmetrize

#: bump when the way links are carried to pieces changes, so that cached piece links are not reused
PIECE_LINKS_VERSION = 1


def _pieces(model, lines: Sequence[str]) -> list[list[str]]:
    return model.encode(list(lines), out_type=str)


def piece_links(data_dir: Path, tokenizer, src_lines: Sequence[str], tgt_lines: Sequence[str], src_lang: str,
                tgt_lang: str, symmetrization: str, log: Callable[[str], None] = print) -> list[np.ndarray]:
    """The guided-alignment links of every training pair (the lines of ``train.src`` / ``train.tgt``), as pieces
    of ``tokenizer``: one int16 array (links, 2) of (source piece, target piece) per pair. Cached in
    ``<data_dir>/eflomal-train/pieces-<key>.npz`` for these lines, SentencePiece models and symmetrisation."""
    key = hashlib.sha256()
    for part in (str(PIECE_LINKS_VERSION), symmetrization, src_lang, tgt_lang, "\n".join(src_lines),
                 "\n".join(tgt_lines)):
        key.update(part.encode("utf-8") + b"\0")
    key.update(tokenizer.src_proto + b"\0" + tokenizer.tgt_proto)
    cache = Path(data_dir) / "eflomal-train" / f"pieces-{key.hexdigest()[:16]}.npz"
    try:
        with np.load(cache) as stored:
            offsets, links = stored["offsets"], stored["links"]
        if len(offsets) == len(src_lines) + 1:
            log(f"guided alignment: eflomal links ({symmetrization}) from {cache}")
            return [links[offsets[k]:offsets[k + 1]] for k in range(len(src_lines))]
    except (OSError, KeyError, ValueError):
        pass
    result = _piece_links(data_dir, tokenizer, src_lines, tgt_lines, src_lang, tgt_lang, symmetrization, log)
    offsets = np.zeros(len(result) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(pairs) for pairs in result])
    buffer = io.BytesIO()
    np.savez(buffer, offsets=offsets, links=np.concatenate(result) if result else np.zeros((0, 2), np.int16))
    write_atomic(cache, buffer.getvalue())
    return result


def _piece_links(data_dir: Path, tokenizer, src_lines: Sequence[str], tgt_lines: Sequence[str], src_lang: str,
                 tgt_lang: str, symmetrization: str, log: Callable[[str], None]) -> list[np.ndarray]:
    src_words = [aligner_words(line, src_lang) for line in src_lines]
    tgt_words = [aligner_words(line, tgt_lang) for line in tgt_lines]
    forward, reverse = cached_alignment(Path(data_dir) / "eflomal-train", [w for w, _ in src_words],
                                        [w for w, _ in tgt_words], log=log)
    src_pieces, tgt_pieces = _pieces(tokenizer.src, src_lines), _pieces(tokenizer.tgt, tgt_lines)
    result: list[np.ndarray] = []
    unmapped = linked_pairs = 0
    empty = np.zeros((0, 2), dtype=np.int16)
    for k in range(len(src_lines)):
        links = symmetrize(forward[k], reverse[k], symmetrization)
        src_map = piece_words(src_pieces[k], src_lines[k], src_words[k][1])
        tgt_map = piece_words(tgt_pieces[k], tgt_lines[k], tgt_words[k][1])
        if src_map is None or tgt_map is None:
            unmapped += 1
            result.append(empty)
            continue
        src_of_word: dict[int, list[int]] = {}
        for piece, words in enumerate(src_map):
            for word in words:
                src_of_word.setdefault(word, []).append(piece)
        linked_src: dict[int, set[int]] = {}
        for s, t in links:
            linked_src.setdefault(t, set()).update(src_of_word.get(s, ()))
        pairs = sorted({(s_piece, t_piece) for t_piece, words in enumerate(tgt_map) for word in words
                        for s_piece in linked_src.get(word, ())})
        linked_pairs += bool(pairs)
        result.append(np.array(pairs, dtype=np.int16).reshape(-1, 2) if pairs else empty)
    log(f"guided alignment: eflomal links ({symmetrization}) for {linked_pairs:,} of {len(src_lines):,} training "
        f"pairs" + (f"; {unmapped:,} pairs whose pieces do not spell their words get none" if unmapped else ""))
    return result


def piece_words(pieces: Sequence[str], text: str, spans: Sequence[tuple[int, int]]) -> list[list[int]] | None:
    """For each SentencePiece piece of ``text``, the words (indices into ``spans``, character spans in ``text``)
    whose characters it covers; None where the pieces do not spell the text's non-space characters."""
    visible = [i for i, ch in enumerate(text) if not ch.isspace()]  # the k-th non-space character's index
    owner: dict[int, list[int]] = {}
    for word, (start, end) in enumerate(spans):
        for position in range(start, end):
            owner.setdefault(position, []).append(word)
    result: list[list[int]] = []
    cursor = 0
    for piece in pieces:
        chars = "".join(piece.replace("\u2581", " ").split())
        positions = visible[cursor:cursor + len(chars)]
        if "".join(text[i] for i in positions) != chars:
            return None
        covered: list[int] = []
        for i in positions:
            for word in owner.get(i, ()):
                if word not in covered:
                    covered.append(word)
        result.append(covered)
        cursor += len(chars)
    return result if cursor == len(visible) else None


def target_distribution(links: Sequence[np.ndarray], tgt_len: int, src_len: int) -> Tensor:
    """The attention a batch is pulled towards: (batch, tgt_len, src_len) float32, row t of sentence b spreading 1
    evenly over the source pieces linked to target piece t, zero rows for unlinked pieces (and EOS, padding)."""
    target = torch.zeros((len(links), tgt_len, src_len), dtype=torch.float32)
    for b, pairs in enumerate(links):
        if len(pairs):
            pairs = torch.from_numpy(pairs.astype(np.int64))
            target[b, pairs[:, 1], pairs[:, 0]] = 1.0
    return target / target.sum(-1, keepdim=True).clamp_min(1.0)
