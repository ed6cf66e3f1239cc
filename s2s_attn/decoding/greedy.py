"""Greedy decoding, batched over sentences."""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.tokenizer import BOS_ID, EOS_ID

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


@torch.no_grad()
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
    """
    return_attention = return_attention or return_heads
    limits = output_limits(src_len, max_len, max_len_ratio, max_len_extra)  # (batch,)
    batch_size = src.size(0)
    values, final, keys_proj, mask = model.encode(src, src_len)
    state = model.decoder.init_state(final)
    prev = torch.full((batch_size,), BOS_ID, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=src.device)
    ended = torch.zeros(batch_size, dtype=torch.bool, device=src.device)  # stopped by EOS (not by the limit)
    outputs, attentions, head_steps = [], [], []
    attention_module = getattr(model.decoder, "attention", None)
    for step in range(int(limits.max())):
        logits, state, weights = model.decoder.step_logits(prev, state, keys_proj, values, mask)
        prev = logits.argmax(dim=-1)  # (batch,): the argmax of the log-probabilities too
        prev = prev.masked_fill(finished, EOS_ID)
        outputs.append(prev)
        if return_attention:
            attentions.append(weights.float())
        if return_heads:
            heads = getattr(attention_module, "last_head_weights", None)  # (batch, h, src_len) or None
            head_steps.append(None if heads is None else heads.float())
        ended |= (prev == EOS_ID) & ~finished
        finished |= ended | (limits <= step + 1)
        if bool(finished.all()):
            break
    ids = torch.stack(outputs, dim=1).tolist()  # (batch, steps)
    hyps: list[list[int]] = []
    for row in ids:
        hyps.append(row[: row.index(EOS_ID)] if EOS_ID in row else row)
    if not return_attention:
        return hyps, None
    att = torch.stack(attentions, dim=1).cpu()  # (batch, steps, src_len)
    lengths = src_len.tolist()
    rows = [len(h) + int(e) for h, e in zip(hyps, ended.tolist())]  # + the step that wrote EOS
    per_sentence = [att[i, : rows[i], : lengths[i]] for i in range(len(hyps))]
    if not return_heads:
        return hyps, per_sentence
    if not head_steps or any(step is None for step in head_steps):
        return hyps, per_sentence, [None] * len(hyps)
    heads_all = torch.stack(head_steps, dim=2).cpu()  # (batch, h, steps, src_len)
    return hyps, per_sentence, [heads_all[i, :, : rows[i], : lengths[i]] for i in range(len(hyps))]
