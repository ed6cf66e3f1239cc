"""Outputs are checked before the work that produces them, and written atomically (s2s_attn/outputs.py)."""

import sys

import pytest

from s2s_attn.outputs import atomic_output, unwritable_dir, unwritable_file, write_atomic


def test_a_file_can_be_written_only_into_an_existing_directory(tmp_path):
    assert unwritable_file(tmp_path / "out.txt") is None
    assert "does not exist" in unwritable_file(tmp_path / "missing" / "out.txt")
    assert "is a directory" in unwritable_file(tmp_path)


def test_a_directory_may_be_missing_if_it_can_be_created_and_nothing_is_left_behind(tmp_path):
    assert unwritable_dir(tmp_path) is None
    assert unwritable_dir(tmp_path / "new" / "deeper") is None
    assert list(tmp_path.iterdir()) == []  # the check created nothing
    (tmp_path / "a_file").write_text("x")
    assert "is a file, not a directory" in unwritable_dir(tmp_path / "a_file" / "below")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc takes no files on Linux only")
def test_a_directory_that_takes_no_files_is_refused_even_for_root():
    assert "cannot write into /proc" in unwritable_dir("/proc/s2s-attn-test")


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "results.txt"
    write_atomic(path, b"old\n")
    with pytest.raises(KeyboardInterrupt), atomic_output(path) as handle:
        handle.write("half of the new")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.txt"]
    with atomic_output(path) as handle:
        handle.write("new\n")
    assert path.read_text() == "new\n"
