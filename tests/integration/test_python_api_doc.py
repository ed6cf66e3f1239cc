"""docs/python-api.md runs as written: every ```python block, in order, in one namespace, against a toy model
trained here. Only the example run path of the first block is replaced, with the toy run's directory. A
renamed function, argument or attribute therefore fails this test. The toy model translates the page's
English sentences into garbage, but its shapes, tokens and files are real ones."""

import re
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from ..conftest import REPO_ROOT
from .test_bad_input import TINY_MODEL
from .test_toy_training import toy_config

DOC = REPO_ROOT / "docs" / "python-api.md"
RUN_PATH_LINE = re.compile(r'^run = "[^"\n]*"', re.MULTILINE)
HEADS = 2


class ToyRun(NamedTuple):
    directory: Path
    attention: str


def python_blocks(markdown: str) -> list[tuple[int, str]]:
    """The ```python blocks of a markdown text, in order: (line number of the block's first code line, code)."""
    blocks, code, start = [], None, 0
    for number, line in enumerate(markdown.splitlines(), start=1):
        if code is None and line.strip() == "```python":
            code, start = [], number + 1
        elif code is not None and line.strip() == "```":
            blocks.append((start, "\n".join(code) + "\n"))
            code = None
        elif code is not None:
            code.append(line)
    assert code is None, f"{DOC.name}: a ```python block opened on line {start - 1} is never closed"
    return blocks


def run_blocks(blocks: list[tuple[int, str]]) -> dict:
    """Execute the blocks one after the other in one namespace; a traceback names the page's own line."""
    namespace = {"__name__": "python_api_doc"}
    for start, code in blocks:
        exec(compile("\n" * (start - 1) + code, str(DOC), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module", params=["bahdanau", "multihead"])
def toy_run(request, tmp_path_factory) -> ToyRun:
    """A tiny model trained for 4 steps on the toy task (a few seconds), with the page's example attention
    (bahdanau) and with multi-head attention (per-head weights)."""
    from s2s_attn.training.trainer import train

    attention = request.param
    root = tmp_path_factory.mktemp(f"python-api-{attention}")
    heads = [f"attention.heads={HEADS}"] if attention == "multihead" else []
    cfg = toy_config(root, *TINY_MODEL, f"attention={attention}", *heads, "data.train_size=300",
                     "data.valid_size=10", "data.test_size=10", "trainer.threads=1", "trainer.max_steps=4",
                     "trainer.eval_every=4", "trainer.batch_size=16", "trainer.batch_tokens=null")
    threads = torch.get_num_threads()
    try:
        train(cfg, root / "run")
    finally:
        torch.set_num_threads(threads)  # train() sets it for the whole process
    return ToyRun(root / "run", attention)


def test_every_python_block_of_the_page_runs_and_gives_what_the_page_says(toy_run, tmp_path, monkeypatch):
    import matplotlib

    from s2s_attn.decoding.translator import AttendedTranslation, Translator

    matplotlib.use("Agg")  # no display
    monkeypatch.chdir(tmp_path)  # the page's files (attention.png) land here
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    first_line, first_code = blocks[0]
    assert len(RUN_PATH_LINE.findall(first_code)) == 1, 'the first block must set the example run: run = "..."'
    blocks[0] = (first_line, RUN_PATH_LINE.sub(lambda _: f"run = {str(toy_run.directory)!r}", first_code))

    page = run_blocks(blocks)

    # load a trained run: a run directory gives its best checkpoint
    assert isinstance(page["translator"], Translator)
    assert page["translator"].checkpoint_path == toy_run.directory / "checkpoints" / "best.pt"

    # translate: one string per sentence, greedy and with a beam; n-best lists best first
    sentences = page["sentences"]
    for name in ("translations", "beam_translations"):
        assert [type(text) for text in page[name]] == [str] * len(sentences), name
    assert len(page["nbest"]) == len(sentences)
    for entries in page["nbest"]:
        assert len(entries) == 3
        assert all(isinstance(text, str) and isinstance(logp, float) for text, logp, _ in entries)
        ranking_scores = [ranking_score for _, _, ranking_score in entries]
        assert ranking_scores == sorted(ranking_scores, reverse=True)

    # attention: (len(tgt_tokens), len(src_tokens)), each row a distribution over the source tokens
    item = page["item"]
    assert isinstance(item, AttendedTranslation) and isinstance(item.translation, str)
    assert item.src_tokens[-1] == "</s>" and len(item.tgt_tokens) >= 1
    assert item.attention.shape == (len(item.tgt_tokens), len(item.src_tokens))
    assert item.attention.dtype == torch.float32 and item.attention.device.type == "cpu"
    assert torch.allclose(item.attention.sum(dim=1), torch.ones(len(item.tgt_tokens)), atol=1e-5)

    # per-head weights: (heads, len(tgt_tokens), len(src_tokens)) for multihead, their mean the attention
    with_heads = page["with_heads"]
    if toy_run.attention == "multihead":
        assert with_heads.heads.shape == (HEADS, len(with_heads.tgt_tokens), len(with_heads.src_tokens))
        assert torch.allclose(with_heads.heads.mean(dim=0), with_heads.attention, atol=1e-5)
    else:
        assert with_heads.heads is None

    # the heatmap: a PNG file in the working directory
    assert (tmp_path / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # scores: sacrebleu BLEU and chrF (0-100) with the 13a tokenizer for a non-Chinese target
    scores = page["scores"]
    assert isinstance(scores.bleu, float) and 0.0 <= scores.bleu <= 100.0
    assert isinstance(scores.chrf, float) and 0.0 <= scores.chrf <= 100.0
    assert "tok:13a" in scores.bleu_signature
