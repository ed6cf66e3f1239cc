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

Pair = tuple[str, str]

#: Most skipped-line examples kept in the manifest.
MANIFEST_MAX_EXAMPLES = 20


@dataclass
class ReadReport:
    """What a reader found in a file: how many lines, how many pairs, and which lines it skipped.

    `skipped` holds (1-based line number, reason) of the malformed lines (for a large corpus, the first
    thousand; `n_skipped` counts them all). Blank lines are not in `skipped`; they are only counted in
    `blank_lines`. For two parallel files, `path` is the source file
    and `tgt_path` the target file.
    """

    path: str
    lines_total: int = 0
    pairs_read: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    blank_lines: int = 0
    tgt_path: str | None = None
    skipped_count: int = 0  # every malformed line; `skipped` may list only the first ones

    @property
    def n_skipped(self) -> int:
        return max(self.skipped_count, len(self.skipped))

    @property
    def label(self) -> str:
        """Short name for messages: the file name, or "src-name + tgt-name" for parallel files."""
        name = Path(self.path).name
        return f"{name} + {Path(self.tgt_path).name}" if self.tgt_path else name

    def summary(self, max_examples: int = 5) -> str:
        """One line, e.g. ``eng-fra.tsv: read 162,660 pairs from 162,666 lines; skipped 6 malformed lines
        (line 12: 1 column, expected 2 or 3; line 40: empty target; ...)``."""
        text = f"{self.label}: read {self.pairs_read:,} pairs from {self.lines_total:,} lines"
        if self.n_skipped:
            n = self.n_skipped
            examples = "; ".join(f"line {line}: {reason}" for line, reason in self.skipped[:max_examples])
            if n > min(max_examples, len(self.skipped)):
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
            "skipped_malformed": self.n_skipped,
            "skipped_examples": [[line, reason] for line, reason in self.skipped[:max_examples]],
        }


def _no_pairs_error(report: ReadReport, path: Path, hint: str) -> DataError:
    """The DataError for a file in which every line was skipped, quoting the first few problems."""
    problems = "; ".join(f"line {n}: {reason}" for n, reason in report.skipped[:3]) or "only blank lines"
    return DataError(
        f"no valid sentence pairs in {path}: all {report.lines_total:,} lines were skipped "
        f"({problems}). {hint}"
    )


def check_columns(path: Path, src_column: int, tgt_column: int) -> None:
    """A DataError unless the two columns are different, non-negative column numbers."""
    if src_column == tgt_column or min(src_column, tgt_column) < 0:
        raise DataError(
            f"src_column={src_column} and tgt_column={tgt_column} must be two different column numbers "
            f"(0-based) for {path}. Use 0 and 1 for English->other, or 1 and 0 for the reverse."
        )


TSV_HINT = "Check that it is a tab-separated file with an English and a translation column."


def report_of(cleaned: Any) -> ReadReport:
    """The ReadReport of what `s2s_attn.data.stream.stream_clean` read (before any length filter)."""
    return ReadReport(path=cleaned.path, tgt_path=cleaned.tgt_path, lines_total=cleaned.lines_total,
                      pairs_read=cleaned.kept + sum(cleaned.removed.values()), skipped=list(cleaned.skipped),
                      skipped_count=cleaned.skipped_count, blank_lines=cleaned.blank)


def _read(kind: str, paths: list[Path], columns: tuple[int, int] = (0, 1)) -> tuple[list[Pair], ReadReport]:
    """Read a small corpus into memory with the streamed cleaner (normalised, nothing filtered)."""
    import io

    from .stream import Pool, Rules, stream_clean

    src, tgt = io.BytesIO(), io.BytesIO()
    with Pool(1) as pool:
        cleaned, _, _ = stream_clean(kind, paths, src, tgt, Rules(), pool, columns)
    src_lines = src.getvalue().decode("utf-8").split("\n")[:-1]
    tgt_lines = tgt.getvalue().decode("utf-8").split("\n")[:-1]
    return list(zip(src_lines, tgt_lines, strict=True)), report_of(cleaned)


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
    check_columns(path, src_column, tgt_column)
    pairs, report = _read("tsv", [path], (src_column, tgt_column))
    if not pairs:
        raise _no_pairs_error(report, path, TSV_HINT)
    return pairs, report


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list[Pair], ReadReport]:
    """Read two plain-text files where line i of one is the translation of line i of the other.

    Returns normalised pairs and a ReadReport (line numbers are shared by both files). Lines where one
    side is empty after normalisation, or either side is invalid UTF-8, are skipped and listed; lines
    blank on both sides are skipped and only counted.

    Raises DataError if a file is missing, unreadable or empty, if the files have different numbers of
    lines, or if no line pair is valid.
    """
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    pairs, report = _read("parallel", [src_path, tgt_path])
    if not pairs:
        raise _no_pairs_error(report, src_path, f"Check {src_path} and {tgt_path}.")
    return pairs, report
