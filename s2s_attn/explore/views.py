"""What the explorer shows, as JSON-ready dicts computed from trained runs.

A *view* of a translation::

    {"run": 0, "checkpoint": "best" | step, "source": str, "translation": str,
     "src_tokens": [...], "tgt_tokens": [...],        # SentencePiece pieces plus </s>
     "attention": [[...], ...],                        # (target tokens, source tokens), what s2s-translate writes
     "heads": [[[...], ...], ...] | None,               # per head, greedy decoding of multi-head attention
     "beam": None | {"k": k, "steps": [...], "nbest": [...]},
     "note": str | None}                                # e.g. the input was truncated

The beam's ``steps`` list, for each decoding step, the hypotheses kept alive after it (``live``) and those that
finished at it (``finished``), each with its tokens, log-probability and attention; ``nbest`` holds the best
finished one (the translation). Greedy views come from the `Translator` calls of ``s2s-translate --attention``;
a beam view's translation is its traced search's best hypothesis, the same `BeamGroup` with the same settings as
``s2s-translate --beam K``; so the page shows those commands' numbers.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.batching import make_batch
from ..decoding.beam import BeamGroup, SearchSettings
from ..decoding.step import shared_tables
from ..evaluation.alignment import (
    Gold,
    aer,
    attention_matrices,
    diagonal_alignment,
    evaluate_alignment,
    extract_argmax,
    read_gold_set,
    word_attention,
)
from ..training.checkpoint import CheckpointError, step_checkpoints

#: decimals of the weights sent to the page (s2s-translate --attention writes 4)
DIGITS = 6
#: the widest beam the page may ask for
MAX_BEAM = 16
#: translators of step checkpoints kept loaded per run (the slider revisits them)
CACHED_CHECKPOINTS = 4


class ExplorerError(ValueError):
    """Bad input the page or the command line reports as one clear message."""


def _rows(matrix: torch.Tensor | Any) -> list[list[float]]:
    return [[round(float(v), DIGITS) for v in row] for row in torch.as_tensor(matrix).tolist()]


@dataclass
class TracedHypothesis:
    """A hypothesis as the beam held it after a step: output ids, log-probability, attention (rows, src_len)."""

    tokens: list[int]
    score: float
    attention: torch.Tensor
    norm_score: float | None = None  # the ranking score, for finished hypotheses


class TracedBeamGroup(BeamGroup):
    """Beam search of one sentence (`BeamGroup`, unchanged) that records, after every step, the hypotheses it keeps
    alive and those that finished at that step."""

    def __init__(self, model, src: torch.Tensor, src_len: torch.Tensor, search: SearchSettings) -> None:
        super().__init__(model, src, src_len, [0], search, return_attention=True)
        self.trace: list[tuple[list[TracedHypothesis], list[TracedHypothesis]]] = []
        self._finished_now: list[TracedHypothesis] = []

    def _finish(self, sentences, rows, scores, lasts, step_weights) -> None:
        before = len(self.finished[0])
        super()._finish(sentences, rows, scores, lasts, step_weights)
        self._finished_now += [TracedHypothesis(h.tokens, h.score, h.attention, h.norm_score)
                               for h in self.finished[0][before:]]

    def advance(self):
        self._finished_now = []
        completed = super().advance()
        live = []
        if len(self):  # still searching: the rows carried to the next step
            steps, src_len = self.steps[0], self.lengths[0]
            tokens = self.tokens[:, self.tokens.size(1) - steps :].tolist()
            attention = self.attention[:, self.attention.size(1) - steps :, :src_len].float().cpu()
            live = [TracedHypothesis(tokens[row], score, attention[row])
                    for row, score in enumerate(self.scores[0].tolist()) if math.isfinite(score)]
        self.trace.append((live, self._finished_now))
        return completed


class ExplorerRun:
    """A trained run directory the explorer reads (never writes): its best checkpoint (else its newest), and the
    step checkpoints it holds, for the slider over training."""

    def __init__(self, run_dir: str | Path, index: int = 0, device: str = "cpu") -> None:
        from ..decoding.translator import Translator

        self.run_dir, self.index, self.device = Path(run_dir), index, device
        if not self.run_dir.is_dir():
            raise ExplorerError(f"{run_dir} is not a directory; give a run directory written by s2s-train "
                                "(e.g. outputs/eng_fra-bahdanau/<date_time>)")
        try:
            self.translator = Translator.from_checkpoint(self.run_dir, device=device)
        except CheckpointError as error:
            raise ExplorerError(f"{run_dir} is not a run directory of s2s-train: {error}") from None
        self._paths = dict(step_checkpoints(self.run_dir / "checkpoints"))  # step -> step_N.pt
        self.checkpoints = sorted(self._paths)
        self._loaded: OrderedDict[int, Any] = OrderedDict()
        self.lock = threading.Lock()  # one request at a time per run: a model is not shared between threads
        config = self.translator.config
        self.attention = str(config.get("attention", {}).get("name", "?"))
        self.decoder = str(config.get("model", {}).get("decoder", "?"))
        self.heads = int(config.get("attention", {}).get("heads", 1)) if self.attention == "multihead" else 1
        self.name = f"{self.run_dir.parent.name}/{self.run_dir.name}" if self.run_dir.parent.name else self.run_dir.name

    def info(self) -> dict:
        data = self.translator.config.get("data", {})
        return {"index": self.index, "name": self.name, "path": str(self.run_dir), "attention": self.attention,
                "decoder": self.decoder, "heads": self.heads, "checkpoints": self.checkpoints,
                "languages": [data.get("src_lang"), data.get("tgt_lang")],
                "max_src_pieces": self.translator.max_src_pieces}

    def translator_at(self, checkpoint: int | str | None):
        """The best checkpoint's translator (None or ``"best"``), or that of step checkpoint ``checkpoint``."""
        from ..decoding.translator import Translator

        if checkpoint in (None, "best"):
            return self.translator
        try:
            step = int(checkpoint)
        except (TypeError, ValueError):
            raise ExplorerError(f"checkpoint must be 'best' or a step number, got {checkpoint!r}") from None
        if step not in self._paths:
            raise ExplorerError(f"{self.name} has no step checkpoint {step}; it has {self.checkpoints}")
        if step not in self._loaded:
            self._loaded[step] = Translator.from_checkpoint(self._paths[step], device=self.device)
            while len(self._loaded) > CACHED_CHECKPOINTS:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(step)
        return self._loaded[step]

    def translate(self, sentence: str, beam: int = 1, checkpoint: int | str | None = None) -> dict:
        """The view of one sentence (module docstring): greedy (``beam`` 1) or beam search of width ``beam``."""
        if not isinstance(sentence, str) or not sentence.strip():
            raise ExplorerError("type a sentence to translate (the text box is empty)")
        if not isinstance(beam, int) or not 1 <= beam <= MAX_BEAM:
            raise ExplorerError(f"the beam width must be a whole number from 1 to {MAX_BEAM}, got {beam!r}")
        with self.lock:
            translator = self.translator_at(checkpoint)
            truncated = translator.truncated
            todo, src_ids = translator.encode_lines([sentence])  # normalised, encoded, truncated: once
            if not todo:
                raise ExplorerError("the sentence holds nothing to translate once cleaned (control characters only?)")
            note = None
            if translator.truncated > truncated:
                note = (f"the sentence has more than {translator.max_src_pieces} subword pieces, the model's limit: "
                        f"it was truncated to the first {translator.max_src_pieces}")
            beam_view = None
            if beam == 1:  # as s2s-translate --attention: greedy, per-head weights for multi-head attention
                if self.heads > 1:
                    out_ids, attentions, heads = translator.translate_ids(src_ids, return_heads=True)
                else:
                    (out_ids, attentions), heads = translator.translate_ids(src_ids, return_attention=True), [None]
                item = translator.attended(src_ids[0], out_ids[0], attentions[0], heads[0], source=sentence)
            else:  # the traced search is s2s-translate --beam's: its best hypothesis is the translation
                beam_view, best = self._beam(translator, src_ids, beam)
                item = translator.attended(src_ids[0], best.tokens, best.attention, source=sentence)
            view = {"run": self.index, "checkpoint": "best" if checkpoint in (None, "best") else int(checkpoint),
                    "source": sentence, "translation": item.translation, "src_tokens": item.src_tokens,
                    "tgt_tokens": item.tgt_tokens, "attention": item.attention_rows(DIGITS),
                    "heads": None if item.heads is None else [_rows(head) for head in item.heads],
                    "beam": beam_view, "note": note}
        return view

    def _beam(self, translator, src_ids: list[list[int]], beam: int) -> tuple[dict, Any]:
        """Every hypothesis the beam keeps at each step, with its score and attention (see `TracedBeamGroup`), and
        the best finished one (a `Hypothesis`)."""
        batch = make_batch(src_ids, None, [0]).to(translator.device)  # the source ids and EOS, as translating
        tokenizer = translator.tokenizer
        search = SearchSettings(beam_size=beam, nbest=1)  # as s2s-translate --beam: nbest moves the stopping point
        model = translator.model
        with torch.inference_mode(), shared_tables(model):
            group = TracedBeamGroup(model, batch.src, batch.src_len, search)
            nbest: list = []
            while len(group):
                for _, hyps in group.advance():
                    nbest = hyps

        def hypothesis(h, finished: bool) -> dict:
            pieces = tokenizer.tgt_pieces_of(h.tokens) + (["</s>"] if finished and h.attention.size(0) > len(h.tokens)
                                                          else [])
            return {"tokens": pieces, "text": tokenizer.decode_tgt([h.tokens])[0], "score": round(h.score, 4),
                    "norm_score": None if h.norm_score is None else round(h.norm_score, 4),
                    "attention": _rows(h.attention), "finished": finished}

        steps = [{"step": t + 1, "live": [hypothesis(h, False) for h in live],
                  "finished": [hypothesis(h, True) for h in finished]}
                 for t, (live, finished) in enumerate(group.trace)]
        view = {"k": beam, "steps": steps,
                "nbest": [hypothesis(TracedHypothesis(h.tokens, h.score, h.attention, h.norm_score), True)
                          for h in nbest]}
        return view, nbest[0]


class GoldSet:
    """Gold word alignments (``--gold SRC TGT LINKS``): the sentences, their sure and possible links, and per run
    the attention's links (teacher forcing, argmax, as ``s2s-align-eval``) with the set's AER."""

    def __init__(self, src: str | Path, tgt: str | Path, links: str | Path, fmt: str = "auto",
                 reverse: bool = False) -> None:
        try:
            self.src_lines, self.tgt_lines, self.gold = read_gold_set(src, tgt, links, fmt, reverse=reverse)
        except (OSError, ValueError) as error:  # what s2s-align-eval says of the same files
            raise ExplorerError(f"--gold: {error}") from None
        self.paths = [str(src), str(tgt), str(links)]
        self._scores: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.src_lines)

    def scores(self, run: ExplorerRun) -> dict:
        """The set's AER, precision and recall for this run and for the diagonal baseline (`evaluate_alignment`,
        the numbers ``s2s-align-eval`` prints)."""
        if run.index not in self._scores:
            with run.lock:
                result = evaluate_alignment(run.translator, self.src_lines, self.tgt_lines, self.gold)
            self._scores[run.index] = {key: result[key] for key in ("sentences", "aer", "precision", "recall",
                                                                    "diagonal_aer", "diagonal_precision",
                                                                    "diagonal_recall")}
        return self._scores[run.index]

    def sentence(self, index: int, runs: list[ExplorerRun]) -> dict:
        """Sentence ``index`` (0-based): its words, gold links and, per run, the word-level attention with its
        links marked as hits or misses and the sentence's AER."""
        if not isinstance(index, int) or not 0 <= index < len(self):
            raise ExplorerError(f"gold sentence must be a number from 1 to {len(self)}")
        src_words, tgt_words = self.src_lines[index].split(), self.tgt_lines[index].split()
        gold = self.gold.get(index, Gold(set(), set()))
        possible = gold.possible | gold.sure
        views = []
        for run in runs:
            words = torch.zeros((len(tgt_words), len(src_words)))
            if src_words and tgt_words:
                with run.lock:
                    matrix = attention_matrices(run.translator, [src_words], [tgt_words])[0]
                words = word_attention(matrix.matrix, matrix.src_pieces, matrix.tgt_pieces, src_words, tgt_words)
            predicted = extract_argmax(words)
            error, precision, recall = aer([predicted], [gold.sure], [possible])
            views.append({"run": run.index, "attention": _rows(words),
                          "links": [{"source": s, "target": t, "hit": (s, t) in possible}
                                    for s, t in sorted(predicted)],
                          "aer": round(error, 4), "precision": round(precision, 4), "recall": round(recall, 4)})
        diagonal = diagonal_alignment(len(src_words), len(tgt_words))
        return {"index": index, "count": len(self), "src_words": src_words, "tgt_words": tgt_words,
                "sure": sorted(gold.sure), "possible": sorted(gold.possible - gold.sure),
                "diagonal_aer": round(aer([diagonal], [gold.sure], [possible])[0], 4), "runs": views}
