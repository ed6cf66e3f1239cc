"""Attention mechanisms behind one interface and one registry.

Every attention module scores a decoder *query* against the encoder *keys*, turns the scores into
weights with a softmax over the real (non-padding) source positions, and returns the weighted sum
of the *values* (the context vector) together with the weights.

Interface (shared by every variant)::

    keys_proj = attention.precompute(keys)              # once per sentence
    context, weights = attention(query, keys_proj, values, mask)

    query:     (batch, query_size)                 or (batch, tgt_len, query_size)
    keys:      (batch, src_len, key_size)
    keys_proj: whatever `precompute` returned (for additive attention: (batch, src_len, attn_size))
    values:    (batch, src_len, value_size)
    mask:      (batch, src_len) bool, True on real tokens, False on padding
    context:   (batch, value_size)                 or (batch, tgt_len, value_size)
    weights:   (batch, src_len)                    or (batch, tgt_len, src_len)

Weights are exactly 0 on padding and sum to 1 over the real positions of each sentence.

New variants subclass `Attention`, implement `score` (and `precompute` if the keys can be
transformed once per sentence), and register themselves with `@register_attention("name")`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

ATTENTION_REGISTRY: dict[str, type[Attention]] = {}


def register_attention(name: str) -> Callable[[type[Attention]], type[Attention]]:
    """Class decorator: make an attention variant available as ``attention=<name>``."""

    def decorator(cls: type[Attention]) -> type[Attention]:
        if name in ATTENTION_REGISTRY:
            raise ValueError(f"attention {name!r} is registered twice")
        ATTENTION_REGISTRY[name] = cls
        cls.name = name
        return cls

    return decorator


def build_attention(name: str, query_size: int, key_size: int, **kwargs) -> Attention:
    """Build a registered attention by name; an unknown name lists the valid ones."""
    if name not in ATTENTION_REGISTRY:
        valid = ", ".join(sorted(ATTENTION_REGISTRY))
        raise ValueError(f"unknown attention {name!r}; valid names: {valid}")
    return ATTENTION_REGISTRY[name](query_size=query_size, key_size=key_size, **kwargs)


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dimension that gives exactly 0 weight where ``mask`` is False.

    scores: (batch, src_len) or (batch, tgt_len, src_len); mask: (batch, src_len), True = real.
    A row whose mask is all False (an empty source) gets all-zero weights instead of NaN.
    """
    if scores.dim() == 3:
        mask = mask.unsqueeze(1)  # (batch, 1, src_len)
    scores = scores.float().masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    # rows with no real token are all -inf -> NaN; make them 0 (and keep padding exactly 0)
    return torch.nan_to_num(weights, nan=0.0)


class Attention(nn.Module):
    """Base class: subclasses implement ``score`` (and optionally ``precompute``)."""

    name = "base"

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        self.query_size = query_size
        self.key_size = key_size

    def precompute(self, keys: Tensor) -> Tensor:
        """Transform the keys once per sentence. keys: (batch, src_len, key_size)."""
        return keys

    def score(self, query: Tensor, keys_proj: Tensor) -> Tensor:
        """Unnormalised scores: (batch, [tgt_len,] src_len)."""
        raise NotImplementedError

    def forward(
        self, query: Tensor, keys_proj: Tensor, values: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        if query.dim() not in (2, 3) or query.size(-1) != self.query_size:
            raise ValueError(
                f"{type(self).__name__}: query must be (batch, [tgt_len,] {self.query_size}), "
                f"got {tuple(query.shape)}"
            )
        if mask.shape != values.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match values {tuple(values.shape)}")
        scores = self.score(query, keys_proj)  # (batch, [tgt_len,] src_len)
        weights = masked_softmax(scores, mask).to(values.dtype)
        if weights.dim() == 2:
            context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)  # (batch, value_size)
        else:
            context = torch.bmm(weights, values)  # (batch, tgt_len, value_size)
        return context, weights


@register_attention("bahdanau")
class BahdanauAttention(Attention):
    """Additive attention (Bahdanau et al., 2015).

    score(q, k_j) = v · tanh(W_q q + W_k k_j)

    ``W_k k`` does not depend on the decoder step, so ``precompute`` does it once per sentence.
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int = 256, **_: object) -> None:
        super().__init__(query_size, key_size)
        self.key_layer = nn.Linear(key_size, attn_size, bias=False)
        self.query_layer = nn.Linear(query_size, attn_size, bias=True)
        self.energy_layer = nn.Linear(attn_size, 1, bias=False)

    def precompute(self, keys: Tensor) -> Tensor:
        return self.key_layer(keys)  # (batch, src_len, attn_size)

    def score(self, query: Tensor, keys_proj: Tensor) -> Tensor:
        query_proj = self.query_layer(query)  # (batch, [tgt_len,] attn_size)
        if query_proj.dim() == 2:
            energy = torch.tanh(query_proj.unsqueeze(1) + keys_proj)  # (batch, src_len, attn_size)
            return self.energy_layer(energy).squeeze(-1)  # (batch, src_len)
        # (batch, tgt_len, 1, attn) + (batch, 1, src_len, attn) -> (batch, tgt_len, src_len, attn)
        energy = torch.tanh(query_proj.unsqueeze(2) + keys_proj.unsqueeze(1))
        return self.energy_layer(energy).squeeze(-1)  # (batch, tgt_len, src_len)
