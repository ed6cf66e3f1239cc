"""Attention as word alignment: gold readers, subword -> word aggregation, link extraction, AER.

Index conventions
-----------------
Everything here is **0-based** and every link is a pair ``(source_word, target_word)`` in the
direction of the model being evaluated: source = what the encoder reads, target = what the decoder
writes. Words are the whitespace tokens of the gold text (``line.split()``). A gold set is a
``dict[int, Gold]`` keyed by the 0-based sentence (line) index, where ``Gold`` is the named tuple
``(sure, possible)`` of link sets with ``sure ⊆ possible`` (the readers add every sure link to the
possible set).

* NAACL/WPT files (``sent_no english_pos french_pos S|P``, 1-based, sentence numbers possibly
  zero-padded) are read as ``(english, french)`` links: that is ``(source, target)`` for an
  English->French model. For a French->English model apply `swap` (the CLI: ``--reverse``).
* Pharaoh/Moses files (``i-j`` sure, ``i-j-P`` possible, 0-based, one line per sentence) are read as
  ``(first, second)`` with ``src_first=True``, or ``(second, first)`` with ``src_first=False``. In the
  shared zh-en set the Chinese index comes first, so a zh->en model reads it with ``src_first=True``.

Position 0 in a NAACL file means NULL; such links are skipped (AER is computed over word-to-word
links only, as usual).

Attention to alignment
----------------------
The model is run with teacher forcing on the gold source and target text (`attention_matrices`):
row ``t`` of its attention is the distribution over source pieces (+ EOS) while it predicts target
piece ``t`` (the last row predicts EOS). `aggregate_to_words` maps that piece-level matrix to a
(target words, source words) matrix: the weights of the source pieces of a word are **summed** (the
pieces split the word's probability mass), the rows of the target pieces of a word are
**averaged**, and the EOS row and column are dropped (so every row sums to at most 1). Links are
then extracted with

* ``argmax``: each target word is linked to its most-attended source word (one link per target word);
* ``threshold``: every (source, target) pair whose word-level weight is ``>= threshold``. The default
  0.3 admits up to three source words per target word (one-to-many links such as ``of the -> du``)
  while ignoring the diffuse tail of the distribution; with a threshold above 0.5 it can only give a
  subset of the argmax links.

Two choices made before the links matter (measured in docs/alignment.md; the defaults are the best on the Hansards
dev set): ``shift``, which attention row stands for target piece t: ``predict`` (row t, the step that predicts
it; the default) or ``read`` (row t + 1, the step that has just read it as input); and ``pieces``, how pieces
become words: ``first`` (the row of a target word's first piece, the column of a source word's first piece:
where the model commits to a word; the default), ``sum`` (source pieces summed, target rows averaged) or ``max``
(the largest weight over the pieces of both words).

Links from a second, reverse-direction model (target -> source) can be combined with `combine`
(intersection: high precision; union: high recall; grow-diag-final-and: between the two, as statistical
aligners are symmetrised).

Metrics (Och & Ney 2003), corpus-level: counts are summed over the sentences, then
precision = |A∩P| / |A|, recall = |A∩S| / |S|, AER = 1 - (|A∩S| + |A∩P|) / (|A| + |S|).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..data.text import normalize_text, read_text_lines

WORD_START = "\u2581"  # SentencePiece's "▁": the piece starts a new (whitespace-separated) word
Link = tuple[int, int]  # (source word, target word), 0-based
METHODS = ("argmax", "threshold")
COMBINATIONS = ("intersection", "union", "grow-diag-final-and")
SHIFTS = ("predict", "read")  # the attention row of a target piece: the step that predicts it, or that reads it
PIECE_POOLS = ("sum", "max", "first")  # subword pieces -> words (see `aggregate_to_words`)
DEFAULT_PIECES, DEFAULT_SHIFT = "first", "predict"  # the best on the Hansards dev set (docs/benchmarks.md)
DEFAULT_THRESHOLD = 0.3


class Gold(NamedTuple):
    """The gold links of one sentence; ``sure`` ⊆ ``possible``."""

    sure: set[Link]
    possible: set[Link]


# ---- gold readers ---------------------------------------------------------------------------------


def _parse_error(path: str | os.PathLike, line_no: int, message: str) -> ValueError:
    return ValueError(f"{path}, line {line_no}: {message}")


def read_naacl(path: str | os.PathLike) -> dict[int, Gold]:
    """Read a NAACL/WPT alignment file: ``sent_no english_pos french_pos [S|P]`` per line, 1-based.

    Returns ``{sentence index (0-based): Gold(sure, possible)}`` with 0-based ``(english, french)``
    links; sentence ``0001`` is key 0. A missing S/P field means S. Links to position 0 (NULL) are
    skipped. Every sure link is also added to the possible set.
    """
    gold: dict[int, Gold] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) not in (3, 4, 5):  # WPT allows an optional confidence after S|P
                expected = "expected 'sent_no english_pos french_pos S|P'"
                raise _parse_error(path, line_no, f"{expected}, got {line.strip()!r}")
            try:
                sent, e_pos, f_pos = (int(x) for x in fields[:3])
            except ValueError:
                message = f"non-integer sentence number or position in {line.strip()!r}"
                raise _parse_error(path, line_no, message) from None
            tag = fields[3].upper() if len(fields) > 3 else "S"
            if tag not in ("S", "P"):
                raise _parse_error(path, line_no, f"the 4th field must be S or P, got {fields[3]!r}")
            if sent < 1 or e_pos < 0 or f_pos < 0:
                raise _parse_error(path, line_no, "sentence numbers start at 1 and positions at 0 (NULL)")
            entry = gold.setdefault(sent - 1, Gold(set(), set()))
            if e_pos == 0 or f_pos == 0:
                continue  # NULL link
            link = (e_pos - 1, f_pos - 1)
            if tag == "S":
                entry.sure.add(link)
            entry.possible.add(link)
    return gold


_PHARAOH_LINK = re.compile(r"^(\d+)-(\d+)(?:-([SsPp]))?$")


def read_pharaoh(path: str | os.PathLike, src_first: bool = True) -> dict[int, Gold]:
    """Read a Pharaoh/Moses alignment file: one line per sentence, ``i-j`` (sure) or ``i-j-P`` (possible).

    Indices are 0-based; line ``k`` (0-based) is sentence ``k``; an empty line is a sentence without
    links. ``src_first=True`` stores ``(i, j)``; ``False`` stores ``(j, i)`` (the first index is the
    model's target side). Every sure link is also added to the possible set.
    """
    gold: dict[int, Gold] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            entry = Gold(set(), set())
            for token in line.split():
                match = _PHARAOH_LINK.match(token)
                if not match:
                    raise _parse_error(path, line_no, f"expected links like '3-4' or '3-4-P', got {token!r}")
                i, j = int(match.group(1)), int(match.group(2))
                link = (i, j) if src_first else (j, i)
                if (match.group(3) or "S").upper() == "S":
                    entry.sure.add(link)
                entry.possible.add(link)
            gold[line_no - 1] = entry
    return gold


def detect_format(path: str | os.PathLike) -> str:
    """``naacl`` when the first non-empty line looks like ``sent_no pos pos [S|P]``, else ``pharaoh``."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if not fields:
                continue
            if 3 <= len(fields) <= 5 and all(x.isdigit() for x in fields[:3]):
                return "naacl"
            return "pharaoh"
    return "pharaoh"


def read_gold(path: str | os.PathLike, fmt: str = "auto", reverse: bool = False) -> dict[int, Gold]:
    """Read a gold file in ``naacl``, ``pharaoh`` or ``auto`` (detected) format.

    Without ``reverse`` the first index of every link is taken as the model's source word (NAACL:
    English; the shared zh-en Pharaoh file: Chinese); with ``reverse`` it is the model's target word.
    """
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "naacl":
        gold = read_naacl(path)
        return swap(gold) if reverse else gold
    if fmt == "pharaoh":
        return read_pharaoh(path, src_first=not reverse)
    raise ValueError(f"unknown alignment format {fmt!r}; valid: auto, naacl, pharaoh")


def swap(alignment):
    """Swap the sides of links: a set of (a, b) -> set of (b, a); a gold dict -> the swapped gold dict.

    Use it to score a model in the other direction than the gold file (e.g. fr->en on the en-fr gold)
    or to bring a reverse-direction model's links into the forward model's (source, target) order.
    """
    if isinstance(alignment, Mapping):
        return {k: Gold(swap(g.sure), swap(g.possible)) for k, g in alignment.items()}
    return {(b, a) for a, b in alignment}


def validate_gold(
    gold: Mapping[int, Gold], src_words: Sequence[Sequence[str]], tgt_words: Sequence[Sequence[str]]
) -> None:
    """Raise ValueError when a gold sentence or link lies outside the text (sentence numbers 1-based
    in the message)."""
    n = len(src_words)
    for k in sorted(gold):
        if not 0 <= k < n:
            raise ValueError(f"the gold alignment has sentence {k + 1} but the text has only {n} lines")
        n_src, n_tgt = len(src_words[k]), len(tgt_words[k])
        for s, t in sorted(gold[k].possible | gold[k].sure):
            if not (0 <= s < n_src and 0 <= t < n_tgt):
                raise ValueError(
                    f"gold link (source word {s + 1}, target word {t + 1}) in sentence {k + 1} is outside the "
                    f"sentence ({n_src} source words, {n_tgt} target words); are source and target swapped "
                    f"(--reverse), or is this the wrong text file?"
                )


def read_gold_set(
    src: str | os.PathLike, tgt: str | os.PathLike, links: str | os.PathLike, fmt: str = "auto", reverse: bool = False,
) -> tuple[list[str], list[str], dict[int, Gold]]:
    """A gold set from its three files: the source and target text (tokenised, line-parallel) and the links
    (`read_gold`), checked against the text (`validate_gold`). -> (source lines, target lines, gold). A missing
    file (FileNotFoundError) or a mismatch (ValueError) is said in one message for the user."""
    src_lines, tgt_lines = read_text_lines(src), read_text_lines(tgt)
    if not os.path.isfile(links):
        raise FileNotFoundError(f"no such file: {links}")
    if len(src_lines) != len(tgt_lines):
        raise ValueError(f"{src} has {len(src_lines)} lines but {tgt} has {len(tgt_lines)}; "
                         "the source and target texts must be line-parallel")
    gold = read_gold(links, fmt, reverse=reverse)
    validate_gold(gold, [line.split() for line in src_lines], [line.split() for line in tgt_lines])
    return src_lines, tgt_lines, gold


# ---- metrics --------------------------------------------------------------------------------------


@dataclass
class AlignmentCounts:
    """The four counts behind precision, recall and AER; add them over sentences."""

    predicted: int = 0  # |A|
    sure: int = 0  # |S|
    hit_sure: int = 0  # |A ∩ S|
    hit_possible: int = 0  # |A ∩ P|

    def add(self, predicted: set[Link], sure: set[Link], possible: set[Link]) -> None:
        possible = possible | sure  # sure ⊆ possible, whatever the caller passed
        self.predicted += len(predicted)
        self.sure += len(sure)
        self.hit_sure += len(predicted & sure)
        self.hit_possible += len(predicted & possible)

    def scores(self) -> tuple[float, float, float]:
        """(AER, precision, recall); an empty denominator gives 0.0 for that value."""
        precision = self.hit_possible / self.predicted if self.predicted else 0.0
        recall = self.hit_sure / self.sure if self.sure else 0.0
        total = self.predicted + self.sure
        error = 1.0 - (self.hit_sure + self.hit_possible) / total if total else 0.0
        return error, precision, recall


def _as_corpus(x) -> list[set[Link]]:
    return [set(x)] if isinstance(x, (set, frozenset)) else [set(s) for s in x]


def aer(predicted, sure, possible) -> tuple[float, float, float]:
    """Alignment error rate, precision and recall (Och & Ney 2003).

    Each argument is either one sentence's set of links or a sequence of per-sentence sets (the
    same length for all three); counts are summed over the sentences (corpus level):
    precision = |A∩P|/|A|, recall = |A∩S|/|S|, AER = 1 - (|A∩S| + |A∩P|)/(|A| + |S|), with P taken
    as P ∪ S. Returns ``(aer, precision, recall)``.
    """
    predicted, sure, possible = _as_corpus(predicted), _as_corpus(sure), _as_corpus(possible)
    if not len(predicted) == len(sure) == len(possible):
        raise ValueError(f"different numbers of sentences: {len(predicted)} predicted, {len(sure)} sure, "
                         f"{len(possible)} possible")
    counts = AlignmentCounts()
    for a, s, p in zip(predicted, sure, possible):
        counts.add(a, s, p)
    return counts.scores()


# ---- subword pieces -> words ----------------------------------------------------------------------


def _comparable(text: str) -> str:
    """The characters of ``text`` as SentencePiece sees them: normalised as in training, no spaces."""
    return "".join(normalize_text(text.replace(WORD_START, " ")).split())


def piece_word_map(pieces: Sequence[str], words: Sequence[str]) -> list[int]:
    """The (0-based) index of the word that each SentencePiece piece belongs to.

    The pieces are aligned to the words by character offsets: both sides are normalised as the
    training data was (NFKC, ...) and stripped of spaces and "▁"; piece k covers characters
    [c_k, c_k + len_k) of the concatenated text and belongs to the word of its first character. A
    bare "▁" piece (no characters) belongs to the word of the next piece. When the character counts
    differ (an unexpected normalisation), the "▁" word starts are used if their number matches the
    words, else each piece goes to the word at the same relative character position.
    Returns -1 for every piece when there are no words.
    """
    n = len(pieces)
    if not words:
        return [-1] * n
    if n == 0:
        return []
    owner: list[int] = []  # character -> word
    for k, word in enumerate(words):
        owner.extend([k] * len(_comparable(word)))
    texts = [_comparable(p) for p in pieces]
    total = sum(len(t) for t in texts)
    last = len(words) - 1
    result: list[int | None] = []
    if total == len(owner) and total > 0:
        pos = 0
        for text in texts:
            result.append(owner[pos] if text else None)
            pos += len(text)
    elif sum(p.startswith(WORD_START) for p in pieces) == len(words):
        count = 0
        for piece in pieces:
            count += piece.startswith(WORD_START)
            result.append(max(count - 1, 0))
    else:
        pos = 0
        for text in texts:
            if text:  # the word at the same relative position (by characters, or by words if none)
                centre = (pos + len(text) / 2) / total
                result.append(owner[min(int(centre * len(owner)), len(owner) - 1)] if owner
                              else min(int(centre * len(words)), last))
            else:
                result.append(None)
            pos += len(text)
    # bare "▁" pieces: the word of the next piece with characters (else the previous one, else 0)
    following = None
    for k in range(n - 1, -1, -1):
        if result[k] is None:
            result[k] = following
        else:
            following = result[k]
    previous = 0
    for k in range(n):
        if result[k] is None:
            result[k] = previous
        previous = result[k]
    return [int(r) for r in result]


def aggregate_to_words(
    attention, src_map: Sequence[int], tgt_map: Sequence[int], n_src_words: int, n_tgt_words: int,
    pieces: str = DEFAULT_PIECES, shift: str = DEFAULT_SHIFT,
) -> np.ndarray:
    """Piece-level attention -> word-level (n_tgt_words, n_src_words).

    ``attention`` is (target pieces [+ EOS row], source pieces [+ EOS column]); the EOS column, when present, is
    dropped. ``shift`` ``predict`` takes row t for target piece t (the EOS row dropped), ``read`` row t + 1 (the
    EOS row needed). ``pieces``: ``sum`` sums the source pieces of a word and averages the rows of a target
    word's pieces; ``max`` takes the largest weight over both; ``first`` the first piece of each. A word without
    pieces gets a zero column / row. Pieces mapped to -1 are ignored.
    """
    att = np.asarray(attention, dtype=np.float64)
    n_tp, n_sp = len(tgt_map), len(src_map)
    if att.ndim != 2 or att.shape[0] not in (n_tp, n_tp + 1) or att.shape[1] not in (n_sp, n_sp + 1):
        raise ValueError(f"attention of shape {att.shape} does not match {n_tp} target and {n_sp} source pieces "
                         "(+ EOS)")
    if pieces not in PIECE_POOLS:
        raise ValueError(f"unknown piece pooling {pieces!r}; valid: {', '.join(PIECE_POOLS)}")
    if shift == "read":
        if att.shape[0] != n_tp + 1:
            raise ValueError("shift=read needs the EOS row (the step that reads the last target piece)")
        att = att[1:, :n_sp]
    elif shift == "predict":
        att = att[:n_tp, :n_sp]
    else:
        raise ValueError(f"unknown shift {shift!r}; valid: {', '.join(SHIFTS)}")
    if pieces == "sum":
        src_sum = np.zeros((n_sp, n_src_words))
        for k, w in enumerate(src_map):
            if w >= 0:
                src_sum[k, w] = 1.0
        tgt_mean = np.zeros((n_tgt_words, n_tp))
        for k, w in enumerate(tgt_map):
            if w >= 0:
                tgt_mean[w, k] = 1.0
        counts = tgt_mean.sum(axis=1, keepdims=True)
        tgt_mean = np.divide(tgt_mean, counts, out=np.zeros_like(tgt_mean), where=counts > 0)
        return tgt_mean @ att @ src_sum
    words = np.zeros((n_tgt_words, n_src_words))
    seen_src, seen_tgt = set(), set()
    for t, tw in enumerate(tgt_map):
        if tw < 0 or (pieces == "first" and tw in seen_tgt):
            continue
        seen_tgt.add(tw)
        seen_src.clear()
        for k, sw in enumerate(src_map):
            if sw < 0 or (pieces == "first" and sw in seen_src):
                continue
            seen_src.add(sw)
            words[tw, sw] = max(words[tw, sw], att[t, k])
    return words


def word_attention(
    attention, src_pieces: Sequence[str], tgt_pieces: Sequence[str], src_words: Sequence[str],
    tgt_words: Sequence[str], pieces: str = DEFAULT_PIECES, shift: str = DEFAULT_SHIFT,
) -> np.ndarray:
    """`aggregate_to_words` with the piece -> word maps computed by `piece_word_map`."""
    return aggregate_to_words(attention, piece_word_map(src_pieces, src_words), piece_word_map(tgt_pieces, tgt_words),
                              len(src_words), len(tgt_words), pieces, shift)


# ---- links ----------------------------------------------------------------------------------------


def extract_argmax(word_att: np.ndarray) -> set[Link]:
    """Link every target word (row) to its most-attended source word (column); rows of zeros get none."""
    word_att = np.asarray(word_att)
    if word_att.size == 0:
        return set()
    best = word_att.argmax(axis=1)
    return {(int(best[t]), t) for t in range(word_att.shape[0]) if word_att[t].max() > 0}


def extract_threshold(word_att: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> set[Link]:
    """Every (source word, target word) whose word-level weight is >= ``threshold`` (and > 0)."""
    word_att = np.asarray(word_att)
    rows, cols = np.nonzero((word_att >= threshold) & (word_att > 0))
    return {(int(s), int(t)) for t, s in zip(rows, cols)}


def extract_links(word_att: np.ndarray, method: str = "argmax", threshold: float = DEFAULT_THRESHOLD) -> set[Link]:
    if method == "argmax":
        return extract_argmax(word_att)
    if method == "threshold":
        return extract_threshold(word_att, threshold)
    raise ValueError(f"unknown alignment extraction method {method!r}; valid: {', '.join(METHODS)}")


def combine(forward: set[Link], backward: set[Link], how: str = "intersection") -> set[Link]:
    """Symmetrise: ``backward`` must already be in the forward model's (source, target) order (`swap`); as a
    statistical aligner's two directions are (`s2s_attn.data.aligner.symmetrize`)."""
    from ..data.aligner import symmetrize

    if how not in COMBINATIONS:
        raise ValueError(f"unknown combination {how!r}; valid: {', '.join(COMBINATIONS)}")
    return symmetrize(forward, backward, how)


def diagonal_alignment(n_src: int, n_tgt: int) -> set[Link]:
    """Baseline: target word j -> source word round(j * n_src / n_tgt) (halves rounded up, clipped)."""
    if n_src <= 0 or n_tgt <= 0:
        return set()
    return {(min(int(math.floor(j * n_src / n_tgt + 0.5)), n_src - 1), j) for j in range(n_tgt)}


# ---- teacher-forced attention from a model --------------------------------------------------------


@dataclass
class SentenceAttention:
    """One sentence pair under teacher forcing: its pieces and the attention (tgt+EOS, src+EOS)."""

    src_pieces: list[str]
    tgt_pieces: list[str]
    matrix: np.ndarray  # (len(tgt_pieces) + 1, len(src_pieces) + 1); row t predicts target piece t


def _words(line) -> list[str]:
    return line.split() if isinstance(line, str) else list(line)


def attention_matrices(
    translator, src_words_lines: Sequence, tgt_words_lines: Sequence, batch_size: int = 64
) -> list[SentenceAttention]:
    """Run the model with teacher forcing on gold text and return piece-level attention per sentence.

    ``translator`` is a `Translator` (or anything with ``.model``, ``.tokenizer`` and ``.device``).
    Each line is a list of words (or a string, split on whitespace); the words are joined with
    spaces, normalised as the training data was, and encoded with the model's SentencePiece models.
    Batches are length-sorted; the model runs in eval mode under ``torch.no_grad`` in fp32 (its
    train/eval mode is restored afterwards, so this can be called during training). Result order =
    input order.
    """
    import torch

    from ..data.batching import make_batch

    if len(src_words_lines) != len(tgt_words_lines):
        raise ValueError(f"{len(src_words_lines)} source lines but {len(tgt_words_lines)} target lines")
    tok, model, device = translator.tokenizer, translator.model, translator.device
    src_text = [normalize_text(" ".join(_words(line))) for line in src_words_lines]
    tgt_text = [normalize_text(" ".join(_words(line))) for line in tgt_words_lines]
    src_ids, tgt_ids = tok.encode_src(src_text), tok.encode_tgt(tgt_text)
    src_pieces, tgt_pieces = tok.src.encode(src_text, out_type=str), tok.tgt.encode(tgt_text, out_type=str)
    results: list[SentenceAttention | None] = [None] * len(src_text)
    order = sorted(range(len(src_ids)), key=lambda i: (len(src_ids[i]), len(tgt_ids[i])))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device_type=torch.device(device).type, enabled=False):
            step = max(int(batch_size), 1)
            for start in range(0, len(order), step):
                indices = order[start : start + step]
                batch = make_batch([src_ids[i] for i in indices], [tgt_ids[i] for i in indices], indices)
                batch = batch.to(device)
                _, attention = model(batch.src, batch.src_len, batch.tgt_in)
                attention = attention.float().cpu().numpy()
                for row, i in enumerate(indices):
                    n_s, n_t = len(src_ids[i]) + 1, len(tgt_ids[i]) + 1
                    results[i] = SentenceAttention(list(src_pieces[i]), list(tgt_pieces[i]),
                                                   attention[row, :n_t, :n_s].copy())
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _links_for(
    translator, src_words: list[list[str]], tgt_words: list[list[str]], method: str, threshold: float,
    batch_size: int, pieces: str = DEFAULT_PIECES, shift: str = DEFAULT_SHIFT,
) -> list[set[Link]]:
    todo = [i for i in range(len(src_words)) if src_words[i] and tgt_words[i]]
    links: list[set[Link]] = [set() for _ in src_words]
    matrices = attention_matrices(translator, [src_words[i] for i in todo], [tgt_words[i] for i in todo], batch_size)
    for i, sent in zip(todo, matrices):
        att = word_attention(sent.matrix, sent.src_pieces, sent.tgt_pieces, src_words[i], tgt_words[i], pieces, shift)
        links[i] = extract_links(att, method, threshold)
    return links


def evaluate_alignment(
    translator,
    src_lines: Sequence[str],
    tgt_lines: Sequence[str],
    gold: Mapping[int, Gold],
    method: str = "argmax",
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 64,
    backward=None,
    how: str = "intersection",
    pieces: str = DEFAULT_PIECES,
    shift: str = DEFAULT_SHIFT,
) -> dict:
    """AER, precision and recall of the model's attention (and of the diagonal baseline) on gold links.

    ``src_lines`` / ``tgt_lines`` are the gold text in the model's direction (tokenised, words
    separated by whitespace); ``gold`` maps 0-based line index -> `Gold` in (source, target) order
    (`read_gold`, `swap`). Every given line is evaluated (a line without gold links counts its
    predicted links as wrong); gold entries for other lines are ignored. ``backward``: an optional
    target->source model whose links are combined with the forward ones (``how``: intersection or
    union or grow-diag-final-and). ``pieces`` and ``shift``: see the module's docstring. One teacher-forced pass
    per batch: about a second for 200 sentences on a CPU.

    Returns ``{"sentences", "method", "threshold", "aer", "precision", "recall", "links",
    "diagonal_aer", "diagonal_precision", "diagonal_recall", "gold_sure", "gold_possible"}``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown alignment extraction method {method!r}; valid: {', '.join(METHODS)}")
    if how not in COMBINATIONS:
        raise ValueError(f"unknown combination {how!r}; valid: {', '.join(COMBINATIONS)}")
    if pieces not in PIECE_POOLS:
        raise ValueError(f"unknown piece pooling {pieces!r}; valid: {', '.join(PIECE_POOLS)}")
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; valid: {', '.join(SHIFTS)}")
    if len(src_lines) != len(tgt_lines):
        raise ValueError(f"{len(src_lines)} source lines but {len(tgt_lines)} target lines")
    src_words, tgt_words = [_words(x) for x in src_lines], [_words(x) for x in tgt_lines]
    n = len(src_words)
    subset = {k: g for k, g in gold.items() if 0 <= k < n}
    validate_gold(subset, src_words, tgt_words)
    predicted = _links_for(translator, src_words, tgt_words, method, threshold, batch_size, pieces, shift)
    if backward is not None:
        reverse = _links_for(backward, tgt_words, src_words, method, threshold, batch_size, pieces, shift)
        predicted = [combine(f, swap(b), how) for f, b in zip(predicted, reverse)]
    empty = Gold(set(), set())
    golds = [subset.get(i, empty) for i in range(n)]
    model_counts, diagonal_counts = AlignmentCounts(), AlignmentCounts()
    for i, g in enumerate(golds):
        model_counts.add(predicted[i], g.sure, g.possible)
        diagonal_counts.add(diagonal_alignment(len(src_words[i]), len(tgt_words[i])), g.sure, g.possible)
    error, precision, recall = model_counts.scores()
    d_error, d_precision, d_recall = diagonal_counts.scores()
    return {
        "sentences": n,
        "method": method,
        "pieces": pieces,
        "shift": shift,
        "threshold": threshold if method == "threshold" else None,
        "combined": how if backward is not None else None,
        "aer": error,
        "precision": precision,
        "recall": recall,
        "links": model_counts.predicted,
        "diagonal_aer": d_error,
        "diagonal_precision": d_precision,
        "diagonal_recall": d_recall,
        "gold_sure": sum(len(g.sure) for g in golds),
        "gold_possible": sum(len(g.possible | g.sure) for g in golds),
    }



# ---- a statistical aligner as the baseline --------------------------------------------------------


def aligner_baseline(
    train_src: Sequence[str], train_tgt: Sequence[str], src_lang: str, tgt_lang: str, src_lines: Sequence[str],
    tgt_lines: Sequence[str], gold: Mapping[int, Gold], cache_root: str | os.PathLike,
    log=print,
) -> dict[str, dict[str, float]]:
    """The AER of eflomal (`s2s_attn.data.aligner`) on a gold set, trained as unsupervised aligners are evaluated:
    on the run's training text (``train_src`` / ``train_tgt``, cut into `aligner_words`) plus the gold
    sentences themselves (their own words). Computed once per training text and gold text (cached under
    ``cache_root``, the prepared data's directory). -> {symmetrisation: {"aer", "precision", "recall"}} in the
    order of `s2s_attn.data.aligner.SYMMETRIZATIONS`. Raises `AlignerMissing` without eflomal."""
    from pathlib import Path

    from ..data.aligner import SYMMETRIZATIONS, aligner_words_of_lines, cached_alignment, symmetrize, words_digest

    eval_src, eval_tgt = [_words(x) for x in src_lines], [_words(x) for x in tgt_lines]
    src_words = aligner_words_of_lines(train_src, src_lang) + eval_src
    tgt_words = aligner_words_of_lines(train_tgt, tgt_lang) + eval_tgt
    directory = Path(cache_root) / f"eflomal-eval-{words_digest(eval_src, eval_tgt)[:12]}"
    forward, reverse = cached_alignment(directory, src_words, tgt_words, log=log)
    first = len(train_src)
    empty = Gold(set(), set())
    result = {}
    for how in SYMMETRIZATIONS:
        counts = AlignmentCounts()
        for i in range(len(eval_src)):
            g = gold.get(i, empty)
            counts.add(symmetrize(forward[first + i], reverse[first + i], how), g.sure, g.possible)
        error, precision, recall = counts.scores()
        result[how] = {"aer": error, "precision": precision, "recall": recall}
    return result


def run_training_text(config: Mapping) -> tuple[list[str], list[str], str, str, str]:
    """The training text of a run from its saved config: (source lines, target lines, source language, target
    language, the prepared data's directory). DataError where the run's corpus is not on this machine."""
    from ..data.corpus import prepare_data

    data_cfg = dict(config["data"])
    data_dir = prepare_data(data_cfg, log=lambda message: None)
    src = read_text_lines(data_dir / "train.src")
    tgt = read_text_lines(data_dir / "train.tgt")
    return src, tgt, str(data_cfg.get("src_lang", "")), str(data_cfg.get("tgt_lang", "")), str(data_dir)


# ---- during training ------------------------------------------------------------------------------


@dataclass
class _ModelView:
    """What `attention_matrices` needs from a `Translator`, for a model that is being trained."""

    model: object
    tokenizer: object
    device: object


class AlignmentMonitor:
    """AER of the attention on a gold set, measured at every evaluation of a training run.

    Built from the ``alignment`` config group (``configs/alignment/*.yaml``): ``text`` maps each
    language to its gold text file, ``gold`` is the link file whose first index is the word of
    ``gold_langs[0]``. The direction follows the data: for ``src_lang -> tgt_lang`` the source text is
    ``text[src_lang]``, and the links are swapped when the source is ``gold_langs[1]``. Files are read
    and checked once, when the run starts, so a wrong path fails before any training.
    """

    def __init__(self, src_lines: list[str], tgt_lines: list[str], gold: dict[int, Gold], method: str = "argmax",
                 threshold: float = DEFAULT_THRESHOLD, name: str = "alignment", pieces: str = DEFAULT_PIECES,
                 shift: str = DEFAULT_SHIFT, aligner: str = "eflomal") -> None:
        if method not in METHODS:
            raise ValueError(f"unknown alignment.method {method!r}; valid: {', '.join(METHODS)}")
        if pieces not in PIECE_POOLS or shift not in SHIFTS or aligner not in ("eflomal", "none"):
            raise ValueError(f"alignment.pieces must be one of {', '.join(PIECE_POOLS)}, alignment.shift one of "
                             f"{', '.join(SHIFTS)}, alignment.aligner eflomal or none")
        if len(src_lines) != len(tgt_lines):
            raise ValueError(f"alignment {name}: {len(src_lines)} source lines but {len(tgt_lines)} target lines")
        validate_gold(gold, [x.split() for x in src_lines], [x.split() for x in tgt_lines])
        self.src_lines, self.tgt_lines, self.gold = src_lines, tgt_lines, gold
        self.method, self.threshold, self.name = method, threshold, name
        self.pieces, self.shift, self.aligner = pieces, shift, aligner
        self.aligner_rows: dict[str, dict[str, float]] | None = None  # `aligner_baseline`'s, once computed

    @classmethod
    def from_config(cls, acfg, src_lang: str, tgt_lang: str) -> AlignmentMonitor | None:
        """None for ``alignment=none`` (or no ``alignment`` group); ValueError when the gold set does not
        cover the data's language pair or its files are missing."""
        if acfg is None or str(acfg.get("name", "none")) == "none":
            return None
        name, langs = str(acfg.name), [str(x) for x in acfg.gold_langs]
        if sorted(langs) != sorted([src_lang, tgt_lang]):
            raise ValueError(f"alignment={name} has {langs[0]}-{langs[1]} gold links, but the data is "
                             f"{src_lang}->{tgt_lang}; use alignment=none or a gold set for this pair")
        src_lines, tgt_lines = read_text_lines(acfg.text[src_lang]), read_text_lines(acfg.text[tgt_lang])
        if not os.path.isfile(acfg.gold):
            raise FileNotFoundError(f"no such file: {acfg.gold}")
        gold = read_gold(acfg.gold, str(acfg.get("format", "auto")), reverse=src_lang != langs[0])
        return cls(src_lines, tgt_lines, gold, str(acfg.get("method", "argmax")),
                   float(acfg.get("threshold", DEFAULT_THRESHOLD)), name, str(acfg.get("pieces", DEFAULT_PIECES)),
                   str(acfg.get("shift", DEFAULT_SHIFT)), str(acfg.get("aligner", "eflomal")))

    def compute_baseline(self, data_dir, src_lang: str, tgt_lang: str, log=print) -> None:
        """The eflomal rows (`aligner_baseline`) on the run's training text in ``data_dir``, once; where eflomal is
        missing, one warning and none."""
        if self.aligner == "none":
            return
        from ..data.aligner import AlignerMissing

        try:
            self.aligner_rows = aligner_baseline(read_text_lines(os.path.join(data_dir, "train.src")),
                                                 read_text_lines(os.path.join(data_dir, "train.tgt")), src_lang,
                                                 tgt_lang, self.src_lines, self.tgt_lines, self.gold, data_dir, log)
        except AlignerMissing as error:
            log(f"no eflomal baseline for alignment={self.name}: {error}")
            return
        log(f"alignment={self.name}: eflomal's AER " + ", ".join(f"{how} {row['aer']:.3f}"
                                                                 for how, row in self.aligner_rows.items()))

    def __call__(self, model, tokenizer, device, batch_size: int = 64) -> dict:
        """`evaluate_alignment` of the model as it is now (its train/eval mode is kept), with the eflomal rows
        (``eflomal``: {symmetrisation: scores}) where `compute_baseline` found them."""
        result = evaluate_alignment(_ModelView(model, tokenizer, device), self.src_lines, self.tgt_lines, self.gold,
                                    method=self.method, threshold=self.threshold, batch_size=batch_size,
                                    pieces=self.pieces, shift=self.shift)
        if self.aligner_rows is not None:
            result["eflomal"] = self.aligner_rows
        return result
