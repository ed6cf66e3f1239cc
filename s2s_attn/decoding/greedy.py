"""Greedy decoding, batched over sentences."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import torch
from torch import Tensor

from ..data.tokenizer import BOS_ID, EOS_ID
from .step import cat_states, make_stepper
from .stream import Batch, Compaction, Group, decode_stream, pad_history

MAX_LEN_RATIO, MAX_LEN_EXTRA = 2.0, 10


def output_limits(src_len: Tensor, max_len: int | None = None, ratio: float = MAX_LEN_RATIO,
                  extra: int = MAX_LEN_EXTRA) -> Tensor:
    """The most output pieces each sentence may get: ``ratio * its source length + extra`` (source
    length counting its EOS), or ``max_len`` for every sentence when given. -> (batch,) long.

    Limits per sentence (not per batch) keep a sentence's translation independent of its batch mates.
    """
    if max_len is not None:
        return torch.full_like(src_len, int(max_len))
    return (src_len.float() * ratio).long() + int(extra)


def first_argmax(logits: Tensor) -> Tensor:
    """``logits.argmax(dim=-1)`` for (rows, V), the same index (the first maximum), faster
    on the CPU: the maxima of blocks of `chunk_size` entries (a plain vectorised reduction), the first
    block holding the row's maximum, and the first maximum within that block (index-tracking reductions,
    the slow kind, over V / size and size entries instead of V)."""
    rows, vocab = logits.shape
    size = chunk_size(vocab)
    if size == 1:
        return logits.argmax(dim=-1)
    blocks = logits.view(rows, vocab // size, size)
    block = blocks.amax(dim=-1).argmax(dim=-1)  # (rows,)
    picked = blocks.view(-1, size).index_select(0, block + torch.arange(rows, device=logits.device) * (vocab // size))
    return block * size + picked.argmax(dim=-1)


@functools.lru_cache(maxsize=64)
def chunk_size(vocab: int) -> int:
    """The width of the blocks `first_argmax` and the beam's ``select_candidates`` reduce first: the largest
    divisor of ``vocab`` up to twice its square root that is a multiple of 32 (160 for 8,000), else the
    largest divisor up to its square root. (A block max over a multiple of 32 contiguous floats vectorises
    well.)"""
    limit = math.isqrt(vocab)
    divisors = [size for size in range(1, 2 * limit + 1) if vocab % size == 0]
    aligned = [size for size in divisors if size % 32 == 0]
    return max(aligned) if aligned else max(size for size in divisors if size <= limit)


class GreedyGroup(Group):
    """Sentences decoded greedily together, each at its own step (a group of `decode_stream`): one row per
    sentence. ``advance`` reports a sentence as ``(index, (ids, attention or None, heads or None))`` at the
    step it stops (see `greedy_decode` for the three)."""

    def __init__(self, model, src: Tensor, src_len: Tensor, indices: list[int], max_len: int | None = None,
                 return_attention: bool = False, return_heads: bool = False,
                 max_len_ratio: float = MAX_LEN_RATIO, max_len_extra: int = MAX_LEN_EXTRA) -> None:
        self.model = model
        self.return_heads = return_heads
        self.return_attention = return_attention or return_heads
        device = src.device
        batch = src.size(0)
        self.indices = list(indices)
        self.lengths = src_len.tolist()
        self.limits = output_limits(src_len, max_len, max_len_ratio, max_len_extra)  # (n,)
        self.steps = torch.zeros(batch, dtype=torch.long, device=device)  # (n,) pieces decoded so far
        values, final, keys_proj, mask = model.encode(src, src_len)
        self.stepper = make_stepper(model, keys_proj, values, mask)
        self.state = self.stepper.prime_state(model.decoder.init_state(final))
        self.prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
        # histories, right-aligned: sentence b's are the last steps[b] columns
        self.tokens = torch.empty((batch, 0), dtype=torch.long, device=device)  # (n, t)
        src_cols = values.size(1)
        self.attention = torch.empty((batch, 0, src_cols), device=device) if self.return_attention else None
        self.heads: Tensor | None = None  # (n, h, t, S) once a step has given per-head weights
        self.logit_buffer: Tensor | None = None

    def prepare(self) -> list:
        """Ready to join a pool as it is (nothing to do before the first step)."""
        return []

    def advance(self) -> list[tuple[int, tuple[list[int], Tensor | None, Tensor | None]]]:
        logits, self.state, weights = self.stepper.step(self.prev, self.state, 1, out=self._logits_out(len(self), 64))
        self.prev = first_argmax(logits)  # (n,): the argmax of the log-probabilities too
        self.steps += 1
        self.tokens = torch.cat([self.tokens, self.prev.unsqueeze(1)], dim=1)
        if self.return_attention:
            self.attention = torch.cat([self.attention, weights.float().unsqueeze(1)], dim=1)
        if self.return_heads:
            heads = getattr(getattr(self.model.decoder, "attention", None), "last_head_weights", None)
            if heads is not None:  # (n, h, src_len)
                if self.heads is None:
                    self.heads = heads.new_zeros((*heads.shape[:2], self.tokens.size(1) - 1, heads.size(2)))
                self.heads = torch.cat([self.heads, heads.float().unsqueeze(2)], dim=2)
        is_eos = self.prev == EOS_ID
        stop = is_eos | (self.limits <= self.steps)
        if not bool(stop.any()):
            return []
        completed = []
        columns = self.tokens.size(1)
        stopped = stop.nonzero().squeeze(1).tolist()
        for b, steps, ended in zip(stopped, self.steps[stop].tolist(), is_eos[stop].tolist()):
            first = columns - steps
            ids = self.tokens[b, first : columns - int(ended)].tolist()  # the pieces before EOS
            att = heads = None
            if self.return_attention:  # one row per step, EOS's included
                att = self.attention[b, first:, : self.lengths[b]].cpu()
            if self.heads is not None:
                heads = self.heads[b, :, first:, : self.lengths[b]].cpu()
            completed.append((self.indices[b], (ids, att, heads)))
        self._keep(Compaction((~stop).nonzero().squeeze(1).tolist(), len(self)))
        return completed

    def _keep(self, compaction: Compaction) -> None:
        """Keep only the sentences the compaction keeps, in its order."""
        keep = compaction.apply
        self.state = compaction.apply_state(self.state)
        self.prev = keep(self.prev)
        self.stepper.keep(compaction)
        self.limits, self.steps = keep(self.limits), keep(self.steps)
        longest = int(self.steps.max()) if compaction.count else 0  # older columns belong to no live sentence
        self.tokens = keep(self.tokens)[:, self.tokens.size(1) - longest :]
        if self.attention is not None:
            self.attention = keep(self.attention)[:, self.attention.size(1) - longest :]
        if self.heads is not None:
            self.heads = keep(self.heads)[:, :, self.heads.size(2) - longest :]
        self.indices = compaction.reorder(self.indices)
        self.lengths = compaction.reorder(self.lengths)

    def merge(self, other: GreedyGroup) -> GreedyGroup:
        """Append the other group's sentences."""
        self.stepper.merge(other.stepper, 1)
        self.state = cat_states(self.state, other.state)
        self.prev = torch.cat([self.prev, other.prev])
        self.limits, self.steps = torch.cat([self.limits, other.limits]), torch.cat([self.steps, other.steps])
        columns = max(self.tokens.size(1), other.tokens.size(1))
        self.tokens = torch.cat([pad_history(self.tokens, columns), pad_history(other.tokens, columns)])
        if self.attention is not None:
            src_cols = max(self.attention.size(2), other.attention.size(2))
            self.attention = torch.cat([pad_history(self.attention, columns, src_cols),
                                        pad_history(other.attention, columns, src_cols)])
        if self.heads is not None or other.heads is not None:
            raise ValueError("per-head weights are kept for a single batch only (return_heads)")
        self.indices += other.indices
        self.lengths += other.lengths
        return self


@torch.inference_mode()
def greedy_stream(model, batches: Iterable[Batch], capacity: int, return_attention: bool = False,
                  max_len_ratio: float = MAX_LEN_RATIO, max_len_extra: int = MAX_LEN_EXTRA):
    """Greedy-decode every sentence of ``batches`` with `decode_stream`, up to ``capacity`` sentences at
    once: yields ``(index, (ids, attention or None, None))`` as sentences finish (see `greedy_decode`)."""
    def start(src: Tensor, src_len: Tensor, indices: list[int]) -> GreedyGroup:
        return GreedyGroup(model, src, src_len, indices, None, return_attention, False, max_len_ratio, max_len_extra)

    yield from decode_stream(batches, start, capacity)


@torch.inference_mode()
def greedy_decode(
    model, src: Tensor, src_len: Tensor, max_len: int | None = None, return_attention: bool = False,
    return_heads: bool = False, max_len_ratio: float = MAX_LEN_RATIO, max_len_extra: int = MAX_LEN_EXTRA,
):
    """Decode a batch greedily.

    src: (batch, src_len) ids ending in EOS; src_len: (batch,). A sentence stops at EOS or after
    `output_limits` pieces (``max_len`` for all, else ``max_len_ratio`` x its source length +
    ``max_len_extra``).
    Returns the output ids of each sentence (without BOS/EOS) and, if asked, each sentence's
    attention matrix (out_len + 1 for EOS, or out_len when it stopped at the limit; src_len) as float
    tensors on the CPU (for multi-head attention the mean of the heads).

    With ``return_heads`` (implies ``return_attention``) a third item is returned: per sentence the
    per-head weights (heads, out_len + 1, src_len) taken from the attention module's
    ``last_head_weights`` after every step, or None for each sentence when the attention has no heads.

    Sentences that have stopped leave the batch (their rows of the state and of the encoder outputs are
    dropped at the step they stop), so the later steps compute for the others only.
    """
    batch = src.size(0)
    group = GreedyGroup(model, src, src_len, list(range(batch)), max_len, return_attention, return_heads,
                        max_len_ratio, max_len_extra)
    results: list = [([], None, None)] * batch
    while len(group):
        for index, result in group.advance():
            results[index] = result
    hyps = [ids for ids, _, _ in results]
    if not (return_attention or return_heads):
        return hyps, None
    attention = [att for _, att, _ in results]
    if not return_heads:
        return hyps, attention
    return hyps, attention, [heads for _, _, heads in results]
