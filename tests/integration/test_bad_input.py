"""Bad input never ends in a traceback: ``s2s-train`` (run as a user runs it, ``python -m``) and
``s2s-translate`` either stop with a clear message and a non-zero exit code, or skip what they cannot
use, count it, and finish.

The readers' own behaviour on each kind of bad line is specified in tests/unit/test_corpus.py; this file
checks what reaches the user.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = ["model.emb_size=16", "model.encoder_hidden=16", "model.decoder_hidden=32", "model.output_size=16",
              "attention.size=16", "trainer.device=cpu", "logger.attention_images=0"]


def s2s_train(tmp_path: Path, *overrides: str, pythonpath: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*pythonpath, str(REPO_ROOT)]), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "s2s_attn.cli.train", *TINY_MODEL, "trainer.threads=1",
         f"data.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/run", *overrides],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


def parallel_corpus(root: Path, train_src: bytes, train_tgt: bytes) -> list[str]:
    """train.en/train.fr as given, small valid/test files; the overrides that read them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.en").write_bytes(train_src)
    (root / "train.fr").write_bytes(train_tgt)
    for split in ("valid", "test"):
        (root / f"{split}.en").write_text("a cat .\na dog .\n")
        (root / f"{split}.fr").write_text("un chat .\nun chien .\n")
    return ["data=parallel", f"data.root={root}", "data.train=train", "data.valid=valid", "data.test=test",
            "data.src_lang=en", "data.tgt_lang=fr"]


def tsv_corpus(root: Path, data: bytes) -> list[str]:
    (root / "tatoeba").mkdir(parents=True, exist_ok=True)
    (root / "tatoeba" / "eng-fra.tsv").write_bytes(data)
    return ["data=eng_fra", f"data.root={root}", "data.download=null", "data.valid_size=5", "data.test_size=5"]


def good_tsv_lines(n: int = 60) -> list[bytes]:
    return [f"I have {i} cats.\tJ'ai {i} chats.".encode() for i in range(n)]


def assert_clear_failure(result: subprocess.CompletedProcess, *phrases: str, code: int = 2) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for phrase in phrases:
        assert phrase in output, f"{phrase!r} not in:\n{output[-3000:]}"


# ---- s2s-train: the run cannot go on --------------------------------------------------------------------


def test_empty_corpus_stops_with_the_file_named(tmp_path):
    result = s2s_train(tmp_path, *parallel_corpus(tmp_path / "corpus", b"", b""))
    assert_clear_failure(result, f"source file is empty: {tmp_path / 'corpus' / 'train.en'}")


def test_corpus_where_every_line_is_malformed_stops_and_quotes_the_first_problems(tmp_path):
    lines = b"no tab here\nnor here\na\tb\tc\td\n"
    result = s2s_train(tmp_path, *tsv_corpus(tmp_path / "data", lines))
    assert_clear_failure(result, "no valid sentence pairs in", "all 3 lines were skipped",
                         "line 1: 1 column, expected 2 or 3", "line 3: 4 columns, expected 2 or 3")


def test_parallel_files_of_different_lengths_stop_with_both_counts(tmp_path):
    result = s2s_train(tmp_path, *parallel_corpus(tmp_path / "corpus", b"one\ntwo\nthree\n", b"un\ndeux\n"))
    assert_clear_failure(result, "parallel files have different numbers of lines", "train.en has 3",
                         "train.fr has 2")


@pytest.mark.parametrize("override,phrases", [
    ("data=no_such_corpus", ["no_such_corpus", "eng_fra", "toy", "parallel"]),
    ("attention=no_such_attention", ["no_such_attention", "bahdanau", "luong_dot", "multihead"]),
])
def test_an_unknown_config_name_lists_the_valid_ones(tmp_path, override, phrases):
    result = s2s_train(tmp_path, "data=toy", override)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output and all(p in output for p in phrases), output[-3000:]


@pytest.mark.parametrize("override,message", [
    ("trainer.batch_size=0", "trainer.batch_size=0 is not allowed: null or a whole number >= 1"),
    ("trainer.batch_size=-8", "trainer.batch_size=-8 is not allowed: null or a whole number >= 1"),
    ("trainer.batch_tokens=0", "trainer.batch_tokens=0 is not allowed: null or a whole number >= 1"),
    ("trainer.label_smoothing=1.5", "trainer.label_smoothing=1.5 is not allowed: a number in [0, 1)"),
    ("trainer.warmup_steps=-5", "trainer.warmup_steps=-5 is not allowed: a whole number >= 0"),
])
def test_an_impossible_setting_stops_in_one_line_before_any_data_is_prepared(tmp_path, override, message):
    result = s2s_train(tmp_path, "data=toy", override)
    assert_clear_failure(result, message)
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "run").exists()  # nothing half-written: not even Hydra's copy of the config


def test_an_unknown_decoder_name_lists_the_valid_ones(tmp_path):
    result = s2s_train(tmp_path, "data=toy", "data.train_size=300", "model.decoder=transformer")
    assert_clear_failure(result, "model.decoder='transformer'", "bahdanau, luong")


def test_a_vocabulary_too_small_for_the_characters_stops_naming_the_setting(tmp_path):
    result = s2s_train(tmp_path, *tsv_corpus(tmp_path / "data", b"\n".join(good_tsv_lines()) + b"\n"),
                       "data.spm.vocab_size=8")
    assert_clear_failure(result, "SentencePiece cannot build a vocabulary of 8 pieces (data.spm.vocab_size)",
                         "Vocabulary size is smaller than required_chars")


# ---- s2s-train: the run goes on, and says what it skipped ----------------------------------------------


def test_guided_alignment_without_eflomal_says_what_to_install(tmp_path):
    hidden = tmp_path / "no_eflomal"
    hidden.mkdir()
    (hidden / "eflomal.py").write_text("raise ImportError('eflomal hidden for this test')\n")
    result = s2s_train(tmp_path, *tsv_corpus(tmp_path / "data", b"\n".join(good_tsv_lines()) + b"\n"),
                       "guided_alignment=eflomal", "trainer.max_steps=1", "data.spm.vocab_size=60",
                       pythonpath=(str(hidden),))
    assert_clear_failure(result, "eflomal is not installed", "pip install eflomal")


def test_invalid_utf8_wrong_tabs_and_a_vocabulary_larger_than_the_corpus_allows_are_skipped_and_counted(tmp_path):
    lines = good_tsv_lines()
    lines[1] = b"Bad bytes\t\xff\xfe caf\xe9"  # invalid UTF-8
    lines[2] = b"I have no tab."  # 1 column
    lines[3] = b"One\tUn\tattribution\textra"  # 4 columns
    lines[4] = b""  # blank
    corpus = tsv_corpus(tmp_path / "data", b"\n".join(lines) + b"\n")
    result = s2s_train(tmp_path, *corpus, "data.spm.vocab_size=5000", "trainer.max_steps=4", "trainer.eval_every=4",
                       "trainer.batch_size=8", "trainer.batch_tokens=null", "trainer.max_minutes=null")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert ("eng-fra.tsv: read 56 pairs from 60 lines; skipped 3 malformed lines (line 2: invalid UTF-8 at byte 11; "
            "line 3: 1 column, expected 2 or 3; line 4: 4 columns, expected 2 or 3); ignored 1 blank line") in output
    assert "fewer than the 5000 of data.spm: the training text does not support more" in output
    assert "test BLEU" in output


# ---- s2s-translate ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    """A tiny model trained for a few steps on the toy task (sources of 3-10 letters, at most 50 pieces)."""
    from hydra import compose, initialize_config_dir

    from s2s_attn.cli import config_dir
    from s2s_attn.training.trainer import train

    root = tmp_path_factory.mktemp("translate")
    overrides = ["data=toy", "data.train_size=300", "data.valid_size=10", "data.test_size=10", *TINY_MODEL,
                 "trainer.threads=1", "trainer.max_steps=4", "trainer.eval_every=4", "trainer.batch_size=16",
                 "trainer.batch_tokens=null", "trainer.max_minutes=null", f"data.cache_dir={root}/cache"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        train(compose("config", overrides=overrides), root / "run")
    return root / "run"


def translate(capsys, *args: str) -> tuple[int, str, str]:
    from s2s_attn.cli.translate import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_translate_keeps_one_line_per_input_line_whatever_the_line_holds(toy_run, tmp_path, capsys):
    lines = [
        b"a b c",
        b"",  # empty: stays empty
        b"b\x07 c\x00 d\x1b[31m e",  # control characters
        b"\t \x0b\x0c\x1c \xe2\x80\xa8",  # only whitespace and controls (vertical tab, form feed, U+2028...): empty
        b"\xff\xfe a b",  # invalid UTF-8
        b" ".join([b"a", b"b", b"c"] * 10),  # 30 words: longer than any training source (3-10 words)
        b"a " * 300,  # longer than the model's limit (data.max_src_pieces=50): truncated
    ]
    (tmp_path / "in.txt").write_bytes(b"\n".join(lines) + b"\n")
    code, _, err = translate(capsys, str(toy_run), "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"),
                             "--device", "cpu")
    assert code == 0, err
    out = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")
    assert len(out) == len(lines) + 1 and out[-1] == ""
    assert out[1] == "" and out[3] == ""
    assert "1 over-long input line(s) truncated to 50 pieces" in err
    assert "Traceback" not in err


def test_translate_with_an_unknown_S2S_GEMM_says_which_values_are_valid(toy_run, tmp_path, capsys, monkeypatch):
    from s2s_attn.fast import gemm

    monkeypatch.setattr(gemm, "_choice", "mkl")  # as S2S_GEMM=mkl sets it when the module is imported
    (tmp_path / "in.txt").write_text("a b c\n", encoding="utf-8")
    code, _, err = translate(capsys, str(toy_run), "-i", str(tmp_path / "in.txt"), "--device", "cpu")
    assert code == 2
    assert "S2S_GEMM must be one of auto, blas, onednn, got 'mkl'" in err and "Traceback" not in err


def test_translate_refuses_a_checkpoint_that_would_run_code_and_runs_nothing(tmp_path, capsys):
    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"format": "s2s-attn-checkpoint", "model": RunsCode()}, protocol=2))
    code, _, err = translate(capsys, str(tmp_path / "evil.pt"), "-i", os.devnull, "--device", "cpu")
    assert code == 2
    assert err.startswith(f"s2s-translate: error: cannot load checkpoint {tmp_path / 'evil.pt'}")
    assert not (tmp_path / "pwned").exists()


def test_translate_refuses_another_programs_checkpoint_naming_it(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    code, _, err = translate(capsys, str(tmp_path / "other.pt"), "-i", os.devnull, "--device", "cpu")
    assert code == 2 and f"{tmp_path / 'other.pt'} is not an s2s-attn checkpoint" in err


# ---- every command checks its outputs before its work ---------------------------------------------------


@pytest.mark.parametrize("option", ["-o", "--attention"])
def test_translate_to_a_missing_directory_fails_before_translating(toy_run, tmp_path, capsys, monkeypatch, option):
    from s2s_attn.decoding.translator import Translator

    loaded = []
    monkeypatch.setattr(Translator, "from_checkpoint", classmethod(lambda cls, *a, **k: loaded.append(a)))
    (tmp_path / "in.txt").write_text("a b c\n", encoding="utf-8")
    code, _, err = translate(capsys, str(toy_run), "-i", str(tmp_path / "in.txt"), option,
                             str(tmp_path / "no" / "such" / "dir" / "out.txt"))
    assert code == 2 and not loaded  # no model loaded, nothing translated
    assert err.count("\n") == 1 and f"cannot write {option}" in err and "does not exist" in err


def test_translate_leaves_the_old_output_when_interrupted(toy_run, tmp_path, capsys, monkeypatch):
    from s2s_attn.decoding.translator import Translator

    (tmp_path / "in.txt").write_text("a b c\nb c d\n", encoding="utf-8")
    (tmp_path / "out.txt").write_text("the old output\n", encoding="utf-8")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Translator, "translate_with_attention", interrupted)
    with pytest.raises(KeyboardInterrupt):
        translate(capsys, str(toy_run), "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"),
                  "--attention", str(tmp_path / "attention.jsonl"), "--device", "cpu")
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "the old output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.txt"]  # no half-written file


def test_evaluate_plot_and_compare_refuse_an_unwritable_out_at_once(toy_run, tmp_path, capsys):
    from s2s_attn.cli import compare, evaluate, plot

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory\n")
    out = str(blocker / "results")
    for main, args in ((evaluate.main, [str(toy_run), "--out", out, "--device", "cpu"]),
                       (plot.main, [str(toy_run), "a b c", "--out", out, "--device", "cpu"]),
                       (compare.main, [str(toy_run), "--out", out])):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "a_file is a file, not a directory" in err and "Traceback" not in err, err


def test_train_refuses_an_unwritable_cache_directory_before_preparing_anything(tmp_path):
    (tmp_path / "a_file").write_text("not a directory\n")
    result = s2s_train(tmp_path, "data=toy", f"data.cache_dir={tmp_path}/a_file/cache")
    assert_clear_failure(result, "data.cache_dir=", "a_file is a file, not a directory")


def test_train_refuses_an_unwritable_run_directory_in_one_line_before_hydra_creates_it(tmp_path):
    (tmp_path / "a_file").write_text("not a directory\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run([sys.executable, "-m", "s2s_attn.cli.train", "data=toy",
                             f"hydra.run.dir={tmp_path}/a_file/run"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert_clear_failure(result, "hydra.run.dir=", "a_file is a file, not a directory")
    assert (result.stdout + result.stderr).strip().count("\n") == 0


def test_the_output_directory_is_read_from_the_command_line_as_hydra_will_use_it():
    from s2s_attn.cli.train import output_root

    assert output_root(["data=toy"]) == ("hydra.run.dir", "outputs")
    assert output_root(["hydra.run.dir=runs/x", "data=toy"]) == ("hydra.run.dir", "runs/x")
    assert output_root(["-m", "attention=bahdanau,luong_dot"]) == ("hydra.sweep.dir", "multirun")
    assert output_root(["-m", "hydra.sweep.dir=multirun/zoo"]) == ("hydra.sweep.dir", "multirun/zoo")
