"""Continuous batching: decode a stream of sentences with the batch kept full.

Decoding a batch at a time leaves the batch's last steps to the few sentences with the longest outputs:
on the 2,000 eng->fra test sentences, steps with fewer than a quarter of the batch's rows took a fifth of
greedy decoding's time. `decode_stream` instead keeps up to ``capacity`` sentences in a pool, each at its
own step; when sentences finish and free slots, it moves the next sentences in (encoded a batch at a time,
so the encoder keeps running on whole batches), and the pool's next step computes them with the rest.

A *group* is a set of sentences decoded together, with

* ``len(group)``: how many sentences it still decodes;
* ``prepare()``: make a newly encoded group ready to join a pool (beam search: its first step, which runs
  one row per sentence), for the whole batch at once; returns the sentences it finished, as ``advance`` does;
* ``take(m)``: a new group of its first ``m`` sentences (it keeps the others);
* ``merge(other)``: append the other group's sentences to its own;
* ``advance()``: one decoding step for every sentence; returns ``(index, result)`` of each sentence it
  finished, and drops them.

Each sentence's computation is the same as in a batch of its own (rows are computed independently; source
positions added as padding get attention weight 0), so a stream gives the same translations as one
sentence at a time (tests/unit/test_stream.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

Batch = tuple[Tensor, Tensor, list[int]]  # (src (n, S), src_len (n,), the sentences' indices)


class Group:
    """What greedy and beam groups share: ``take`` from ``_keep(positions)``, and their histories."""

    stepper: Any

    def __len__(self) -> int:
        return len(self.indices)

    def _keep(self, keep: list[int]) -> None:
        raise NotImplementedError

    def take(self, count: int):
        """A new group of the first ``count`` sentences; this one keeps the others."""
        first = copy.copy(self)
        first.stepper = copy.copy(self.stepper)
        first._keep(list(range(count)))
        self._keep(list(range(count, len(self))))
        return first


def pad_history(history: Tensor, columns: int, src_cols: int | None = None) -> Tensor:
    """A right-aligned history (rows, t[, S]) widened to ``columns`` steps on the left, and attention
    to ``src_cols`` source positions on the right, with zeros (that nobody reads)."""
    missing = columns - history.size(1)
    if missing > 0:
        history = torch.cat([history.new_zeros((history.size(0), missing, *history.shape[2:])), history], dim=1)
    if src_cols is not None and src_cols > history.size(2):
        history = torch.cat([history, history.new_zeros((*history.shape[:2], src_cols - history.size(2)))], dim=2)
    return history


def refill_threshold(capacity: int) -> int:
    """Free slots that make the pool take more sentences: an eighth of the capacity (at least one), so new
    sentences come in groups and each move's fixed cost is shared."""
    return max(1, capacity // 8)


def decode_stream(batches: Iterable[Batch], start_group: Callable[[Tensor, Tensor, list[int]], Any],
                  capacity: int) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, result)`` for every sentence of ``batches`` as it finishes, keeping up to ``capacity``
    sentences in decoding at once. ``start_group(src, src_len, indices)`` encodes a batch into a group."""
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, got {capacity}")
    refill_at = refill_threshold(capacity)
    batches = iter(batches)
    pool = waiting = None
    while True:
        while pool is None or capacity - len(pool) >= refill_at:
            if waiting is None:
                batch = next(batches, None)
                if batch is None:
                    break
                waiting = start_group(*batch)
                yield from waiting.prepare()  # for the whole batch at once
                if not len(waiting):
                    waiting = None
                    continue
            free = capacity - (len(pool) if pool is not None else 0)
            if len(waiting) > free:
                newcomers = waiting.take(free)
            else:
                newcomers, waiting = waiting, None
            pool = newcomers if pool is None else pool.merge(newcomers)
        if pool is None:
            return
        yield from pool.advance()
        if not len(pool):
            pool = None
