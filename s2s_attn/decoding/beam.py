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
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.tokenizer import BOS_ID, EOS_ID
from .greedy import MAX_LEN_EXTRA, MAX_LEN_RATIO, chunk_size, output_limits
from .step import make_stepper, reorder_state

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

    def search(self, model, src: Tensor, src_len: Tensor, return_attention: bool = False) -> list[list[Hypothesis]]:
        """`beam_search` with these settings."""
        return beam_search(model, src, src_len, self.beam_size, self.nbest, None, self.length_penalty, self.alpha,
                           self.coverage_penalty, return_attention, self.max_len_ratio, self.max_len_extra)


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


def select_candidates(log_probs: Tensor, scores: Tensor, count: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``count`` best extensions of each sentence: (scores, origin rows, tokens), each (n, count).

    log_probs: (n * width, V), sentence b owning rows b*width .. b*width+width-1; scores: (n, width) the
    rows' log-probabilities so far. An extension's score is ``scores[b, row] + log_probs[row, token]``;
    origin is the row within the sentence (0 .. width-1); best first. ``count`` <= width * V.

    Exact, without ranking all width * V candidates: each row's vocabulary is cut into blocks of
    `chunk_size` tokens; the ``count`` blocks (per sentence) with the highest maximum plus row score hold
    the ``count`` best extensions (a block outside them has a maximum no higher than ``count`` distinct
    extensions inside them), so only those blocks' entries are ranked. Per-row ``topk`` over the whole
    vocabulary costs about four times as much, most of it per-row overhead.
    """
    rows, vocab = log_probs.shape
    n, width = scores.shape
    size = chunk_size(vocab)
    blocks = vocab // size  # per row
    block_max = log_probs.view(rows, blocks, size).amax(dim=-1) + scores.view(rows, 1)  # (n * width, blocks)
    take = min(count, width * blocks)
    best_blocks = block_max.view(n, width * blocks).topk(take, dim=1).indices  # (n, take), row * blocks + block
    global_blocks = best_blocks + (torch.arange(n, device=log_probs.device) * (width * blocks)).unsqueeze(1)
    entries = log_probs.view(rows * blocks, size).index_select(0, global_blocks.view(-1)).view(n, take, size)
    origin_of_block = torch.div(best_blocks, blocks, rounding_mode="floor")  # (n, take)
    entries = entries + scores.gather(1, origin_of_block).unsqueeze(2)  # the same sums as scores + log_probs
    top_scores, position = entries.view(n, take * size).topk(count, dim=1)  # (n, count)
    slot = torch.div(position, size, rounding_mode="floor")
    block = best_blocks.gather(1, slot)  # (n, count)
    origin = torch.div(block, blocks, rounding_mode="floor")
    token = (block - origin * blocks) * size + (position - slot * size)
    return top_scores, origin, token


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
    if beam_size < 1:
        raise ValueError(f"beam size must be at least 1, got {beam_size}")
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be between 1 and the beam size ({beam_size}), got {nbest}")
    length_normaliser(1, length_penalty, alpha)  # fails early on an unknown kind
    limits = output_limits(src_len, max_len, max_len_ratio, max_len_extra).tolist()
    device = src.device
    batch, k = src.size(0), beam_size
    track_attention = return_attention or coverage_penalty > 0.0

    values, final, keys_proj, mask = model.encode(src, src_len)
    state = model.decoder.init_state(final)
    stepper = make_stepper(model, keys_proj, values, mask, project_values=True)
    # Rows: sentence b (position b in ``active``) owns rows b*width .. b*width+width-1. The first step
    # runs one row per sentence (all beams would start from the same BOS); its best first tokens then
    # become the sentence's k rows.
    width = 1
    src_cols = values.size(1)
    scores = torch.zeros((batch, width), device=device)  # (n, width) log-probabilities of the live rows
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    tokens = torch.empty((batch, 0), dtype=torch.long, device=device)  # (n * width, t)
    attention = torch.empty((batch, 0, src_cols), device=device) if track_attention else None
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done = [False] * batch
    lengths = src_len.tolist()
    active = list(range(batch))  # the sentences still being searched

    def finish(sentence: int, row: int, score: float, ended: bool, step_weights: Tensor | None) -> None:
        out = tokens[row].tolist()
        length = len(out) + (1 if ended else 0)
        norm = score / length_normaliser(length, length_penalty, alpha)
        att = None
        if track_attention:
            att = attention[row]
            if step_weights is not None:
                att = torch.cat([att, step_weights[row].unsqueeze(0)], dim=0)  # (length, src_cols)
            att = att[:, : lengths[sentence]].float()
            norm += coverage_bonus(att.sum(dim=0), coverage_penalty)
        finished[sentence].append(Hypothesis(out, score, norm, att.cpu() if return_attention else None))

    # One (rows, V) buffer for every step's logits, then log-probabilities in place: a fresh tensor this
    # large each step costs page faults (see ``Decoder.output_logits``), a second one memory traffic.
    vocab = model.decoder.output.out_features
    logit_buffer = torch.empty((batch * k, vocab), device=device, dtype=model.decoder.output.weight.dtype)
    for step in range(max(limits)):
        n = len(active)
        rows = n * width
        logits, state, weights = stepper.step(prev, state, width, out=logit_buffer[:rows])  # (n * width, V)
        if logits.dtype == torch.float32 and logits.is_contiguous():
            # row by row, each row read before it is written: in place gives the same values
            log_probs = torch.log_softmax(logits, dim=-1, out=logits)  # (n * width, V)
        else:
            log_probs = torch.log_softmax(logits.float(), dim=-1)
        top_scores, origin, token = select_candidates(log_probs, scores, min(2 * k, width * vocab))  # (n, 2k)
        is_eos = token == EOS_ID

        # EOS extensions that rank among the first k are finished hypotheses
        eos_first_k = is_eos[:, :k] & torch.isfinite(top_scores[:, :k])
        if bool(eos_first_k.any()):
            step_weights = weights.float() if track_attention else None
            for b, rank in eos_first_k.nonzero().tolist():
                sentence = active[b]
                if len(finished[sentence]) < k:
                    finish(sentence, b * width + int(origin[b, rank]), float(top_scores[b, rank]), True, step_weights)
                done[sentence] = len(finished[sentence]) >= k

        # the best k extensions that do not end in EOS stay alive
        new_width = min(k, top_scores.size(1))
        alive_scores, pick = top_scores.masked_fill(is_eos, float("-inf")).topk(new_width, dim=1)  # (n, k)
        offsets = (torch.arange(n, device=device) * width).unsqueeze(1)  # (n, 1)
        next_rows = (offsets + origin.gather(1, pick)).view(-1)  # (n * k,) rows to continue
        next_tokens = token.gather(1, pick).view(-1)
        scores = alive_scores
        state = reorder_state(state, next_rows)
        tokens = torch.cat([tokens.index_select(0, next_rows), next_tokens.unsqueeze(1)], dim=1)
        if track_attention:
            step_att = weights.float().index_select(0, next_rows).unsqueeze(1)  # (n * k, 1, src_cols)
            attention = torch.cat([attention.index_select(0, next_rows), step_att], dim=1)
        width = new_width  # k after the first step
        prev = next_tokens

        # a sentence with nbest finished hypotheses stops once none of its live ones ranks above its best
        # finished one any more (at their current length, as Hugging Face's beam search does); at its
        # length limit its live hypotheses count as finished (without EOS)
        live_best = (alive_scores[:, 0] / length_normaliser(step + 1, length_penalty, alpha)).tolist()
        for b, sentence in enumerate(active):
            hyps = finished[sentence]
            if done[sentence]:
                continue
            if len(hyps) >= nbest and max(h.norm_score for h in hyps) >= live_best[b]:
                done[sentence] = True
            elif limits[sentence] <= step + 1:
                for beam in range(width):
                    score = float(scores[b, beam])
                    if math.isfinite(score) and len(hyps) < k:
                        finish(sentence, b * width + beam, score, False, None)
                done[sentence] = True

        # drop the finished sentences' rows, so the next steps compute only for sentences still searched
        keep = [b for b, sentence in enumerate(active) if not done[sentence]]
        if not keep:
            break
        if len(keep) < n:
            keep_rows = torch.tensor([b * width + j for b in keep for j in range(width)], device=device)
            state, prev = reorder_state(state, keep_rows), prev.index_select(0, keep_rows)
            stepper.keep(torch.tensor(keep, device=device))
            tokens = tokens.index_select(0, keep_rows)
            attention = attention.index_select(0, keep_rows) if track_attention else None
            scores = scores.index_select(0, torch.tensor(keep, device=device))
            active = [active[b] for b in keep]

    return [sorted(hyps, key=lambda h: h.norm_score, reverse=True)[:nbest] for hyps in finished]
