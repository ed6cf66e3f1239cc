"""The token store: the training split encoded once into piece ids, in flat files read in place.

A prepared directory (`s2s_attn.data.corpus`) holds text; training needs ids. Encoding tens of millions of
sentences at every start would take minutes and keeping them as Python lists gigabytes, so the ids are written
once, per tokenizer, into ``<prepared data>/tokens-<digest of the tokenizer>/``::

    src.ids      every source sentence's ids, one after the other (uint16, or int32 for vocabularies over 65,536)
    src.offsets  int64, one more than the sentences: sentence i is ids[offsets[i]:offsets[i + 1]]
    src.lengths  int32, each sentence's length (what bucketing needs, read into memory: 4 bytes a sentence)
    tgt.ids, tgt.offsets, tgt.lengths
    store.json   pairs, dtype, each file's size and sha256; written last, so a killed build is never taken as
                 complete

Training reads each batch's sentences from these files when it builds the batch (`TokenColumn`, `SentenceFile`).

The ids are the model's ids: with a pruned vocabulary (`s2s_attn.data.tokenizer`), the pieces the text uses are
counted while it is encoded (`build_store`), so the vocabulary comes from the same, single encoding pass.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..outputs import write_atomic
from .cache import files_unchanged, sha256_file
from .errors import is_no_space
from .stream import disk_full_error

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

STORE_VERSION = 2
STORE_MANIFEST = "store.json"
#: Sentences encoded at a time: SentencePiece spreads each chunk over the workers; its ids come back as Python
#: lists (about 36 bytes an id), so a chunk stays small.
ENCODE_CHUNK = 25_000
SIDES = ("src", "tgt")


class SentenceFile:
    """Sentence ``row`` of a side of the store, read from its files with positioned reads (``os.pread``).

    Not a memory map: the pages of a map count as the process's memory once touched, and the page cache's large
    folios map far more than the page asked for (1,000 random reads of a 193 MB ids file mapped 146 MB of it, with
    MADV_RANDOM or without). Positioned reads leave the data in the page cache, shared and reclaimable; a
    sentence costs two system calls, nothing beside a training step. Where there is no ``os.pread``, the files
    are mapped instead.
    """

    def __init__(self, ids_path: Path, offsets_path: Path, dtype: np.dtype) -> None:
        self.paths, self.dtype = (ids_path, offsets_path), dtype
        self._open()

    def _open(self) -> None:
        ids_path, offsets_path = self.paths
        if hasattr(os, "pread"):
            self.ids_fd, self.offsets_fd = os.open(ids_path, os.O_RDONLY), os.open(offsets_path, os.O_RDONLY)
        else:
            self.ids = np.memmap(ids_path, dtype=self.dtype, mode="r") if ids_path.stat().st_size else np.zeros(0)
            self.offsets = np.memmap(offsets_path, dtype=np.int64, mode="r")

    def __getstate__(self) -> dict:
        return {"paths": self.paths, "dtype": self.dtype}

    def __setstate__(self, state: dict) -> None:  # a copy in another process opens the files again
        self.paths, self.dtype = state["paths"], state["dtype"]
        self._open()

    def __del__(self) -> None:
        for fd in (getattr(self, "ids_fd", None), getattr(self, "offsets_fd", None)):
            if fd is not None:
                os.close(fd)

    def __getitem__(self, row: int) -> np.ndarray:
        if not hasattr(self, "ids_fd"):
            return np.asarray(self.ids[self.offsets[row] : self.offsets[row + 1]])
        start, end = np.frombuffer(os.pread(self.offsets_fd, 16, 8 * row), dtype=np.int64)
        size = self.dtype.itemsize
        return np.frombuffer(os.pread(self.ids_fd, int(end - start) * size, int(start) * size), dtype=self.dtype)


class TokenColumn:
    """One side of the training pairs: sentence i is an array of ids, read from the store when asked for.

    ``rows`` (optional) selects the sentences seen through this column (the length filter of
    `s2s_attn.training.trainer.load_corpus`); ``lengths`` holds the length of every visible sentence.
    """

    def __init__(self, sentences: SentenceFile, lengths: np.ndarray, rows: np.ndarray | None = None) -> None:
        self.sentences, self.lengths, self.rows = sentences, lengths, rows

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.sentences[int(i if self.rows is None else self.rows[i])]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def select(self, rows: np.ndarray) -> TokenColumn:
        """The sentences ``rows`` (positions in this column) as a column."""
        rows = np.asarray(rows, dtype=np.int32 if len(self.lengths) < 1 << 31 else np.int64)  # 4 bytes a row
        return TokenColumn(self.sentences, self.lengths[rows], rows if self.rows is None else self.rows[rows])


class TokenStore:
    """The training split's ids: ``src`` and ``tgt`` columns of equal length, mapped from ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        manifest = json.loads((directory / STORE_MANIFEST).read_text(encoding="utf-8"))
        dtype = np.dtype(manifest["dtype"])
        columns = {}
        for side in SIDES:
            sentences = SentenceFile(directory / f"{side}.ids", directory / f"{side}.offsets", dtype)
            columns[side] = TokenColumn(sentences, np.fromfile(directory / f"{side}.lengths", dtype=np.int32))
        self.src, self.tgt = columns["src"], columns["tgt"]

    def __len__(self) -> int:
        return len(self.src)


def tokenizer_digest(tokenizer: Tokenizer) -> str:
    """A sha256 that names what ids the tokenizer gives: its SentencePiece models and kept pieces."""
    digest = hashlib.sha256()
    for proto in (tokenizer.src_proto, tokenizer.tgt_proto):
        digest.update(hashlib.sha256(proto).digest())
    kept = [None if subset is None else subset.kept for subset in (tokenizer.src_subset, tokenizer.tgt_subset)]
    digest.update(json.dumps(kept).encode())
    return digest.hexdigest()


def store_dir(data_dir: Path, tokenizer: Tokenizer) -> Path:
    return Path(data_dir) / f"tokens-{tokenizer_digest(tokenizer)[:12]}"


def complete(directory: Path) -> bool:
    """Whether ``directory`` holds a whole, unchanged store (every file of the size and sha256 recorded)."""
    try:
        manifest = json.loads((directory / STORE_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("version") != STORE_VERSION:
        return False
    files = manifest.get("files", {})
    if not isinstance(files, dict) or len(files) != 3 * len(SIDES):
        return False
    return files_unchanged(directory, {name: record.get("sha256") for name, record in files.items()},
                           {name: record.get("bytes") for name, record in files.items()})


def _lines(path: Path, chunk: int) -> Iterator[list[str]]:
    """The lines of a prepared text file, ``chunk`` at a time."""
    with open(path, encoding="utf-8", newline="\n") as f:
        while True:
            lines = [line.rstrip("\n") for line in itertools.islice(f, chunk)]
            if not lines:
                return
            yield lines


def _encoded(path: Path, model: Any, workers: int) -> Iterator[list[list[int]]]:
    """SentencePiece's ids of the lines of ``path``, a chunk at a time; the next chunk is encoded (SentencePiece
    lets go of the interpreter meanwhile) while the caller stores this one."""
    with ThreadPoolExecutor(max_workers=1) as encoder:
        pending = None
        for lines in _lines(path, ENCODE_CHUNK):
            ahead = encoder.submit(model.encode, lines, num_threads=workers)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()


def _encode_side(path: Path, model: Any, ids_file: Path, dtype: np.dtype, workers: int,
                 progress: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray]:
    """Encode a text file with a SentencePiece model into ``ids_file`` (raw piece ids, flat).

    -> (offsets (sentences + 1,), count of each piece id)."""
    counts = np.zeros(model.get_piece_size(), dtype=np.int64)
    lengths: list[np.ndarray] = []
    with open(ids_file, "wb") as out:
        for encoded in _encoded(path, model, workers):
            sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(sizes.sum()))
            counts += np.bincount(flat, minlength=len(counts))
            out.write(flat.astype(dtype).tobytes())
            lengths.append(sizes)
            progress(len(encoded))
    offsets = np.zeros(sum(len(x) for x in lengths) + 1, dtype=np.int64)
    if len(offsets) > 1:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return offsets, counts


def _remap(ids_file: Path, dtype: np.dtype, to_model: np.ndarray) -> None:
    """Turn the raw piece ids of ``ids_file`` into model ids, in place, a block at a time."""
    if os.path.getsize(ids_file) == 0:
        return
    ids = np.memmap(ids_file, dtype=dtype, mode="r+")
    table = to_model.astype(dtype)
    block = 1 << 24
    for start in range(0, len(ids), block):
        ids[start : start + block] = table[ids[start : start + block]]
    ids.flush()
    del ids


def _alive(pid: str) -> bool:
    """Whether the process ``pid`` (a number from a work directory's name) still runs."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def build_store(data_dir: Path, tokenizer: Tokenizer, workers: int, log: Callable[[str], None] = print,
                prune: bool = False) -> tuple[TokenStore, Tokenizer]:
    """Encode ``data_dir``'s training split with ``tokenizer`` into a store (in one pass over the text).

    With ``prune`` and a tokenizer without vocabulary subsets, the vocabulary is cut to the pieces the text uses
    (`s2s_attn.data.tokenizer.kept_pieces`), counted during the same pass; the ids are then the pruned
    tokenizer's, which is returned with the store. Otherwise the tokenizer is returned as it is.
    """
    from tqdm import tqdm

    from .tokenizer import PieceSubset, Tokenizer, kept_pieces

    data_dir = Path(data_dir)
    for stale in data_dir.glob("tokens-building-*"):  # left by a killed build
        if not _alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    work = data_dir / f"tokens-building-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    pairs = sum(1 for _ in open(data_dir / "train.src", "rb"))
    started = time.perf_counter()
    bar = tqdm(total=2 * pairs, unit=" sentences", unit_scale=True, desc="encode train", dynamic_ncols=True,
               leave=False, disable=None)
    offsets, to_model = {}, {}
    models = {"src": tokenizer.src, "tgt": tokenizer.tgt}
    sizes = [model.get_piece_size() for model in models.values()]
    dtype = np.dtype(np.uint16 if max(sizes) <= 1 << 16 else np.int32)
    subsets = {"src": tokenizer.src_subset, "tgt": tokenizer.tgt_subset}
    kept: dict[str, list[int]] = {}
    try:
        for side, model in models.items():
            offsets[side], counts = _encode_side(data_dir / f"train.{side}", model, work / f"{side}.ids", dtype,
                                                 workers, bar.update)
            if subsets[side] is not None:
                to_model[side] = np.asarray(subsets[side].to_model)
            elif prune:
                kept[side] = kept_pieces(counts)
                to_model[side] = np.asarray(PieceSubset(kept[side], len(counts)).to_model)
        bar.close()
        if kept:
            tokenizer = Tokenizer(tokenizer.src_proto, tokenizer.tgt_proto, kept["src"], kept["tgt"])
        target = store_dir(data_dir, tokenizer)
        files = {}
        for side in SIDES:
            if side in to_model:
                _remap(work / f"{side}.ids", dtype, to_model[side])
            offsets[side].tofile(work / f"{side}.offsets")
            np.diff(offsets[side]).astype(np.int32).tofile(work / f"{side}.lengths")
            for name in (f"{side}.ids", f"{side}.offsets", f"{side}.lengths"):
                files[name] = {"bytes": (work / name).stat().st_size, "sha256": sha256_file(work / name)}
        manifest = {"version": STORE_VERSION, "pairs": pairs, "dtype": dtype.name,
                    "tokenizer": tokenizer_digest(tokenizer), "files": files}
        write_atomic(work / STORE_MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        if complete(target):  # another process built it meanwhile
            shutil.rmtree(work)
        else:
            shutil.rmtree(target, ignore_errors=True)  # an incomplete or damaged store of the same tokenizer
            os.replace(work, target)
    except BaseException as error:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
        if is_no_space(error):
            raise disk_full_error(data_dir, error) from None
        raise
    seconds = time.perf_counter() - started
    log(f"encoded {pairs:,} training pairs in {seconds:.0f} s ({pairs / max(seconds, 1e-9):,.0f} pairs/s) -> "
        f"{target}")
    return TokenStore(target), tokenizer


def open_store(data_dir: Path, tokenizer: Tokenizer, workers: int, log: Callable[[str], None] = print) -> TokenStore:
    """The training split's store for ``tokenizer``: read from disk when complete, else encoded first."""
    directory = store_dir(data_dir, tokenizer)
    if complete(directory):
        log(f"using the token store in {directory}")
        return TokenStore(directory)
    store, _ = build_store(data_dir, tokenizer, workers, log)
    return store
