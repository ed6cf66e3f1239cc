"""The prepared-data cache: split files written atomically, and the manifest that marks them complete.

A prepared directory is ``<cache_dir>/<name>-<first 12 hex of the cache key>/`` with the six split files
(`SPLIT_FILES`) and ``manifest.json``; the cache key is a sha256 over the settings that determine the prepared
text and the sha256 of every source file, so a changed corpus or config gives a new directory and an unchanged
one is reused. The manifest is written last: a directory without one, or whose files no longer match the
checksums it records, is never taken as complete.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..outputs import write_atomic
from .readers import Pair

#: Bump when normalisation, filtering or splitting changes, so that old caches are not reused.
PREPARE_VERSION = 1

#: Split file names, in this order.
SPLIT_FILES = ("train.src", "train.tgt", "valid.src", "valid.tgt", "test.src", "test.tgt")

MANIFEST_NAME = "manifest.json"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_unchanged(directory: Path, sha256: Mapping[str, Any], sizes: Mapping[str, Any] | None = None) -> bool:
    """Whether every file named in ``sha256`` is in ``directory`` with that recorded sha256 (and the recorded size,
    where ``sizes`` gives one: a cheaper check, made first)."""
    for name, digest in sha256.items():
        path = directory / name
        if not path.is_file() or (sizes is not None and path.stat().st_size != sizes.get(name)):
            return False
        if sha256_file(path) != digest:
            return False
    return True


def plain(value: Any) -> Any:
    """Turn OmegaConf containers (or any Mapping/sequence) into plain JSON-ready dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def cache_key(config: Mapping[str, Any], sources: Sequence[Mapping[str, str]]) -> str:
    """The hex sha256 over the settings that determine the prepared text and the sources' checksums."""
    material = {
        "prepare_version": PREPARE_VERSION,
        "config": config,
        "sources": [source["sha256"] for source in sources],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def cached_manifest(out_dir: Path, key: str) -> dict[str, Any] | None:
    """The manifest of a complete, unchanged prepared directory, or None if it must be (re)built."""
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("cache_key") != key:
        return None
    files = manifest.get("files", {})
    return manifest if files_unchanged(out_dir, {name: files.get(name) for name in SPLIT_FILES}) else None


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, split on "\\n" only, without a final empty line."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_splits(out_dir: Path) -> dict[str, list[Pair]]:
    """Read back the six split files of a prepared directory: {"train": pairs, "valid": ..., "test": ...}."""
    splits = {}
    for split in ("train", "valid", "test"):
        src = _read_lines(out_dir / f"{split}.src")
        tgt = _read_lines(out_dir / f"{split}.tgt")
        splits[split] = list(zip(src, tgt, strict=True))
    return splits


def write_splits(out_dir: Path, splits: Mapping[str, Sequence[Pair]]) -> None:
    """Write each split as `<split>.src` and `<split>.tgt`, one sentence per line, atomically."""
    for split in ("train", "valid", "test"):
        for side, name in ((0, f"{split}.src"), (1, f"{split}.tgt")):
            text = "".join(pair[side] + "\n" for pair in splits[split])
            write_atomic(out_dir / name, text.encode("utf-8"))


def s2s_version() -> str | None:
    """The installed s2s-attn version, else ``s2s_attn.__version__``, else None."""
    try:
        return importlib.metadata.version("s2s-attn")
    except importlib.metadata.PackageNotFoundError:
        import s2s_attn

        return getattr(s2s_attn, "__version__", None)


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Complete a prepared directory: the split files' checksums into ``manifest``, then the manifest, last."""
    manifest = {**manifest, "files": {name: sha256_file(out_dir / name) for name in SPLIT_FILES}}
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    write_atomic(out_dir / MANIFEST_NAME, text.encode("utf-8"))
