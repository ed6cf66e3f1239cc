"""Two tiny toy runs for the explorer's tests (Bahdanau with several step checkpoints, and multi-head attention),
a gold alignment file for the toy's test sentences (the reversal's anti-diagonal), and what the tests compare the
page with: s2s-translate's attention."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..conftest import write_reversal_gold
from .test_toy_training import toy_config

TINY = ["model.emb_size=16", "model.encoder_hidden=16", "model.decoder_hidden=32", "model.output_size=16",
        "attention.size=16", "data.train_size=400", "data.valid_size=10", "data.test_size=12", "trainer.threads=1",
        "trainer.batch_size=16", "trainer.batch_tokens=null", "logger.attention_images=0"]


@dataclass
class ExploreRuns:
    bahdanau: Path
    multihead: Path
    gold: tuple[Path, Path, Path]  # source text, target text, NAACL links
    sentences: list[str]  # the toy's test sources


def train_explore_runs(root: Path) -> ExploreRuns:
    from s2s_attn.training.trainer import train

    threads = torch.get_num_threads()
    try:
        # step checkpoints at 100 .. 400 (kept): the explorer's slider over training; by step 400 (Xavier's
        # initialisation, a few seconds) the outputs have several tokens, and the beam several steps
        train(toy_config(root, *TINY, "trainer.max_steps=400", "trainer.eval_every=400", "trainer.save_every=100",
                         "trainer.keep_last=5", "model.init=xavier"), root / "bahdanau")
        train(toy_config(root, *TINY, "attention=multihead", "attention.heads=2", "trainer.max_steps=10",
                         "trainer.eval_every=10"), root / "multihead")
    finally:
        torch.set_num_threads(threads)  # train() sets it for the whole process
    data_dir = next((root / "cache").glob("toy-*"))
    src, tgt = data_dir / "test.src", data_dir / "test.tgt"
    links = write_reversal_gold(src, root / "test.wa")
    return ExploreRuns(root / "bahdanau", root / "multihead", (src, tgt, links), src.read_text().splitlines())


def translate_attention(run_dir: Path, sentence: str, tmp_path: Path, *options: str) -> dict:
    """What ``s2s-translate RUN --attention FILE`` writes for one sentence (its JSON record)."""
    from s2s_attn.cli.translate import main as translate

    source, attention = tmp_path / "in.txt", tmp_path / "attention.jsonl"
    source.write_text(sentence + "\n")
    assert translate([str(run_dir), "-i", str(source), "-o", str(tmp_path / "out.txt"), "--attention",
                      str(attention), *options]) == 0
    return json.loads(attention.read_text().splitlines()[0])


def assert_same_matrix(got, want, tolerance: float = 1e-4) -> None:
    """Same shape, and every weight within ``tolerance`` (s2s-translate writes 4 decimals)."""
    assert len(got) == len(want) and all(len(a) == len(b) for a, b in zip(got, want))
    assert max(abs(x - y) for a, b in zip(got, want) for x, y in zip(a, b)) <= tolerance
