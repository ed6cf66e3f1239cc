"""Beam search, batched over sentences and beams: one decoder step per output position for the whole batch.

Every sentence keeps ``beam_size`` live hypotheses; the batch runs as ``batch * beam`` rows through
``model.decoder.step_logits`` (no Python loop over sentences in the computation; the first step runs
one row per sentence, since all its beams start from BOS). At each step the best ``2 * beam_size``
extensions of each sentence are taken from its ``beam_size * vocab`` candidates (as fairseq does;
only each row's best ``2 * beam_size`` tokens can be among them, so only those are ranked): an
extension that ends in EOS and ranks among the first ``beam_size`` becomes a finished hypothesis;
the best ``beam_size`` others stay live. A sentence is done when it has
``beam_size`` finished hypotheses; or ``nbest`` of them and the best live hypothesis, normalised at
its current length, ranks below the best finished one; or when its live hypotheses reach its length
limit (`output_limits`, the same as greedy decoding's: they then count as finished, without EOS).
Decoding stops when every sentence is done.

Scores
------
``score`` is the model's own log-probability of the hypothesis (EOS included): the sum of the
log-softmax outputs of the steps that produced it. Hypotheses are ranked by ``norm_score``:

* ``length_penalty="gnmt"``:    score / ((5 + |y|) / 6) ** alpha          (Wu et al., 2016)
* ``length_penalty="average"``: score / |y| ** alpha   (alpha = 1: average log-probability per token)
* ``length_penalty="none"``:    score

with |y| the number of output tokens including EOS, plus, when ``coverage_penalty`` (beta) > 0, the
GNMT coverage penalty beta * sum_j log(min(sum_t a_tj, 1)) over the source positions j (which
rewards hypotheses whose attention has covered the whole source).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.tokenizer import BOS_ID, EOS_ID
from ..fast import kernels
from .greedy import MAX_LEN_EXTRA, MAX_LEN_RATIO, chunk_size, output_limits
from .step import StateRoom, make_stepper
from .stream import Batch, Compaction, Group, decode_stream, pad_history

LENGTH_PENALTIES = ("gnmt", "average", "none")


@dataclass
class Hypothesis:
    """One finished beam hypothesis: output ids (no BOS/EOS), scores, and its attention if asked for.

    ``attention`` is (len(tokens) + 1 for EOS, src_len) on the CPU, or (len(tokens), src_len) when the
    hypothesis was cut at the length limit without EOS.
    """

    tokens: list[int]
    score: float
    norm_score: float
    attention: Tensor | None = None


@dataclass
class SearchSettings:
    """How to decode: ``beam_size`` 1 is greedy decoding; the rest as in `beam_search`."""

    beam_size: int = 1
    nbest: int = 1
    length_penalty: str = "gnmt"
    alpha: float = 0.6
    coverage_penalty: float = 0.0
    max_len_ratio: float = MAX_LEN_RATIO
    max_len_extra: int = MAX_LEN_EXTRA

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam size must be at least 1, got {self.beam_size}")
        if not 1 <= self.nbest <= self.beam_size:
            raise ValueError(f"nbest must be between 1 and the beam size ({self.beam_size}), got {self.nbest}")
        if self.length_penalty not in LENGTH_PENALTIES:
            raise ValueError(f"unknown length penalty {self.length_penalty!r}; valid: {', '.join(LENGTH_PENALTIES)}")
        if self.coverage_penalty < 0 or self.max_len_ratio <= 0 or self.max_len_extra < 0:
            raise ValueError("coverage penalty and max length extra must be >= 0, max length ratio > 0")


def length_normaliser(length: int, kind: str, alpha: float) -> float:
    """The divisor of a hypothesis' log-probability for ``kind`` (see the module docstring)."""
    if kind == "gnmt":
        return ((5.0 + length) / 6.0) ** alpha
    if kind == "average":
        return float(max(length, 1)) ** alpha
    if kind == "none":
        return 1.0
    raise ValueError(f"unknown length penalty {kind!r}; valid: {', '.join(LENGTH_PENALTIES)}")


def coverage_bonus(coverage: Tensor, beta: float) -> float:
    """GNMT coverage penalty beta * sum_j log(min(coverage_j, 1)); coverage: (src_len,) summed attention."""
    if beta == 0.0:
        return 0.0
    return beta * float(torch.log(coverage.clamp(min=1e-6, max=1.0)).sum())


def block_log_probs(logits: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """One step's log-probabilities as beam search reads them: (values (rows, V), block_best (rows, V / size),
    lse (rows,) or None). The log-probability of token v in row r is ``values[r, v] - lse[r]`` (``values[r, v]``
    when lse is None), and ``block_best[r, k]`` is the best of them in block k (tokens k*size .. k*size+size-1).

    With the compiled kernels (float32 on the CPU) values are the logits themselves, lse and the block maxima
    from one read of them (`block_log_softmax`); otherwise values are log_softmax(logits), in place when the
    logits are a contiguous float32 tensor (row by row, each row read before it is written: the same values),
    and block_best their block maxima."""
    rows, vocab = logits.shape
    compiled = kernels.applies(logits) if logits.is_contiguous() else None
    if compiled is not None:
        lse = logits.new_empty(rows)
        block_best = logits.new_empty((rows, vocab // size))
        compiled.block_log_softmax(logits, size, lse, block_best)
        return logits, block_best, lse
    if logits.dtype == torch.float32 and logits.is_contiguous():
        log_probs = torch.log_softmax(logits, dim=-1, out=logits)
    else:
        log_probs = torch.log_softmax(logits.float(), dim=-1)
    return log_probs, log_probs.view(rows, vocab // size, size).amax(dim=-1), None


def select_candidates(logits: Tensor, scores: Tensor, count: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``count`` best extensions of each sentence: (scores, origin rows, tokens), each (n, count).

    logits: (n * width, V), sentence b owning rows b*width .. b*width+width-1 (may be overwritten with their
    log-softmax); scores: (n, width) the rows' log-probabilities so far. An extension's score is
    ``scores[b, row] + log_softmax(logits[row])[token]``; origin is the row within the sentence (0 .. width-1);
    best first. ``count`` <= width * V.

    Exact, without ranking all width * V candidates: each row's vocabulary is cut into blocks of
    `chunk_size` tokens; the ``count`` blocks (per sentence) with the highest maximum plus row score hold
    the ``count`` best extensions (a block outside them has a maximum no higher than ``count`` distinct
    extensions inside them), so only those blocks' entries are ranked. Per-row ``topk`` over the whole
    vocabulary costs more, most of it per-row overhead. A block's maximum and its entries
    are computed by the same subtraction (`block_log_probs`), so the best entry equals the block's maximum.
    """
    rows, vocab = logits.shape
    n, width = scores.shape
    size = chunk_size(vocab)
    blocks = vocab // size  # per row
    values, block_best, lse = block_log_probs(logits, size)
    block_max = block_best + scores.view(rows, 1)  # (n * width, blocks)
    take = min(count, width * blocks)
    best_blocks = block_max.view(n, width * blocks).topk(take, dim=1).indices  # (n, take), row * blocks + block
    global_blocks = best_blocks + (torch.arange(n, device=logits.device) * (width * blocks)).unsqueeze(1)
    entries = values.view(rows * blocks, size).index_select(0, global_blocks.view(-1)).view(n, take, size)
    origin_of_block = torch.div(best_blocks, blocks, rounding_mode="floor")  # (n, take)
    if lse is not None:
        row_of_block = torch.div(global_blocks, blocks, rounding_mode="floor")  # (n, take)
        entries = entries.sub_(lse[row_of_block].unsqueeze(2))  # log-probabilities, as block_best's
    entries = entries + scores.gather(1, origin_of_block).unsqueeze(2)  # the same sums as block_max's
    top_scores, position = entries.view(n, take * size).topk(count, dim=1)  # (n, count)
    slot = torch.div(position, size, rounding_mode="floor")
    block = best_blocks.gather(1, slot)  # (n, count)
    origin = torch.div(block, blocks, rounding_mode="floor")
    token = (block - origin * blocks) * size + (position - slot * size)
    return top_scores, origin, token


class BeamGroup(Group):
    """Sentences beam-searched together, each at its own step (a group of `decode_stream`): every sentence
    has ``width`` live rows (1 before its first step, then ``beam_size``), sentence b owning rows
    b*width .. b*width+width-1. Sentence b's finished hypotheses are kept in ``finished[b]``; a sentence is
    reported by ``advance`` (as ``(index, its nbest hypotheses)``) once it is done."""

    def __init__(self, model, src: Tensor, src_len: Tensor, indices: list[int], search: SearchSettings,
                 return_attention: bool = False, max_len: int | None = None) -> None:
        self.model, self.search, self.return_attention = model, search, return_attention
        self.track_attention = return_attention or search.coverage_penalty > 0.0
        device = src.device
        batch = src.size(0)
        self.indices = list(indices)
        self.limits = output_limits(src_len, max_len, search.max_len_ratio, search.max_len_extra).tolist()
        self.lengths = src_len.tolist()
        self.steps = [0] * batch  # tokens each sentence's live rows hold so far
        self.finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
        values, final, keys_proj, mask = model.encode(src, src_len)
        self.stepper = make_stepper(model, keys_proj, values, mask, project_values=True)
        self.state = self.stepper.prime_state(model.decoder.init_state(final))
        self.state_room = StateRoom()  # where the state's live rows are gathered (`advance`) and merged (`merge`)
        self.width = 1
        self.scores = torch.zeros((batch, 1), device=device)  # (n, width) log-probabilities of the live rows
        self.prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
        # the rows' tokens so far, right-aligned: sentence b's are the last steps[b] columns
        self.tokens = torch.empty((batch, 0), dtype=torch.long, device=device)  # (n * width, t)
        self.attention = torch.empty((batch, 0, values.size(1)), device=device) if self.track_attention else None
        self.logit_buffer: Tensor | None = None

    def _finish(self, sentences: list[int], rows: list[int], scores: list[float], lasts: list[int | None],
                step_weights: Tensor | None) -> None:
        """Finished hypotheses, in order, each of sentence ``sentences[i]`` (while it has fewer than
        ``beam_size``): live row ``rows[i]`` (before this step's reordering) extended with EOS (``lasts[i]``
        None) or, at the length limit, with the token ``lasts[i]``, of log-probability ``scores[i]``;
        ``step_weights``: this step's attention (rows, src_cols) when tracked. The rows' histories are
        gathered in one go."""
        index = torch.tensor(rows, dtype=torch.long, device=self.tokens.device)
        histories = self.tokens.index_select(0, index).tolist()
        if self.track_attention:  # (m, t + 1, src_cols): each row's attention so far and this step's
            attentions = torch.cat([self.attention.index_select(0, index),
                                    step_weights.index_select(0, index).unsqueeze(1)], dim=1)
        search = self.search
        for i, (b, score, last) in enumerate(zip(sentences, scores, lasts)):
            if len(self.finished[b]) >= search.beam_size:
                continue
            steps = self.steps[b]
            out = histories[i][len(histories[i]) - steps :]
            if last is not None:
                out.append(last)
            length = steps + 1  # the tokens with EOS, or at the limit the tokens with the last one
            norm = score / length_normaliser(length, search.length_penalty, search.alpha)
            att = None
            if self.track_attention:
                att = attentions[i, attentions.size(1) - length :, : self.lengths[b]].float()  # (length, src_len)
                norm += coverage_bonus(att.sum(dim=0), search.coverage_penalty)
            self.finished[b].append(Hypothesis(out, score, norm, att.cpu() if self.return_attention else None))

    def prepare(self) -> list[tuple[int, list[Hypothesis]]]:
        """The first step (one row per sentence, all beams would start from the same BOS), after which the
        group has ``beam_size`` rows per sentence, as every group it can join."""
        return self.advance() if self.width != self.search.beam_size else []

    def advance(self) -> list[tuple[int, list[Hypothesis]]]:
        search, k = self.search, self.search.beam_size
        n, width = len(self), self.width
        rows = n * width
        out = self._logits_out(rows, n * k)
        logits, state, weights = self.stepper.step(self.prev, self.state, width, out=out)
        vocab = logits.size(1)
        top_scores, origin, token = select_candidates(logits, self.scores, min(2 * k, width * vocab))  # (n, 2k)
        is_eos = token == EOS_ID
        done = [False] * n
        step_weights = weights.float() if self.track_attention else None

        # EOS extensions that rank among the first k are finished hypotheses
        found = (is_eos[:, :k] & torch.isfinite(top_scores[:, :k])).nonzero()  # (m, 2): sentence, rank
        if found.size(0):
            sentences, ranks = found[:, 0], found[:, 1]
            rows = (sentences * width + origin[sentences, ranks]).tolist()
            scores = top_scores[sentences, ranks].tolist()
            sentences = sentences.tolist()
            self._finish(sentences, rows, scores, [None] * len(rows), step_weights)
            for b in sentences:
                done[b] = len(self.finished[b]) >= k

        # the best k extensions that do not end in EOS stay alive
        new_width = min(k, top_scores.size(1))
        alive_scores, pick = top_scores.masked_fill(is_eos, float("-inf")).topk(new_width, dim=1)  # (n, k)
        offsets = (torch.arange(n, device=top_scores.device) * width).unsqueeze(1)  # (n, 1)
        next_rows = offsets + origin.gather(1, pick)  # (n, k) rows to continue
        next_tokens = token.gather(1, pick)  # (n, k)

        # a sentence with nbest finished hypotheses stops once none of its live ones ranks above its best
        # finished one any more (at their current length, as Hugging Face's beam search does); at its
        # length limit its live hypotheses count as finished (without EOS)
        normalisers = [length_normaliser(steps + 1, search.length_penalty, search.alpha) for steps in self.steps]
        live_best = (alive_scores[:, 0] / torch.tensor(normalisers, device=alive_scores.device)).tolist()
        at_limit = []
        for b in range(n):
            hyps = self.finished[b]
            if done[b]:
                continue
            if len(hyps) >= search.nbest and max(h.norm_score for h in hyps) >= live_best[b]:
                done[b] = True
            elif self.limits[b] <= self.steps[b] + 1:
                at_limit.append(b)
                done[b] = True
        if at_limit:
            limited = torch.tensor(at_limit, device=alive_scores.device)
            sentences, rows, scores, lasts = [], [], [], []
            for b, rows_b, scores_b, lasts_b in zip(at_limit, next_rows[limited].tolist(),
                                                    alive_scores[limited].tolist(), next_tokens[limited].tolist()):
                for row, score, last in zip(rows_b, scores_b, lasts_b):
                    if math.isfinite(score):
                        sentences.append(b)
                        rows.append(row)
                        scores.append(score)
                        lasts.append(last)
            self._finish(sentences, rows, scores, lasts, step_weights)

        # carry the live rows of the sentences still searched (the others leave, so the next steps compute
        # only for these), in one gather per tensor
        compaction = Compaction([b for b in range(n) if not done[b]], n)
        carried = compaction.select(next_rows).reshape(-1)  # (kept * k,)
        self.state = self.state_room.carry(state, carried)
        self.prev = compaction.select(next_tokens).reshape(-1)
        self.scores = compaction.select(alive_scores)
        longest = max((steps + 1 for b, steps in enumerate(self.steps) if not done[b]), default=0)
        history = self.tokens[:, self.tokens.size(1) - (longest - 1) :] if longest else self.tokens[:, :0]
        self.tokens = torch.cat([history.index_select(0, carried), self.prev.unsqueeze(1)], dim=1)
        if self.track_attention:
            history = self.attention[:, self.attention.size(1) - (longest - 1) :] if longest else self.attention[:, :0]
            step_att = step_weights.index_select(0, carried).unsqueeze(1)  # (kept * k, 1, src_cols)
            self.attention = torch.cat([history.index_select(0, carried), step_att], dim=1)
        self.width = new_width  # k after the first step
        self.steps = [steps + 1 for steps in self.steps]
        if compaction.keeps_all:
            return []
        completed = [(self.indices[b], self._best(b)) for b in range(n) if done[b]]
        self.stepper.keep(compaction)
        self._reorder_lists(compaction)
        return completed

    def _best(self, b: int) -> list[Hypothesis]:
        return sorted(self.finished[b], key=lambda h: h.norm_score, reverse=True)[: self.search.nbest]

    def _reorder_lists(self, compaction: Compaction) -> None:
        for name in ("indices", "limits", "lengths", "steps", "finished"):
            setattr(self, name, compaction.reorder(getattr(self, name)))

    def _keep(self, compaction: Compaction) -> None:
        """Keep only the sentences the compaction keeps, in its order."""
        width = self.width
        longest = max((self.steps[b] for b in compaction.order), default=0)  # older columns belong to no one
        self.state = compaction.apply_state(self.state, width)
        if compaction.split:  # the rows after (or before) this group's now belong to another group
            self.state_room = StateRoom()
        self.prev = compaction.apply(self.prev, width)
        self.stepper.keep(compaction)
        self.tokens = compaction.apply(self.tokens, width)[:, self.tokens.size(1) - longest :]
        if self.track_attention:
            self.attention = compaction.apply(self.attention, width)[:, self.attention.size(1) - longest :]
        self.scores = compaction.apply(self.scores)
        self._reorder_lists(compaction)

    def merge(self, other: BeamGroup) -> BeamGroup:
        """Append the other group's sentences (both with ``beam_size`` rows per sentence, or both still at
        their first step)."""
        if other.width != self.width:
            raise ValueError(f"cannot merge beam groups of widths {self.width} and {other.width}")
        self.stepper.merge(other.stepper, self.width)
        self.state = self.state_room.join(self.state, other.state)
        self.prev = torch.cat([self.prev, other.prev])
        self.scores = torch.cat([self.scores, other.scores])
        columns = max(self.tokens.size(1), other.tokens.size(1))
        self.tokens = torch.cat([pad_history(self.tokens, columns), pad_history(other.tokens, columns)])
        if self.track_attention:
            src_cols = max(self.attention.size(2), other.attention.size(2))
            self.attention = torch.cat([pad_history(self.attention, columns, src_cols),
                                        pad_history(other.attention, columns, src_cols)])
        for name in ("indices", "limits", "lengths", "steps", "finished"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


@torch.inference_mode()
def beam_search_stream(model, batches: Iterable[Batch], capacity: int, search: SearchSettings,
                       return_attention: bool = False) -> Iterator[tuple[int, list[Hypothesis]]]:
    """Beam-search every sentence of ``batches`` with `decode_stream`, up to ``capacity`` sentences at
    once: yields ``(index, nbest hypotheses)`` as sentences finish (see `beam_search`)."""
    def start(src: Tensor, src_len: Tensor, indices: list[int]) -> BeamGroup:
        return BeamGroup(model, src, src_len, indices, search, return_attention)

    yield from decode_stream(batches, start, capacity)


@torch.inference_mode()
def beam_search(
    model,
    src: Tensor,
    src_len: Tensor,
    beam_size: int = 5,
    nbest: int = 1,
    max_len: int | None = None,
    length_penalty: str = "gnmt",
    alpha: float = 0.6,
    coverage_penalty: float = 0.0,
    return_attention: bool = False,
    max_len_ratio: float = MAX_LEN_RATIO,
    max_len_extra: int = MAX_LEN_EXTRA,
) -> list[list[Hypothesis]]:
    """Beam-search a batch. src: (batch, src_len) ids ending in EOS; src_len: (batch,).

    Returns, for each sentence, its ``nbest`` best finished hypotheses, best first (by
    ``norm_score``). Output length limit per sentence: ``max_len`` if given, else ``max_len_ratio``
    x its source length + ``max_len_extra`` (`output_limits`). With ``beam_size=1`` this is greedy
    decoding.
    """
    search = SearchSettings(beam_size, nbest, length_penalty, alpha, coverage_penalty, max_len_ratio, max_len_extra)
    batch = src.size(0)
    if batch == 0:
        return []
    group = BeamGroup(model, src, src_len, list(range(batch)), search, return_attention, max_len)
    results: list[list[Hypothesis]] = [[] for _ in range(batch)]
    while len(group):
        for index, hyps in group.advance():
            results[index] = hyps
    return results
