"""Reading, cleaning, filtering and splitting parallel corpora, and preparing cached train/valid/test files.

The pipeline for a Tatoeba/manythings TSV corpus is::

    read_tsv -> filter_pairs -> deduplicate -> split_grouped -> six text files + manifest.json

`prepare_data` runs it from the Hydra data config and caches the result under
``<cache_dir>/<name>-<hash>/``; the hash covers the relevant config keys and the sha256 of the source files,
so a changed corpus or config gives a new directory and an unchanged one is reused.

All text is normalised with `normalize_text` (NFKC, control and zero-width characters removed, whitespace
collapsed) before anything else looks at it, so the typographic spaces of the French Tatoeba side
(U+202F, U+00A0, U+2009) become ordinary spaces.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import random
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

Pair = tuple[str, str]

#: Bump when normalisation, filtering or splitting changes, so that old caches are not reused.
PREPARE_VERSION = 1

#: Split file names written by `prepare_data`, in this order.
SPLIT_FILES = ("train.src", "train.tgt", "valid.src", "valid.tgt", "test.src", "test.tgt")

MANIFEST_NAME = "manifest.json"

#: Most skipped-line examples kept in the manifest.
MANIFEST_MAX_EXAMPLES = 20

#: Values used when the data config leaves a key out (an explicit null max_words/max_ratio means no limit).
DEFAULTS: dict[str, Any] = {
    "src_column": 0,
    "tgt_column": 1,
    "download": None,
    "valid_size": 1000,
    "test_size": 1000,
    "split_seed": 1,
    "min_words": 1,
    "max_words": 50,
    "max_ratio": 3.0,
    "dedup": True,
    "src_lang": "src",
    "tgt_lang": "tgt",
    "zh_script": "simplified",
}


class DataError(Exception):
    """A problem with the user's data or data config, explained in one or two sentences.

    The message says what is wrong, which file, and what to do about it; the CLI prints it without a
    traceback.
    """


# --------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------
# Cleaning and splitting
# --------------------------------------------------------------------------------------------------------


def filter_pairs(
    pairs: Iterable[Pair],
    min_words: int = 1,
    max_words: int | None = 50,
    max_ratio: float | None = 3.0,
) -> tuple[list[Pair], dict[str, int]]:
    """Drop pairs that are too short, too long, or too different in length.

    Lengths come from `count_words` (words, or characters for Chinese/Japanese). A pair is removed
    when its shorter side has fewer than `min_words` ("too_short"), else when its longer side has more
    than `max_words` ("too_long"), else when longer/shorter exceeds `max_ratio` ("length_ratio").
    `None` turns a limit off. Each removed pair is counted once, under the first rule it fails.

    Returns the kept pairs (in order) and ``{"too_short": n, "too_long": n, "length_ratio": n}``.
    """
    kept: list[Pair] = []
    removed = {"too_short": 0, "too_long": 0, "length_ratio": 0}
    for pair in pairs:
        a, b = count_words(pair[0]), count_words(pair[1])
        shorter, longer = min(a, b), max(a, b)
        if shorter < min_words:
            removed["too_short"] += 1
        elif max_words is not None and longer > max_words:
            removed["too_long"] += 1
        elif max_ratio is not None and (shorter == 0 or longer / shorter > max_ratio):
            removed["length_ratio"] += 1
        else:
            kept.append(pair)
    return kept, removed


def deduplicate(pairs: Iterable[Pair]) -> tuple[list[Pair], int]:
    """Drop exact duplicate (source, target) pairs, keeping the first; return (pairs, number removed)."""
    seen: set[Pair] = set()
    kept: list[Pair] = []
    removed = 0
    for pair in pairs:
        if pair in seen:
            removed += 1
        else:
            seen.add(pair)
            kept.append(pair)
    return kept, removed


def split_grouped(pairs: Sequence[Pair], valid_size: int, test_size: int, seed: int) -> dict[str, list[Pair]]:
    """Split pairs into train/valid/test so that no valid or test source sentence occurs in train.

    Pairs are grouped by `source_key` of their source (lower-cased, without punctuation and whitespace),
    so all translations of one source sentence land in the same split. The groups, in order of first
    appearance, are shuffled with ``random.Random(seed)``; then whole groups go to test until it holds at
    least `test_size` pairs, then to valid until it holds at least `valid_size`, and the rest to train.
    So test and valid may be a little larger than asked (by less than one group; Tatoeba groups are a
    handful of pairs), and the test split does not depend on `valid_size`. Within each split, pairs keep
    their input order. The result depends only on the input and `seed`, not on Python's hash seed.

    Raises DataError if a size is below 1 or if the groups run out before all three splits are non-empty.
    """
    if valid_size < 1 or test_size < 1:
        raise DataError(
            f"valid_size={valid_size} and test_size={test_size} must both be at least 1. "
            "Set data.valid_size and data.test_size to the number of pairs wanted in each split."
        )
    groups: dict[str, list[int]] = {}
    for index, (src, _) in enumerate(pairs):
        groups.setdefault(source_key(src), []).append(index)
    order = list(groups.values())
    random.Random(seed).shuffle(order)

    test: list[int] = []
    valid: list[int] = []
    train: list[int] = []
    for group in order:
        if len(test) < test_size:
            test.extend(group)
        elif len(valid) < valid_size:
            valid.extend(group)
        else:
            train.extend(group)
    if not train or not valid:
        raise DataError(
            f"not enough data to split: {len(pairs):,} pairs with {len(groups):,} distinct source sentences "
            f"cannot fill test_size={test_size:,} and valid_size={valid_size:,} and leave training data. "
            "Lower data.valid_size and data.test_size, relax the length filters, or use a larger corpus."
        )
    return {
        "train": [pairs[i] for i in sorted(train)],
        "valid": [pairs[i] for i in sorted(valid)],
        "test": [pairs[i] for i in sorted(test)],
    }


def count_sources_in(pairs: Iterable[Pair], reference: Iterable[Pair]) -> int:
    """Number of pairs in `pairs` whose source (by `source_key`) also occurs in `reference`."""
    seen = {source_key(src) for src, _ in reference}
    return sum(1 for src, _ in pairs if source_key(src) in seen)


# --------------------------------------------------------------------------------------------------------
# Preparing cached splits
# --------------------------------------------------------------------------------------------------------

_CONFIG_KEYS = {
    "tsv": (
        "name",
        "format",
        "corpus",
        "src_column",
        "tgt_column",
        "valid_size",
        "test_size",
        "split_seed",
        "min_words",
        "max_words",
        "max_ratio",
        "dedup",
    ),
    "parallel": (
        "name",
        "format",
        "train",
        "valid",
        "test",
        "src_lang",
        "tgt_lang",
        "min_words",
        "max_words",
        "max_ratio",
        "dedup",
    ),
}
#: Keys that don't change the prepared text (locations, tokenizer settings); for the toy format, every
#: other config key is part of the cache key.
_NOT_DATA_KEYS = ("root", "cache_dir", "download", "spm", "max_src_pieces", "max_tgt_pieces")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory and `os.replace`.

    Readers see either the old file or the complete new one, never a partial write.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _plain(value: Any) -> Any:
    """Turn OmegaConf containers (or any Mapping/sequence) into plain JSON-ready dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _setting(cfg: Mapping[str, Any], key: str) -> Any:
    """`cfg[key]`, or the value in DEFAULTS when the key is missing."""
    return cfg.get(key, DEFAULTS.get(key))


def _require(cfg: Mapping[str, Any], key: str, fmt: str) -> Any:
    """`cfg[key]`, or a DataError saying that format `fmt` needs it."""
    value = cfg.get(key)
    if value is None or value in ("", "???"):
        raise DataError(f"the data config has no '{key}' (needed for format={fmt}). Set data.{key}=... .")
    return value


def _relevant_config(cfg: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """The config values that determine the prepared data (used for the cache key and the manifest)."""
    if fmt in _CONFIG_KEYS:
        keys = _CONFIG_KEYS[fmt]
        if _chinese_sides(cfg):  # only then do the languages and the script change the prepared text
            keys = tuple(dict.fromkeys((*keys, "src_lang", "tgt_lang", "zh_script")))
        return {key: _plain(_setting(cfg, key)) for key in keys}
    return {str(k): _plain(v) for k, v in cfg.items() if k not in _NOT_DATA_KEYS}


def _s2s_version() -> str | None:
    """The installed s2s-attn version, else ``s2s_attn.__version__``, else None."""
    try:
        return importlib.metadata.version("s2s-attn")
    except importlib.metadata.PackageNotFoundError:
        import s2s_attn

        return getattr(s2s_attn, "__version__", None)


def _cached_manifest(out_dir: Path, cache_key: str) -> dict[str, Any] | None:
    """The manifest of a complete, unchanged prepared directory, or None if it must be (re)built."""
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("cache_key") != cache_key:
        return None
    files = manifest.get("files", {})
    for name in SPLIT_FILES:
        path = out_dir / name
        if not path.is_file() or files.get(name) != sha256_file(path):
            return None
    return manifest


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


def _read_lines_text(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, split on "\\n" only, without a final empty line."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _read_split_files(out_dir: Path) -> dict[str, list[Pair]]:
    """Read back the six split files written into `out_dir` (used for the toy format)."""
    splits = {}
    for split in ("train", "valid", "test"):
        src = _read_lines_text(out_dir / f"{split}.src")
        tgt = _read_lines_text(out_dir / f"{split}.tgt")
        splits[split] = list(zip(src, tgt, strict=True))
    return splits


def _write_splits(out_dir: Path, splits: Mapping[str, Sequence[Pair]]) -> None:
    """Write each split as `<split>.src` and `<split>.tgt`, one sentence per line, atomically."""
    for split in ("train", "valid", "test"):
        for side, name in ((0, f"{split}.src"), (1, f"{split}.tgt")):
            text = "".join(pair[side] + "\n" for pair in splits[split])
            write_atomic(out_dir / name, text.encode("utf-8"))


def _resolve_tsv(cfg: Mapping[str, Any], root: Path, log: Callable[[str], None]) -> Path:
    """Path of the TSV corpus, downloading it into `root` first if it is missing and `download` is set."""
    corpus = str(_require(cfg, "corpus", "tsv"))
    path = root / corpus
    if path.is_file():
        return path
    key = cfg.get("download")
    if not key:
        raise DataError(
            f"corpus file not found: {path}. Set S2S_DATA_DIR or data.root=... to the directory that holds "
            f"{corpus}, or set data.download (fra or cmn) to fetch it from manythings.org."
        )
    from s2s_attn.data import download

    log(f"corpus file {path} is missing; downloading '{key}' into {root}")
    fetched = download.download_tatoeba(str(key), root, log=log)
    if not path.is_file():
        raise DataError(
            f"downloaded '{key}' to {fetched}, but data.corpus points at {path}. "
            f"Set data.corpus={fetched.relative_to(root)} or put the file at {path}."
        )
    return path


def _parallel_files(root: Path, prefix: str, src_lang: str, tgt_lang: str) -> tuple[Path, Path]:
    """`PREFIX.{src_lang}`/`PREFIX.{tgt_lang}` if both exist, else `PREFIX.src`/`PREFIX.tgt`."""
    base = root / prefix
    for src_ext, tgt_ext in ((src_lang, tgt_lang), ("src", "tgt")):
        src, tgt = Path(f"{base}.{src_ext}"), Path(f"{base}.{tgt_ext}")
        if src.is_file() and tgt.is_file():
            return src, tgt
    raise DataError(
        f"parallel files not found: neither {base}.{src_lang} + {base}.{tgt_lang} nor {base}.src + "
        f"{base}.tgt exist. Set S2S_DATA_DIR or data.root=... to the directory that holds them, or fix the "
        "prefix."
    )


CHINESE_LANGS = ("zh", "cmn", "zho", "chi")
ZH_SCRIPTS = ("simplified", "keep")


def is_chinese(lang: str) -> bool:
    """``zh``, ``cmn``, ``zh-CN``, ``zh_Hant``, ...: a language code whose first part names Chinese."""
    return re.split(r"[-_]", str(lang).lower())[0] in CHINESE_LANGS


def _chinese_sides(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    """0 for a Chinese source, 1 for a Chinese target (from data.src_lang / data.tgt_lang)."""
    return tuple(i for i, key in enumerate(("src_lang", "tgt_lang")) if is_chinese(_setting(cfg, key)))


def to_simplified(pairs: Sequence[Pair], sides: Sequence[int]) -> tuple[list[Pair], int]:
    """Convert the Chinese side(s) of every pair from traditional to simplified characters with OpenCC
    (its ``t2s`` conversion: characters and common phrases), so that one meaning has one spelling.
    Returns (pairs, number of pairs that changed)."""
    if not sides:
        return list(pairs), 0
    try:
        import opencc
    except ImportError as error:  # a dependency of the package; only a broken install lacks it
        raise DataError("data.zh_script=simplified needs the 'opencc' package (pip install opencc); "
                        "or set data.zh_script=keep to leave the Chinese text as it is") from error
    convert = opencc.OpenCC("t2s").convert
    converted, changed = [], 0
    for pair in pairs:
        new = tuple(convert(text) if i in sides else text for i, text in enumerate(pair))
        changed += new != tuple(pair)
        converted.append((new[0], new[1]))
    return converted, changed


def input_script_converter(data_cfg: Mapping[str, Any]) -> Callable[[str], str] | None:
    """For translating with a model: the conversion its training data had on the source side (OpenCC t2s
    for a Chinese source with ``zh_script=simplified``), else None."""
    if 0 not in _chinese_sides(data_cfg) or str(_setting(data_cfg, "zh_script")) != "simplified":
        return None
    import opencc

    return opencc.OpenCC("t2s").convert


def _script_conversion(cfg: Mapping[str, Any], splits: dict[str, list[Pair]], log: Callable[[str], None]) -> int:
    """Apply ``data.zh_script`` to every split in place; return the number of converted pairs."""
    script, sides = str(_setting(cfg, "zh_script")), _chinese_sides(cfg)
    if script not in ZH_SCRIPTS:
        raise DataError(f"unknown data.zh_script={script!r}; valid: {', '.join(ZH_SCRIPTS)}")
    if script == "keep" or not sides:
        return 0
    total = 0
    for split, pairs in splits.items():
        splits[split], changed = to_simplified(pairs, sides)
        total += changed
    log(f"Chinese script: {total:,} pairs converted from traditional to simplified characters (OpenCC t2s)")
    return total


def _filter_log(removed: Mapping[str, int], duplicates: int | None) -> str:
    """Log line for the filter counts and (if deduplication ran) the number of duplicates."""
    parts = ", ".join(f"{rule} {n:,}" for rule, n in removed.items())
    text = f"length filters removed {sum(removed.values()):,} pairs ({parts})"
    if duplicates is not None:
        text += f"; removed {duplicates:,} duplicate pairs"
    return text


def _build_tsv(cfg: Mapping[str, Any], corpus: Path, log: Callable[[str], None]) -> tuple[dict, dict]:
    """Read, filter, deduplicate and split a TSV corpus; return (splits, counts for the manifest)."""
    pairs, report = read_tsv(corpus, int(_setting(cfg, "src_column")), int(_setting(cfg, "tgt_column")))
    log(report.summary())
    converted = {"all": pairs}
    n_converted = _script_conversion(cfg, converted, log)  # before deduplication: one spelling, one pair
    pairs = converted["all"]
    pairs, removed = filter_pairs(
        pairs, _setting(cfg, "min_words"), _setting(cfg, "max_words"), _setting(cfg, "max_ratio")
    )
    duplicates = None
    if _setting(cfg, "dedup"):
        pairs, duplicates = deduplicate(pairs)
    log(_filter_log(removed, duplicates))
    splits = split_grouped(
        pairs, int(_setting(cfg, "valid_size")), int(_setting(cfg, "test_size")), _setting(cfg, "split_seed")
    )
    counts = {
        "read": {"corpus": report.to_dict()},
        "filtered": removed,
        "duplicates_removed": duplicates or 0,
        "script_converted": n_converted,
    }
    return splits, counts


def _build_parallel(
    cfg: Mapping[str, Any], files: Mapping[str, tuple[Path, Path]], log: Callable[[str], None]
) -> tuple[dict, dict]:
    """Read pre-split parallel files and filter/deduplicate train only; return (splits, counts)."""
    splits: dict[str, list[Pair]] = {}
    reads = {}
    for split, (src, tgt) in files.items():
        splits[split], report = read_parallel(src, tgt)
        reads[split] = report.to_dict()
        log(report.summary())
    n_converted = _script_conversion(cfg, splits, log)
    splits["train"], removed = filter_pairs(
        splits["train"], _setting(cfg, "min_words"), _setting(cfg, "max_words"), _setting(cfg, "max_ratio")
    )
    duplicates = None
    if _setting(cfg, "dedup"):
        splits["train"], duplicates = deduplicate(splits["train"])
    log("train only: " + _filter_log(removed, duplicates))
    counts = {"read": reads, "filtered": removed, "duplicates_removed": duplicates or 0,
              "script_converted": n_converted}
    return splits, counts


def prepare_data(cfg: Mapping[str, Any], log: Callable[[str], None] = print) -> Path:
    """Return a directory with normalised ``train/valid/test.{src,tgt}`` files and ``manifest.json``.

    `cfg` is the data config as a mapping (a plain dict or an OmegaConf DictConfig) with `name`,
    `format` ("tsv", "parallel" or "toy"), `root` (the data directory; if unset, $S2S_DATA_DIR or
    "data"), `cache_dir` (where prepared data goes) and the format's own keys:

    * tsv: `corpus` (relative to root), `src_column`, `tgt_column`, `download` (a key of
      `download.ARCHIVES` or None), `valid_size`, `test_size`, `split_seed`, `min_words`, `max_words`,
      `max_ratio`, `dedup`. The corpus is read, length-filtered, deduplicated and split with
      `split_grouped`, so no test or valid source sentence occurs in train.
    * parallel: `train`, `valid`, `test` file prefixes (relative to root, or absolute), `src_lang`,
      `tgt_lang`, and the filter keys. Files are ``PREFIX.{src_lang}``/``PREFIX.{tgt_lang}``, or
      ``PREFIX.src``/``PREFIX.tgt`` if those don't exist. Only train is filtered and deduplicated;
      valid and test are standard sets and are only normalised (empty lines are still skipped).
    * toy: ``s2s_attn.data.synthetic.write_toy_splits(out_dir, cfg)`` writes the six files.

    The output is ``<cache_dir>/<name>-<first 12 hex of a sha256 over the relevant config keys and the
    source files' sha256>/``. It is reused when its manifest matches and every split file still has the
    recorded sha256; otherwise it is rebuilt. Files are written atomically and the manifest last, so a
    directory without a manifest is never taken as complete. Nothing is written under `root`, except
    that a missing TSV corpus with `download` set is fetched into it by `download.download_tatoeba`;
    a corpus that is present never causes network access.

    `log` receives human-readable progress lines. Raises DataError for missing or unusable data.
    """
    fmt = str(cfg.get("format"))
    if fmt not in ("tsv", "parallel", "toy"):
        raise DataError(f"unknown data.format={fmt!r}. Set data.format to tsv, parallel or toy.")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(_require(cfg, "name", fmt)))
    root = Path(str(cfg.get("root") or os.environ.get("S2S_DATA_DIR") or "data")).expanduser()
    cache_dir = Path(str(_require(cfg, "cache_dir", fmt))).expanduser()

    sources: list[Path] = []
    parallel_files: dict[str, tuple[Path, Path]] = {}
    if fmt == "tsv":
        sources = [_resolve_tsv(cfg, root, log)]
    elif fmt == "parallel":
        src_lang, tgt_lang = str(_setting(cfg, "src_lang")), str(_setting(cfg, "tgt_lang"))
        for split in ("train", "valid", "test"):
            prefix = str(_require(cfg, split, fmt))
            parallel_files[split] = _parallel_files(root, prefix, src_lang, tgt_lang)
            sources.extend(parallel_files[split])

    config = _relevant_config(cfg, fmt)
    source_info = [{"path": str(p.resolve()), "sha256": sha256_file(p)} for p in sources]
    key_material = {
        "prepare_version": PREPARE_VERSION,
        "config": config,
        "sources": [s["sha256"] for s in source_info],
    }
    cache_key = hashlib.sha256(json.dumps(key_material, sort_keys=True, default=str).encode()).hexdigest()
    out_dir = cache_dir / f"{name}-{cache_key[:12]}"

    if _cached_manifest(out_dir, cache_key) is not None:
        log(f"using cached prepared data in {out_dir}")
        return out_dir

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # mark as incomplete while rebuilding
    except OSError as e:
        raise DataError(
            f"cannot write prepared data to {out_dir}: {e.strerror}. Set data.cache_dir=... to a writable "
            "directory."
        ) from None

    if fmt == "tsv":
        splits, counts = _build_tsv(cfg, sources[0], log)
        _write_splits(out_dir, splits)
    elif fmt == "parallel":
        splits, counts = _build_parallel(cfg, parallel_files, log)
        _write_splits(out_dir, splits)
    else:
        from s2s_attn.data.synthetic import write_toy_splits

        try:
            write_toy_splits(out_dir, cfg)
        except ValueError as e:  # its messages name the data.* key to change
            raise DataError(f"cannot generate the toy data: {e}.") from None
        splits, counts = _read_split_files(out_dir), {}

    counts["pairs"] = {split: len(splits[split]) for split in ("train", "valid", "test")}
    counts["valid_sources_in_train"] = count_sources_in(splits["valid"], splits["train"])
    counts["test_sources_in_train"] = count_sources_in(splits["test"], splits["train"])
    if fmt == "tsv" and counts["test_sources_in_train"]:
        raise RuntimeError("split_grouped leaked test sources into train; this is a bug")
    sizes = counts["pairs"]
    log(
        f"split: train {sizes['train']:,} / valid {sizes['valid']:,} / test {sizes['test']:,} pairs; "
        f"sources also in train: valid {counts['valid_sources_in_train']:,}, "
        f"test {counts['test_sources_in_train']:,}"
    )

    manifest = {
        "format": fmt,
        "name": cfg.get("name"),
        "cache_key": cache_key,
        "prepare_version": PREPARE_VERSION,
        "root": str(root.resolve()),
        "sources": source_info,
        "config": config,
        "split_seed": config.get("split_seed"),
        "counts": counts,
        "files": {fname: sha256_file(out_dir / fname) for fname in SPLIT_FILES},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "s2s_attn_version": _s2s_version(),
    }
    manifest_text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    write_atomic(out_dir / MANIFEST_NAME, manifest_text.encode("utf-8"))
    log(f"wrote prepared data to {out_dir}")
    return out_dir
