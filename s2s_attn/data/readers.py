"""Readers of parallel corpora: a tab-separated file of pairs, or two line-parallel files.

Each reader decodes every line on its own (one line of invalid UTF-8 skips that line, not the file), normalises
both sides (`s2s_attn.data.text.normalize_text`), and reports what it read and what it skipped, with line numbers
(`ReadReport`), so that a malformed line is counted and reported, never silently lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError
from .text import normalize_text

Pair = tuple[str, str]

#: Most skipped-line examples kept in the manifest.
MANIFEST_MAX_EXAMPLES = 20


@dataclass
class ReadReport:
    """What a reader found in a file: how many lines, how many pairs, and which lines it skipped.

    `skipped` holds (1-based line number, reason) for every malformed line. Blank lines are not in
    `skipped`; they are only counted in `blank_lines`. For two parallel files, `path` is the source file
    and `tgt_path` the target file.
    """

    path: str
    lines_total: int = 0
    pairs_read: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    blank_lines: int = 0
    tgt_path: str | None = None

    @property
    def label(self) -> str:
        """Short name for messages: the file name, or "src-name + tgt-name" for parallel files."""
        name = Path(self.path).name
        return f"{name} + {Path(self.tgt_path).name}" if self.tgt_path else name

    def summary(self, max_examples: int = 5) -> str:
        """One line, e.g. ``eng-fra.tsv: read 162,660 pairs from 162,666 lines; skipped 6 malformed lines
        (line 12: 1 column, expected 2 or 3; line 40: empty target; ...)``."""
        text = f"{self.label}: read {self.pairs_read:,} pairs from {self.lines_total:,} lines"
        if self.skipped:
            n = len(self.skipped)
            examples = "; ".join(f"line {line}: {reason}" for line, reason in self.skipped[:max_examples])
            if n > max_examples:
                examples += "; ..."
            text += f"; skipped {n:,} malformed line{'s' if n != 1 else ''} ({examples})"
        if self.blank_lines:
            text += f"; ignored {self.blank_lines:,} blank line{'s' if self.blank_lines != 1 else ''}"
        return text

    def to_dict(self, max_examples: int = MANIFEST_MAX_EXAMPLES) -> dict[str, Any]:
        """JSON-ready counts with at most `max_examples` skipped-line examples."""
        return {
            "path": self.path,
            "tgt_path": self.tgt_path,
            "lines_total": self.lines_total,
            "pairs_read": self.pairs_read,
            "blank_lines": self.blank_lines,
            "skipped_malformed": len(self.skipped),
            "skipped_examples": [[line, reason] for line, reason in self.skipped[:max_examples]],
        }


def _read_lines(path: Path, what: str) -> list[bytes]:
    """Return the raw lines of `path` (without line endings), or raise DataError if it can't be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"{what} not found: {path}. Set S2S_DATA_DIR or data.root=... to the directory that holds your "
            "corpus files, or put the file at that path."
        ) from None
    except IsADirectoryError:
        raise DataError(
            f"{what} {path} is a directory, not a file. Point the data config at a file."
        ) from None
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e.strerror}. Check its permissions.") from None
    if not data.strip():
        raise DataError(
            f"{what} is empty: {path}. Check that it was copied or downloaded completely, or delete it and "
            "fetch it again."
        )
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the file ends with a newline
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _decode(line: bytes) -> tuple[str | None, str]:
    """Decode one line as UTF-8: (text, "") or (None, reason)."""
    try:
        return line.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start + 1}"


def _no_pairs_error(report: ReadReport, path: Path, hint: str) -> DataError:
    """The DataError for a file in which every line was skipped, quoting the first few problems."""
    problems = "; ".join(f"line {n}: {reason}" for n, reason in report.skipped[:3]) or "only blank lines"
    return DataError(
        f"no valid sentence pairs in {path}: all {report.lines_total:,} lines were skipped "
        f"({problems}). {hint}"
    )


def read_tsv(path: str | Path, src_column: int = 0, tgt_column: int = 1) -> tuple[list[Pair], ReadReport]:
    """Read a Tatoeba/manythings TSV file: ``English<TAB>other language[<TAB>attribution]``.

    Returns the normalised (source, target) pairs taken from columns `src_column` and `tgt_column`
    (0-based; ``src_column=1, tgt_column=0`` reads the reverse direction from the same file), and a
    ReadReport. Each line is decoded separately, so one line of invalid UTF-8 skips that line, not the
    file. Lines with 1 or more than 3 columns, an empty source or target after normalisation, or invalid
    UTF-8 are skipped and listed with their line numbers; blank lines are skipped and only counted.

    Raises DataError if the file is missing, unreadable, empty, or has no valid line.
    """
    path = Path(path)
    if src_column == tgt_column or min(src_column, tgt_column) < 0:
        raise DataError(
            f"src_column={src_column} and tgt_column={tgt_column} must be two different column numbers "
            f"(0-based) for {path}. Use 0 and 1 for English->other, or 1 and 0 for the reverse."
        )
    lines = _read_lines(path, "corpus file")
    report = ReadReport(path=str(path), lines_total=len(lines))
    pairs: list[Pair] = []
    needed = max(src_column, tgt_column) + 1
    for number, raw in enumerate(lines, start=1):
        text, reason = _decode(raw)
        if text is None:
            report.skipped.append((number, reason))
            continue
        if not text.strip():
            report.blank_lines += 1
            continue
        columns = text.split("\t")
        if len(columns) not in (2, 3):
            plural = "s" if len(columns) != 1 else ""
            report.skipped.append((number, f"{len(columns)} column{plural}, expected 2 or 3"))
            continue
        if len(columns) < needed:
            report.skipped.append((number, f"{len(columns)} columns, column {needed} needed"))
            continue
        src = normalize_text(columns[src_column])
        tgt = normalize_text(columns[tgt_column])
        if not src or not tgt:
            report.skipped.append((number, _empty_reason(src, tgt)))
            continue
        pairs.append((src, tgt))
    report.pairs_read = len(pairs)
    if not pairs:
        raise _no_pairs_error(
            report, path, "Check that it is a tab-separated file with an English and a translation column."
        )
    return pairs, report


def _empty_reason(src: str, tgt: str) -> str:
    """Skip reason for a pair with an empty side."""
    if not src and not tgt:
        return "empty source and target"
    return "empty source" if not src else "empty target"


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list[Pair], ReadReport]:
    """Read two plain-text files where line i of one is the translation of line i of the other.

    Returns normalised pairs and a ReadReport (line numbers are shared by both files). Lines where one
    side is empty after normalisation, or either side is invalid UTF-8, are skipped and listed; lines
    blank on both sides are skipped and only counted.

    Raises DataError if a file is missing, unreadable or empty, if the files have different numbers of
    lines, or if no line pair is valid.
    """
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    src_lines = _read_lines(src_path, "source file")
    tgt_lines = _read_lines(tgt_path, "target file")
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"parallel files have different numbers of lines: {src_path} has {len(src_lines):,} and "
            f"{tgt_path} has {len(tgt_lines):,}. Line i of one file must translate line i of the other."
        )
    report = ReadReport(path=str(src_path), tgt_path=str(tgt_path), lines_total=len(src_lines))
    pairs: list[Pair] = []
    for number, (raw_src, raw_tgt) in enumerate(zip(src_lines, tgt_lines, strict=True), start=1):
        src_text, src_reason = _decode(raw_src)
        tgt_text, tgt_reason = _decode(raw_tgt)
        if src_text is None or tgt_text is None:
            side = "source" if src_text is None else "target"
            report.skipped.append((number, f"{src_reason or tgt_reason} in {side} file"))
            continue
        src, tgt = normalize_text(src_text), normalize_text(tgt_text)
        if not src and not tgt:
            report.blank_lines += 1
        elif not src or not tgt:
            report.skipped.append((number, _empty_reason(src, tgt)))
        else:
            pairs.append((src, tgt))
    report.pairs_read = len(pairs)
    if not pairs:
        raise _no_pairs_error(report, src_path, f"Check {src_path} and {tgt_path}.")
    return pairs, report
