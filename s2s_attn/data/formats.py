"""Corpus formats, one class each behind one interface and one registry (``data.format=``), as attention variants
are: a format says which files the prepared data is made from and turns them into train / valid / test files.

    tsv       one pair per line, ``English<TAB>other language[<TAB>attribution]`` (Tatoeba, manythings.org):
              read, length-filtered, de-duplicated and split grouped by source sentence
    parallel  pre-split line-parallel files ``PREFIX.<src_lang>`` / ``PREFIX.<tgt_lang>`` (train may be a list of
              prefixes, concatenated): train is filtered and de-duplicated; valid and test are standard sets,
              only normalised
    toy       a synthetic task the code generates (`s2s_attn.data.synthetic`): no files at all

The tsv and parallel formats stream their corpora (`s2s_attn.data.stream`): chunks of lines are cleaned on
``data.workers`` processes, the kept text goes to disk as it comes, and de-duplication and the split work on
64-bit hashes, so memory does not grow with the corpus. A new format subclasses `CorpusFormat` and registers
itself with ``@register_format("name")``; the cache, the manifest and SentencePiece come with
`s2s_attn.data.corpus.prepare_data`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from ..model.registry import Registry
from .chinese import chinese_sides, script_sides
from .errors import DataError
from .readers import report_of
from .split import TEST, TRAIN, VALID, first_occurrences, grouped_split_labels
from .stream import Pool, Rules, hash64, resolve_workers, stream_clean
from .text import source_key

FORMAT_REGISTRY = Registry("data.format")
register_format = FORMAT_REGISTRY.register

Log = Callable[[str], None]

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
    "workers": None,
}

#: Keys that don't change the prepared text (locations, tokenizer settings).
NOT_DATA_KEYS = ("root", "cache_dir", "download", "spm", "max_src_pieces", "max_tgt_pieces", "workers")


def setting(cfg: Mapping[str, Any], key: str) -> Any:
    """`cfg[key]`, or the value in DEFAULTS when the key is missing."""
    return cfg.get(key, DEFAULTS.get(key))


def require(cfg: Mapping[str, Any], key: str) -> Any:
    """`cfg[key]`, or a DataError saying that this format needs it."""
    value = cfg.get(key)
    if value is None or value in ("", "???"):
        raise DataError(f"the data config has no '{key}' (needed for format={cfg.get('format')}). "
                        f"Set data.{key}=... .")
    return value


def filter_log(removed: Mapping[str, int], duplicates: int | None) -> str:
    """Log line for the filter counts and (if deduplication ran) the number of duplicates."""
    parts = ", ".join(f"{rule} {n:,}" for rule, n in removed.items())
    text = f"length filters removed {sum(removed.values()):,} pairs ({parts})"
    if duplicates is not None:
        text += f"; removed {duplicates:,} duplicate pairs"
    return text


def rules(cfg: Mapping[str, Any], filter: bool) -> Rules:
    """What the streamed cleaner does besides normalising: the length filters (when ``filter``) and the Chinese
    script conversion (`s2s_attn.data.chinese.script_sides`)."""
    return Rules(filter=filter, min_words=int(setting(cfg, "min_words")), max_words=setting(cfg, "max_words"),
                 max_ratio=setting(cfg, "max_ratio"), chinese=script_sides(cfg))


class Progress:
    """A progress bar in pairs (input lines) and pairs/s while a corpus is cleaned; shown on a terminal only."""

    def __init__(self, total: int, what: str) -> None:
        self.bar = tqdm(total=total, unit=" pairs", unit_scale=True, desc=what, dynamic_ncols=True, leave=False,
                        disable=None)

    def __call__(self, lines: int) -> None:
        self.bar.update(lines)

    def close(self) -> None:
        self.bar.close()


class WorkFiles:
    """Temporary files in the prepared directory: the cleaned text before de-duplication and the split, and the
    split files being written (renamed into place by `finish`, so a killed run leaves nothing that looks done)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.handles: dict[str, BinaryIO] = {}

    def open(self, name: str) -> BinaryIO:
        handle = open(self.out_dir / f".{name}.tmp", "wb", buffering=1 << 20)  # noqa: SIM115
        self.handles[name] = handle
        return handle

    def path(self, name: str) -> Path:
        return self.out_dir / f".{name}.tmp"

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()

    def finish(self, name: str, target: str) -> None:
        os.replace(self.path(name), self.out_dir / target)

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)


def write_rows(work: WorkFiles, name: str, labels: np.ndarray, targets: dict[int, str]) -> dict[int, int]:
    """Copy the lines of work files ``name.src`` / ``name.tgt`` to split files: line i goes to
    ``targets[labels[i]]`` (.src / .tgt), or nowhere for a label not in ``targets``. -> lines per label."""
    outputs = {label: (work.open(f"{target}.src"), work.open(f"{target}.tgt")) for label, target in targets.items()}
    counts = dict.fromkeys(targets, 0)
    with open(work.path(f"{name}.src"), "rb") as src, open(work.path(f"{name}.tgt"), "rb") as tgt:
        rows = zip(src, tgt, strict=True)
        for start in range(0, len(labels), 1 << 20):
            for label, (src_line, tgt_line) in zip(labels[start : start + (1 << 20)].tolist(), rows):
                out = outputs.get(label)
                if out is not None:
                    out[0].write(src_line)
                    out[1].write(tgt_line)
                    counts[label] += 1
    for label, target in targets.items():
        for side, handle in zip(("src", "tgt"), outputs[label], strict=True):
            handle.close()
            work.finish(f"{target}.{side}", f"{target}.{side}")
    return counts


def split_counts(splits: Mapping[str, Sequence[tuple[str, str]]]) -> dict[str, Any]:
    """The manifest's "pairs" and "valid_sources_in_train" / "test_sources_in_train" of splits in memory."""
    keys = {split: hash64([source_key(src) for src, _ in pairs]) for split, pairs in splits.items()}
    return {"pairs": {split: len(splits[split]) for split in ("train", "valid", "test")},
            "valid_sources_in_train": overlap(keys["train"], keys["valid"]),
            "test_sources_in_train": overlap(keys["train"], keys["test"])}


def write_pairs(out_dir: Path, splits: Mapping[str, Sequence[tuple[str, str]]],
                counts: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """For a format that builds its (small) splits in memory: write the six files; -> ``counts`` plus
    `split_counts`, what `CorpusFormat.build` returns."""
    from .cache import write_splits

    write_splits(out_dir, splits)
    return {**(counts or {}), **split_counts(splits)}


def read_log(cleaned: Any) -> str:
    return report_of(cleaned).summary()


def filter_counts(cleaned: Sequence[Any]) -> dict[str, int]:
    removed = {"too_short": 0, "too_long": 0, "length_ratio": 0}
    for report in cleaned:
        for rule, n in report.removed.items():
            removed[rule] += n
    return removed


def overlap(train_keys: np.ndarray, keys: np.ndarray) -> int:
    """How many of ``keys`` (source-key hashes, a held-out split's) also occur in ``train_keys`` (many more): one
    pass of binary searches over the training keys, no sort of them."""
    if len(keys) == 0 or len(train_keys) == 0:
        return 0
    distinct = np.unique(keys)
    position = np.searchsorted(distinct, train_keys).clip(max=len(distinct) - 1)
    seen = np.zeros(len(distinct), dtype=bool)
    seen[position[distinct[position] == train_keys]] = True
    return int(seen[np.searchsorted(distinct, keys)].sum())


class CorpusFormat:
    """How one kind of corpus becomes the six split files ``{train,valid,test}.{src,tgt}`` of a prepared directory.

    ``data_keys``: the data.* keys that determine the prepared text (they go into the cache key and the
    manifest); None: every key but locations and tokenizer settings. ``grouped_split``: the format splits the
    corpus itself, grouped by source sentence, so no test source may occur in train.
    """

    name: str
    data_keys: tuple[str, ...] | None = None
    grouped_split = False

    def sources(self, cfg: Mapping[str, Any], root: Path, log: Log) -> list[Path]:
        """The files the prepared data is made from (their checksums go into the cache key)."""
        return []

    def build(self, cfg: Mapping[str, Any], sources: list[Path], out_dir: Path, log: Log) -> dict[str, Any]:
        """Write the six split files into ``out_dir`` (each atomically); -> counts for the manifest, with "pairs"
        (per split) and "valid_sources_in_train" / "test_sources_in_train". A format that holds its splits in
        memory returns ``write_pairs(out_dir, splits, counts)``."""
        raise NotImplementedError

    def relevant_config(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The config values that determine the prepared data (used for the cache key and the manifest)."""
        from .cache import plain

        if self.data_keys is None:
            return {str(k): plain(v) for k, v in cfg.items() if k not in NOT_DATA_KEYS}
        keys = self.data_keys
        if chinese_sides(cfg):  # only then do the languages and the script change the prepared text
            keys = tuple(dict.fromkeys((*keys, "src_lang", "tgt_lang", "zh_script")))
        return {key: plain(setting(cfg, key)) for key in keys}


def _clean_all(kind: str, inputs: Sequence[Sequence[Path]], rules_: Rules, work: WorkFiles, name: str, pool: Pool,
               log: Log, columns: tuple[int, int] = (0, 1)) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Clean every input into work files ``name.src`` / ``name.tgt``: -> (reports, pair hashes, key hashes)."""
    from .stream import count_lines

    out_src, out_tgt = work.open(f"{name}.src"), work.open(f"{name}.tgt")
    total = sum(count_lines(paths[0], "source file" if kind == "parallel" else "corpus file") for paths in inputs)
    progress = Progress(total, f"prepare {name}")
    reports, pair_hashes, key_hashes = [], [], []
    started = time.perf_counter()
    try:
        for paths in inputs:
            report, pair_hash, key_hash = stream_clean(kind, paths, out_src, out_tgt, rules_, pool, columns, progress)
            log(read_log(report))
            reports.append(report)
            pair_hashes.append(pair_hash)
            key_hashes.append(key_hash)
    finally:
        progress.close()
        out_src.close()
        out_tgt.close()
    seconds = time.perf_counter() - started
    if total >= 100_000:
        log(f"cleaned {total:,} lines in {seconds:.0f} s ({total / max(seconds, 1e-9):,.0f} pairs/s, "
            f"{pool.workers} worker{'s' if pool.workers != 1 else ''})")
    return reports, np.concatenate(pair_hashes), np.concatenate(key_hashes)


def _converted_log(cfg: Mapping[str, Any], reports: Sequence[Any], log: Log) -> int:
    total = sum(report.converted for report in reports)
    if script_sides(cfg):
        log(f"Chinese script: {total:,} pairs converted from traditional to simplified characters (OpenCC t2s)")
    return total


def _dedup(cfg: Mapping[str, Any], pair_hash: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Rows kept by de-duplication (all, without ``dedup``) and the number removed (None without ``dedup``)."""
    if not setting(cfg, "dedup"):
        return np.arange(len(pair_hash)), None
    keep = first_occurrences(pair_hash)
    return keep, len(pair_hash) - len(keep)


@register_format("tsv")
class TsvFormat(CorpusFormat):
    data_keys = ("name", "format", "corpus", "src_column", "tgt_column", "valid_size", "test_size", "split_seed",
                 "min_words", "max_words", "max_ratio", "dedup")
    grouped_split = True

    def sources(self, cfg: Mapping[str, Any], root: Path, log: Log) -> list[Path]:
        """The TSV corpus, downloaded into `root` first if it is missing and ``download`` is set."""
        corpus = str(require(cfg, "corpus"))
        path = root / corpus
        if path.is_file():
            return [path]
        key = cfg.get("download")
        if not key:
            raise DataError(
                f"corpus file not found: {path}. Set S2S_DATA_DIR or data.root=... to the directory that holds "
                f"{corpus}, or set data.download (fra or cmn) to fetch it from manythings.org."
            )
        from . import download

        log(f"corpus file {path} is missing; downloading '{key}' into {root}")
        fetched = download.download_tatoeba(str(key), root, log=log)
        if not path.is_file():
            raise DataError(
                f"downloaded '{key}' to {fetched}, but data.corpus points at {path}. "
                f"Set data.corpus={fetched.relative_to(root)} or put the file at {path}."
            )
        return [path]

    def build(self, cfg: Mapping[str, Any], sources: list[Path], out_dir: Path, log: Log) -> dict[str, Any]:
        """Read, filter, deduplicate and split the corpus, streamed."""
        from .readers import TSV_HINT, _no_pairs_error, check_columns

        columns = (int(setting(cfg, "src_column")), int(setting(cfg, "tgt_column")))
        check_columns(sources[0], *columns)
        work = WorkFiles(out_dir)
        try:
            with Pool(resolve_workers(setting(cfg, "workers"))) as pool:
                reports, pair_hash, key_hash = _clean_all("tsv", [sources], rules(cfg, True), work, "all", pool,
                                                          log, columns)
            read = report_of(reports[0])
            if read.pairs_read == 0:
                raise _no_pairs_error(read, sources[0], TSV_HINT)
            n_converted = _converted_log(cfg, reports, log)
            keep, duplicates = _dedup(cfg, pair_hash)
            removed = filter_counts(reports)
            log(filter_log(removed, duplicates))
            labels = np.full(len(pair_hash), -1, dtype=np.int8)  # -1: a duplicate, dropped
            labels[keep] = grouped_split_labels(key_hash[keep], int(setting(cfg, "valid_size")),
                                                int(setting(cfg, "test_size")), setting(cfg, "split_seed"))
            sizes = write_rows(work, "all", labels, {TRAIN: "train", VALID: "valid", TEST: "test"})
        finally:
            work.close()
            for side in ("src", "tgt"):
                work.remove(f"all.{side}")
        train_keys = key_hash[labels == TRAIN]
        return {
            "read": {"corpus": read.to_dict()},
            "filtered": removed,
            "duplicates_removed": duplicates or 0,
            "script_converted": n_converted,
            "pairs": {"train": sizes[TRAIN], "valid": sizes[VALID], "test": sizes[TEST]},
            "valid_sources_in_train": overlap(train_keys, key_hash[labels == VALID]),
            "test_sources_in_train": overlap(train_keys, key_hash[labels == TEST]),
        }


def parallel_files(root: Path, prefix: str, src_lang: str, tgt_lang: str) -> tuple[Path, Path]:
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


def train_prefixes(cfg: Mapping[str, Any]) -> list[str]:
    """``data.train``: one prefix, or a list of prefixes whose files are concatenated in that order."""
    value = require(cfg, "train")
    prefixes = [str(value)] if isinstance(value, str) else [str(v) for v in value]
    if not prefixes:
        raise DataError("data.train is an empty list. Give one file prefix or a list of them, e.g. "
                        "data.train=[corpus/europarl,corpus/news].")
    return prefixes


@register_format("parallel")
class ParallelFormat(CorpusFormat):
    data_keys = ("name", "format", "train", "valid", "test", "src_lang", "tgt_lang", "min_words", "max_words",
                 "max_ratio", "dedup")

    def sources(self, cfg: Mapping[str, Any], root: Path, log: Log) -> list[Path]:
        """Source and target file of every train prefix, then of valid, then of test."""
        src_lang, tgt_lang = str(setting(cfg, "src_lang")), str(setting(cfg, "tgt_lang"))
        prefixes = [*train_prefixes(cfg), str(require(cfg, "valid")), str(require(cfg, "test"))]
        key = cfg.get("download")
        if key:
            from . import download

            missing = []
            for prefix in prefixes:
                try:
                    parallel_files(root, prefix, src_lang, tgt_lang)
                except DataError:
                    missing.append(prefix)
            if missing:
                log(f"{', '.join(missing)} missing under {root}; downloading '{key}'")
                download.download_parallel(str(key), root, log=log)
        files: list[Path] = []
        for prefix in prefixes:
            files.extend(parallel_files(root, prefix, src_lang, tgt_lang))
        return files

    def build(self, cfg: Mapping[str, Any], sources: list[Path], out_dir: Path, log: Log) -> dict[str, Any]:
        """Read the pre-split files, streamed; filter and deduplicate train only."""
        from .readers import _no_pairs_error

        inputs = [sources[i : i + 2] for i in range(0, len(sources), 2)]
        train_inputs, held_out = inputs[:-2], {"valid": inputs[-2], "test": inputs[-1]}
        work = WorkFiles(out_dir)
        reads: dict[str, Any] = {}
        keys: dict[str, np.ndarray] = {}
        sizes: dict[str, int] = {}
        try:
            with Pool(resolve_workers(setting(cfg, "workers"))) as pool:
                train_reports, pair_hash, train_keys = _clean_all("parallel", train_inputs, rules(cfg, True), work,
                                                                  "cleaned", pool, log)
                for split, paths in held_out.items():
                    (report,), _, keys[split] = _clean_all("parallel", [paths], rules(cfg, False), work, split,
                                                           pool, log)
                    reads[split] = report_of(report).to_dict()
                    sizes[split] = report.kept
                    if report.kept == 0:
                        raise _no_pairs_error(report_of(report), paths[0], f"Check {paths[0]} and {paths[1]}.")
            for report, paths in zip(train_reports, train_inputs, strict=True):
                if report.kept + sum(report.removed.values()) == 0:
                    raise _no_pairs_error(report_of(report), paths[0], f"Check {paths[0]} and {paths[1]}.")
            train_read = [report_of(report).to_dict() for report in train_reports]
            reads = {"train": train_read[0] if len(train_read) == 1 else train_read, **reads}
            n_converted = _converted_log(cfg, [*train_reports], log)
            keep, duplicates = _dedup(cfg, pair_hash)
            removed = filter_counts(train_reports)
            log("train only: " + filter_log(removed, duplicates))
            if len(keep) == len(pair_hash):
                for side in ("src", "tgt"):
                    work.finish(f"cleaned.{side}", f"train.{side}")
                sizes["train"] = len(keep)
            else:
                labels = np.full(len(pair_hash), -1, dtype=np.int8)
                labels[keep] = TRAIN
                sizes["train"] = write_rows(work, "cleaned", labels, {TRAIN: "train"})[TRAIN]
                train_keys = train_keys[keep]
            for split in ("valid", "test"):
                for side in ("src", "tgt"):
                    work.finish(f"{split}.{side}", f"{split}.{side}")
        finally:
            work.close()
            for side in ("src", "tgt"):
                work.remove(f"cleaned.{side}")
        return {"read": reads, "filtered": removed, "duplicates_removed": duplicates or 0,
                "script_converted": n_converted,
                "pairs": {"train": sizes["train"], "valid": sizes["valid"], "test": sizes["test"]},
                "valid_sources_in_train": overlap(train_keys, keys["valid"]),
                "test_sources_in_train": overlap(train_keys, keys["test"])}


@register_format("toy")
class ToyFormat(CorpusFormat):
    def build(self, cfg: Mapping[str, Any], sources: list[Path], out_dir: Path, log: Log) -> dict[str, Any]:
        """Generate the synthetic task's six files (`s2s_attn.data.synthetic.write_toy_splits`)."""
        from .cache import read_splits
        from .synthetic import write_toy_splits

        try:
            write_toy_splits(out_dir, cfg)
        except ValueError as e:  # its messages name the data.* key to change
            raise DataError(f"cannot generate the toy data: {e}.") from None
        return split_counts(read_splits(out_dir))


def corpus_format(cfg: Mapping[str, Any]) -> CorpusFormat:
    """The registered format ``data.format`` names; an unknown one is a DataError listing the valid ones."""
    name = str(cfg.get("format"))
    if name not in FORMAT_REGISTRY:
        raise DataError(f"unknown data.format={name!r}. Set data.format to one of: "
                        f"{', '.join(sorted(FORMAT_REGISTRY))}.")
    return FORMAT_REGISTRY[name]()
