"""Prepared data: a corpus, as its data config describes it, turned once into cached train / valid / test files.

The pipeline, whatever the format (`s2s_attn.data.formats`)::

    format.sources -> format.build (read, normalise, filter, deduplicate, split) -> six text files + manifest.json

The tsv and parallel formats stream (`s2s_attn.data.stream`), so preparation needs memory for a few chunks of
lines and 16 bytes of hashes per pair, whatever the corpus size. The training split is then encoded once into a
memory-mapped token store (`s2s_attn.data.store`) beside the SentencePiece models.

The pieces live by concern: normalisation in `text`, the readers in `readers`, filtering and the grouped split in
`split`, Chinese script conversion in `chinese`, the cache and its manifest in `cache`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .cache import PREPARE_VERSION, cache_key, cached_manifest, s2s_version, sha256_file, write_manifest
from .errors import DataError, is_no_space
from .formats import corpus_format, require
from .stream import disk_full_error


def prepare_data(cfg: Mapping[str, Any], log: Callable[[str], None] = print) -> Path:
    """Return a directory with normalised ``train/valid/test.{src,tgt}`` files and ``manifest.json``.

    `cfg` is the data config as a mapping (a plain dict or an OmegaConf DictConfig) with `name`,
    `format` (a registered format: "tsv", "parallel" or "toy"), `root` (the data directory; if unset,
    $S2S_DATA_DIR or "data"), `cache_dir` (where prepared data goes) and the format's own keys:

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

    `log` receives human-readable progress lines. Raises DataError for missing or unusable data, and for a disk
    that fills up.
    """
    form = corpus_format(cfg)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(require(cfg, "name")))
    root = Path(str(cfg.get("root") or os.environ.get("S2S_DATA_DIR") or "data")).expanduser()
    cache_dir = Path(str(require(cfg, "cache_dir"))).expanduser()

    sources = form.sources(cfg, root, log)
    config = form.relevant_config(cfg)
    source_info = [{"path": str(p.resolve()), "sha256": sha256_file(p)} for p in sources]
    key = cache_key(config, source_info)
    out_dir = cache_dir / f"{name}-{key[:12]}"
    if cached_manifest(out_dir, key) is not None:
        log(f"using cached prepared data in {out_dir}")
        return out_dir

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "manifest.json").unlink(missing_ok=True)  # mark as incomplete while rebuilding
    except OSError as e:
        raise DataError(
            f"cannot write prepared data to {out_dir}: {e.strerror}. Set data.cache_dir=... to a writable "
            "directory."
        ) from None

    for stale in out_dir.glob(".*.tmp"):  # left by a killed preparation
        stale.unlink()
    try:
        counts = form.build(cfg, sources, out_dir, log)
    except OSError as error:
        if is_no_space(error):
            raise disk_full_error(out_dir, error) from None
        raise
    sizes = counts["pairs"]
    log(
        f"split: train {sizes['train']:,} / valid {sizes['valid']:,} / test {sizes['test']:,} pairs; "
        f"sources also in train: valid {counts['valid_sources_in_train']:,}, "
        f"test {counts['test_sources_in_train']:,}"
    )
    write_manifest(out_dir, {
        "format": form.name,
        "name": cfg.get("name"),
        "cache_key": key,
        "prepare_version": PREPARE_VERSION,
        "root": str(root.resolve()),
        "sources": source_info,
        "config": config,
        "split_seed": config.get("split_seed"),
        "counts": counts,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "s2s_attn_version": s2s_version(),
    })
    log(f"wrote prepared data to {out_dir}")
    return out_dir
