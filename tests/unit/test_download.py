"""The manythings.org downloader, exercised with file:// URLs and a fake urlopen: no network."""

from __future__ import annotations

import hashlib
import io
import stat
import urllib.request
import zipfile
from email.message import Message
from pathlib import Path

import pytest

from s2s_attn.data import download
from s2s_attn.data.download import download_tatoeba
from s2s_attn.data.errors import DataError

FRA_TXT = "Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272 (CM) & #1158250 (Wittydev)\n"


def make_zip(path: Path, members: dict[str, str], symlinks: tuple[str, ...] = ()) -> Path:
    """A zip at `path` with the given text members, plus members stored as symbolic links."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # Unix, so the mode bits below are meaningful
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quiet(_: str) -> None:
    pass


def leftovers(root: Path) -> list[str]:
    """Every file under root, so tests can check that nothing partial was left behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_download_extracts_only_the_named_member_and_records_checksum(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "fra-eng.zip", {"fra.txt": FRA_TXT, "_about.txt": "about"})
    root = tmp_path / "data"
    messages: list[str] = []
    target = download_tatoeba("fra", root, url=archive.as_uri(), log=messages.append)

    assert target == root / "tatoeba" / "eng-fra.tsv"
    assert target.read_text(encoding="utf-8") == FRA_TXT
    assert leftovers(root) == ["tatoeba/eng-fra.tsv", "tatoeba/eng-fra.tsv.sha256"]
    assert sha256_of(archive) in (root / "tatoeba" / "eng-fra.tsv.sha256").read_text()
    assert any(sha256_of(archive) in m for m in messages)


def test_download_finds_the_member_inside_a_folder(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "cmn-eng.zip", {"cmn-eng/cmn.txt": "Run.\t你用跑的。\n"})
    target = download_tatoeba("cmn", tmp_path / "data", url=archive.as_uri(), log=quiet)
    assert target == tmp_path / "data" / "tatoeba" / "cmn-eng.tsv"
    assert target.read_text(encoding="utf-8") == "Run.\t你用跑的。\n"


def test_download_verifies_checksum_and_rejects_mismatch(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "fra-eng.zip", {"fra.txt": FRA_TXT})
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        download_tatoeba("fra", root, url=archive.as_uri(), sha256="0" * 64, log=quiet)
    assert "checksum mismatch" in str(info.value) and sha256_of(archive) in str(info.value)
    assert leftovers(root) == []

    target = download_tatoeba("fra", root, url=archive.as_uri(), sha256=sha256_of(archive).upper(), log=quiet)
    assert target.read_text(encoding="utf-8") == FRA_TXT
    assert leftovers(root) == ["tatoeba/eng-fra.tsv"]  # a pinned checksum needs no record


def test_later_download_is_verified_against_the_recorded_checksum(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "fra-eng.zip", {"fra.txt": FRA_TXT})
    root = tmp_path / "data"
    target = download_tatoeba("fra", root, url=archive.as_uri(), log=quiet)
    target.unlink()
    make_zip(archive, {"fra.txt": "Changed.\tChangé.\n"})

    with pytest.raises(DataError) as info:
        download_tatoeba("fra", root, url=archive.as_uri(), log=quiet)
    assert f"recorded in {target}.sha256" in str(info.value)
    assert f"delete {target}.sha256" in str(info.value)
    assert not target.exists()


def test_download_rejects_path_traversal_member(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in ("../fra.txt", "anki/../../fra.txt", "/etc/fra.txt"):
        archive = make_zip(tmp_path / "evil.zip", {name: FRA_TXT})
        with pytest.raises(DataError, match="refusing unsafe member path"):
            download_tatoeba("fra", root, url=archive.as_uri(), log=quiet)
        assert leftovers(root) == []
    assert not (tmp_path / "fra.txt").exists()


def test_download_rejects_symlink_member(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "evil.zip", {}, symlinks=("fra.txt",))
    with pytest.raises(DataError, match="symbolic link"):
        download_tatoeba("fra", tmp_path / "data", url=archive.as_uri(), log=quiet)
    assert leftovers(tmp_path / "data") == []


def test_archive_without_the_member_or_not_a_zip_gives_clear_error(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "other.zip", {"deu.txt": FRA_TXT})
    with pytest.raises(DataError, match="has no member named fra.txt"):
        download_tatoeba("fra", tmp_path / "data", url=archive.as_uri(), log=quiet)
    page = tmp_path / "page.html"
    page.write_text("<html>Too many requests</html>")
    with pytest.raises(DataError, match="did not give a valid zip archive"):
        download_tatoeba("fra", tmp_path / "data", url=page.as_uri(), log=quiet)
    assert leftovers(tmp_path / "data") == []


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable body with headers."""

    def __init__(self, body: bytes, content_length: int | None) -> None:
        super().__init__(body)
        self.headers = Message()
        if content_length is not None:
            self.headers["Content-Length"] = str(content_length)


class DroppedConnection(FakeResponse):
    def read(self, size: int | None = -1) -> bytes:
        if self.tell() > 0:
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().read(10)


def test_partial_download_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = make_zip(tmp_path / "fra-eng.zip", {"fra.txt": FRA_TXT}).read_bytes()
    root = tmp_path / "data"
    target = root / "tatoeba" / "eng-fra.tsv"

    # The server closes the connection early: fewer bytes than Content-Length.
    short = FakeResponse(body[:50], content_length=len(body))
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: short)
    with pytest.raises(DataError, match=f"incomplete download .*got 50 of {len(body):,} bytes"):
        download_tatoeba("fra", root, log=quiet)
    assert leftovers(root) == []

    # The connection is reset mid-stream.
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: DroppedConnection(body, None))
    with pytest.raises(DataError, match="could not download"):
        download_tatoeba("fra", root, log=quiet)
    assert leftovers(root) == []

    # A complete .part left by a killed run is not taken for the download.
    (root / "tatoeba" / "eng-fra.tsv.part").write_bytes(body)
    with pytest.raises(DataError, match="could not download"):
        download_tatoeba("fra", root, url=(tmp_path / "gone.zip").as_uri(), log=quiet)
    assert not target.exists() and leftovers(root) == []


def test_network_error_names_the_url_and_where_to_put_the_file(tmp_path: Path) -> None:
    url = (tmp_path / "no-such.zip").as_uri()
    with pytest.raises(DataError) as info:
        download_tatoeba("fra", tmp_path / "data", url=url, log=quiet)
    message = str(info.value)
    assert message.startswith(f"could not download {url}:")
    target = tmp_path / "data" / "tatoeba" / "eng-fra.tsv"
    assert f"extract fra.txt from it and save that file as {target}." in message


def test_download_sends_a_browser_user_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = make_zip(tmp_path / "fra-eng.zip", {"fra.txt": FRA_TXT}).read_bytes()
    seen = []

    def fake_urlopen(request: urllib.request.Request, timeout: float) -> FakeResponse:
        seen.append((request.full_url, request.get_header("User-agent"), timeout))
        return FakeResponse(body, len(body))

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    download_tatoeba("fra", tmp_path / "data", log=quiet)
    [(url, agent, timeout)] = seen
    assert url == "https://www.manythings.org/anki/fra-eng.zip"
    assert agent.startswith("Mozilla/5.0") and timeout > 0


def test_existing_file_is_returned_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "data" / "tatoeba" / "eng-fra.tsv"
    target.parent.mkdir(parents=True)
    target.write_text(FRA_TXT, encoding="utf-8")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was used")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert download_tatoeba("fra", tmp_path / "data", log=quiet) == target


def test_unwritable_root_or_unknown_key_gives_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "a-file"
    root.write_text("not a directory")
    with pytest.raises(DataError) as info:
        download_tatoeba("fra", root, url="file:///unused.zip", log=quiet)
    assert str(info.value).startswith(f"cannot write to {root / 'tatoeba'}")
    assert f"save it as {root / 'tatoeba' / 'eng-fra.tsv'}" in str(info.value)

    with pytest.raises(DataError, match="unknown download key 'deu'.*one of: cmn, fra"):
        download_tatoeba("deu", tmp_path, log=quiet)


def test_archive_table_names_the_canonical_archives() -> None:
    fra, cmn = download.ARCHIVES["fra"], download.ARCHIVES["cmn"]
    assert (fra.url, fra.member, fra.target) == (
        "https://www.manythings.org/anki/fra-eng.zip",
        "fra.txt",
        "tatoeba/eng-fra.tsv",
    )
    assert (cmn.url, cmn.member, cmn.target) == (
        "https://www.manythings.org/anki/cmn-eng.zip",
        "cmn.txt",
        "tatoeba/cmn-eng.tsv",
    )
