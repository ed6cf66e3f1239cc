"""Writing results safely: check that an output can be written before the work that produces it, and write it
atomically (a temporary file in the same directory, then a rename), so that an interrupted command leaves either
the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _probe_directory(directory: Path) -> str | None:
    """None when a new file can be created in ``directory`` (which exists), else why not."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".s2s-write-check.")
    except OSError as error:
        return f"cannot write into {directory}: {error.strerror or error}"
    os.close(fd)
    os.unlink(name)
    return None


def unwritable_file(path: str | os.PathLike) -> str | None:
    """None when ``path`` can be written now, else why not (its directory is missing or read-only, or it is a
    directory); creates nothing."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a directory, not a file"
    if not path.parent.is_dir():
        return f"the directory {path.parent} does not exist"
    return _probe_directory(path.parent)


def unwritable_dir(path: str | os.PathLike) -> str | None:
    """None when ``path`` is a directory files can be written into, or can be created as one; else why not.
    Leaves nothing behind: a missing directory is judged by its nearest existing parent."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    return _probe_directory(existing)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: readers see either the old file or the complete new one."""
    with atomic_output(path, "wb") as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """A file to write ``path`` through: a temporary file beside it, renamed to ``path`` (after an fsync) when
    the block ends normally, and removed if it ends with an exception."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
