"""Streamed preparation (`s2s_attn.data.stream`) and the token store (`s2s_attn.data.store`): what they write is
what the in-memory rules give, on any number of workers; a killed or failing preparation leaves nothing that looks
complete; training reads the same ids from the store as from lists."""

from __future__ import annotations

import errno
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from s2s_attn.data import formats, store, stream
from s2s_attn.data.batching import BatchIterator
from s2s_attn.data.corpus import prepare_data
from s2s_attn.data.errors import DataError
from s2s_attn.data.split import TEST, TRAIN, VALID, grouped_split_labels
from s2s_attn.data.tokenizer import Tokenizer

WORDS = "the cat dog sat ran on a mat big small red house tree saw it we they".split()
MOTS = "le chat chien assis couru sur un tapis grand petit rouge maison arbre vu il nous ils".split()


def quiet(_: str) -> None:
    pass


def sentence(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


def write_tsv(path: Path, n: int, seed: int = 0, bad_every: int = 0) -> Path:
    """A TSV of ``n`` lines: random pairs, some repeated (duplicates) and, every ``bad_every`` lines, a line with
    one column (malformed)."""
    rng = random.Random(seed)
    lines = []
    for i in range(1, n + 1):
        if bad_every and i % bad_every == 0:
            lines.append("only one column")
        elif lines and rng.random() < 0.05:
            lines.append(rng.choice([line for line in lines[-20:] if "\t" in line] or ["a\tb"]))
        else:
            k = rng.randint(1, 9)
            lines.append(f"{sentence(rng, WORDS, k)}.\t{sentence(rng, MOTS, rng.randint(1, 12))} !")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tsv_cfg(root: Path, cache: Path, **overrides) -> dict:
    cfg = {"name": "t", "format": "tsv", "corpus": "c.tsv", "root": str(root), "cache_dir": str(cache),
           "valid_size": 50, "test_size": 60, "split_seed": 3, "max_words": 10, "max_ratio": 3.0}
    return {**cfg, **overrides}


def read(path: Path) -> bytes:
    return path.read_bytes()


def old_split(keys: list[str], valid_size: int, test_size: int, seed: int) -> list[int]:
    """The grouped split as it was written for lists: the specification `grouped_split_labels` must meet."""
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    labels = [TRAIN] * len(keys)
    test = valid = 0
    for group in order:
        if test < test_size:
            label, test = TEST, test + len(group)
        elif valid < valid_size:
            label, valid = VALID, valid + len(group)
        else:
            continue
        for i in group:
            labels[i] = label
    return labels


@pytest.mark.parametrize("seed", range(5))
def test_the_hashed_grouped_split_is_the_split_of_the_lists(seed: int) -> None:
    rng = random.Random(seed)
    keys = [f"s{rng.randint(0, 300)}" for _ in range(2000)]
    labels = grouped_split_labels(stream.hash64(keys), valid_size=70, test_size=90, seed=seed)
    assert labels.tolist() == old_split(keys, 70, 90, seed)


def test_the_split_says_when_the_groups_run_out() -> None:
    with pytest.raises(DataError, match="not enough data to split"):
        grouped_split_labels(stream.hash64(["a", "b", "c"]), valid_size=1, test_size=2, seed=0)


def test_prepared_files_are_the_same_for_one_worker_and_two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "CHUNK_LINES", 97)  # many chunks, in flight at once
    write_tsv(tmp_path / "data" / "c.tsv", 3000, bad_every=211)
    one = prepare_data(tsv_cfg(tmp_path / "data", tmp_path / "one", workers=1), log=quiet)
    two = prepare_data(tsv_cfg(tmp_path / "data", tmp_path / "two", workers=2), log=quiet)
    for name in ("train.src", "train.tgt", "valid.src", "valid.tgt", "test.src", "test.tgt"):
        assert read(one / name) == read(two / name), name
    counts = json.loads((two / "manifest.json").read_text())["counts"]
    assert counts["read"]["corpus"]["skipped_malformed"] == 3000 // 211
    assert counts["duplicates_removed"] > 0 and counts["test_sources_in_train"] == 0


def test_a_malformed_line_deep_in_a_corpus_is_counted_with_its_line_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "CHUNK_LINES", 50)
    path = write_tsv(tmp_path / "data" / "c.tsv", 1000)
    lines = path.read_bytes().split(b"\n")
    lines[876] = b"\xff\xfe broken\tbytes"  # line 877
    path.write_bytes(b"\n".join(lines))
    messages: list[str] = []
    out = prepare_data(tsv_cfg(tmp_path / "data", tmp_path / "cache", workers=2), log=messages.append)
    assert any("skipped 1 malformed line (line 877: invalid UTF-8 at byte 1)" in m for m in messages)
    read_counts = json.loads((out / "manifest.json").read_text())["counts"]["read"]["corpus"]
    assert read_counts["skipped_examples"] == [[877, "invalid UTF-8 at byte 1"]]


def test_a_killed_preparation_leaves_no_directory_taken_as_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tsv(tmp_path / "data" / "c.tsv", 800)
    cfg = tsv_cfg(tmp_path / "data", tmp_path / "cache", workers=1)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(formats, "write_rows", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(cfg, log=quiet)
    (out,) = (tmp_path / "cache").iterdir()
    assert not (out / "manifest.json").exists() and not (out / "train.src").exists()
    monkeypatch.undo()
    messages: list[str] = []
    assert prepare_data(cfg, log=messages.append) == out
    assert not any("using cached" in m for m in messages)  # prepared again, not taken from the remains
    assert (out / "manifest.json").exists() and not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])  # a full disk, or a full quota
def test_a_full_disk_is_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    write_tsv(tmp_path / "data" / "c.tsv", 300)

    class FullDisk:
        def write(self, data: bytes) -> int:
            raise OSError(code, os.strerror(code))

        def close(self) -> None:
            pass

    monkeypatch.setattr(formats.WorkFiles, "open", lambda self, name: FullDisk())
    with pytest.raises(DataError, match=r"no space left on the disk holding .* set data.cache_dir"):
        prepare_data(tsv_cfg(tmp_path / "data", tmp_path / "cache", workers=1), log=quiet)


def test_parallel_train_may_be_a_list_of_prefixes_deduplicated_across_them(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.en").write_text("one\ntwo\nthree\n")
    (root / "a.fr").write_text("un\ndeux\ntrois\n")
    (root / "b.en").write_text("two\nfour\n")
    (root / "b.fr").write_text("deux\nquatre\n")
    for split in ("dev", "test"):
        (root / f"{split}.en").write_text("five\n")
        (root / f"{split}.fr").write_text("cinq\n")
    cfg = {"name": "p", "format": "parallel", "root": str(root), "cache_dir": str(tmp_path / "cache"),
           "train": ["a", "b"], "valid": "dev", "test": "test", "src_lang": "en", "tgt_lang": "fr", "workers": 2}
    out = prepare_data(cfg, log=quiet)
    assert (out / "train.src").read_text().split() == ["one", "two", "three", "four"]
    assert (out / "train.tgt").read_text().split() == ["un", "deux", "trois", "quatre"]
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["duplicates_removed"] == 1 and counts["pairs"] == {"train": 4, "valid": 1, "test": 1}
    assert [read["pairs_read"] for read in counts["read"]["train"]] == [3, 2]


# --- the token store --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Tokenizer]:
    tmp = tmp_path_factory.mktemp("store")
    write_tsv(tmp / "data" / "c.tsv", 1500, seed=5)
    data_dir = prepare_data(tsv_cfg(tmp / "data", tmp / "cache", workers=1), log=quiet)
    tokenizer = Tokenizer.train_or_load(data_dir, {"vocab_size": 120, "prune_unused": True}, log=quiet, workers=2)
    return data_dir, tokenizer


def test_the_store_holds_what_the_tokenizer_encodes(prepared: tuple[Path, Tokenizer]) -> None:
    data_dir, tokenizer = prepared
    token_store = store.open_store(data_dir, tokenizer, workers=1, log=quiet)
    src = (data_dir / "train.src").read_text(encoding="utf-8").splitlines()
    tgt = (data_dir / "train.tgt").read_text(encoding="utf-8").splitlines()
    assert len(token_store) == len(src)
    assert [row.tolist() for row in token_store.src] == tokenizer.encode_src(src)
    assert [row.tolist() for row in token_store.tgt] == tokenizer.encode_tgt(tgt)
    assert token_store.src.lengths.tolist() == [len(ids) for ids in tokenizer.encode_src(src)]
    assert isinstance(token_store.src.sentences, store.SentenceFile)  # read from the files when asked for


def test_the_pruned_vocabulary_is_the_pieces_the_text_uses(prepared: tuple[Path, Tokenizer]) -> None:
    data_dir, tokenizer = prepared
    src = (data_dir / "train.src").read_text(encoding="utf-8").splitlines()
    used = {piece for ids in tokenizer.src.encode(src) for piece in ids} | {0, 1, 2, 3}
    kept = tokenizer.src_subset.kept
    assert used <= set(kept) and len(kept) % 64 == 0 or len(kept) == tokenizer.src.get_piece_size()
    assert len(kept) - len(used) < 64


def test_a_second_start_maps_the_store_and_a_damaged_one_is_rebuilt(prepared: tuple[Path, Tokenizer]) -> None:
    data_dir, tokenizer = prepared
    messages: list[str] = []
    first = store.open_store(data_dir, tokenizer, workers=1, log=messages.append)
    assert messages == [f"using the token store in {first.directory}"]
    expected = first.tgt[0].tolist()
    ids = first.directory / "tgt.ids"
    data = bytearray(ids.read_bytes())
    data[0] ^= 1
    ids.write_bytes(bytes(data))
    messages.clear()
    again = store.open_store(data_dir, tokenizer, workers=1, log=messages.append)
    assert messages[0].startswith("encoded ") and again.tgt[0].tolist() == expected
    assert store.complete(again.directory)


def test_a_killed_store_build_is_never_taken_as_complete(
    prepared: tuple[Path, Tokenizer], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, tokenizer = prepared
    directory = store.store_dir(data_dir, tokenizer)
    (directory / store.STORE_MANIFEST).unlink()
    assert not store.complete(directory)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_remap", killed)
    with pytest.raises(KeyboardInterrupt):
        store.build_store(data_dir, tokenizer.__class__(tokenizer.src_proto, tokenizer.tgt_proto), 1, quiet,
                          prune=True)
    assert not list(data_dir.glob("tokens-building-*"))  # its work directory is gone
    monkeypatch.undo()
    assert store.complete(store.open_store(data_dir, tokenizer, workers=1, log=quiet).directory)


def test_batches_from_the_map_are_the_batches_from_lists(prepared: tuple[Path, Tokenizer]) -> None:
    data_dir, tokenizer = prepared
    token_store = store.open_store(data_dir, tokenizer, workers=1, log=quiet)
    rows = np.flatnonzero(token_store.src.lengths <= 12)  # a length filter, as load_corpus applies
    src, tgt = token_store.src.select(rows), token_store.tgt.select(rows)
    lists = ([row.tolist() for row in src], [row.tolist() for row in tgt])
    mapped = BatchIterator(src, tgt, batch_tokens=200, batch_size=None, seed=4, rank=1, world_size=2)
    listed = BatchIterator(*lists, batch_tokens=200, batch_size=None, seed=4, rank=1, world_size=2)
    assert len(mapped) == len(listed)
    for _ in range(len(mapped) + 3):  # into the second epoch
        (e1, p1, a), (e2, p2, b) = next(mapped), next(listed)
        assert (e1, p1, a.indices, a.total_tgt_tokens) == (e2, p2, b.indices, b.total_tgt_tokens)
        for name in ("src", "src_len", "tgt_in", "tgt_out"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
