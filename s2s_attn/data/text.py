"""What every sentence goes through before anything looks at it: Unicode normalisation, the key that groups
translations of one source sentence, and the length used by the filters; and reading a user's text file.

All text is normalised with `normalize_text` (NFKC, control and zero-width characters removed, whitespace
collapsed), so the typographic spaces of the French Tatoeba side (U+202F, U+00A0, U+2009) become ordinary spaces.
"""

from __future__ import annotations

import os
import re
import unicodedata

#: Deleted explicitly (they are all category Cf, listed here so the intent is visible).
ZERO_WIDTH_CHARS = frozenset("\u200b\u200c\u200d\ufeff\u00ad")


class _ControlTable(dict):
    """`str.translate` table: whitespace -> " ", control/format (Cc, Cf) and zero-width chars -> deleted.

    Filled lazily, one entry per distinct character seen, so building it costs nothing up front.
    """

    def __missing__(self, code: int) -> str | int | None:
        ch = chr(code)
        value: str | int | None
        if ch.isspace():
            value = " "
        elif ch in ZERO_WIDTH_CHARS or unicodedata.category(ch) in ("Cc", "Cf"):
            value = None
        else:
            value = code
        self[code] = value
        return value


class _PunctuationAndSpaceTable(dict):
    """`str.translate` table that deletes punctuation (category P*) and whitespace, filled lazily."""

    def __missing__(self, code: int) -> int | None:
        ch = chr(code)
        value = None if ch.isspace() or unicodedata.category(ch).startswith("P") else code
        self[code] = value
        return value


_CONTROL_TABLE = _ControlTable()
_PUNCT_SPACE_TABLE = _PunctuationAndSpaceTable()


def normalize_text(s: str) -> str:
    """Return `s` in NFKC with control/zero-width characters removed and whitespace collapsed.

    Steps: Unicode NFKC (which also turns U+00A0, U+202F, U+2009, U+3000 into plain spaces); delete
    zero-width characters (U+200B, U+200C, U+200D, U+FEFF), the soft hyphen U+00AD and every other
    control or format character (categories Cc and Cf), except that tabs, newlines and other whitespace
    controls become spaces; collapse each run of Unicode whitespace into one ASCII space; strip.
    """
    s = unicodedata.normalize("NFKC", s)
    if not s.isprintable():  # fast path: most lines have nothing to delete
        s = s.translate(_CONTROL_TABLE)
    return " ".join(s.split())


def source_key(s: str) -> str:
    """Grouping key of a sentence: lower-cased, with punctuation and whitespace removed.

    Two sources with the same key ("Go!" and "go.") are treated as the same sentence by `split_grouped`.
    """
    return s.lower().translate(_PUNCT_SPACE_TABLE)


_CJK_RE = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]")


def count_words(s: str) -> int:
    """Length of a sentence for filtering: whitespace-separated words, or characters for CJK text.

    Chinese and Japanese are written without spaces, so when `s` contains any Han ideograph or kana the
    count is the number of characters that are neither whitespace nor punctuation ("我爱你。" -> 3).
    Korean (Hangul) uses spaces and is counted by words.
    """
    if _CJK_RE.search(s):
        return len(s.translate(_PUNCT_SPACE_TABLE))
    return len(s.split())


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a user's UTF-8 text file (invalid bytes replaced), split on newlines only (not on the other
    Unicode line breaks), without the final empty one; FileNotFoundError names a missing file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]
