"""Guided alignment end to end on the toy reversal: the aligner's links are computed once with the prepared data,
and the extra loss pulls the attention onto them long before the translation loss alone finds the alignment."""

from __future__ import annotations

import json
import re

import pytest

from s2s_attn.cli.align_eval import main as align_eval
from s2s_attn.data import aligner
from s2s_attn.data.synthetic import toy_alignment
from s2s_attn.training.trainer import train

from ..conftest import write_reversal_gold
from .test_align_eval import scores
from .test_toy_training import toy_config

pytestmark = pytest.mark.skipif(not aligner.eflomal_available(), reason="eflomal is not installed (pip install "
                                                                        "eflomal)")
STEPS = 200


def _attention_aer(run_dir, data_dir, capsys) -> float:
    src, tgt = data_dir / "test.src", data_dir / "test.tgt"
    gold = write_reversal_gold(src, run_dir / "test.wa")
    assert align_eval([str(run_dir), "--src", str(src), "--tgt", str(tgt), "--gold", str(gold), "--no-aligner"]) == 0
    return scores(capsys.readouterr().out)["attention"][0]


def _reversal_links(src_words, tgt_words, samplers=3):
    """The toy reversal's true links in both directions, standing in for eflomal's: eflomal seeds its sampler from
    /dev/urandom, and on a 20-letter toy its links, and so what the guided model learns, vary from run to run
    (eflomal itself is tested in tests/unit/test_aligner.py)."""
    links = [set(toy_alignment(" ".join(words), "reverse")) if words else set() for words in src_words]
    return links, [set(pair) for pair in links]


@pytest.mark.slow
def test_guidance_pulls_the_attention_onto_the_aligners_links(tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setattr(aligner, "align_words", _reversal_links)
    aer = {}
    for guided in ("none", "eflomal"):
        extra = ["guided_alignment.weight=1.0"] if guided != "none" else []
        # the default (uniform) initialisation: unguided, the toy sits on its loss plateau for a few hundred steps
        cfg = toy_config(tmp_path, f"trainer.max_steps={STEPS}", f"trainer.eval_every={STEPS}", "trainer.threads=1",
                         "data.valid_size=50", "data.test_size=100", f"guided_alignment={guided}", *extra)
        with caplog.at_level("INFO"):
            train(cfg, tmp_path / guided)
        data_dir = next((tmp_path / "cache").glob("toy-*"))
        aer[guided] = _attention_aer(tmp_path / guided, data_dir, capsys)
    log = caplog.text
    match = re.search(r"guided alignment: eflomal links \(grow-diag-final-and\) for ([\d,]+) of ([\d,]+) training "
                      r"pairs", log)
    assert match and match.group(1) == match.group(2), log  # every toy pair maps onto its pieces
    assert (data_dir / "eflomal-train" / "alignment.json").is_file()  # cached with the prepared data
    history = json.loads((tmp_path / "eflomal" / "results.json").read_text())
    assert history["steps"] == STEPS
    # the reversal's anti-diagonal: guided, the attention has it after 200 steps; unguided, it is still leaving its
    # plateau, whose end moves by tens of steps with the last bits of the sums (loss blocks of 256 or 1,024 rows)
    assert aer["eflomal"] < 0.15, aer
    assert aer["none"] > 2 * aer["eflomal"], aer  # measured: 0.196 against 0.075


@pytest.mark.slow
def test_a_second_run_reuses_the_cached_links(tmp_path, caplog, monkeypatch):
    cfg = toy_config(tmp_path, "trainer.max_steps=2", "trainer.eval_every=2", "guided_alignment=eflomal",
                     "data.valid_size=20", "data.test_size=20")
    train(cfg, tmp_path / "first")
    monkeypatch.setattr(aligner, "align_words", lambda *args: pytest.fail("eflomal ran again"))
    with caplog.at_level("INFO"):
        train(cfg, tmp_path / "second")
    assert "aligning" not in caplog.text and "guided alignment: eflomal links" in caplog.text
