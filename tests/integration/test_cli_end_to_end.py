"""End to end through the console scripts: s2s-train (Hydra, overrides) then s2s-translate.

Uses a small slice of the real Tatoeba eng-fra corpus; skipped when the corpus is absent.
"""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import shared_data_dir


def script(name: str) -> str:
    """The console script installed next to this Python (the venv's bin/), else on PATH."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (run `make test`, which installs the package)")
    return found


def run(cmd, cwd, **kwargs):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **kwargs)


def test_unknown_attention_fails_and_lists_the_valid_ones(tmp_path):
    result = run([script("s2s-train"), "attention=no_such_thing"], cwd=tmp_path)
    assert result.returncode != 0
    assert "bahdanau" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_train_then_translate_on_a_slice_of_tatoeba(tmp_path):
    data = shared_data_dir()
    if data is None:
        pytest.skip("real corpus absent: set S2S_DATA_DIR to the directory holding tatoeba/eng-fra.tsv")
    lines = (data / "tatoeba" / "eng-fra.tsv").read_text(encoding="utf-8").splitlines()
    rng = random.Random(0)
    sample = rng.sample(lines[:40000], 1600)  # short sentences: quick to train on
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split, part in (("train", sample[:1400]), ("valid", sample[1400:1500]), ("test", sample[1500:])):
        (corpus / f"{split}.en").write_text("".join(line.split("\t")[0] + "\n" for line in part))
        (corpus / f"{split}.fr").write_text("".join(line.split("\t")[1] + "\n" for line in part))
    result = run(
        [
            script("s2s-train"), "data=parallel", f"data.root={corpus}", "data.train=train", "data.valid=valid",
            "data.test=test", "data.src_lang=en", "data.tgt_lang=fr", "data.spm.vocab_size=500",
            f"data.cache_dir={tmp_path}/cache", "model.emb_size=32", "model.encoder_hidden=32",
            "model.decoder_hidden=64", "model.output_size=32", "attention.size=32", "trainer.max_steps=40",
            "trainer.eval_every=20", "trainer.max_minutes=2", "trainer.device=cpu", f"hydra.run.dir={tmp_path}/run",
            "alignment=hansards_en_fr", f"alignment.root={data}/alignments/en-fr",  # AER at every evaluation
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test BLEU" in result.stdout
    history = json.loads((tmp_path / "run" / "results.json").read_text())["history"]
    assert [h["step"] for h in history] == [20, 40]
    assert all(0.0 <= h["aer"] <= 1.0 and h["diagonal_aer"] == history[0]["diagonal_aer"] for h in history)
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    translated = run([script("s2s-translate"), str(tmp_path / "run")], cwd=tmp_path, input="I am cold.\n\nGo.\n")
    assert translated.returncode == 0, translated.stderr[-2000:]
    out = translated.stdout.split("\n")
    assert len(out) == 4 and out[1] == "" and out[3] == ""  # one line per input line, empty stays empty
    # beam search, n-best lists, control characters and an over-long line: never a crash
    nasty = "I am\x07 cold.\n\n" + "very " * 400 + "long.\n"
    beam = run([script("s2s-translate"), str(tmp_path / "run"), "--beam", "4", "--nbest", "2"], cwd=tmp_path,
               input=nasty)
    assert beam.returncode == 0, beam.stderr[-2000:]
    entries = [line.split(" ||| ") for line in beam.stdout.splitlines()]
    assert [e[0] for e in entries] == ["1", "1", "3", "3"]  # the empty line 2 has no entries
    assert float(entries[0][3]) >= float(entries[1][3]) and float(entries[2][3]) >= float(entries[3][3])
    assert "truncated" in beam.stderr
    # s2s-evaluate on the run's own test split, greedy and beam: scores, signature, files next to each other
    for beam_size, name in ((1, "greedy"), (3, "beam3")):
        evaluated = run([script("s2s-evaluate"), str(tmp_path / "run"), "--beam", str(beam_size)], cwd=tmp_path)
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        assert "BLEU signature: nrefs:1|case:mixed|eff:no|tok:13a" in evaluated.stdout
        assert (tmp_path / "run" / "eval" / f"test.{name}.hyp").read_text().count("\n") == 100
        assert (tmp_path / "run" / "eval" / f"test.{name}.json").is_file()
    bad = run([script("s2s-evaluate"), str(tmp_path / "run"), "--src", str(corpus / "test.en"), "--ref",
               str(corpus / "train.fr")], cwd=tmp_path)  # 100 sources, 1,400 references
    assert bad.returncode == 2 and "line-parallel" in bad.stderr and "Traceback" not in bad.stderr
