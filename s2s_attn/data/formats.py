"""Corpus formats, one class each behind one interface and one registry (``data.format=``), as attention variants
are: a format says which files the prepared data is made from and turns them into train / valid / test pairs.

    tsv       one pair per line, ``English<TAB>other language[<TAB>attribution]`` (Tatoeba, manythings.org):
              read, length-filtered, de-duplicated and split grouped by source sentence
    parallel  pre-split line-parallel files ``PREFIX.<src_lang>`` / ``PREFIX.<tgt_lang>``: train is filtered and
              de-duplicated; valid and test are standard sets, only normalised
    toy       a synthetic task the code generates (`s2s_attn.data.synthetic`): no files at all

A new format subclasses `CorpusFormat` and registers itself with ``@register_format("name")``; the cache, the
manifest, the split checks and SentencePiece come with `s2s_attn.data.corpus.prepare_data`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..model.registry import Registry
from .chinese import chinese_sides, convert_script
from .errors import DataError
from .readers import Pair, read_parallel, read_tsv
from .split import deduplicate, filter_pairs, split_grouped

FORMAT_REGISTRY = Registry("data.format")
register_format = FORMAT_REGISTRY.register

Log = Callable[[str], None]
Splits = dict[str, list[Pair]]

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

#: Keys that don't change the prepared text (locations, tokenizer settings).
NOT_DATA_KEYS = ("root", "cache_dir", "download", "spm", "max_src_pieces", "max_tgt_pieces")


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


def clean(cfg: Mapping[str, Any], pairs: list[Pair]) -> tuple[list[Pair], dict[str, int], int | None]:
    """The length filters and (with ``dedup``) de-duplication: -> (pairs, removed per rule, duplicates or None)."""
    pairs, removed = filter_pairs(pairs, setting(cfg, "min_words"), setting(cfg, "max_words"),
                                  setting(cfg, "max_ratio"))
    duplicates = None
    if setting(cfg, "dedup"):
        pairs, duplicates = deduplicate(pairs)
    return pairs, removed, duplicates


class CorpusFormat:
    """How one kind of corpus becomes train / valid / test pairs.

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

    def build(self, cfg: Mapping[str, Any], sources: list[Path], out_dir: Path, log: Log) -> tuple[Splits, dict]:
        """-> ({"train": pairs, "valid": pairs, "test": pairs}, counts for the manifest)."""
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

    def build(self, cfg: Mapping[str, Any], sources: list[Path], out_dir: Path, log: Log) -> tuple[Splits, dict]:
        """Read, filter, deduplicate and split the corpus."""
        pairs, report = read_tsv(sources[0], int(setting(cfg, "src_column")), int(setting(cfg, "tgt_column")))
        log(report.summary())
        converted = {"all": pairs}
        n_converted = convert_script(cfg, converted, log)  # before deduplication: one spelling, one pair
        pairs, removed, duplicates = clean(cfg, converted["all"])
        log(filter_log(removed, duplicates))
        splits = split_grouped(pairs, int(setting(cfg, "valid_size")), int(setting(cfg, "test_size")),
                               setting(cfg, "split_seed"))
        counts = {
            "read": {"corpus": report.to_dict()},
            "filtered": removed,
            "duplicates_removed": duplicates or 0,
            "script_converted": n_converted,
        }
        return splits, counts


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


@register_format("parallel")
class ParallelFormat(CorpusFormat):
    data_keys = ("name", "format", "train", "valid", "test", "src_lang", "tgt_lang", "min_words", "max_words",
                 "max_ratio", "dedup")

    def sources(self, cfg: Mapping[str, Any], root: Path, log: Log) -> list[Path]:
        """train, valid and test, source and target file each: six files in that order."""
        src_lang, tgt_lang = str(setting(cfg, "src_lang")), str(setting(cfg, "tgt_lang"))
        files: list[Path] = []
        for split in ("train", "valid", "test"):
            files.extend(parallel_files(root, str(require(cfg, split)), src_lang, tgt_lang))
        return files

    def build(self, cfg: Mapping[str, Any], sources: list[Path], out_dir: Path, log: Log) -> tuple[Splits, dict]:
        """Read the pre-split files; filter and deduplicate train only."""
        splits: Splits = {}
        reads = {}
        for index, split in enumerate(("train", "valid", "test")):
            splits[split], report = read_parallel(sources[2 * index], sources[2 * index + 1])
            reads[split] = report.to_dict()
            log(report.summary())
        n_converted = convert_script(cfg, splits, log)
        splits["train"], removed, duplicates = clean(cfg, splits["train"])
        log("train only: " + filter_log(removed, duplicates))
        counts = {"read": reads, "filtered": removed, "duplicates_removed": duplicates or 0,
                  "script_converted": n_converted}
        return splits, counts


@register_format("toy")
class ToyFormat(CorpusFormat):
    def build(self, cfg: Mapping[str, Any], sources: list[Path], out_dir: Path, log: Log) -> tuple[Splits, dict]:
        """Generate the synthetic task's six files (`s2s_attn.data.synthetic.write_toy_splits`)."""
        from .cache import read_splits
        from .synthetic import write_toy_splits

        try:
            write_toy_splits(out_dir, cfg)
        except ValueError as e:  # its messages name the data.* key to change
            raise DataError(f"cannot generate the toy data: {e}.") from None
        return read_splits(out_dir), {}


def corpus_format(cfg: Mapping[str, Any]) -> CorpusFormat:
    """The registered format ``data.format`` names; an unknown one is a DataError listing the valid ones."""
    name = str(cfg.get("format"))
    if name not in FORMAT_REGISTRY:
        raise DataError(f"unknown data.format={name!r}. Set data.format to one of: "
                        f"{', '.join(sorted(FORMAT_REGISTRY))}.")
    return FORMAT_REGISTRY[name]()
