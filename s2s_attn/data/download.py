"""Download a Tatoeba sentence-pair file from manythings.org/anki into the data directory.

manythings.org publishes each language pair as a zip (``fra-eng.zip``) holding one tab-separated file
(``fra.txt``) plus an ``_about.txt``. `download_tatoeba` fetches the zip, checks it, and saves only that
member as e.g. ``<root>/tatoeba/eng-fra.tsv``.

About checksums, honestly: manythings.org re-publishes these zips as Tatoeba grows and announces no
checksums, so this module cannot know the right sha256 in advance and the table below has None. On the
first download the archive's sha256 is computed, printed, and recorded next to the saved file as
``<file>.sha256`` (e.g. ``tatoeba/eng-fra.tsv.sha256``). Later downloads into the same root (after the
.tsv was deleted) are verified against the recorded value, so a changed or corrupted archive is noticed;
if manythings has simply released a newer version, delete the ``.sha256`` file to accept it. This protects
against silent changes and corruption after the first download, not against a bad first download. Pass
`sha256=` (or fill in `Archive.sha256`) to pin a known archive.

manythings.org rejects urllib's default User-Agent, so a browser-like one is sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from s2s_attn.data.errors import DataError


@dataclass(frozen=True)
class Archive:
    """One downloadable corpus: where the zip is, which member to keep, and where to save it under root."""

    url: str
    member: str
    target: str
    sha256: str | None = None  # of the zip archive; None = unknown (see the module docstring)


ARCHIVES: dict[str, Archive] = {
    "fra": Archive("https://www.manythings.org/anki/fra-eng.zip", "fra.txt", "tatoeba/eng-fra.tsv"),
    "cmn": Archive("https://www.manythings.org/anki/cmn-eng.zip", "cmn.txt", "tatoeba/cmn-eng.tsv"),
}

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
)
TIMEOUT_S = 60
CHUNK_BYTES = 1 << 16
#: Refuse members that claim to be larger than this when extracted (zip bombs); the real ones are < 100 MB.
MAX_MEMBER_BYTES = 2 << 30


def _write_checksum_record(path: Path, digest: str, url: str) -> None:
    """Record `digest` in `path` (sha256sum format, with the URL as a comment), atomically."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"# sha256 of {url}\n{digest}  {PurePosixPath(url).name}\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _read_checksum_record(path: Path) -> str | None:
    """The sha256 recorded by an earlier download, or None if there is no record."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        if line.strip() and not line.startswith("#"):
            return line.split()[0].lower()
    return None


def _fetch(url: str, part: Path, target: Path, member: str) -> str:
    """Stream `url` into `part`; return its sha256. Raise DataError on network errors or a short read."""
    hint = f"Download {url} by hand, extract {member} from it and save that file as {target}."
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
    except (urllib.error.URLError, OSError) as e:  # URLError/HTTPError, timeouts, resets, disk errors
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not download {url}: {reason}. {hint}") from None
    if length is not None and length.strip().isdigit() and int(length) != received:
        raise DataError(
            f"incomplete download of {url}: got {received:,} of {int(length):,} bytes. Try again. {hint}"
        )
    return digest.hexdigest()


def _find_member(archive: zipfile.ZipFile, member: str, url: str) -> zipfile.ZipInfo:
    """The ZipInfo of `member` (at top level or in one folder), after rejecting unsafe entries.

    Rejected: absolute paths, drive letters, ``..`` components, symlinks, and oversized members. Since
    only this one member is read (through `ZipFile.open`, never extracted by name), the checks are a
    second line of defence against a tampered archive.
    """
    infos = archive.infolist()
    matches = [info for info in infos if PurePosixPath(info.filename.replace("\\", "/")).name == member]
    if not matches:
        names = ", ".join(info.filename for info in infos[:10])
        raise DataError(f"{url} has no member named {member} (it has: {names}). Check the archive URL.")
    if len(matches) > 1:
        raise DataError(f"{url} has several members named {member}; refusing to guess which one to use.")
    info = matches[0]
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    mode = info.external_attr >> 16
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(
            f"refusing unsafe member path {info.filename!r} in {url}: the archive looks tampered with."
        )
    if stat.S_ISLNK(mode):
        raise DataError(f"refusing member {info.filename!r} in {url}: it is a symbolic link, not a file.")
    if info.is_dir() or info.file_size > MAX_MEMBER_BYTES:
        raise DataError(f"refusing member {info.filename!r} in {url}: it is not a regular file of sane size.")
    return info


def _extract_member(part: Path, member: str, url: str, target: Path) -> int:
    """Copy `member` from the zip at `part` to `target` atomically; return its size in bytes."""
    try:
        with zipfile.ZipFile(part) as archive:
            info = _find_member(archive, member, url)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                size = 0
                with archive.open(info) as src, os.fdopen(fd, "wb") as out:
                    while chunk := src.read(CHUNK_BYTES):
                        size += len(chunk)
                        if size > MAX_MEMBER_BYTES:
                            raise DataError(f"member {member} of {url} is larger than it claims; refused.")
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    except zipfile.BadZipFile as e:
        raise DataError(
            f"{url} did not give a valid zip archive ({e}). Download it by hand, extract {member} and save "
            f"it as {target}."
        ) from None
    return size


def download_tatoeba(
    key: str,
    root: str | Path,
    url: str | None = None,
    sha256: str | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Download the manythings.org archive `key` ("fra" or "cmn") and save its corpus file under `root`.

    Returns the saved file's path, ``root / ARCHIVES[key].target`` (e.g. ``root/tatoeba/eng-fra.tsv``). If
    that file already exists it is returned at once, with no network access.

    `url` overrides the archive URL (tests use ``file://`` URLs); `sha256` pins the archive checksum,
    else `Archive.sha256`, else the value recorded by an earlier download in ``<file>.sha256`` is used.
    With none of those, the computed checksum is recorded there and logged (see the module docstring).

    The archive is streamed to ``<file>.part``, its length (if the server sent Content-Length) and checksum
    are checked, and only the named member is read out of it and written atomically to the final path;
    the ``.part`` file is always deleted. A failed or partial download never leaves a file at the final
    path. Raises DataError (with the URL and the exact path to put a hand-downloaded file at) on any
    failure: unknown key, unwritable root, network error, short read, checksum mismatch, bad archive.
    """
    if key not in ARCHIVES:
        known = ", ".join(sorted(ARCHIVES))
        raise DataError(f"unknown download key {key!r}. Set data.download to one of: {known}, or null.")
    archive = ARCHIVES[key]
    url = url or archive.url
    target = Path(root).expanduser() / archive.target
    if target.is_file():
        log(f"{target} already exists; not downloading")
        return target
    part = target.with_name(target.name + ".part")
    record = target.with_name(target.name + ".sha256")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)  # a leftover from a killed run is never reused
    except OSError as e:
        raise DataError(
            f"cannot write to {target.parent}: {e.strerror}. Download {url} by hand, extract "
            f"{archive.member} and save it as {target}, or set data.root=... to a writable directory."
        ) from None

    expected = (sha256 or archive.sha256 or _read_checksum_record(record) or "").lower() or None
    log(f"downloading {url} -> {target}")
    try:
        digest = _fetch(url, part, target, archive.member)
        if expected is not None and digest != expected:
            source = "recorded in " + str(record) if not (sha256 or archive.sha256) else "expected"
            raise DataError(
                f"checksum mismatch for {url}: got sha256 {digest}, {source} {expected}. The file may be "
                f"corrupt or a newer release; delete {record} to accept a new release, or download it by "
                f"hand and save {archive.member} as {target}."
            )
        size = _extract_member(part, archive.member, url, target)
    finally:
        part.unlink(missing_ok=True)
    if expected is None:
        _write_checksum_record(record, digest, url)
        log(f"archive sha256 {digest} (no known checksum; recorded in {record} to verify later downloads)")
    log(f"saved {archive.member} ({size:,} bytes) as {target}")
    return target
