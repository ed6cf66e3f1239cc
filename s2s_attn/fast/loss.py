"""`s2s_attn.model.loss.linear_cross_entropy` computed a block of target positions at a time (``Seq2Seq.fast_loss``).

    loss = sum_i  (1 - eps) * -log p(y_i | x_i)  +  eps * mean_j -log p(j | x_i),   p = softmax(W x + b)

(``eps`` is label smoothing, as ``torch.nn.CrossEntropyLoss(label_smoothing=eps, reduction="sum")``.)

The plain way, ``cross_entropy(linear(x, W, b), y)``, materialises the (tokens, vocab) logits, their log-softmax,
the log-softmax's gradient and the logits' gradient: four fresh tensors of ~30 MB for a batch of 64 sentences and an
8k vocabulary, written and read once each. Here the logits of ``chunk_rows`` positions at a time are computed,
turned into the loss and, in the same pass, into the gradient ``softmax - target distribution`` (one compiled pass
per row: `s2s_attn.fast.kernels`, which this needs), which goes straight into the three gradient products (for x, W
and b) while it is still in cache. The backward pass only scales the stored gradients by the incoming one (the loss
is a scalar at the end of the graph). Same products, same maths, with fewer passes over memory and no (tokens,
vocab) buffers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import gemm, kernels

# Rows per block when the caller does not say. In float32 a bigger block multiplies faster (the products' inner
# dimension is only the feature size), so a batch of 64 sentences is one block; 1024 rows bound a block's logits
# (32 MiB at 8k pieces) for token budgets. bf16 pads every block to its full size (`_bf16_forward`), so there the
# smaller block wins.
FLOAT32_CHUNK_ROWS = 1024
BF16_CHUNK_ROWS = 128


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``features @ weight.T + bias`` against ``targets``; see the module doc.

    features: (n, d); weight: (vocab, d); bias: (vocab,) or None; targets: (n,) int64. Returns a float32
    scalar. The softmax, the loss and the logits' gradient are float32 whatever the autocast.

    Under bf16 autocast the three products take bf16 operands (`_bf16_forward`); under fp16 autocast, or
    none, they are float32 (features in fp16 are cast up, and their gradient back).
    """

    @staticmethod
    def forward(ctx, features, weight, bias, targets, label_smoothing, chunk_rows):
        device_type = features.device.type
        bf16 = torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16
        with torch.autocast(device_type, enabled=False):
            ctx.features_dtype = features.dtype
            want_grad = ctx.needs_input_grad[:3]
            forward = _bf16_forward if bf16 else _float32_forward
            chunk_rows = chunk_rows or (BF16_CHUNK_ROWS if bf16 else FLOAT32_CHUNK_ROWS)
            loss, grad_x, grad_w, grad_b = forward(features, weight, bias, targets, label_smoothing, chunk_rows,
                                                   want_grad)
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        ctx.weight_dtype, ctx.bias_dtype = weight.dtype, None if bias is None else bias.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        scale = grad_loss.float()
        return (
            None if grad_x is None else (grad_x.float() * scale).to(ctx.features_dtype),
            None if grad_w is None else (grad_w.float() * scale).to(ctx.weight_dtype),
            None if grad_b is None else (grad_b * scale).to(ctx.bias_dtype),
            None,
            None,
            None,
        )


def _block_loss(logits: Tensor, bias: Tensor | None, targets: Tensor, label_smoothing: float, want_grad: bool):
    """One block's summed loss and, if ``want_grad``, its logits' gradient (softmax - target distribution), in one
    compiled pass per row (`cross_entropy_block`), which first adds the bias (None: none) to the logits.

    logits: (c, vocab) float32 on the CPU, contiguous, overwritten (the gradient is written into it); bias: (vocab,)
    float32; targets: (c,) int64. -> (loss (), gradient (c, vocab) or None). Per row, with z the biased logits:
    loss = (1 - eps) (lse(z) - z_y) + eps (lse(z) - mean_j z_j), gradient = softmax(z) - (1 - eps) onehot(y) - eps / V.
    """
    row_loss = logits.new_empty(logits.size(0))
    kernels.ops().cross_entropy_block(logits, bias, targets, label_smoothing, want_grad, row_loss)
    return row_loss.sum(), (logits if want_grad else None)


def _add_column_sums(total: Tensor | None, grad: Tensor) -> Tensor:
    """The bias' gradient so far plus this block's, (vocab,) float32 (the first block's sums when None)."""
    sums = grad.sum(dim=0, dtype=torch.float32)
    return sums if total is None else total.add_(sums)


def _float32_forward(features, weight, bias, targets, label_smoothing, chunk_rows, want_grad):
    """-> (loss, grad_x (n, d), grad_w (vocab, d), grad_b (vocab,)), all float32 (a gradient None unless wanted).
    Each block's gradient goes into the three products while it is still in cache."""
    features, w = features.float(), weight.float()  # (n, d), (vocab, d): no-ops in fp32
    bias, targets = None if bias is None else bias.float(), targets.contiguous()
    grad_x = torch.empty_like(features) if want_grad[0] else None  # (n, d)
    grad_w = grad_b = None  # (vocab, d), (vocab,): the first block's products, then sums
    loss = torch.zeros((), device=features.device)
    for start in range(0, features.size(0), chunk_rows):
        x, block_targets = features[start : start + chunk_rows], targets[start : start + chunk_rows]  # (c, d), (c,)
        # the kernel adds the bias (addmm would first copy it into every row)
        block_loss, grad = _block_loss(gemm.linear(x, w), bias, block_targets, label_smoothing, any(want_grad))
        loss += block_loss
        if grad is None:
            continue
        if grad_x is not None:
            gemm.matmul(grad, w, out=grad_x[start : start + chunk_rows])  # (c, d)
        if want_grad[1] and grad_w is None:
            grad_w = torch.mm(grad.t(), x)  # (vocab, d)
        elif want_grad[1]:  # in place, written as out= so that torch's FLOP counter sees it
            torch.addmm(grad_w, grad.t(), x, out=grad_w)
        if want_grad[2]:
            grad_b = _add_column_sums(grad_b, grad)
    return loss, grad_x, grad_w, grad_b


def _bf16_forward(features, weight, bias, targets, label_smoothing, chunk_rows, want_grad):
    """`_float32_forward` with bf16 products, for bf16 autocast: -> (loss, grad_x (n, d) bf16, grad_w (vocab, d)
    bf16, grad_b (vocab,) float32).

    On a CPU with AMX a bf16 product of these shapes beats float32, but oneDNN prepares each new shape first
    (a cost paid per shape), so every block
    has ``chunk_rows`` rows (the features are padded with zero rows) and the two gradient products run
    once, after the loop, over all blocks' gradients (kept in bf16, 0 on the padding rows): their shapes
    change only with the number of blocks. The logits come back as bf16 and are widened to float32 before the
    kernel adds the float32 bias, so the softmax is taken in float32. The gradients of
    features and weight are rounded to bf16 once, as autocast's own products' are."""
    n, d = features.shape
    vocab = weight.size(0)
    padded = -(-n // chunk_rows) * chunk_rows
    x = features.new_empty((padded, d), dtype=torch.bfloat16)  # (padded, d), zero rows after the n real ones
    x[:n] = features
    x[n:] = 0.0
    w = weight.to(torch.bfloat16)  # (vocab, d)
    bias32, targets = None if bias is None else bias.float(), targets.contiguous()
    gradients = None
    if want_grad[0] or want_grad[1]:  # (padded, vocab) bf16: the logits' gradient of every row
        gradients = x.new_empty((padded, vocab))
        gradients[n:] = 0.0
    grad_b = None
    loss = torch.zeros((), device=features.device)
    for start in range(0, n, chunk_rows):
        rows = min(chunk_rows, n - start)
        product = torch.mm(x[start : start + chunk_rows], w.t())  # (chunk_rows, vocab) bf16
        logits = product[:rows].float()  # the kernel adds the float32 bias
        block_loss, grad = _block_loss(logits, bias32, targets[start : start + rows], label_smoothing,
                                       any(want_grad))
        loss += block_loss
        if grad is None:
            continue
        if gradients is not None:
            gradients[start : start + rows] = grad
        if want_grad[2]:
            grad_b = _add_column_sums(grad_b, grad)
    grad_x = torch.mm(gradients, w)[:n] if want_grad[0] else None  # (n, d)
    grad_w = torch.mm(gradients.t(), x) if want_grad[1] else None  # (vocab, d)
    return loss, grad_x, grad_w, grad_b


def blockwise_cross_entropy(
    features: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    label_smoothing: float = 0.0,
    chunk_rows: int | None = None,
) -> Tensor:
    """Summed cross-entropy of the vocabulary projection: features (n, d), weight (vocab, d), bias (vocab,),
    targets (n,) -> scalar. Equals ``cross_entropy(linear(features, weight, bias), targets,
    label_smoothing=label_smoothing, reduction="sum")`` (values and gradients), without the (n, vocab) buffers.
    ``chunk_rows``: positions per block; None takes `FLOAT32_CHUNK_ROWS`, or `BF16_CHUNK_ROWS` under bf16 autocast."""
    if features.size(0) != targets.size(0):
        raise ValueError(f"{features.size(0)} feature rows but {targets.size(0)} targets")
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows, got {chunk_rows}")
    return LinearCrossEntropy.apply(features, weight, bias, targets, float(label_smoothing),
                                    None if chunk_rows is None else int(chunk_rows))
