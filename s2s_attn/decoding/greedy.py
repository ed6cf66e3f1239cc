"""Greedy decoding, batched over sentences."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ..data.tokenizer import BOS_ID, EOS_ID
from .step import make_stepper, reorder_state

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
    """``logits.argmax(dim=-1)`` for (rows, V), the same index (the first maximum), about six times faster
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
    largest divisor up to its square root. (A block max over 32k contiguous floats vectorises well: 160 is
    twice as fast as 80 or 125 there.)"""
    limit = math.isqrt(vocab)
    divisors = [size for size in range(1, 2 * limit + 1) if vocab % size == 0]
    aligned = [size for size in divisors if size % 32 == 0]
    return max(aligned) if aligned else max(size for size in divisors if size <= limit)


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
    return_attention = return_attention or return_heads
    limits = output_limits(src_len, max_len, max_len_ratio, max_len_extra)  # (batch,)
    batch_size, device = src.size(0), src.device
    steps = int(limits.max()) if batch_size else 0
    values, final, keys_proj, mask = model.encode(src, src_len)
    state = model.decoder.init_state(final)
    stepper = make_stepper(model, keys_proj, values, mask)
    src_cols = values.size(1)
    prev = torch.full((batch_size,), BOS_ID, dtype=torch.long, device=device)
    ids = torch.full((batch_size, max(steps, 1)), EOS_ID, dtype=torch.long, device=device)  # (batch, steps)
    lengths_out = limits.clone()  # pieces written before EOS (or the limit), per sentence
    ended = torch.zeros(batch_size, dtype=torch.bool, device=device)  # stopped by EOS (not by the limit)
    attention = torch.zeros((batch_size, max(steps, 1), src_cols), device=device) if return_attention else None
    head_steps: list[Tensor | None] = []
    attention_module = getattr(model.decoder, "attention", None)
    vocab = model.decoder.output.out_features
    logit_buffer = torch.empty((batch_size, vocab), device=device, dtype=model.decoder.output.weight.dtype)
    rows = torch.arange(batch_size, device=device)  # the sentences still decoded, in batch order
    row_limits = limits
    for step in range(steps):
        n = rows.size(0)
        logits, state, weights = stepper.step(prev, state, 1, out=logit_buffer[:n])
        prev = first_argmax(logits)  # (n,): the argmax of the log-probabilities too
        if n == batch_size:
            ids[:, step] = prev
            if return_attention:
                attention[:, step] = weights.float()
        else:
            ids[:, step].index_copy_(0, rows, prev)
            if return_attention:
                attention[:, step].index_copy_(0, rows, weights.float())
        if return_heads:
            heads = getattr(attention_module, "last_head_weights", None)  # (n, h, src_len) or None
            head_steps.append(None if heads is None else (rows, heads.float()))
        is_eos = prev == EOS_ID
        stop = is_eos | (row_limits <= step + 1)
        if not bool(stop.any()):
            continue
        # pieces: the tokens before this step's EOS, or up to this step's token at the limit
        lengths_out[rows[stop]] = step + 1 - is_eos[stop].long()
        ended[rows[stop & is_eos]] = True
        keep = ~stop
        if not bool(keep.any()):
            break
        rows, row_limits, prev = rows[keep], row_limits[keep], prev[keep]
        keep_rows = keep.nonzero().squeeze(1)
        state = reorder_state(state, keep_rows)
        stepper.keep(keep_rows)
    counts = lengths_out.tolist()
    hyps = [row[:count] for row, count in zip(ids.tolist(), counts)]
    if not return_attention:
        return hyps, None
    att = attention.cpu()
    lengths = src_len.tolist()
    att_rows = [c + int(e) for c, e in zip(counts, ended.tolist())]  # + the step that wrote EOS
    per_sentence = [att[i, : att_rows[i], : lengths[i]] for i in range(len(hyps))]
    if not return_heads:
        return hyps, per_sentence
    if not head_steps or any(step is None for step in head_steps):
        return hyps, per_sentence, [None] * len(hyps)
    heads_all = torch.zeros((batch_size, head_steps[0][1].size(1), len(head_steps), src_cols), device=device)
    for step, (step_rows, step_heads) in enumerate(head_steps):
        heads_all[:, :, step].index_copy_(0, step_rows, step_heads)
    heads_all = heads_all.cpu()  # (batch, h, steps, src_len)
    return hyps, per_sentence, [heads_all[i, :, : att_rows[i], : lengths[i]] for i in range(len(hyps))]
