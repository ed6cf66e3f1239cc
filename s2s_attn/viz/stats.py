"""Summary statistics of attention matrices, logged to TensorBoard at every evaluation.

Both take matrices of shape (tgt_len, src_len) whose rows are attention distributions over the
real source positions (padding already cut off; the EOS columns and rows included, as decoded).

entropy
    Mean over target rows of H(a_i) = -sum_j a_ij log a_ij, in nats. 0 when every row puts all
    its weight on one source position; log(src_len) for uniform attention. It falls as the
    attention becomes sharp.
diagonal share
    Share of the attention weight that lies in a band around the diagonal. Target position i and
    source position j are placed at the centres of their cells on [0, 1]: x_i = (i + 0.5) / tgt_len,
    y_j = (j + 0.5) / src_len; the band is |x_i - y_j| <= max(band, 0.5 / src_len), with
    ``band`` = 0.1 by default (the half-cell minimum keeps the nearest source position of every row
    in the band for short sentences). 1 for a perfectly monotone one-to-one alignment; about
    ``2 * band`` for uniform attention; close to 0 for the toy *reversal* task, whose alignment is the
    anti-diagonal. For language pairs with similar word order (English-French) it rises as the
    model learns to align.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

DIAGONAL_BAND = 0.1


def _as_matrix(weights) -> np.ndarray:
    if hasattr(weights, "detach"):  # a torch tensor
        weights = weights.detach().float().cpu().numpy()
    matrix = np.asarray(weights, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"attention must be a (tgt_len, src_len) matrix, got shape {matrix.shape}")
    return matrix


def _rows(matrix: np.ndarray) -> np.ndarray:
    """The rows with some weight, each renormalised to sum to 1."""
    sums = matrix.sum(axis=1, keepdims=True)
    keep = sums[:, 0] > 0
    return matrix[keep] / sums[keep]


def row_entropies(weights) -> np.ndarray:
    """Entropy (nats) of each target row; rows without weight are left out."""
    rows = _rows(_as_matrix(weights))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(rows > 0, rows * np.log(np.where(rows > 0, rows, 1.0)), 0.0)
    return np.clip(-terms.sum(axis=1), 0.0, None)


def attention_entropy(weights) -> float:
    """Mean entropy (nats) of the rows of one attention matrix; NaN for an empty one."""
    entropies = row_entropies(weights)
    return float(entropies.mean()) if entropies.size else float("nan")


def diagonal_mask(tgt_len: int, src_len: int, band: float = DIAGONAL_BAND) -> np.ndarray:
    """(tgt_len, src_len) bool: True where |(i + 0.5)/tgt_len - (j + 0.5)/src_len| <= max(band, 0.5/src_len)."""
    if tgt_len == 0 or src_len == 0:
        return np.zeros((tgt_len, src_len), dtype=bool)
    x = (np.arange(tgt_len) + 0.5) / tgt_len
    y = (np.arange(src_len) + 0.5) / src_len
    width = max(band, 0.5 / src_len) + 1e-9
    return np.abs(x[:, None] - y[None, :]) <= width


def diagonal_weight(weights, band: float = DIAGONAL_BAND) -> tuple[float, int]:
    """(summed weight inside the diagonal band, number of rows with weight) of one matrix."""
    matrix = _as_matrix(weights)
    sums = matrix.sum(axis=1)
    keep = sums > 0
    rows = matrix[keep] / sums[keep, None]
    mask = diagonal_mask(matrix.shape[0], matrix.shape[1], band)[keep]
    return float((rows * mask).sum()), int(keep.sum())


def diagonal_share(weights, band: float = DIAGONAL_BAND) -> float:
    """Share of one matrix's attention weight inside the diagonal band (see the module docstring)."""
    inside, rows = diagonal_weight(weights, band)
    return inside / rows if rows else float("nan")


def attention_statistics(matrices: Iterable, band: float = DIAGONAL_BAND) -> dict[str, float]:
    """Entropy and diagonal share over many matrices, every target row of every sentence weighing
    the same. Returns {"entropy", "diagonal_share", "rows"} (NaN statistics when there is no row)."""
    entropy_sum, inside_sum, rows = 0.0, 0.0, 0
    for weights in matrices:
        if weights is None:
            continue
        entropies = row_entropies(weights)
        inside, n = diagonal_weight(weights, band)
        entropy_sum += float(entropies.sum())
        inside_sum += inside
        rows += n
    if not rows:
        return {"entropy": float("nan"), "diagonal_share": float("nan"), "rows": 0}
    return {"entropy": entropy_sum / rows, "diagonal_share": inside_sum / rows, "rows": rows}
