"""The statmt.org parallel-corpus downloader, exercised with small tar archives served from file:// URLs,
a fake urlopen and a fake sacrebleu: no network."""

from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import io
import tarfile
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest
import sacrebleu.utils
import yaml

from s2s_attn.data import download
from s2s_attn.data.download import PARALLEL_CORPORA, download_parallel
from s2s_attn.data.errors import DataError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "data"
EN = "Resumption of the session\nI declare resumed the session.\n"
FR = "Reprise de la session\nJe déclare reprise la session.\n"


def quiet(_: str) -> None:
    pass


def leftovers(root: Path) -> list[str]:
    """Every file under root, so tests can check that nothing partial was left behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_tar(path: Path, members: dict[str, bytes], links: dict[str, bytes] | None = None) -> Path:
    """A tar at `path` (gzip-compressed if it ends in .tgz) with the given file members and special members.

    `links` maps a member name to its tar type (tarfile.SYMTYPE, LNKTYPE, CHRTYPE, ...).
    """
    with tarfile.open(path, "w:gz" if path.suffix == ".tgz" else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, kind in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return path


def pair_members(archive: download.TarArchive, tag: str) -> dict[str, bytes]:
    """Members for every file `archive` should hold, with text that says which corpus it is (gzipped if .gz)."""
    members = {}
    for member in archive.members:
        lang = member.target.rsplit(".", 1)[1]
        text = f"{tag} {lang} 1\n{tag} {lang} 2\n".encode()
        members[member.name] = gzip.compress(text) if member.name.endswith(".gz") else text
    return members


class FakeSacrebleu:
    """Stands in for sacrebleu's test-set download: files in `directory`, or an error to raise."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.calls: list[tuple[str, str]] = []
        self.error: BaseException | None = None
        self.ref_lines = 2

    def _file(self, test_set: str, langpair: str, field: str, lines: int) -> str:
        path = self.directory / f"{test_set}.{langpair}.{field}"
        path.write_text("".join(f"{test_set} {field} {i}\n" for i in range(lines)), encoding="utf-8")
        return str(path)

    def source(self, test_set: str, langpair: str) -> str:
        self.calls.append((test_set, langpair))
        if self.error is not None:
            raise self.error
        return self._file(test_set, langpair, "src", 2)

    def references(self, test_set: str, langpair: str) -> list[str]:
        if self.error is not None:
            raise self.error
        return [self._file(test_set, langpair, "ref", self.ref_lines)]


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSacrebleu:
    """Every table archive rebuilt small under tmp_path/served and served from file:// URLs; fake sacrebleu."""
    served = tmp_path / "served"
    served.mkdir()
    for key, corpus in list(PARALLEL_CORPORA.items()):
        archives = []
        (served / key).mkdir()
        for archive in corpus.archives:
            name = Path(archive.url).name
            path = make_tar(served / key / name, {**pair_members(archive, name), "README": b"about\n"})
            archives.append(dataclasses.replace(archive, url=path.as_uri()))
        monkeypatch.setitem(PARALLEL_CORPORA, key, dataclasses.replace(corpus, archives=tuple(archives)))
    fake = FakeSacrebleu(served)
    monkeypatch.setattr(sacrebleu.utils, "get_source_file", fake.source)
    monkeypatch.setattr(sacrebleu.utils, "get_reference_files", fake.references)
    return fake


def archive_path(key: str, index: int = 0) -> Path:
    return Path(urllib.request.url2pathname(PARALLEL_CORPORA[key].archives[index].url.removeprefix("file://")))


def no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("the network was used")


# ---- what lands where ------------------------------------------------------------------------------------

def test_europarl_lands_at_its_prefixes_with_newstest_and_a_checksum_record(tmp_path: Path,
                                                                            served: FakeSacrebleu) -> None:
    root = tmp_path / "data"
    messages: list[str] = []
    download_parallel("europarl_v7_fr_en", root, log=messages.append)

    assert leftovers(root) == [
        "europarl-v7/europarl-v7.fr-en.en", "europarl-v7/europarl-v7.fr-en.fr", "europarl-v7/fr-en.tgz.sha256",
        "wmt/newstest2013.en", "wmt/newstest2013.fr", "wmt/newstest2014.en", "wmt/newstest2014.fr",
    ]
    assert (root / "europarl-v7/europarl-v7.fr-en.en").read_text() == "fr-en.tgz en 1\nfr-en.tgz en 2\n"
    assert (root / "europarl-v7/europarl-v7.fr-en.fr").read_text() == "fr-en.tgz fr 1\nfr-en.tgz fr 2\n"
    assert (root / "wmt/newstest2013.en").read_text() == "wmt13 src 0\nwmt13 src 1\n"
    assert (root / "wmt/newstest2014.fr").read_text() == "wmt14 ref 0\nwmt14 ref 1\n"
    assert served.calls == [("wmt13", "en-fr"), ("wmt14", "en-fr")]
    digest = sha256_of(archive_path("europarl_v7_fr_en"))
    assert digest in (root / "europarl-v7/fr-en.tgz.sha256").read_text()
    assert any(digest in m for m in messages)
    size = archive_path("europarl_v7_fr_en").stat().st_size
    assert any("fr-en.tgz:" in m and "/" in m and "(100%)" in m for m in messages), messages  # progress
    assert any(f"fr-en.tgz: {size} B downloaded" in m for m in messages), messages


def test_wmt14_extracts_all_five_archives_and_gunzips_giga_fren(tmp_path: Path, served: FakeSacrebleu) -> None:
    root = tmp_path / "data"
    download_parallel("wmt14_en_fr", root, log=quiet)

    corpus = PARALLEL_CORPORA["wmt14_en_fr"]
    assert set(leftovers(root)) == set(corpus.files()) | {
        f"wmt14/{Path(a.url).name}.sha256" for a in corpus.archives
    }
    giga = root / "wmt14/giga-fren.release2.fixed"
    assert Path(f"{giga}.en").read_text() == "training-giga-fren.tar en 1\ntraining-giga-fren.tar en 2\n"
    assert Path(f"{giga}.fr").read_text() == "training-giga-fren.tar fr 1\ntraining-giga-fren.tar fr 2\n"
    undoc = root / "wmt14/undoc.2000.fr-en.fr"
    assert undoc.read_text() == "training-parallel-un.tgz fr 1\ntraining-parallel-un.tgz fr 2\n"
    assert not (root / "README").exists() and not (root / "wmt14/README").exists()


def test_second_call_is_a_no_op_without_network(tmp_path: Path, served: FakeSacrebleu,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    download_parallel("europarl_v7_fr_en", root, log=quiet)
    before = {name: (root / name).stat().st_mtime_ns for name in leftovers(root)}

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    served.error = AssertionError("sacrebleu was used")
    messages: list[str] = []
    download_parallel("europarl_v7_fr_en", root, log=messages.append)
    assert {name: (root / name).stat().st_mtime_ns for name in leftovers(root)} == before
    assert messages == [f"Europarl v7 French-English: all 6 files present under {root}; not downloading"]


def test_only_the_missing_pieces_are_fetched(tmp_path: Path, served: FakeSacrebleu,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    download_parallel("europarl_v7_fr_en", root, log=quiet)
    (root / "wmt/newstest2014.fr").unlink()
    served.calls.clear()
    monkeypatch.setattr(urllib.request, "urlopen", no_network)  # the training archive is not needed again
    download_parallel("europarl_v7_fr_en", root, log=quiet)
    assert served.calls == [("wmt14", "en-fr")]
    assert (root / "wmt/newstest2014.fr").is_file()


# ---- checksums -------------------------------------------------------------------------------------------

def test_a_changed_archive_is_refused_against_the_recorded_checksum(tmp_path: Path, served: FakeSacrebleu) -> None:
    root = tmp_path / "data"
    download_parallel("europarl_v7_fr_en", root, log=quiet)
    target = root / "europarl-v7/europarl-v7.fr-en.en"
    target.unlink()
    archive = PARALLEL_CORPORA["europarl_v7_fr_en"].archives[0]
    make_tar(archive_path("europarl_v7_fr_en"), {m.name: b"changed\n" for m in archive.members})

    record = root / "europarl-v7/fr-en.tgz.sha256"
    with pytest.raises(DataError) as info:
        download_parallel("europarl_v7_fr_en", root, log=quiet)
    message = str(info.value)
    assert message.startswith(f"checksum mismatch for {archive.url}: got sha256 ")
    assert f"recorded in {record}" in message and f"delete {record} to accept a new release" in message
    assert "Traceback" not in message and "\n" not in message
    assert not target.exists() and not list(root.rglob("*.part"))
    assert (root / "europarl-v7/europarl-v7.fr-en.fr").read_text().startswith("fr-en.tgz")  # untouched

    record.unlink()  # accepting the new release
    download_parallel("europarl_v7_fr_en", root, log=quiet)
    assert target.read_text() == "changed\n"
    assert sha256_of(archive_path("europarl_v7_fr_en")) in record.read_text()


def test_a_pinned_checksum_is_checked_and_needs_no_record(tmp_path: Path, served: FakeSacrebleu,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = PARALLEL_CORPORA["europarl_v7_fr_en"]
    pinned = dataclasses.replace(corpus.archives[0], sha256="0" * 64)
    monkeypatch.setitem(PARALLEL_CORPORA, "europarl_v7_fr_en", dataclasses.replace(corpus, archives=(pinned,)))
    root = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch .*, expected 0000"):
        download_parallel("europarl_v7_fr_en", root, log=quiet)
    assert not (root / "europarl-v7").exists() or leftovers(root / "europarl-v7") == []


# ---- unsafe or broken archives ---------------------------------------------------------------------------

@pytest.mark.parametrize("members,links,error", [
    ({"../europarl-v7.fr-en.en": EN.encode()}, {}, "refusing unsafe member path '../europarl-v7.fr-en.en'"),
    ({"a/../../europarl-v7.fr-en.en": EN.encode()}, {}, "refusing unsafe member path"),
    ({"/tmp/europarl-v7.fr-en.en": EN.encode()}, {}, "refusing unsafe member path"),
    ({}, {"europarl-v7.fr-en.en": tarfile.SYMTYPE}, "it is a link, not a file"),
    ({}, {"europarl-v7.fr-en.en": tarfile.LNKTYPE}, "it is a link, not a file"),
    ({}, {"europarl-v7.fr-en.en": tarfile.CHRTYPE}, "not a regular file"),
    ({"europarl-v7.fr-en.en": b"a", "x/europarl-v7.fr-en.en": b"b"}, {}, "several members named"),
])
def test_unsafe_members_are_refused_and_nothing_is_left(tmp_path: Path, served: FakeSacrebleu,
                                                        members: dict, links: dict, error: str) -> None:
    # The French member comes first, so a refusal must also remove what was already written.
    make_tar(archive_path("europarl_v7_fr_en"), {"europarl-v7.fr-en.fr": FR.encode(), **members}, links)
    root = tmp_path / "deep" / "data"
    with pytest.raises(DataError, match=error):
        download_parallel("europarl_v7_fr_en", root, log=quiet)
    assert leftovers(root) == []
    assert not (tmp_path / "deep" / "europarl-v7.fr-en.en").exists()
    assert not Path("/tmp/europarl-v7.fr-en.en").exists()


def test_missing_member_or_not_an_archive_gives_clear_error(tmp_path: Path, served: FakeSacrebleu) -> None:
    root = tmp_path / "data"
    make_tar(archive_path("europarl_v7_fr_en"), {"europarl-v7.de-en.en": EN.encode()})
    with pytest.raises(DataError, match=r"has no member named europarl-v7.fr-en.en, europarl-v7.fr-en.fr "
                                        r"\(it has: europarl-v7.de-en.en\)"):
        download_parallel("europarl_v7_fr_en", root, log=quiet)
    archive_path("europarl_v7_fr_en").write_text("<html>Too many requests</html>")
    with pytest.raises(DataError, match="did not give a valid tar archive") as info:
        download_parallel("europarl_v7_fr_en", root, log=quiet)
    assert f"save its members europarl-v7.fr-en.en, europarl-v7.fr-en.fr as {root}" in str(info.value)
    assert leftovers(root) == []


def test_a_corrupt_gzip_member_is_refused(tmp_path: Path, served: FakeSacrebleu,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = PARALLEL_CORPORA["wmt14_en_fr"]
    giga = corpus.archives[-1]
    monkeypatch.setitem(PARALLEL_CORPORA, "wmt14_en_fr", dataclasses.replace(corpus, archives=(giga,)))
    data = gzip.compress(bytes(range(256)) * 64)
    make_tar(archive_path("wmt14_en_fr"), {m.name: data[: len(data) // 2] for m in giga.members})
    root = tmp_path / "data"
    with pytest.raises(DataError, match="giga-fren.release2.fixed.en.gz of .* is not valid gzip data"):
        download_parallel("wmt14_en_fr", root, log=quiet)
    assert leftovers(root) == []


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable body with headers."""

    def __init__(self, body: bytes, content_length: int | None) -> None:
        super().__init__(body)
        self.headers = Message()
        if content_length is not None:
            self.headers["Content-Length"] = str(content_length)


def test_short_read_is_refused_and_a_browser_user_agent_is_sent(tmp_path: Path, served: FakeSacrebleu,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    body = archive_path("europarl_v7_fr_en").read_bytes()
    seen = []

    def short(request: urllib.request.Request, timeout: float) -> FakeResponse:
        seen.append(request.get_header("User-agent"))
        return FakeResponse(body[:50], len(body))

    monkeypatch.setattr(urllib.request, "urlopen", short)
    root = tmp_path / "data"
    with pytest.raises(DataError, match=f"incomplete download .*got 50 of {len(body):,} bytes"):
        download_parallel("europarl_v7_fr_en", root, log=quiet)
    assert seen and seen[0].startswith("Mozilla/5.0")
    assert leftovers(root) == []


def test_network_error_names_the_url_and_the_files_to_place(tmp_path: Path, served: FakeSacrebleu,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(request: urllib.request.Request, timeout: float) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        download_parallel("europarl_v7_fr_en", root, log=quiet)
    url = PARALLEL_CORPORA["europarl_v7_fr_en"].archives[0].url
    assert str(info.value).startswith(f"could not download {url}: [Errno -3] Temporary failure")
    assert f"as {root / 'europarl-v7/europarl-v7.fr-en.en'}, {root / 'europarl-v7/europarl-v7.fr-en.fr'}" in str(
        info.value)


# ---- a full disk -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fail_at_call", [1, 2], ids=["while downloading", "while extracting"])
def test_a_full_disk_becomes_a_data_error_naming_the_directory(tmp_path: Path, served: FakeSacrebleu,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               fail_at_call: int) -> None:
    real_copy = download._copy
    calls = []

    def copy_until_full(*args: object, **kwargs: object) -> int:
        calls.append(1)
        if len(calls) == fail_at_call:  # call 1 streams the archive, call 2 writes the first member
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(download, "_copy", copy_until_full)
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        download_parallel("europarl_v7_fr_en", root, log=quiet)
    message = str(info.value)
    assert message.startswith(f"no space left on the disk holding {root / 'europarl-v7'} (")
    assert " free)" in message and "needs about 1 GB in all" in message
    assert "set S2S_DATA_DIR (or data.root=...) to a directory on a larger disk" in message
    assert leftovers(root) == []


# ---- the test sets through sacrebleu ---------------------------------------------------------------------

@pytest.mark.parametrize("error", [urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
                                   SystemExit(1)])
def test_sacrebleu_failure_says_how_to_place_the_files_by_hand(tmp_path: Path, served: FakeSacrebleu,
                                                               error: BaseException) -> None:
    served.error = error
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        download_parallel("europarl_v7_fr_en", root, log=quiet)
    message = str(info.value)
    assert message.startswith("sacrebleu could not download the wmt13 test set (")
    assert f"sacrebleu -t wmt13 -l en-fr --echo src > {root / 'wmt/newstest2013'}.en" in message
    assert f"sacrebleu -t wmt13 -l en-fr --echo ref > {root / 'wmt/newstest2013'}.fr" in message
    assert "wmt/newstest2013.en" not in leftovers(root)
    assert "europarl-v7/europarl-v7.fr-en.en" in leftovers(root)  # what did download is kept


def test_test_set_files_of_different_lengths_are_refused(tmp_path: Path, served: FakeSacrebleu) -> None:
    served.ref_lines = 3
    root = tmp_path / "data"
    with pytest.raises(DataError, match="wmt13 en-fr files have 2 and 3 lines; they must match"):
        download_parallel("europarl_v7_fr_en", root, log=quiet)
    assert not list((root / "wmt").glob("newstest2013.*"))


# ---- keys, the table and the configs ---------------------------------------------------------------------

def test_unknown_key_or_unwritable_root_gives_clear_error(tmp_path: Path, served: FakeSacrebleu) -> None:
    with pytest.raises(DataError, match="unknown parallel corpus 'wmt15'. Set data.download to one of: "
                                        "europarl_v7_fr_en, wmt14_en_fr, or null."):
        download_parallel("wmt15", tmp_path, log=quiet)
    with pytest.raises(DataError, match="'fra' is a Tatoeba download"):
        download_parallel("fra", tmp_path, log=quiet)
    root = tmp_path / "a-file"
    root.write_text("not a directory")
    with pytest.raises(DataError, match=f"cannot write to {root / 'europarl-v7'}: "):
        download_parallel("europarl_v7_fr_en", root, log=quiet)


def test_the_table_names_the_statmt_archives_and_its_prefixes_are_produced() -> None:
    for corpus in PARALLEL_CORPORA.values():
        targets = sorted(m.target for a in corpus.archives for m in a.members)
        assert targets == sorted(f"{p}.{lang}" for p in corpus.train for lang in corpus.langs)
        assert [prefix for _, prefix in corpus.test_sets] == [corpus.valid, corpus.test]
        assert all(a.url.startswith("https://www.statmt.org/") for a in corpus.archives)
    wmt14 = PARALLEL_CORPORA["wmt14_en_fr"]
    assert [Path(a.url).name for a in wmt14.archives] == [
        "training-parallel-europarl-v7.tgz", "training-parallel-commoncrawl.tgz", "training-parallel-un.tgz",
        "training-parallel-nc-v9.tgz", "training-giga-fren.tar",
    ]
    assert [m.name for m in wmt14.archives[-1].members] == [
        "giga-fren.release2.fixed.en.gz", "giga-fren.release2.fixed.fr.gz",
    ]
    assert PARALLEL_CORPORA["europarl_v7_fr_en"].archives[0].url == "https://www.statmt.org/europarl/v7/fr-en.tgz"
    assert dict(wmt14.test_sets) == {"wmt13": "wmt/newstest2013", "wmt14": "wmt/newstest2014"}


@pytest.mark.parametrize("config,key", [("europarl_en_fr", "europarl_v7_fr_en"), ("wmt14_en_fr", "wmt14_en_fr")])
def test_each_data_config_names_its_corpus_prefixes(config: str, key: str) -> None:
    cfg = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text(encoding="utf-8"))
    corpus = PARALLEL_CORPORA[key]
    assert (cfg["name"], cfg["format"], cfg["download"]) == (config, "parallel", key)
    assert cfg["train"] == list(corpus.train)
    assert (cfg["valid"], cfg["test"]) == (corpus.valid, corpus.test)
    assert (cfg["src_lang"], cfg["tgt_lang"]) == corpus.langs
