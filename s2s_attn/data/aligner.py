"""Word alignments from a statistical aligner, eflomal (Östling & Tiedemann 2016): the baseline that attention is
measured against, and the links that guided alignment training pulls the attention towards.

Words: `aligner_words` cuts a sentence into the words such aligners and the gold sets count (letters and digits
in runs, every other character alone, a Chinese or Japanese character alone) and, for French, expands elisions
and contractions as the Hansards gold files do (``l'` -> ``le``, ``du`` -> ``de le``), each word with the span of
characters it came from, so that its links can be carried to SentencePiece pieces (`s2s_attn.data.guidance`).

Links are ``(source word, target word)``, 0-based. eflomal aligns in both directions (`align_words`); the
symmetrisations (`symmetrize`) are the usual ones: ``forward``, ``reverse``, ``intersection``, ``union``,
``grow-diag-final-and`` (Koehn et al. 2003). eflomal samples, so two runs differ a little: its links are computed
once and cached (`cached_alignment`).

eflomal is an optional dependency under the GPLv3 (``pip install eflomal``; ``make`` installs it).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

from ..outputs import write_atomic
from .errors import DataError

Link = tuple[int, int]
SYMMETRIZATIONS = ("forward", "reverse", "intersection", "union", "grow-diag-final-and")

# a CJK or kana character alone, a run of letters/digits, any other non-space character alone
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")
_APOSTROPHES = "'\u2019"
# French elisions (the word before an apostrophe) and contractions, written out as in the Hansards gold text
_FRENCH_ELISIONS = {"l": "le", "d": "de", "j": "je", "qu": "que", "n": "ne", "s": "se", "c": "ce", "m": "me",
                    "t": "te", "aujourd": "aujourd'", "jusqu": "jusque", "lorsqu": "lorsque", "puisqu": "puisque",
                    "quoiqu": "quoique"}
_FRENCH_CONTRACTIONS = {"du": ("de", "le"), "des": ("de", "les"), "au": ("à", "le"), "aux": ("à", "les")}


class AlignerMissing(DataError):
    """eflomal is not installed (s2s-train prints the message, what to install, without a traceback)."""


def aligner_words(text: str, lang: str = "") -> tuple[list[str], list[tuple[int, int]]]:
    """The words of ``text`` for a word aligner, lower-cased, with each word's character span ``(start, end)``
    in ``text``. French (``lang`` "fr") has its elisions and contractions written out, both words of ``du``
    spanning its two characters."""
    words: list[str] = []
    spans: list[tuple[int, int]] = []
    tokens = [(m.group().lower(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    french = lang.split("_")[0].lower() == "fr"
    k = 0
    while k < len(tokens):
        word, start, end = tokens[k]
        after = tokens[k + 1] if k + 1 < len(tokens) else None
        if (after is not None and after[0] in _APOSTROPHES and after[1] == end
                and (french and word in _FRENCH_ELISIONS)):
            words.append(_FRENCH_ELISIONS[word])
            spans.append((start, after[2]))
            k += 2
            continue
        if word in _APOSTROPHES and after is not None and after[1] == end and after[0] == "s" and not french:
            words.append("'s")  # English possessive, as the gold text writes it
            spans.append((start, after[2]))
            k += 2
            continue
        if french and word in _FRENCH_CONTRACTIONS:
            for part in _FRENCH_CONTRACTIONS[word]:
                words.append(part)
                spans.append((start, end))
        else:
            words.append(unicodedata.normalize("NFC", word))
            spans.append((start, end))
        k += 1
    return words, spans


# ---- eflomal --------------------------------------------------------------------------------------


def eflomal_available() -> bool:
    try:
        import eflomal  # noqa: F401
    except ImportError:
        return False
    return True


def _read_links(path: Path, count: int) -> list[set[Link]]:
    lines = path.read_text(encoding="utf-8").split("\n")[:count]
    lines += [""] * (count - len(lines))
    return [{(int(i), int(j)) for i, j in (token.split("-") for token in line.split())} for line in lines]


def align_words(src_words: Sequence[Sequence[str]], tgt_words: Sequence[Sequence[str]],
                samplers: int = 3) -> tuple[list[set[Link]], list[set[Link]]]:
    """eflomal's forward and reverse links for these sentence pairs (lists of words), both as (source word,
    target word). A pair with an empty side gets no links. Raises AlignerMissing without eflomal."""
    try:
        import eflomal
    except ImportError:
        raise AlignerMissing("the word aligner eflomal is not installed: pip install eflomal (or make install)") \
            from None
    if len(src_words) != len(tgt_words):
        raise ValueError(f"{len(src_words)} source sentences but {len(tgt_words)} target sentences")
    todo = [i for i in range(len(src_words)) if src_words[i] and tgt_words[i]]
    forward: list[set[Link]] = [set() for _ in src_words]
    reverse: list[set[Link]] = [set() for _ in src_words]
    if not todo:
        return forward, reverse
    with tempfile.TemporaryDirectory(prefix="s2s-eflomal-") as tmp:
        fwd_file, rev_file = Path(tmp) / "fwd", Path(tmp) / "rev"
        aligner = eflomal.Aligner(n_samplers=samplers)
        aligner.align([" ".join(src_words[i]) + "\n" for i in todo], [" ".join(tgt_words[i]) + "\n" for i in todo],
                      links_filename_fwd=str(fwd_file), links_filename_rev=str(rev_file), quiet=True)
        for name, result in ((fwd_file, forward), (rev_file, reverse)):
            for i, links in zip(todo, _read_links(name, len(todo))):
                result[i] = {(s, t) for s, t in links if s < len(src_words[i]) and t < len(tgt_words[i])}
    return forward, reverse


# ---- symmetrisation -------------------------------------------------------------------------------

_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def grow_diag_final_and(forward: set[Link], reverse: set[Link]) -> set[Link]:
    """Koehn et al.'s grow-diag-final-and: the intersection, grown by neighbouring (diagonals too) union links
    that align a word not yet aligned, then the links of either direction whose two words are both unaligned."""
    union = forward | reverse
    result = forward & reverse
    src_done = {s for s, _ in result}
    tgt_done = {t for _, t in result}
    grown = True
    while grown:
        grown = False
        for s, t in sorted(result):
            for ds, dt in _NEIGHBOURS:
                link = (s + ds, t + dt)
                if link in union and link not in result and (link[0] not in src_done or link[1] not in tgt_done):
                    result.add(link)
                    src_done.add(link[0])
                    tgt_done.add(link[1])
                    grown = True
    for direction in (forward, reverse):
        for s, t in sorted(direction):
            if s not in src_done and t not in tgt_done:
                result.add((s, t))
                src_done.add(s)
                tgt_done.add(t)
    return result


def symmetrize(forward: set[Link], reverse: set[Link], how: str) -> set[Link]:
    """One of `SYMMETRIZATIONS` of a sentence's two directions of links."""
    if how == "forward":
        return set(forward)
    if how == "reverse":
        return set(reverse)
    if how == "intersection":
        return forward & reverse
    if how == "union":
        return forward | reverse
    if how == "grow-diag-final-and":
        return grow_diag_final_and(forward, reverse)
    raise ValueError(f"unknown symmetrisation {how!r}; valid: {', '.join(SYMMETRIZATIONS)}")


# ---- cache ----------------------------------------------------------------------------------------


def _format(links: Sequence[set[Link]]) -> str:
    return "".join(" ".join(f"{s}-{t}" for s, t in sorted(sentence)) + "\n" for sentence in links)


def words_digest(src_words: Sequence[Sequence[str]], tgt_words: Sequence[Sequence[str]]) -> str:
    """A sha256 over the sentence pairs' words: what a cached alignment was computed from."""
    digest = hashlib.sha256()
    for src, tgt in zip(src_words, tgt_words, strict=True):
        digest.update((" ".join(src) + "\t" + " ".join(tgt) + "\n").encode("utf-8"))
    return digest.hexdigest()


def cached_alignment(directory: Path, src_words: Sequence[Sequence[str]], tgt_words: Sequence[Sequence[str]],
                     log: Callable[[str], None] = print) -> tuple[list[set[Link]], list[set[Link]]]:
    """`align_words`, computed once per set of sentence pairs: ``directory`` holds ``forward.links`` and
    ``reverse.links`` (Pharaoh ``s-t`` lines) and ``alignment.json`` (written last, with the words' digest), and
    is reused while the digest matches."""
    digest = words_digest(src_words, tgt_words)
    meta_file = directory / "alignment.json"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("words_sha256") == digest and meta.get("pairs") == len(src_words):
            return (_read_links(directory / "forward.links", len(src_words)),
                    _read_links(directory / "reverse.links", len(src_words)))
    except (OSError, ValueError, AttributeError):
        pass
    log(f"aligning {len(src_words):,} sentence pairs with eflomal (once; cached in {directory}) ...")
    forward, reverse = align_words(src_words, tgt_words)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "alignment.json").unlink(missing_ok=True)
    write_atomic(directory / "forward.links", _format(forward).encode("utf-8"))
    write_atomic(directory / "reverse.links", _format(reverse).encode("utf-8"))
    write_atomic(meta_file, json.dumps({"aligner": "eflomal", "pairs": len(src_words), "words_sha256": digest},
                                       indent=1).encode("utf-8"))
    return forward, reverse


def aligner_words_of_lines(lines: Sequence[str], lang: str) -> list[list[str]]:
    """`aligner_words` of each line, the words only."""
    return [aligner_words(line, lang)[0] for line in lines]
