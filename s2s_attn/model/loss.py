"""The training loss: summed cross-entropy of the vocabulary projection, with label smoothing; and guided
alignment's term, the cross-entropy of the attention against a target attention.

    loss = sum_i  (1 - eps) * -log p(y_i | x_i)  +  eps * mean_j -log p(j | x_i),   p = softmax(W x + b)
    guided alignment = sum_t sum_j -q_tj log a_tj   (q: the aligner's links, each row summing to 1 or 0)

This is the reference: the logits of every position, then ``cross_entropy``. On the CPU `s2s_attn.fast` may
compute the same sum a block of positions at a time without the (positions, vocab) buffers
(``Seq2Seq.fast_loss``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

#: a fast implementation's signature: (features (n, d), weight (vocab, d), bias (vocab,) or None, targets (n,),
#: label_smoothing) -> the float32 scalar `linear_cross_entropy` returns
FastLoss = Callable[[Tensor, Tensor, "Tensor | None", Tensor, float], Tensor]


def linear_cross_entropy(features: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                         label_smoothing: float = 0.0) -> Tensor:
    """features (n, d), weight (vocab, d), bias (vocab,) or None, targets (n,) -> the summed loss, a float32
    scalar (the softmax in float32 whatever the autocast)."""
    if features.size(0) != targets.size(0):
        raise ValueError(f"{features.size(0)} feature rows but {targets.size(0)} targets")
    logits = F.linear(features, weight, bias).float()  # (n, vocab)
    return F.cross_entropy(logits, targets, label_smoothing=float(label_smoothing), reduction="sum")


def guided_alignment_loss(attention: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """attention (batch, tgt_len, src_len): the model's, each row a distribution over the source; target (same
    shape): the attention it is pulled towards, rows summing to 1 (supervised) or 0 (not) -> the summed
    cross-entropy -sum q log(a + eps), a float32 scalar (eps keeps the gradient finite where a is 0)."""
    if attention.shape != target.shape:
        raise ValueError(f"attention of shape {tuple(attention.shape)} but a target of shape {tuple(target.shape)}")
    supervised = target > 0
    return -(target[supervised] * torch.log(attention.float()[supervised] + eps)).sum()
