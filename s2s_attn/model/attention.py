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

Registered variants (``attention=<name>``; q the decoder query, k_j the j-th key)::

    bahdanau       v · tanh(W_q q + b + W_k k_j)             additive (Bahdanau et al., 2015)
    luong_concat   v · tanh(W_q q + W_k k_j)                 Luong "concat": v · tanh(W [q; k_j])
    luong_general  q · (W k_j)                               Luong "general" (bilinear)
    luong_dot      q · k_j                                   Luong "dot" (query_size == key_size)
    scaled_dot     (W_q q) · (W_k k_j) / sqrt(d)             Vaswani et al. (2017), one head
    multihead      h heads of scaled_dot, W_o [head_1; ...; head_h]

The part that only depends on the keys (``W_k k``) is computed by ``precompute`` once per sentence.

New variants subclass `Attention`, implement `score` (and `precompute` if the keys can be
transformed once per sentence), and register themselves with `@register_attention("name")`.
Constructors take ``query_size``, ``key_size`` and the keyword arguments of ``build_attention``
(``attn_size``, ``heads``); they ignore the ones they do not use.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .registry import Registry

ATTENTION_REGISTRY = Registry("attention")
register_attention = ATTENTION_REGISTRY.register


def build_attention(name: str, query_size: int, key_size: int, **kwargs) -> Attention:
    """Build a registered attention by name; an unknown name lists the valid ones."""
    return ATTENTION_REGISTRY.get_class(name)(query_size=query_size, key_size=key_size, **kwargs)


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dimension that gives exactly 0 weight where ``mask`` is False.

    scores: (batch, src_len) or (batch, tgt_len, src_len); mask: (batch, src_len), True = real.
    A row whose mask is all False (an empty source) gets all-zero weights instead of NaN.
    """
    if scores.dim() == 3:
        mask = mask.unsqueeze(1)  # (batch, 1, src_len)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32)).masked_fill(~mask, float("-inf"))
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

    def check_inputs(self, query: Tensor, values: Tensor, mask: Tensor) -> None:
        """Fail with a readable message on a query of the wrong size or a mask that does not fit."""
        if query.dim() not in (2, 3) or query.size(-1) != self.query_size:
            raise ValueError(
                f"{type(self).__name__}: query must be (batch, [tgt_len,] {self.query_size}), "
                f"got {tuple(query.shape)}"
            )
        if mask.shape != values.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match values {tuple(values.shape)}")

    def forward(
        self, query: Tensor, keys_proj: Tensor, values: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        self.check_inputs(query, values, mask)
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
    query (batch, [tgt_len,] query_size), keys (batch, src_len, key_size); W_q: (attn_size, query_size),
    W_k: (attn_size, key_size), v: (attn_size,); ``attn_size`` is ``attention.size``.
    """

    query_bias = True  # the bias b of W_q q + b (Luong's concat score has none)

    def __init__(self, query_size: int, key_size: int, attn_size: int = 256, **_: object) -> None:
        super().__init__(query_size, key_size)
        self.key_layer = nn.Linear(key_size, attn_size, bias=False)
        self.query_layer = nn.Linear(query_size, attn_size, bias=self.query_bias)
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


@register_attention("luong_concat")
class LuongConcatAttention(BahdanauAttention):
    """Luong et al. (2015) "concat" score.

    score(q, k_j) = v · tanh(W [q; k_j]) = v · tanh(W_q q + W_k k_j)

    W (attn_size, query_size + key_size) is kept as its two blocks W_q and W_k, so that ``W_k k``
    is precomputed once per sentence: the additive score of `BahdanauAttention` without the
    query bias. keys_proj: (batch, src_len, attn_size).
    """

    query_bias = False


def dot_scores(query: Tensor, keys: Tensor) -> Tensor:
    """q · k_j for every key, in one batched matrix product.

    query: (batch, d) or (batch, tgt_len, d); keys: (batch, src_len, d)
    -> (batch, src_len) or (batch, tgt_len, src_len).
    """
    if query.dim() == 2:
        return torch.bmm(keys, query.unsqueeze(2)).squeeze(2)  # (batch, src_len)
    return torch.bmm(query, keys.transpose(1, 2))  # (batch, tgt_len, src_len)


@register_attention("luong_dot")
class LuongDotAttention(Attention):
    """Luong et al. (2015) "dot" score: no parameters.

    score(q, k_j) = q · k_j

    The query and the keys must have the same size (the default decoder_hidden 512 equals the
    biGRU's 2 x 256); otherwise construction fails and suggests ``luong_general``, which learns
    the map between the two spaces. keys_proj is the keys themselves: (batch, src_len, key_size).
    """

    def __init__(self, query_size: int, key_size: int, **_: object) -> None:
        super().__init__(query_size, key_size)
        if query_size != key_size:
            raise ValueError(
                f"attention=luong_dot needs the decoder state and the encoder outputs to have the same "
                f"size (query_size {query_size} != key_size {key_size}); set model.decoder_hidden to "
                f"{key_size} or use attention=luong_general, which learns a projection between them"
            )

    def score(self, query: Tensor, keys_proj: Tensor) -> Tensor:
        return dot_scores(query, keys_proj)  # (batch, [tgt_len,] src_len)


@register_attention("luong_general")
class LuongGeneralAttention(Attention):
    """Luong et al. (2015) "general" (bilinear) score.

    score(q, k_j) = q · (W k_j),  W: (query_size, key_size)

    ``W k`` is precomputed once per sentence: keys_proj (batch, src_len, query_size).
    """

    def __init__(self, query_size: int, key_size: int, **_: object) -> None:
        super().__init__(query_size, key_size)
        self.key_layer = nn.Linear(key_size, query_size, bias=False)

    def precompute(self, keys: Tensor) -> Tensor:
        return self.key_layer(keys)  # (batch, src_len, query_size)

    def score(self, query: Tensor, keys_proj: Tensor) -> Tensor:
        return dot_scores(query, keys_proj)  # (batch, [tgt_len,] src_len)


@register_attention("scaled_dot")
class ScaledDotAttention(Attention):
    """Scaled dot-product attention with learned projections (Vaswani et al., 2017), one head.

    score(q, k_j) = (W_q q) · (W_k k_j) / sqrt(d),  W_q: (d, query_size), W_k: (d, key_size)

    d is ``attn_size`` (``attention.size``). ``W_k k`` is precomputed once per sentence:
    keys_proj (batch, src_len, d). The context is a weighted sum of the unprojected values.
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int = 256, **_: object) -> None:
        super().__init__(query_size, key_size)
        self.scale = 1.0 / math.sqrt(attn_size)
        self.query_layer = nn.Linear(query_size, attn_size, bias=False)
        self.key_layer = nn.Linear(key_size, attn_size, bias=False)

    def precompute(self, keys: Tensor) -> Tensor:
        return self.key_layer(keys)  # (batch, src_len, d)

    def score(self, query: Tensor, keys_proj: Tensor) -> Tensor:
        query_proj = self.query_layer(query)  # (batch, [tgt_len,] d)
        return dot_scores(query_proj, keys_proj) * self.scale  # (batch, [tgt_len,] src_len)


@register_attention("multihead")
class MultiHeadAttention(Attention):
    """Multi-head scaled dot-product attention (Vaswani et al., 2017).

    For each head i = 1..h, with head size d_h = size / h:

        a_i      = softmax_j( (W_q^i q) · (W_k^i k_j) / sqrt(d_h) )     over real positions j
        head_i   = sum_j a_ij (W_v^i v_j)
        context  = W_o [head_1; ...; head_h]                            (value_size,)
        weights  = (1/h) sum_i a_i                                      (reported, for plots)

    W_q^i: (d_h, query_size), W_k^i: (d_h, key_size), W_v^i: (d_h, value_size) are the row blocks
    of W_q, W_k, W_v (size x ...); W_o: (value_size, size), so the context keeps the value size
    the decoder expects. Values are the keys here (the encoder outputs): value_size = key_size.

    ``W_k k`` and ``W_v v`` do not depend on the decoder step: ``precompute`` projects both once per
    sentence and splits them into heads, returning ``(keys_proj, values_proj)``, each
    (batch, h, src_len, d_h); ``forward`` then uses ``values`` only for its shape checks. The per-head
    weights of the last call are kept in ``last_head_weights`` (batch, h, [tgt_len,] src_len), detached.
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int = 256, heads: int = 1, **_: object) -> None:
        super().__init__(query_size, key_size)
        if heads < 1 or attn_size % heads != 0:
            raise ValueError(
                f"attention=multihead needs attention.size divisible by attention.heads "
                f"(got size {attn_size}, heads {heads})"
            )
        self.heads, self.head_size = heads, attn_size // heads
        self.scale = 1.0 / math.sqrt(self.head_size)
        self.query_layer = nn.Linear(query_size, attn_size, bias=False)
        self.key_layer = nn.Linear(key_size, attn_size, bias=False)
        self.value_layer = nn.Linear(key_size, attn_size, bias=False)
        self.output_layer = nn.Linear(attn_size, key_size, bias=False)
        self.last_head_weights: Tensor | None = None

    def split_heads(self, x: Tensor) -> Tensor:
        """(batch, len, h * d_h) -> (batch, h, len, d_h)."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_size).transpose(1, 2)

    def precompute(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """keys = values = encoder outputs (batch, src_len, key_size) -> 2 x (batch, h, src_len, d_h)."""
        return self.split_heads(self.key_layer(keys)), self.split_heads(self.value_layer(keys))

    def score(self, query: Tensor, keys_proj: tuple[Tensor, Tensor]) -> Tensor:
        """query (batch, tgt_len, query_size) -> per-head scores (batch, h, tgt_len, src_len)."""
        keys_proj = keys_proj[0]  # (batch, h, src_len, d_h)
        query_proj = self.split_heads(self.query_layer(query))  # (batch, h, tgt_len, d_h)
        return torch.matmul(query_proj, keys_proj.transpose(2, 3)) * self.scale  # (batch, h, tgt_len, src_len)

    def forward(
        self, query: Tensor, keys_proj: Tensor, values: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        self.check_inputs(query, values, mask)
        if values.size(-1) != self.key_size:
            raise ValueError(f"multihead: values must have key_size {self.key_size} features, got {values.size(-1)}")
        one_step = query.dim() == 2
        if one_step:
            query = query.unsqueeze(1)  # (batch, 1, query_size)
        batch, tgt_len, _ = query.shape
        src_len = values.size(1)
        scores = self.score(query, keys_proj)  # (batch, h, tgt_len, src_len)
        head_weights = masked_softmax(scores.reshape(batch, self.heads * tgt_len, src_len), mask)
        head_weights = head_weights.view(batch, self.heads, tgt_len, src_len).to(values.dtype)
        heads = torch.matmul(head_weights, keys_proj[1])  # (batch, h, tgt_len, d_h)
        heads = heads.transpose(1, 2).reshape(batch, tgt_len, self.heads * self.head_size)  # (batch, tgt_len, size)
        context = self.output_layer(heads)  # (batch, tgt_len, value_size)
        weights = head_weights.mean(dim=1)  # (batch, tgt_len, src_len)
        if one_step:
            head_weights = head_weights.squeeze(2)  # (batch, h, src_len)
            context, weights = context.squeeze(1), weights.squeeze(1)  # (batch, value_size), (batch, src_len)
        self.last_head_weights = head_weights.detach()
        return context, weights
