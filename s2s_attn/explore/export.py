"""``s2s-explore RUN_DIR ... --export FILE.html --input SENTENCES.txt``: the explorer's page for a list of sentences
as one self-contained HTML file (its script, style and every answer inside), to open or share without a server."""

from __future__ import annotations

import sys

from tqdm import tqdm

from .page import page_html
from .server import Explorer


def answer_key(sentence: str, beam: int, run: int, checkpoint: int | str) -> str:
    """The key the page's script looks an answer up by (``answerKey`` in explorer.js)."""
    return "\u0000".join([sentence, str(beam), str(run), str(checkpoint)])


def export_page(explorer: Explorer, sentences: list[str], beam: int = 5) -> str:
    """The page with every answer it can ask for: each sentence, greedy and (``beam`` > 1) beam search of that
    width, each run at its best and at each of its step checkpoints; and the gold set when the explorer has one."""
    beams = [1] + ([beam] if beam > 1 else [])
    info = dict(explorer.info(), sentences=sentences, beams=beams, default_beam=max(beam, 2))
    work = [(sentence, width, run, checkpoint) for sentence in sentences for width in beams for run in explorer.runs
            for checkpoint in ["best", *run.checkpoints]]
    answers = {}
    for sentence, width, run, checkpoint in tqdm(work, desc="export", unit="view", file=sys.stderr,
                                                 disable=len(work) < 20):
        answers[answer_key(sentence, width, run.index, checkpoint)] = run.translate(sentence, width, checkpoint)
    data = {"info": info, "answers": answers, "gold_scores": None, "gold_sentences": []}
    if explorer.gold is not None:
        data["gold_scores"] = explorer.gold_scores()
        data["gold_sentences"] = [explorer.gold_sentence(i) for i in range(len(explorer.gold))]
    return page_html(data)
