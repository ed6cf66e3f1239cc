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
import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from s2s_attn.data.errors import DataError, free_bytes, human_bytes, is_no_space, no_space_error


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


@contextlib.contextmanager
def _atomic_file(target: Path) -> Iterator[BinaryIO]:
    """A file to write `target` through: a temporary file beside it, synced and renamed into place when the block
    ends without an error, removed otherwise."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _extract_member(part: Path, member: str, url: str, target: Path) -> int:
    """Copy `member` from the zip at `part` to `target` atomically; return its size in bytes."""
    try:
        with zipfile.ZipFile(part) as archive:
            info = _find_member(archive, member, url)
            size = 0
            with archive.open(info) as src, _atomic_file(target) as out:
                while chunk := src.read(CHUNK_BYTES):
                    size += len(chunk)
                    if size > MAX_MEMBER_BYTES:
                        raise DataError(f"member {member} of {url} is larger than it claims; refused.")
                    out.write(chunk)
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


# --------------------------------------------------------------------------------------------------------
# Large parallel corpora from statmt.org: .tgz/.tar archives of sentence-aligned text files


@dataclass(frozen=True)
class TarMember:
    """One file to take out of a tar archive: its name there and where it goes under the data root.

    `name` is matched by its last path component, so a member in a folder (``training/…``) is found
    without hard-coding the folder. A name ending in ``.gz`` is decompressed while it is written.
    """

    name: str
    target: str


@dataclass(frozen=True)
class TarArchive:
    """A .tgz or .tar on statmt.org and the members to keep; the archive itself is deleted after use."""

    url: str
    members: tuple[TarMember, ...]
    size: str  # as announced by the publisher, for messages and docs
    sha256: str | None = None  # statmt.org announces none: recorded on first download, as for Tatoeba


@dataclass(frozen=True)
class ParallelCorpus:
    """A downloadable parallel corpus: its archives and the file prefixes the data config names.

    A prefix P stands for the files ``P.<lang>`` for both `langs`. The training prefixes come out of
    `archives`; `test_sets` maps each valid/test prefix to the sacrebleu test set it is written from.
    """

    title: str
    archives: tuple[TarArchive, ...]
    train: tuple[str, ...]
    valid: str
    test: str
    test_sets: tuple[tuple[str, str], ...]  # (sacrebleu test set, prefix)
    langs: tuple[str, str] = ("en", "fr")
    disk_gb: float = 1.0  # rough free space needed for the whole download (archives are deleted one by one)

    def files(self) -> list[str]:
        """Every file (relative to the data root) that this corpus consists of once downloaded."""
        return [f"{prefix}.{lang}" for prefix in (*self.train, self.valid, self.test) for lang in self.langs]


def _pair(url: str, size: str, member: str, target: str) -> TarArchive:
    """The archive at `url` whose members ``member.en`` / ``member.fr`` become ``target.en`` / ``target.fr``."""
    gz = ".gz" if member.endswith(".gz") else ""
    stem = member.removesuffix(".gz")
    return TarArchive(
        url,
        tuple(TarMember(f"{stem}.{lang}{gz}", f"{target}.{lang}") for lang in ("en", "fr")),
        size,
    )


NEWSTEST = (("wmt13", "wmt/newstest2013"), ("wmt14", "wmt/newstest2014"))
_STATMT = "https://www.statmt.org"

#: Member names as in fairseq's examples/translation/prepare-wmt14en2fr.sh (the archives are the WMT14
#: English-French training data, https://www.statmt.org/wmt14/translation-task.html).
PARALLEL_CORPORA: dict[str, ParallelCorpus] = {
    "europarl_v7_fr_en": ParallelCorpus(
        title="Europarl v7 French-English",
        archives=(
            _pair(f"{_STATMT}/europarl/v7/fr-en.tgz", "194 MB", "europarl-v7.fr-en",
                  "europarl-v7/europarl-v7.fr-en"),
        ),
        train=("europarl-v7/europarl-v7.fr-en",),
        valid="wmt/newstest2013",
        test="wmt/newstest2014",
        test_sets=NEWSTEST,
        disk_gb=1.0,
    ),
    "wmt14_en_fr": ParallelCorpus(
        title="WMT14 English-French training data",
        archives=(
            _pair(f"{_STATMT}/wmt13/training-parallel-europarl-v7.tgz", "628 MB",
                  "training/europarl-v7.fr-en", "wmt14/europarl-v7.fr-en"),
            _pair(f"{_STATMT}/wmt13/training-parallel-commoncrawl.tgz", "876 MB",
                  "commoncrawl.fr-en", "wmt14/commoncrawl.fr-en"),
            _pair(f"{_STATMT}/wmt13/training-parallel-un.tgz", "2.3 GB",
                  "un/undoc.2000.fr-en", "wmt14/undoc.2000.fr-en"),
            _pair(f"{_STATMT}/wmt14/training-parallel-nc-v9.tgz", "76 MB",
                  "training/news-commentary-v9.fr-en", "wmt14/news-commentary-v9.fr-en"),
            _pair(f"{_STATMT}/wmt10/training-giga-fren.tar", "2.6 GB",
                  "giga-fren.release2.fixed.gz", "wmt14/giga-fren.release2.fixed"),
        ),
        train=(
            "wmt14/europarl-v7.fr-en",
            "wmt14/commoncrawl.fr-en",
            "wmt14/undoc.2000.fr-en",
            "wmt14/news-commentary-v9.fr-en",
            "wmt14/giga-fren.release2.fixed",
        ),
        valid="wmt/newstest2013",
        test="wmt/newstest2014",
        test_sets=NEWSTEST,
        disk_gb=25.0,
    ),
}

#: Members larger than this (after decompression) are refused. giga-fren's are a few GB a side.
MAX_TAR_MEMBER_BYTES = 16 << 30
PROGRESS_STEP_BYTES = 256 << 20  # without Content-Length, a progress line every this many bytes


def _no_space(directory: Path, needed: int | None, corpus: ParallelCorpus) -> DataError:
    """The DataError for a full disk (`no_space_error`), with what this file and the whole corpus need."""
    what = f"this file needs about {human_bytes(needed)}, " if needed else ""
    return no_space_error(directory, f"{what}the {corpus.title} needs about {corpus.disk_gb:g} GB in all",
                          "set S2S_DATA_DIR (or data.root=...) to a directory on a larger disk")


def _copy(src: BinaryIO, out: BinaryIO, limit: int | None = None, digest: Any = None,
          progress: Callable[[int], None] | None = None) -> int:
    """Copy `src` to `out` in chunks; return the byte count. Stop with ValueError past `limit` bytes."""
    size = 0
    while chunk := src.read(CHUNK_BYTES):
        size += len(chunk)
        if limit is not None and size > limit:
            raise ValueError(f"more than {human_bytes(limit)}")
        out.write(chunk)
        if digest is not None:
            digest.update(chunk)
        if progress is not None:
            progress(size)
    return size


def _progress(url: str, total: int | None, log: Callable[[str], None]) -> Callable[[int], None]:
    """A callback that logs ``url: got / total (pct)`` every 10 % (or every 256 MB without a total)."""
    name = PurePosixPath(url).name
    step = max(total // 10, 1) if total else PROGRESS_STEP_BYTES
    next_at = step

    def update(received: int) -> None:
        nonlocal next_at
        if received < next_at:
            return
        next_at = (received // step + 1) * step
        of = f" / {human_bytes(total)} ({100 * received // total}%)" if total else ""
        log(f"  {name}: {human_bytes(received)}{of}")

    return update


def _download_archive(archive: TarArchive, part: Path, corpus: ParallelCorpus, hint: str,
                      log: Callable[[str], None]) -> str:
    """Stream `archive.url` into `part` with progress lines; return its sha256."""
    url = archive.url
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    received = 0
    total: int | None = None
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.strip().isdigit() else None
            free = free_bytes(part.parent)
            if total is not None and free is not None and free < total:
                raise _no_space(part.parent, total, corpus)
            log(f"downloading {url} ({human_bytes(total) if total else archive.size}) into {part.parent}")
            with open(part, "wb") as out:
                received = _copy(response, out, digest=digest, progress=_progress(url, total, log))
    except OSError as e:  # URLError/HTTPError, timeouts, resets, a full disk
        if is_no_space(e):
            raise _no_space(part.parent, total, corpus) from None
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not download {url}: {reason}. {hint}") from None
    if total is not None and total != received:
        raise DataError(f"incomplete download of {url}: got {received:,} of {total:,} bytes. Try again. {hint}")
    log(f"  {PurePosixPath(url).name}: {human_bytes(received)} downloaded")
    return digest.hexdigest()


def _check_tar_member(info: tarfile.TarInfo, url: str) -> None:
    """Refuse a wanted member that is not a plain, sanely sized file at a safe relative path."""
    name = info.name.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(f"refusing unsafe member path {info.name!r} in {url}: the archive looks tampered with.")
    if info.issym() or info.islnk():
        raise DataError(f"refusing member {info.name!r} in {url}: it is a link, not a file.")
    if not info.isfile() or info.size > MAX_TAR_MEMBER_BYTES:
        raise DataError(f"refusing member {info.name!r} in {url}: it is not a regular file of sane size.")


def _write_tar_member(tar: tarfile.TarFile, info: tarfile.TarInfo, member: TarMember, target: Path,
                      url: str) -> int:
    """Write `info`'s content (gunzipped if `member` is .gz) to `target` atomically; return its size."""
    with _atomic_file(target) as out:
        src = tar.extractfile(info)
        assert src is not None  # a regular file, checked by _check_tar_member
        with contextlib.ExitStack() as stack:
            if member.name.endswith(".gz"):
                src = stack.enter_context(gzip.GzipFile(fileobj=src, mode="rb"))
            try:
                size = _copy(src, out, limit=MAX_TAR_MEMBER_BYTES)
            except ValueError as e:
                raise DataError(f"member {info.name} of {url} decompresses to {e}; refused.") from None
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                raise DataError(
                    f"member {info.name} of {url} is not valid gzip data ({e or 'truncated'}). Run again "
                    f"to download the archive afresh."
                ) from None
    return size


def _extract_tar(part: Path, archive: TarArchive, root: Path, corpus: ParallelCorpus, hint: str,
                 log: Callable[[str], None]) -> None:
    """Write the members of `archive` (downloaded to `part`) to their targets in one streamed pass.

    Only the wanted members are read, each checked first (`_check_tar_member`); nothing else in the
    archive is ever written. On any failure the targets written so far are removed again.
    """
    url = archive.url
    wanted = {PurePosixPath(m.name).name: m for m in archive.members}
    written: list[Path] = []
    try:
        try:
            with tarfile.open(part, mode="r|*") as tar:
                seen: list[str] = []
                for info in tar:
                    seen.append(info.name)
                    member = wanted.get(PurePosixPath(info.name.replace("\\", "/")).name)
                    if member is None:
                        continue  # never written, so never a danger
                    target = root / member.target
                    if target in written:
                        raise DataError(f"{url} has several members named {member.name}; refusing to guess which.")
                    _check_tar_member(info, url)
                    size = _write_tar_member(tar, info, member, target, url)
                    written.append(target)
                    log(f"  saved {info.name} ({human_bytes(size)}) as {target}")
        except OSError as e:
            if is_no_space(e):
                raise _no_space(root / PurePosixPath(archive.members[0].target).parent, None, corpus) from None
            if isinstance(e, gzip.BadGzipFile):
                raise DataError(f"{url} did not give a valid archive ({e}). {hint}") from None
            raise DataError(f"cannot write the members of {url}: {e}. {hint}") from None
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise DataError(f"{url} did not give a valid tar archive ({e or 'truncated'}). {hint}") from None
        missing = [m.name for m in archive.members if root / m.target not in written]
        if missing:
            names = ", ".join(seen[:10]) or "nothing"
            raise DataError(
                f"{url} has no member named {', '.join(missing)} (it has: {names}). Check the archive URL. "
                f"{hint}"
            )
    except BaseException:
        for target in written:  # a refused archive leaves nothing behind
            target.unlink(missing_ok=True)
        raise


def _fetch_tar_archive(archive: TarArchive, root: Path, corpus: ParallelCorpus, log: Callable[[str], None]) -> None:
    """Download `archive`, check its sha256 against the record (or record it), and extract its members."""
    url = archive.url
    directory = root / PurePosixPath(archive.members[0].target).parent
    filename = PurePosixPath(url).name
    part = directory / f"{filename}.part"
    record = directory / f"{filename}.sha256"
    targets = ", ".join(str(root / m.target) for m in archive.members)
    hint = (f"Or download {url} by hand and save its members "
            f"{', '.join(PurePosixPath(m.name).name for m in archive.members)} as {targets} "
            f"(gunzipped where they end in .gz).")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)  # a leftover from a killed run is never reused
    except OSError as e:
        raise DataError(
            f"cannot write to {directory}: {e.strerror}. Set S2S_DATA_DIR or data.root=... to a writable "
            f"directory. {hint}"
        ) from None
    expected = (archive.sha256 or _read_checksum_record(record) or "").lower() or None
    try:
        digest = _download_archive(archive, part, corpus, hint, log)
        if expected is not None and digest != expected:
            source = "expected" if archive.sha256 else f"recorded in {record}"
            raise DataError(
                f"checksum mismatch for {url}: got sha256 {digest}, {source} {expected}. The file may be "
                f"corrupt or a newer release; delete {record} to accept a new release. {hint}"
            )
        _extract_tar(part, archive, root, corpus, hint, log)
    finally:
        part.unlink(missing_ok=True)
    if expected is None:
        try:
            _write_checksum_record(record, digest, url)
        except OSError as e:
            if is_no_space(e):
                raise _no_space(directory, None, corpus) from None
            raise
        log(f"  archive sha256 {digest} (no known checksum; recorded in {record} to verify later downloads)")


def _write_text_copy(source: Path, target: Path) -> int:
    """Copy the text file `source` to `target` atomically; return its number of lines."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
            _copy(src, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with open(target, "rb") as f:
        return sum(1 for _ in f)


def _fetch_test_set(test_set: str, prefix: str, root: Path, corpus: ParallelCorpus,
                    log: Callable[[str], None]) -> None:
    """Write ``root/prefix.<src>`` and ``.<tgt>`` from sacrebleu's copy of `test_set` (downloaded by sacrebleu)."""
    src, tgt = corpus.langs
    langpair = f"{src}-{tgt}"
    base = root / prefix
    by_hand = (
        f"Without network access, run `sacrebleu -t {test_set} -l {langpair} --echo src > {base}.{src}` and "
        f"`sacrebleu -t {test_set} -l {langpair} --echo ref > {base}.{tgt}` on a machine that has it and copy "
        f"the two files here (plain text, one sentence per line)."
    )
    try:
        import sacrebleu.utils
    except ImportError:
        raise DataError(
            f"sacrebleu is needed to fetch {PurePosixPath(prefix).name}: pip install sacrebleu. {by_hand}"
        ) from None
    log(f"fetching {test_set} {langpair} through sacrebleu -> {base}.{{{src},{tgt}}}")
    try:
        source = sacrebleu.utils.get_source_file(test_set, langpair)
        references = sacrebleu.utils.get_reference_files(test_set, langpair)
    except (Exception, SystemExit) as e:  # sacrebleu calls sys.exit(1) on SSL and checksum errors
        reason = "it stopped; see its message above" if isinstance(e, SystemExit) else getattr(e, "reason", e)
        raise DataError(f"sacrebleu could not download the {test_set} test set ({reason}). {by_hand}") from None
    if not references:
        raise DataError(f"sacrebleu has no reference for {test_set} {langpair}. {by_hand}")
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        lines = {lang: _write_text_copy(Path(path), Path(f"{base}.{lang}"))
                 for lang, path in ((src, source), (tgt, references[0]))}
    except OSError as e:
        if is_no_space(e):
            raise _no_space(base.parent, None, corpus) from None
        raise DataError(f"cannot write {base}.{src} / .{tgt}: {e}. {by_hand}") from None
    if lines[src] != lines[tgt]:
        for lang in (src, tgt):
            Path(f"{base}.{lang}").unlink(missing_ok=True)
        raise DataError(
            f"sacrebleu's {test_set} {langpair} files have {lines[src]} and {lines[tgt]} lines; they must match. "
            f"Delete {sacrebleu.utils.SACREBLEU_DIR}/{test_set} and try again. {by_hand}"
        )
    log(f"  saved {lines[src]:,} sentence pairs as {base}.{src} / .{tgt}")


def download_parallel(key: str, root: str | Path, log: Callable[[str], None] = print) -> None:
    """Make sure every file of the parallel corpus `key` (see PARALLEL_CORPORA) exists under `root`.

    If they all exist this returns at once, without network access. Otherwise each archive with a
    missing member is streamed to ``<dir>/<archive>.part`` (with progress lines), its sha256 is checked
    against ``<dir>/<archive>.sha256`` (recorded on the first download, as for Tatoeba; statmt.org
    announces no checksums), the wanted members are written atomically (gzip members decompressed), and
    the archive is deleted. The valid/test files (newstest2013/2014) come from sacrebleu's test sets.

    Raises DataError on any failure, saying what went wrong and what to do: unknown key, unwritable root,
    network error, short read, checksum mismatch, unsafe or missing member, full disk, sacrebleu failure.
    """
    if key not in PARALLEL_CORPORA:
        known = ", ".join(sorted(PARALLEL_CORPORA))
        also = f" ('{key}' is a Tatoeba download, for format tsv)" if key in ARCHIVES else ""
        raise DataError(f"unknown parallel corpus {key!r}{also}. Set data.download to one of: {known}, or null.")
    corpus = PARALLEL_CORPORA[key]
    root = Path(root).expanduser()
    missing = [name for name in corpus.files() if not (root / name).is_file()]
    if not missing:
        log(f"{corpus.title}: all {len(corpus.files())} files present under {root}; not downloading")
        return
    log(f"{corpus.title}: {len(missing)} of {len(corpus.files())} files missing under {root}; fetching them "
        f"(needs about {corpus.disk_gb:g} GB of free space)")
    for archive in corpus.archives:
        if not all((root / m.target).is_file() for m in archive.members):
            _fetch_tar_archive(archive, root, corpus, log)
    src, tgt = corpus.langs
    for test_set, prefix in corpus.test_sets:
        if not all((root / f"{prefix}.{lang}").is_file() for lang in (src, tgt)):
            _fetch_test_set(test_set, prefix, root, corpus, log)
    still = [name for name in corpus.files() if not (root / name).is_file()]
    if still:  # a table whose archives do not produce its own prefixes
        raise DataError(f"{corpus.title}: after downloading, still missing {', '.join(still)} under {root}.")
