"""Streamed corpus cleaning: read, normalise, filter and hash a corpus chunk by chunk, on several processes.

A corpus of tens of millions of pairs never sits in memory. Its lines are read in chunks of `CHUNK_LINES`; each
chunk is cleaned by a worker process (`clean_chunk`: decode, normalise, convert the Chinese script, apply the
length filters) and comes back as the kept pairs' text, ready to append to a file, plus two 64-bit hashes per
kept pair (of the pair, for de-duplication, and of the source's `source_key`, for the grouped split). Only the
hashes stay in memory (16 bytes a pair), so de-duplication and splitting are numpy work on arrays, and the
text goes straight to disk.

`stream_clean` runs the chunks through a pool of ``workers`` processes, at most a few chunks in flight, and
writes the kept pairs in input order, so the result is the same for any number of workers.
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import DataError, is_no_space, no_space_error
from .split import length_rule
from .text import normalize_text, source_key

#: Lines per chunk: big enough that a worker's start-up and the pickling are small beside the work.
CHUNK_LINES = 20_000
#: Skipped-line examples a report keeps (every skip is counted; only these are listed).
MAX_SKIP_EXAMPLES = 1000


def release_freed_memory() -> None:
    """Hand the heap that preparation freed (SentencePiece's trainer, the chunks' text) back to the system, so
    that training does not carry it; glibc keeps freed memory for reuse otherwise. Elsewhere: nothing."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(value: Any) -> int:
    """``data.workers``: None or 0 means every available core."""
    if value in (None, 0, "auto"):
        return available_cores()
    workers = int(value)
    if workers < 0:
        raise DataError(f"data.workers={value} must be a positive number of processes, or null for every core.")
    return workers


@dataclass(frozen=True)
class Rules:
    """What `clean_chunk` does to each pair besides normalising it.

    ``filter``: apply the length filters (`min_words`, `max_words`, `max_ratio`; None turns one off), as
    `s2s_attn.data.split.length_rule` describes; ``chinese``: the sides (0, 1) converted to simplified script.
    """

    filter: bool = False
    min_words: int = 1
    max_words: int | None = None
    max_ratio: float | None = None
    chinese: tuple[int, ...] = ()


@dataclass
class Chunk:
    """One chunk's cleaned pairs (text with a newline after each line) and what was dropped."""

    src_text: str = ""
    tgt_text: str = ""
    pair_hash: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # (kept,)
    key_hash: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # (kept,) of source_key(src)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (1-based line, reason), at most the examples
    skipped_count: int = 0
    blank: int = 0
    removed: dict[str, int] = field(default_factory=lambda: {"too_short": 0, "too_long": 0, "length_ratio": 0})
    converted: int = 0


def hash64(texts: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each text (blake2b: the same in every process and run, unlike ``hash``)."""
    digests = b"".join(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest() for t in texts)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def _decode(line: bytes) -> tuple[str | None, str]:
    try:
        return line.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start + 1}"


def _empty_reason(src: str, tgt: str) -> str:
    if not src and not tgt:
        return "empty source and target"
    return "empty source" if not src else "empty target"


def _skip(chunk: Chunk, line: int, reason: str) -> None:
    chunk.skipped_count += 1
    if len(chunk.skipped) < MAX_SKIP_EXAMPLES:
        chunk.skipped.append((line, reason))


def _tsv_pairs(job: dict, chunk: Chunk) -> Iterator[tuple[int, str, str]]:
    """(line number, source, target) of the well-formed lines of a TSV chunk, normalised."""
    src_column, tgt_column = job["columns"]
    needed = max(src_column, tgt_column) + 1
    for number, raw in enumerate(job["lines"], start=job["first_line"]):
        text, reason = _decode(raw)
        if text is None:
            _skip(chunk, number, reason)
            continue
        if not text.strip():
            chunk.blank += 1
            continue
        columns = text.split("\t")
        if len(columns) not in (2, 3):
            plural = "s" if len(columns) != 1 else ""
            _skip(chunk, number, f"{len(columns)} column{plural}, expected 2 or 3")
            continue
        if len(columns) < needed:
            _skip(chunk, number, f"{len(columns)} columns, column {needed} needed")
            continue
        src, tgt = normalize_text(columns[src_column]), normalize_text(columns[tgt_column])
        if not src or not tgt:
            _skip(chunk, number, _empty_reason(src, tgt))
            continue
        yield number, src, tgt


def _parallel_pairs(job: dict, chunk: Chunk) -> Iterator[tuple[int, str, str]]:
    """(line number, source, target) of the usable line pairs of two parallel files' chunks, normalised."""
    for number, (raw_src, raw_tgt) in enumerate(zip(job["lines"], job["tgt_lines"], strict=True),
                                                 start=job["first_line"]):
        src_text, src_reason = _decode(raw_src)
        tgt_text, tgt_reason = _decode(raw_tgt)
        if src_text is None or tgt_text is None:
            side = "source" if src_text is None else "target"
            _skip(chunk, number, f"{src_reason or tgt_reason} in {side} file")
            continue
        src, tgt = normalize_text(src_text), normalize_text(tgt_text)
        if not src and not tgt:
            chunk.blank += 1
        elif not src or not tgt:
            _skip(chunk, number, _empty_reason(src, tgt))
        else:
            yield number, src, tgt


_CONVERTER: Callable[[str], str] | None = None


def _to_simplified(text: str) -> str:
    global _CONVERTER
    if _CONVERTER is None:  # once per worker process
        import opencc

        _CONVERTER = opencc.OpenCC("t2s").convert
    return _CONVERTER(text)


def clean_chunk(job: dict) -> Chunk:
    """Clean one chunk. ``job``: "kind" ("tsv" or "parallel"), "first_line" (1-based), "lines" (raw bytes
    without line endings), "tgt_lines" (parallel), "columns" (tsv: source and target column), "rules"."""
    chunk = Chunk()
    rules: Rules = job["rules"]
    pairs = _tsv_pairs(job, chunk) if job["kind"] == "tsv" else _parallel_pairs(job, chunk)
    kept_src: list[str] = []
    kept_tgt: list[str] = []
    for _, src, tgt in pairs:
        if rules.chinese:
            new = [_to_simplified(side) if i in rules.chinese else side for i, side in enumerate((src, tgt))]
            chunk.converted += (new[0], new[1]) != (src, tgt)
            src, tgt = new
        if rules.filter:
            rule = length_rule(src, tgt, rules.min_words, rules.max_words, rules.max_ratio)
            if rule is not None:
                chunk.removed[rule] += 1
                continue
        kept_src.append(src)
        kept_tgt.append(tgt)
    chunk.src_text = "".join(s + "\n" for s in kept_src)
    chunk.tgt_text = "".join(t + "\n" for t in kept_tgt)
    chunk.pair_hash = hash64([s + "\t" + t for s, t in zip(kept_src, kept_tgt)])
    chunk.key_hash = hash64([source_key(s) for s in kept_src])
    return chunk


def open_corpus_file(path: Path, what: str) -> BinaryIO:
    """Open a corpus file for reading, or raise the DataError that says what to do."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    except FileNotFoundError:
        raise DataError(
            f"{what} not found: {path}. Set S2S_DATA_DIR or data.root=... to the directory that holds your "
            "corpus files, or put the file at that path."
        ) from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a directory, not a file. Point the data config at a file.") from None
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e.strerror}. Check its permissions.") from None
    if os.fstat(handle.fileno()).st_size == 0:
        handle.close()
        raise DataError(
            f"{what} is empty: {path}. Check that it was copied or downloaded completely, or delete it and "
            "fetch it again."
        )
    return handle


def count_lines(path: Path, what: str) -> int:
    """Lines of a file, counted as `read_line_chunks` reads them (a last line without a newline counts)."""
    count, last = 0, b"\n"
    with open_corpus_file(path, what) as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def read_line_chunks(path: Path, what: str, size: int | None = None) -> Iterator[list[bytes]]:
    """The raw lines of a file (without "\\n" and a trailing "\\r"; a leading BOM removed), `size` (default
    `CHUNK_LINES`) at a time."""
    size = size or CHUNK_LINES
    with open_corpus_file(path, what) as f:
        lines: list[bytes] = []
        first = True
        for line in f:
            if line.endswith(b"\n"):
                line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if first:
                first = False
                if line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
            lines.append(line)
            if len(lines) == size:
                yield lines
                lines = []
        if lines:
            yield lines


@dataclass
class Cleaned:
    """What `stream_clean` wrote and counted for one input (a TSV file or a pair of parallel files)."""

    path: str
    tgt_path: str | None
    lines_total: int = 0
    kept: int = 0
    blank: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    skipped_count: int = 0
    removed: dict[str, int] = field(default_factory=lambda: {"too_short": 0, "too_long": 0, "length_ratio": 0})
    converted: int = 0


def _jobs(kind: str, paths: Sequence[Path], columns: tuple[int, int], rules: Rules) -> Iterator[dict]:
    if kind == "tsv":
        first = 1
        for lines in read_line_chunks(paths[0], "corpus file"):
            yield {"kind": kind, "first_line": first, "lines": lines, "columns": columns, "rules": rules}
            first += len(lines)
        return
    first = 1
    src_chunks = read_line_chunks(paths[0], "source file")
    tgt_chunks = read_line_chunks(paths[1], "target file")
    for src_lines, tgt_lines in zip(src_chunks, tgt_chunks, strict=True):
        yield {"kind": kind, "first_line": first, "lines": src_lines, "tgt_lines": tgt_lines, "rules": rules}
        first += len(src_lines)


def _start_method() -> str:
    """fork where there is one: `clean_chunk` touches neither torch nor logging (whose threads and locks a fork
    copies half-held), and, unlike spawn, a fork does not re-run a user's script that lacks a main guard."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class Pool:
    """``workers`` processes that clean chunks (or this process alone, for one worker). A context manager."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = None
        if workers > 1:
            self._pool = multiprocessing.get_context(_start_method()).Pool(workers)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()

    def ordered(self, jobs: Iterator[dict]) -> Iterator[Chunk]:
        """`clean_chunk` of every job, in order, with at most two jobs per worker waiting (bounded memory)."""
        if self._pool is None:
            yield from map(clean_chunk, jobs)
            return
        pending: deque = deque()
        for job in jobs:
            pending.append(self._pool.apply_async(clean_chunk, (job,)))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def disk_full_error(directory: Path, error: OSError) -> DataError:
    """The DataError for a failed write of prepared data: a full disk says so (`no_space_error`)."""
    if is_no_space(error):
        return no_space_error(directory, "the prepared data could not be written",
                              "set data.cache_dir=... (or S2S_CACHE_DIR) to a directory on a larger disk")
    return DataError(f"cannot write prepared data to {directory}: {error.strerror}. Set data.cache_dir=... to a "
                     "writable directory.")


def stream_clean(
    kind: str,
    paths: Sequence[Path],
    out_src: BinaryIO,
    out_tgt: BinaryIO,
    rules: Rules,
    pool: Pool,
    columns: tuple[int, int] = (0, 1),
    progress: Callable[[int], None] | None = None,
) -> tuple[Cleaned, np.ndarray, np.ndarray]:
    """Clean one input through `pool` and append its kept pairs to ``out_src`` / ``out_tgt``.

    ``kind``: "tsv" (``paths``: the file) or "parallel" (``paths``: source and target file, which must have the
    same number of lines). Returns what was counted and the kept pairs' pair hashes and source-key hashes.
    ``progress`` is called with the number of lines of each chunk done.
    """
    report = Cleaned(path=str(paths[0]), tgt_path=str(paths[1]) if kind == "parallel" else None)
    if kind == "parallel":
        n_src, n_tgt = count_lines(paths[0], "source file"), count_lines(paths[1], "target file")
        if n_src != n_tgt:
            raise DataError(
                f"parallel files have different numbers of lines: {paths[0]} has {n_src:,} and {paths[1]} has "
                f"{n_tgt:,}. Line i of one file must translate line i of the other."
            )
    pair_hashes: list[np.ndarray] = []
    key_hashes: list[np.ndarray] = []
    for chunk in pool.ordered(_jobs(kind, paths, columns, rules)):
        out_src.write(chunk.src_text.encode("utf-8"))
        out_tgt.write(chunk.tgt_text.encode("utf-8"))
        pair_hashes.append(chunk.pair_hash)
        key_hashes.append(chunk.key_hash)
        lines = len(chunk.pair_hash) + chunk.skipped_count + chunk.blank + sum(chunk.removed.values())
        report.lines_total += lines
        report.kept += len(chunk.pair_hash)
        report.blank += chunk.blank
        report.skipped_count += chunk.skipped_count
        report.skipped.extend(chunk.skipped[: MAX_SKIP_EXAMPLES - len(report.skipped)])
        report.converted += chunk.converted
        for rule, n in chunk.removed.items():
            report.removed[rule] += n
        if progress is not None:
            progress(lines)
    if report.blank == report.lines_total:  # nothing but whitespace
        what = "corpus file" if kind == "tsv" else "source file"
        raise DataError(f"{what} is empty: {paths[0]}. Check that it was copied or downloaded completely, or "
                        "delete it and fetch it again.")
    empty = np.zeros(0, np.uint64)
    return report, np.concatenate(pair_hashes or [empty]), np.concatenate(key_hashes or [empty])
