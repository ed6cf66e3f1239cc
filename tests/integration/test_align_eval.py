"""s2s-align-eval end to end: a briefly trained toy reversal model aligns better than the diagonal; the
real shared gold sets parse with their documented counts; bad inputs are clear errors (exit 2)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from s2s_attn.cli.align_eval import main
from s2s_attn.evaluation.alignment import diagonal_alignment, read_gold, read_naacl, validate_gold

from ..conftest import REPO_ROOT, write_reversal_gold
from .test_toy_training import toy_config

SCORE_LINE = re.compile(r"^AER (\d\.\d+)  precision (\d\.\d+)  recall (\d\.\d+)  \((.*), (\d+) sentences\)$")


def alignment_dir() -> Path | None:
    """The shared gold alignments: $S2S_DATA_DIR/alignments, else ../shared/data/alignments; None if absent."""
    for root in (os.environ.get("S2S_DATA_DIR"), REPO_ROOT.parent / "shared" / "data"):
        if root and (Path(root) / "alignments" / "en-fr" / "dev.wa.nonullalign").is_file():
            return Path(root) / "alignments"
    return None


def scores(output: str) -> dict[str, tuple[float, float, float, int]]:
    """{"attention" | "diagonal baseline" | "eflomal SYMMETRISATION": (aer, precision, recall, sentences)} from
    the printed lines."""
    result = {}
    for line in output.splitlines():
        match = SCORE_LINE.match(line)
        assert match, f"unexpected output line {line!r}"
        what = match.group(4)
        if what.startswith("attention"):
            what = "attention"
        elif what.startswith("eflomal"):
            what = what.split(",")[0]
        result[what] = (float(match.group(1)), float(match.group(2)), float(match.group(3)), int(match.group(5)))
    return result


# ---- a trained toy model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A reversal model trained for 400 steps and its test pairs, with the anti-diagonal gold alignment in
    NAACL format. Xavier initialisation: with the default uniform one this toy sits on a loss plateau for a few
    hundred steps and leaves it at a step that rounding-level changes move (a different Adam implementation alone
    was enough); with Xavier it is reliably past the plateau by step 400."""
    import torch

    from s2s_attn.training.trainer import train

    tmp = tmp_path_factory.mktemp("toy-align")
    # one thread: as fast as two for this tiny model, deterministic, and robust to a busy machine
    cfg = toy_config(tmp, "trainer.max_steps=400", "trainer.eval_every=400", "trainer.threads=1", "model.init=xavier",
                     "data.valid_size=50", "data.test_size=100")
    threads = torch.get_num_threads()
    try:
        train(cfg, tmp / "run")
    finally:
        torch.set_num_threads(threads)  # train() sets it for the whole process
    data_dir = next((tmp / "cache").glob("toy-*"))
    gold = write_reversal_gold(data_dir / "test.src", tmp / "test.wa")
    return tmp / "run", data_dir / "test.src", data_dir / "test.tgt", gold


@pytest.mark.slow
@pytest.mark.parametrize("method", [["--method", "argmax"], ["--method", "threshold", "--threshold", "0.3"]])
def test_toy_attention_beats_the_diagonal_baseline(toy_run, capsys, method):
    run_dir, src, tgt, gold = toy_run
    code = main([str(run_dir), "--src", str(src), "--tgt", str(tgt), "--gold", str(gold), *method])
    out = capsys.readouterr().out
    assert code == 0, out
    result = scores(out)
    attention, diagonal = result["attention"], result["diagonal baseline"]
    assert attention[3] == diagonal[3] == 100
    # the reversal is an anti-diagonal: the diagonal baseline only hits the middle word of odd lengths
    assert diagonal[0] > 0.8
    assert attention[0] < min(0.5, diagonal[0] - 0.3), out
    # the statistical aligner, trained on the run's training text and these sentences, finds the reversal
    assert [what for what in result if what.startswith("eflomal")] == [
        "eflomal forward", "eflomal reverse", "eflomal intersection", "eflomal union", "eflomal grow-diag-final-and"]
    assert result["eflomal grow-diag-final-and"][0] < 0.2, out


@pytest.mark.slow
def test_limit_and_reverse(toy_run, capsys):
    run_dir, src, tgt, gold = toy_run
    assert main([str(run_dir), "--src", str(src), "--tgt", str(tgt), "--gold", str(gold), "--limit", "10"]) == 0
    assert scores(capsys.readouterr().out)["attention"][3] == 10
    # with --reverse the gold is read as (target, source): the anti-diagonal is its own mirror image,
    # so on equal-length toy pairs the scores are unchanged
    assert main([str(run_dir), "--src", str(src), "--tgt", str(tgt), "--gold", str(gold), "--reverse"]) == 0
    assert main([str(run_dir), "--src", str(src), "--tgt", str(tgt), "--gold", str(gold)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 14 and lines[:7] == lines[7:]  # the attention, the diagonal and eflomal's five rows
    assert main([str(run_dir), "--src", str(src), "--tgt", str(tgt), "--gold", str(gold), "--no-aligner",
                 "--pieces", "max", "--shift", "read"]) == 0
    result = scores(capsys.readouterr().out)
    assert list(result) == ["attention", "diagonal baseline"]


# ---- errors (no model needed) ---------------------------------------------------------------------


@pytest.fixture
def texts(tmp_path):
    (tmp_path / "a.src").write_text("a b c\nd e\n")
    (tmp_path / "a.tgt").write_text("C B A\nE D\n")
    (tmp_path / "a.wa").write_text("1 1 3 S\n1 2 2 S\n2 2 1 P\n")
    return tmp_path


def run_main(capsys, checkpoint, src, tgt, gold, *extra) -> tuple[int, str]:
    code = main([str(checkpoint), "--src", str(src), "--tgt", str(tgt), "--gold", str(gold), *extra])
    return code, capsys.readouterr().err


def test_missing_file_is_a_clear_error(texts, capsys):
    code, err = run_main(capsys, texts, texts / "nope.src", texts / "a.tgt", texts / "a.wa")
    assert code == 2 and "no such file" in err and "nope.src" in err
    code, err = run_main(capsys, texts, texts / "a.src", texts / "a.tgt", texts / "no.wa")
    assert code == 2 and "no.wa" in err


def test_mismatched_line_counts(texts, capsys):
    (texts / "short.tgt").write_text("C B A\n")
    code, err = run_main(capsys, texts, texts / "a.src", texts / "short.tgt", texts / "a.wa")
    assert code == 2 and "2 lines" in err and "1" in err and "line-parallel" in err


def test_gold_outside_the_text(texts, capsys):
    (texts / "far.wa").write_text("1 1 3 S\n3 1 1 S\n")
    code, err = run_main(capsys, texts, texts / "a.src", texts / "a.tgt", texts / "far.wa")
    assert code == 2 and "sentence 3" in err and "only 2 lines" in err
    (texts / "long.wa").write_text("0002 3 1 S\n")
    code, err = run_main(capsys, texts, texts / "a.src", texts / "a.tgt", texts / "long.wa")
    assert code == 2 and "outside the sentence" in err
    (texts / "bad.wa").write_text("1 1 3 maybe\n")
    code, err = run_main(capsys, texts, texts / "a.src", texts / "a.tgt", texts / "bad.wa")
    assert code == 2 and "line 1" in err


def test_bad_checkpoint(texts, capsys):
    (texts / "broken.pt").write_bytes(b"not a checkpoint")
    code, err = run_main(capsys, texts / "broken.pt", texts / "a.src", texts / "a.tgt", texts / "a.wa")
    assert code == 2 and "cannot load checkpoint" in err and "Traceback" not in err
    code, err = run_main(capsys, texts, texts / "a.src", texts / "a.tgt", texts / "a.wa")
    assert code == 2 and "no checkpoint in" in err


def test_bad_options_exit_2(texts, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(texts), "--src", "x", "--tgt", "y", "--gold", "z", "--threshold", "1.5"])
    assert exit_info.value.code == 2
    assert "--threshold" in capsys.readouterr().err


# ---- the real shared gold sets --------------------------------------------------------------------


@pytest.fixture
def shared_alignments() -> Path:
    found = alignment_dir()
    if found is None:
        pytest.skip("shared gold alignments not found: set S2S_DATA_DIR to the directory holding "
                    "alignments/en-fr/dev.wa.nonullalign (default ../shared/data next to the checkout)")
    return found


def test_en_fr_dev_gold_parses_with_the_documented_counts(shared_alignments):
    en_fr = shared_alignments / "en-fr"
    gold = read_naacl(en_fr / "dev.wa.nonullalign")
    lines = (en_fr / "dev.wa.nonullalign").read_text().splitlines()
    assert len(lines) == 7409
    assert sum(line.split()[3] == "P" for line in lines) == 5332
    assert sorted(gold) == list(range(224))
    assert sum(len(g.sure) for g in gold.values()) == 2077
    assert sum(len(g.possible) for g in gold.values()) == 7409  # S ⊆ P: the 'P' lines plus the 'S' lines
    assert all(g.sure <= g.possible for g in gold.values())
    src = [line.split() for line in (en_fr / "dev.e").read_text(encoding="utf-8").splitlines()]
    tgt = [line.split() for line in (en_fr / "dev.f").read_text(encoding="utf-8").splitlines()]
    assert len(src) == len(tgt) == 224
    validate_gold(gold, src, tgt)  # every link lies inside its (english, french) sentence
    # the dev set is largely monotone: the diagonal baseline gets about half of it
    diagonal = [diagonal_alignment(len(s), len(t)) for s, t in zip(src, tgt)]
    hits = sum(len(d & gold[i].sure) for i, d in enumerate(diagonal))
    assert 0.3 < hits / 2077 < 0.6


def test_en_fr_trial_and_zh_en_gold_parse(shared_alignments):
    trial = read_gold(shared_alignments / "en-fr" / "trial.wa.nonullalign")
    assert len(trial) == 37
    assert sum(len(g.sure) for g in trial.values()) == 338
    assert sum(len(g.possible) for g in trial.values()) == 1784
    zh_en = shared_alignments / "zh-en"
    if not (zh_en / "dev.align").is_file():
        pytest.skip(f"{zh_en / 'dev.align'} not found")
    gold = read_gold(zh_en / "dev.align")  # detected as Pharaoh; Chinese index first = source of zh->en
    assert len(gold) == 75
    assert sum(len(g.sure) for g in gold.values()) == 1818
    assert sum(len(g.possible - g.sure) for g in gold.values()) == 501
    zh = [line.split() for line in (zh_en / "dev.zh").read_text(encoding="utf-8").splitlines()]
    en = [line.split() for line in (zh_en / "dev.en").read_text(encoding="utf-8").splitlines()]
    validate_gold(gold, zh, en)
    validate_gold(read_gold(zh_en / "dev.align", reverse=True), en, zh)
