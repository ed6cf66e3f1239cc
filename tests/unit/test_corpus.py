"""Corpus reading, normalisation, filtering, grouped splitting and prepared-data caching."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest

from s2s_attn.data import cache, chinese, formats
from s2s_attn.data.corpus import prepare_data
from s2s_attn.data.errors import DataError
from s2s_attn.data.readers import read_parallel, read_tsv
from s2s_attn.data.split import deduplicate, filter_pairs, split_grouped
from s2s_attn.data.text import count_words, normalize_text, source_key

REPO_ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


# ---------------------------------------------------------------------------------------------------------
# normalize_text
# ---------------------------------------------------------------------------------------------------------


def test_normalize_collapses_french_typographic_spaces() -> None:
    assert normalize_text("Qui\u202f?") == "Qui ?"
    assert normalize_text("«\u00a0Bonjour\u00a0!\u00a0»") == "« Bonjour ! »"
    assert normalize_text("Attends\u2009!") == "Attends !"
    assert normalize_text("Vas-y  \u202f\u00a0 !") == "Vas-y !"


def test_normalize_deletes_zero_width_soft_hyphen_and_control_chars() -> None:
    assert normalize_text("ab\u200bc\u200cd\u200de\ufefff") == "abcdef"
    assert normalize_text("extra\u00adordinaire") == "extraordinaire"
    assert normalize_text("bell\x07 and\x00 nul") == "bell and nul"
    assert normalize_text("left\u200e-to-right mark") == "left-to-right mark"


def test_normalize_turns_tabs_and_newlines_into_single_spaces_and_strips() -> None:
    assert normalize_text("\t a\tb\nc\r\n d \u3000 e\u2028f  ") == "a b c d e f"
    assert normalize_text(" \u200b \t ") == ""


def test_normalize_applies_nfkc() -> None:
    assert normalize_text("ＡＢＣ１２３") == "ABC123"
    assert normalize_text("ﬁn") == "fin"
    assert normalize_text("e\u0301t\u00e9") == "\u00e9t\u00e9"  # decomposed é becomes the composed one


def test_source_key_ignores_case_punctuation_and_whitespace() -> None:
    assert source_key("Go!") == source_key("go.") == source_key(" GO ") == "go"
    assert source_key("Don't do it.") == source_key("dont do it") == "dontdoit"


def test_count_words_counts_words_or_cjk_characters() -> None:
    assert count_words("I can't swim .") == 4
    assert count_words("我不会游泳。") == 5  # characters, without the punctuation
    assert count_words("我用 iPhone!") == 8


# ---------------------------------------------------------------------------------------------------------
# read_tsv
# ---------------------------------------------------------------------------------------------------------


def test_tsv_reader_skips_and_reports_malformed_lines_with_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "eng-fra.tsv",
        "Go.\tVa !\n"  # 1 ok
        "just one column\n"  # 2
        "a\tb\tc\td\n"  # 3: four columns
        "Hello.\t \u200b \n"  # 4: target empty after normalisation
        "\n"  # 5: blank, only counted
        "\tBonjour.\n"  # 6: empty source
        "Run!\tCours\u202f!\n",  # 7 ok
    )
    pairs, report = read_tsv(path)
    assert pairs == [("Go.", "Va !"), ("Run!", "Cours !")]
    assert report.lines_total == 7
    assert report.pairs_read == 2
    assert report.blank_lines == 1
    assert report.skipped == [
        (2, "1 column, expected 2 or 3"),
        (3, "4 columns, expected 2 or 3"),
        (4, "empty target"),
        (6, "empty source"),
    ]
    assert report.summary(max_examples=2) == (
        "eng-fra.tsv: read 2 pairs from 7 lines; skipped 4 malformed lines "
        "(line 2: 1 column, expected 2 or 3; line 3: 4 columns, expected 2 or 3; ...); ignored 1 blank line"
    )


def test_three_column_tsv_ignores_attribution(tmp_path: Path) -> None:
    path = write(
        tmp_path / "cmn-eng.tsv",
        "Run.\t你用跑的。\tCC-BY 2.0 (France) Attribution: tatoeba.org #4008918 (JSakuragi)\n"
        "Who?\t誰？\tCC-BY 2.0 (France) Attribution: tatoeba.org #2083030 (CK)\n",
    )
    pairs, report = read_tsv(path)
    assert pairs == [("Run.", "你用跑的。"), ("Who?", "誰?")]  # NFKC turns the full-width ？ into ?
    assert report.skipped == []


def test_reverse_direction_swaps_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "eng-fra.tsv", "Go.\tVa !\nHi.\tSalut !\n")
    forward, _ = read_tsv(path)
    reverse, _ = read_tsv(path, src_column=1, tgt_column=0)
    assert reverse == [(tgt, src) for src, tgt in forward] == [("Va !", "Go."), ("Salut !", "Hi.")]


def test_same_column_for_source_and_target_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "eng-fra.tsv", "Go.\tVa !\n")
    with pytest.raises(DataError, match="must be two different column numbers"):
        read_tsv(path, src_column=1, tgt_column=1)


def test_invalid_utf8_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = write(tmp_path / "eng-fra.tsv", b"Go.\tVa !\nBad\t\xff\xfe caf\xe9\nHi.\tSalut !\n")
    pairs, report = read_tsv(path)
    assert pairs == [("Go.", "Va !"), ("Hi.", "Salut !")]
    assert report.skipped == [(2, "invalid UTF-8 at byte 5")]
    assert report.lines_total == 3


def test_crlf_bom_and_missing_final_newline_are_handled(tmp_path: Path) -> None:
    path = write(tmp_path / "eng-fra.tsv", b"\xef\xbb\xbfGo.\tVa !\r\nHi.\tSalut !")
    pairs, report = read_tsv(path)
    assert pairs == [("Go.", "Va !"), ("Hi.", "Salut !")]
    assert report.lines_total == 2


def test_missing_file_gives_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "tatoeba" / "eng-fra.tsv"
    with pytest.raises(DataError) as info:
        read_tsv(missing)
    message = str(info.value)
    assert message.startswith(f"corpus file not found: {missing}.")
    assert "S2S_DATA_DIR" in message and "data.root" in message


def test_empty_file_gives_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path / "eng-fra.tsv", "\n\n")
    with pytest.raises(DataError, match=re.escape(f"corpus file is empty: {path}.")):
        read_tsv(path)


def test_file_without_any_valid_line_names_the_file_and_first_problems(tmp_path: Path) -> None:
    path = write(tmp_path / "eng-fra.tsv", "Go. Va !\nHi. Salut !\nRun! Cours !\nWho? Qui ?\n")
    with pytest.raises(DataError) as info:
        read_tsv(path)
    message = str(info.value)
    assert str(path) in message
    assert "all 4 lines were skipped" in message
    assert "line 1: 1 column, expected 2 or 3; line 2: 1 column" in message
    assert "line 4" not in message  # only the first few problems


# ---------------------------------------------------------------------------------------------------------
# read_parallel
# ---------------------------------------------------------------------------------------------------------


def test_parallel_reader_pairs_lines_and_skips_empty_sides(tmp_path: Path) -> None:
    src = write(tmp_path / "train.en", b"A dog runs.\n\nA cat\xff sleeps.\n \nTwo men talk.\n\n")
    tgt = write(
        tmp_path / "train.fr", "Un chien court.\nVide.\nUn chat dort.\n\nDeux hommes\u00a0parlent.\n\n"
    )
    pairs, report = read_parallel(src, tgt)
    assert pairs == [("A dog runs.", "Un chien court."), ("Two men talk.", "Deux hommes parlent.")]
    assert report.lines_total == 6
    assert report.blank_lines == 2  # lines 4 and 6 are empty on both sides
    assert report.skipped == [(2, "empty source"), (3, "invalid UTF-8 at byte 6 in source file")]
    assert report.summary().startswith("train.en + train.fr: read 2 pairs from 6 lines; skipped 2 malformed")


def test_parallel_files_of_different_lengths_give_clear_error(tmp_path: Path) -> None:
    src = write(tmp_path / "train.en", "one\ntwo\nthree\n")
    tgt = write(tmp_path / "train.fr", "un\ndeux\n")
    with pytest.raises(DataError) as info:
        read_parallel(src, tgt)
    message = str(info.value)
    assert f"{src} has 3" in message and f"{tgt} has 2" in message


# ---------------------------------------------------------------------------------------------------------
# filter_pairs, deduplicate
# ---------------------------------------------------------------------------------------------------------


def test_filters_by_length_and_ratio() -> None:
    pairs = [
        ("Go.", "Va !"),  # 1 vs 2 words: kept
        ("one two three four five six", "un deux trois quatre cinq six"),  # 6 words: too long
        ("Cheers!", "À votre santé !"),  # ratio 4: removed
        ("I see.", "Je vois bien, oui, vraiment."),  # ratio 2.5: kept
        ("a b c", "x y z"),  # kept
    ]
    kept, removed = filter_pairs(pairs, min_words=1, max_words=5, max_ratio=3.0)
    assert kept == [pairs[0], pairs[3], pairs[4]]
    assert removed == {"too_short": 0, "too_long": 1, "length_ratio": 1}

    kept, removed = filter_pairs(pairs, min_words=3, max_words=None, max_ratio=None)
    assert kept == [pairs[1], pairs[4]]
    assert removed == {"too_short": 3, "too_long": 0, "length_ratio": 0}


def test_length_filter_counts_chinese_in_characters() -> None:
    pairs = [
        ("I love you.", "我爱你。"),
        ("Run.", "你用跑的。"),
        ("Tom is reading a book now.", "汤姆正在看书。"),
    ]
    kept, removed = filter_pairs(pairs, min_words=1, max_words=5, max_ratio=3.0)
    assert kept == [pairs[0]]  # 3 vs 3
    assert removed == {"too_short": 0, "too_long": 1, "length_ratio": 1}  # 6 words; 1 vs 4 characters


def test_deduplicate_keeps_first_occurrence() -> None:
    pairs = [("a", "x"), ("b", "y"), ("a", "x"), ("a", "z"), ("b", "y")]
    assert deduplicate(pairs) == ([("a", "x"), ("b", "y"), ("a", "z")], 2)


# ---------------------------------------------------------------------------------------------------------
# split_grouped
# ---------------------------------------------------------------------------------------------------------


def grouped_pairs(n_sources: int = 300) -> list[tuple[str, str]]:
    """Sources with 1-3 translations each, some written differently ("Go!" / "go.")."""
    pairs = []
    for i in range(n_sources):
        pairs.append((f"Sentence {i}!", f"Phrase {i} !"))
        if i % 3 == 0:
            pairs.append((f"sentence {i}.", f"Une phrase {i}."))
        if i % 5 == 0:
            pairs.append((f"SENTENCE {i}", f"La phrase {i}"))
    return pairs


def test_split_is_deterministic_for_a_seed() -> None:
    pairs = grouped_pairs()
    first = split_grouped(pairs, valid_size=20, test_size=30, seed=1)
    assert split_grouped(list(pairs), valid_size=20, test_size=30, seed=1) == first
    assert split_grouped(pairs, valid_size=20, test_size=30, seed=2)["test"] != first["test"]


def test_split_is_independent_of_python_hash_seed() -> None:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from s2s_attn.data.split import split_grouped;"
        "pairs = [(f'Source {i % 97}!', f'target {i}') for i in range(400)];"
        "print(json.dumps(split_grouped(pairs, 25, 35, seed=7)))"
    )
    outputs = set()
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", code, str(REPO_ROOT)], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1
    assert len(json.loads(outputs.pop())["test"]) >= 35


def test_split_groups_by_source_so_no_test_source_is_in_train() -> None:
    pairs = grouped_pairs()
    splits = split_grouped(pairs, valid_size=40, test_size=60, seed=3)
    keys = {name: {source_key(src) for src, _ in split} for name, split in splits.items()}
    assert not keys["test"] & keys["train"]
    assert not keys["valid"] & keys["train"]
    assert not keys["valid"] & keys["test"]
    # Every pair lands in exactly one split, and each split keeps the input order.
    assert sorted(p for split in splits.values() for p in split) == sorted(pairs)
    for split in splits.values():
        assert split == sorted(split, key=pairs.index)


def test_split_sizes_reach_the_requested_number_of_pairs() -> None:
    pairs = grouped_pairs()  # groups have at most 3 pairs
    splits = split_grouped(pairs, valid_size=40, test_size=60, seed=3)
    assert 60 <= len(splits["test"]) < 60 + 3
    assert 40 <= len(splits["valid"]) < 40 + 3
    assert len(splits["train"]) == len(pairs) - len(splits["test"]) - len(splits["valid"])


def test_split_with_too_few_groups_gives_clear_error() -> None:
    pairs = [("Go!", "Va !"), ("go.", "Vas-y."), ("Hi.", "Salut.")]  # only 2 distinct sources
    with pytest.raises(DataError, match="not enough data to split: 3 pairs with 2 distinct source sentences"):
        split_grouped(pairs, valid_size=1, test_size=1, seed=0)
    with pytest.raises(DataError, match="must both be at least 1"):
        split_grouped(grouped_pairs(), valid_size=0, test_size=10, seed=0)


# ---------------------------------------------------------------------------------------------------------
# prepare_data
# ---------------------------------------------------------------------------------------------------------


def make_tsv_root(root: Path) -> Path:
    """A small eng-fra corpus under root/tatoeba with every kind of problem the pipeline handles."""
    lines = []
    for i in range(120):
        lines.append(f"I have {i} cats.\tJ'ai {i} chats\u202f!")
        if i % 4 == 0:
            lines.append(f"i have {i} cats!\tJ\u2019ai {i} chats.")  # same source group, other translation
        if i % 10 == 0:
            lines.append(f"I have {i} cats.\tJ'ai {i} chats\u00a0!")  # duplicate after normalisation
    lines += [
        "a broken line without a tab",
        "This one is far far far far far far far far far far too long.\tTrop long.",
        "",
    ]
    write(root / "tatoeba" / "eng-fra.tsv", "\n".join(lines) + "\n")
    return root


def tsv_cfg(root: Path, cache_dir: Path, **overrides: object) -> dict:
    cfg = {
        "name": "eng_fra",
        "format": "tsv",
        "root": str(root),
        "cache_dir": str(cache_dir),
        "corpus": "tatoeba/eng-fra.tsv",
        "download": None,
        "src_column": 0,
        "tgt_column": 1,
        "valid_size": 10,
        "test_size": 20,
        "split_seed": 1,
        "min_words": 1,
        "max_words": 10,
        "max_ratio": 3.0,
        "dedup": True,
        "spm": {"vocab_size": 100},
    }
    cfg.update(overrides)
    return cfg


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file and folder below `directory`; a folder's mtime changes when a file
    is created or deleted in it, so temporary files show up too."""
    result = {".": (0, directory.stat().st_mtime_ns)}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = path.stat()
            result[str(path.relative_to(directory))] = (info.st_size, info.st_mtime_ns)
    return result


def test_prepare_writes_manifest_and_reuses_cache(tmp_path: Path) -> None:
    cfg = tsv_cfg(make_tsv_root(tmp_path / "data"), tmp_path / "cache")
    messages: list[str] = []
    out = prepare_data(cfg, log=messages.append)

    assert out.parent == tmp_path / "cache" and out.name.startswith("eng_fra-") and len(out.name) == 20
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    counts = manifest["counts"]
    assert counts["read"]["corpus"]["lines_total"] == 165
    assert counts["read"]["corpus"]["skipped_malformed"] == 1
    assert counts["read"]["corpus"]["skipped_examples"] == [[163, "1 column, expected 2 or 3"]]
    assert counts["read"]["corpus"]["blank_lines"] == 1
    assert counts["filtered"] == {"too_short": 0, "too_long": 1, "length_ratio": 0}
    assert counts["duplicates_removed"] == 12
    assert sum(counts["pairs"].values()) == 163 - 1 - 12
    assert counts["pairs"]["valid"] >= 10 and counts["pairs"]["test"] >= 20
    assert counts["test_sources_in_train"] == 0 and counts["valid_sources_in_train"] == 0
    assert manifest["split_seed"] == 1 and manifest["config"]["max_words"] == 10
    assert manifest["sources"][0]["path"] == str((tmp_path / "data/tatoeba/eng-fra.tsv").resolve())
    for name in cache.SPLIT_FILES:
        assert manifest["files"][name] == cache.sha256_file(out / name)
    assert len(lines_of(out / "train.src")) == len(lines_of(out / "train.tgt")) == counts["pairs"]["train"]
    assert "J'ai 3 chats !" in lines_of(out / "train.tgt") + lines_of(out / "valid.tgt") + lines_of(
        out / "test.tgt"
    )
    assert messages[0].startswith("eng-fra.tsv: read 163 pairs from 165 lines; skipped 1 malformed line")
    assert messages[-1] == f"wrote prepared data to {out}"

    before = snapshot(out)
    messages.clear()
    assert prepare_data(cfg, log=messages.append) == out
    assert messages == [f"using cached prepared data in {out}"]
    assert snapshot(out) == before


def test_prepare_rebuilds_an_incomplete_or_changed_cache(tmp_path: Path) -> None:
    cfg = tsv_cfg(make_tsv_root(tmp_path / "data"), tmp_path / "cache")
    out = prepare_data(cfg, log=lambda _: None)
    expected = (out / "test.src").read_bytes()

    (out / "manifest.json").unlink()  # as if killed before the manifest was written
    (out / "test.src").write_text("half")
    messages: list[str] = []
    assert prepare_data(cfg, log=messages.append) == out
    assert messages[-1] == f"wrote prepared data to {out}"
    assert (out / "test.src").read_bytes() == expected

    (out / "train.tgt").write_text("edited by hand\n")  # manifest present, but the file changed
    prepare_data(cfg, log=messages.append)
    assert messages[-1] == f"wrote prepared data to {out}"

    other = prepare_data(tsv_cfg(Path(cfg["root"]), tmp_path / "cache", split_seed=2), log=lambda _: None)
    assert other != out and (other / "manifest.json").is_file()


def test_prepare_never_writes_into_root(tmp_path: Path) -> None:
    root = make_tsv_root(tmp_path / "data")
    before = snapshot(root)
    modes = {path: path.stat().st_mode for path in [root, *root.rglob("*")]}
    for path in modes:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        out = prepare_data(tsv_cfg(root, tmp_path / "cache"), log=lambda _: None)
        prepare_data(tsv_cfg(root, tmp_path / "cache", split_seed=5), log=lambda _: None)
    finally:
        for path, mode in modes.items():
            path.chmod(stat.S_IMODE(mode))
    assert (out / "manifest.json").is_file()
    assert snapshot(root) == before


def test_prepare_reads_relative_root_and_cache_dir_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tsv_root(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    out = prepare_data(tsv_cfg(Path("data"), Path("prepared")), log=lambda _: None)
    assert (tmp_path / out / "manifest.json").is_file() and out.parts[0] == "prepared"


def test_prepare_missing_corpus_without_download_gives_clear_error(tmp_path: Path) -> None:
    cfg = tsv_cfg(tmp_path / "nowhere", tmp_path / "cache")
    with pytest.raises(DataError) as info:
        prepare_data(cfg, log=lambda _: None)
    message = str(info.value)
    assert message.startswith(f"corpus file not found: {tmp_path / 'nowhere' / 'tatoeba' / 'eng-fra.tsv'}.")
    assert "S2S_DATA_DIR or data.root=" in message and "data.download" in message
    assert not (tmp_path / "cache").exists()


def test_prepare_downloads_a_missing_corpus_and_never_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s2s_attn.data import download

    calls = []

    def fake_download(key: str, root: Path, **kwargs: object) -> Path:
        calls.append(key)
        return make_tsv_root(Path(root)) / "tatoeba" / "eng-fra.tsv"

    monkeypatch.setattr(download, "download_tatoeba", fake_download)
    cfg = tsv_cfg(tmp_path / "data", tmp_path / "cache", download="fra")
    prepare_data(cfg, log=lambda _: None)
    assert calls == ["fra"]
    prepare_data(cfg, log=lambda _: None)
    prepare_data(
        tsv_cfg(tmp_path / "data", tmp_path / "cache", download="fra", split_seed=9), log=lambda _: None
    )
    assert calls == ["fra"]


def test_prepare_parallel_filters_and_deduplicates_train_only(tmp_path: Path) -> None:
    root = tmp_path / "data"
    # 30 good pairs, then a duplicate, a blank line and a pair that is too long.
    train_en = [f"A dog number {i} runs." for i in range(30)] + ["A dog number 0 runs.", "", "x " * 30]
    train_fr = [f"Un chien n° {i} court." for i in range(30)] + ["Un chien n° 0 court.", "", "y " * 30]
    write(root / "m30k" / "train.en", "\n".join(train_en) + "\n")
    write(root / "m30k" / "train.fr", "\n".join(train_fr) + "\n")
    write(root / "m30k" / "val.en", "A cat.\nA cat.\n" + "z " * 30 + "\n")
    write(root / "m30k" / "val.fr", "Un chat.\nUn chat.\n" + "w " * 30 + "\n")
    write(root / "m30k" / "test2016.src", "A dog number 3 runs.\nBirds.\n\n")  # PREFIX.src/.tgt fallback
    write(root / "m30k" / "test2016.tgt", "Un chien n° 3 court.\nDes oiseaux.\nVide.\n")
    cfg = {
        "name": "multi30k",
        "format": "parallel",
        "root": str(root),
        "cache_dir": str(tmp_path / "cache"),
        "train": "m30k/train",
        "valid": "m30k/val",
        "test": str(root / "m30k" / "test2016"),  # absolute prefixes work too
        "src_lang": "en",
        "tgt_lang": "fr",
        "min_words": 1,
        "max_words": 20,
        "max_ratio": 3.0,
        "dedup": True,
    }
    out = prepare_data(cfg, log=lambda _: None)
    counts = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["counts"]
    assert counts["pairs"] == {"train": 30, "valid": 3, "test": 2}
    assert counts["filtered"] == {"too_short": 0, "too_long": 1, "length_ratio": 0}
    assert counts["duplicates_removed"] == 1
    assert counts["read"]["test"]["skipped_examples"] == [[3, "empty source"]]
    assert counts["read"]["train"]["blank_lines"] == 1
    assert counts["test_sources_in_train"] == 1  # reported, not fixed: standard test sets are kept as given
    assert lines_of(out / "valid.src") == ["A cat.", "A cat.", ("z " * 30).strip()]


def test_prepare_toy_writes_manifest_around_generated_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write_toy_splits(out_dir: Path, cfg: dict) -> None:
        for split, n in (("train", 8), ("valid", 2), ("test", 3)):
            write(Path(out_dir) / f"{split}.src", "".join(f"{split} {i}\n" for i in range(n)))
            write(Path(out_dir) / f"{split}.tgt", "".join(f"{split.upper()} {i}\n" for i in range(n)))

    fake = types.ModuleType("s2s_attn.data.synthetic")
    fake.write_toy_splits = write_toy_splits  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "s2s_attn.data.synthetic", fake)
    cfg = {"name": "toy", "format": "toy", "root": str(tmp_path / "unused"), "cache_dir": str(tmp_path / "c")}
    out = prepare_data({**cfg, "toy_task": "reverse"}, log=lambda _: None)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["pairs"] == {"train": 8, "valid": 2, "test": 3}
    assert manifest["sources"] == []
    assert prepare_data({**cfg, "toy_task": "copy"}, log=lambda _: None) != out
    assert not (tmp_path / "unused").exists()


def test_prepare_rejects_an_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown data.format='csv'. Set data.format to one of: parallel, toy, tsv"):
        prepare_data({"name": "x", "format": "csv", "root": str(tmp_path), "cache_dir": str(tmp_path)})


class EchoFormat(formats.CorpusFormat):
    """A format for the test below: each word of one file is its own translation; the last two are valid/test."""

    name = "echo"

    def sources(self, cfg, root, log):
        return [root / "words.txt"]

    def build(self, cfg, sources, out_dir, log):
        pairs = [(word, word) for word in sources[0].read_text(encoding="utf-8").split()]
        splits = {"train": pairs[:-2], "valid": pairs[-2:-1], "test": pairs[-1:]}
        return formats.write_pairs(out_dir, splits, {"read": len(pairs)})


def test_a_new_format_is_one_registered_class_and_gets_the_cache_and_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(formats.FORMAT_REGISTRY, "echo", EchoFormat)
    write(tmp_path / "data" / "words.txt", "a b c d e\n")
    cfg = {"name": "echo", "format": "echo", "root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")}
    out = prepare_data(cfg, log=lambda _: None)
    assert lines_of(out / "train.src") == lines_of(out / "train.tgt") == ["a", "b", "c"]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "echo" and manifest["counts"]["pairs"] == {"train": 3, "valid": 1, "test": 1}
    assert prepare_data(cfg, log=lambda _: None) == out  # cached: the same source file, the same settings
    write(tmp_path / "data" / "words.txt", "a b c d e f\n")
    assert prepare_data(cfg, log=lambda _: None) != out  # a changed source file: prepared again


# ---------------------------------------------------------------------------------------------------------
# The real Tatoeba corpus, when it is available
# ---------------------------------------------------------------------------------------------------------


def real_eng_fra_root() -> Path | None:
    """The directory holding tatoeba/eng-fra.tsv: $S2S_DATA_DIR, else ../shared/data beside the repo."""
    for candidate in (os.environ.get("S2S_DATA_DIR"), REPO_ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "tatoeba" / "eng-fra.tsv").is_file():
            return Path(candidate)
    return None


def test_prepare_on_the_real_eng_fra_corpus(tmp_path: Path) -> None:
    root = real_eng_fra_root()
    if root is None:
        pytest.skip("real corpus tatoeba/eng-fra.tsv not found in $S2S_DATA_DIR or ../shared/data")
    cfg = tsv_cfg(root, tmp_path / "cache", valid_size=1000, test_size=2000, max_words=20)
    out = prepare_data(cfg, log=lambda _: None)
    counts = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["counts"]
    read = counts["read"]["corpus"]
    assert read["lines_total"] > 100_000
    assert read["pairs_read"] + read["skipped_malformed"] + read["blank_lines"] == read["lines_total"]
    assert 1000 <= counts["pairs"]["valid"] < 1100 and 2000 <= counts["pairs"]["test"] < 2100
    assert counts["pairs"]["train"] > 0.9 * read["pairs_read"]
    assert counts["test_sources_in_train"] == 0 and counts["valid_sources_in_train"] == 0

    train_keys = {source_key(s) for s in lines_of(out / "train.src")}
    assert not any(source_key(s) in train_keys for s in lines_of(out / "test.src"))
    french = (out / "test.tgt").read_text(encoding="utf-8")
    assert not set(french) & {"\u202f", "\u00a0", "\u2009", "\u200b", "\u00ad"}


# ---- Chinese: one script ------------------------------------------------------------------------------


@pytest.mark.parametrize("lang,names_chinese", [("zh", True), ("cmn", True), ("zh-TW", True), ("zh_Hant", True),
                                                ("en", False), ("fr", False), ("zhx", False)])
def test_chinese_language_codes(lang: str, names_chinese: bool) -> None:
    assert chinese.is_chinese(lang) is names_chinese


def test_traditional_chinese_is_converted_to_simplified_on_the_chinese_side_only() -> None:
    pairs = [("We speak Chinese.", "我們說漢語。"), ("Wait!", "等等!"), ("國", "國")]
    converted, changed = chinese.to_simplified(pairs, sides=(1,))
    assert converted == [("We speak Chinese.", "我们说汉语。"), ("Wait!", "等等!"), ("國", "国")]
    assert changed == 2


def cmn_root(root: Path) -> Path:
    """A small English<TAB>Chinese<TAB>attribution corpus where one sentence appears in both scripts."""
    lines = [f"Sentence number {i}.\t这是第{i}句。\tCC-BY 2.0 (France) Attribution: tatoeba.org" for i in range(60)]
    lines += ["We speak Chinese.\t我們說漢語。\tCC-BY", "We speak Chinese.\t我们说汉语。\tCC-BY"]
    (root / "tatoeba").mkdir(parents=True)
    (root / "tatoeba" / "cmn-eng.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("script,duplicates", [("simplified", 1), ("keep", 0)])
def test_prepare_eng_cmn_converts_the_script_before_deduplication(tmp_path: Path, script: str, duplicates: int) -> None:
    cfg = tsv_cfg(cmn_root(tmp_path / "data"), tmp_path / "cache", name="eng_cmn", corpus="tatoeba/cmn-eng.tsv",
                  src_lang="en", tgt_lang="zh", zh_script=script, valid_size=5, test_size=5, max_words=30)
    out = prepare_data(cfg, log=lambda _: None)
    counts = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["counts"]
    assert counts["duplicates_removed"] == duplicates
    assert counts["script_converted"] == (1 if script == "simplified" else 0)
    chinese = "".join("".join(lines_of(out / f"{split}.tgt")) for split in ("train", "valid", "test"))
    assert ("我们说汉语。" in chinese) and (("我們說漢語。" in chinese) is (script == "keep"))


def test_zh_script_is_part_of_the_cache_key_only_for_chinese_data(tmp_path: Path) -> None:
    cmn = tsv_cfg(cmn_root(tmp_path / "data"), tmp_path / "cache", name="eng_cmn", corpus="tatoeba/cmn-eng.tsv",
                  src_lang="en", tgt_lang="zh", valid_size=5, test_size=5)
    assert prepare_data(cmn, log=lambda _: None) != prepare_data({**cmn, "zh_script": "keep"}, log=lambda _: None)
    with pytest.raises(DataError, match="valid: simplified, keep"):
        prepare_data({**cmn, "zh_script": "traditional"}, log=lambda _: None)
    fra = tsv_cfg(make_tsv_root(tmp_path / "fra"), tmp_path / "cache")
    tsv = formats.FORMAT_REGISTRY["tsv"]()
    assert tsv.relevant_config(fra) == tsv.relevant_config({**fra, "zh_script": "keep"})


def test_a_chinese_source_is_converted_at_translation_time_as_it_was_for_training() -> None:
    convert = chinese.input_script_converter({"src_lang": "zh", "tgt_lang": "en", "zh_script": "simplified"})
    assert convert("我們說漢語。") == "我们说汉语。"
    assert chinese.input_script_converter({"src_lang": "zh", "tgt_lang": "en", "zh_script": "keep"}) is None
    assert chinese.input_script_converter({"src_lang": "en", "tgt_lang": "zh"}) is None  # English source
