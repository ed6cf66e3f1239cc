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
    """What greedy and beam groups share: ``take`` from ``_keep(Compaction)``, and their histories."""

    stepper: Any
    model: Any
    logit_buffer: Tensor | None

    def __len__(self) -> int:
        return len(self.indices)

    def _keep(self, compaction: Compaction) -> None:
        raise NotImplementedError

    def _logits_out(self, rows: int, reserve: int) -> Tensor:
        """(rows, V) of one buffer kept for every step, made for at least ``reserve`` rows: a fresh tensor this
        large each step costs page faults (see ``Decoder.output_logits``)."""
        output = self.model.decoder.output
        if self.logit_buffer is None or self.logit_buffer.size(0) < rows:
            self.logit_buffer = output.weight.new_empty((max(rows, reserve), output.out_features))
        return self.logit_buffer[:rows]

    def take(self, count: int):
        """A new group of the first ``count`` sentences; this one keeps the others."""
        first = copy.copy(self)
        first.stepper = copy.copy(self.stepper)
        # runs of sentences: views, each group its own rows of the tensors they now share
        first._keep(Compaction(list(range(count)), len(self), split=True))
        self._keep(Compaction(list(range(count, len(self))), len(self), split=True))
        return first


class Compaction:
    """How a group of ``size`` sentences drops those that are done: ``keep`` (positions, ascending) -> new
    positions.

    A run of consecutive positions becomes a view (a slice, no copy). Otherwise the kept sentences that sit
    beyond the new size move, in place, into the holes the finished ones left below it, and the tensor is cut
    to the new size: a step copies the rows of the few sentences that move, not the whole pool. The new order
    is ``order`` (new position -> old position), which lists and per-row tensors follow.

    In place is safe: the moves read rows at or beyond the new size and write rows below it, so applying a
    compaction twice to one storage (a tensor that two names share) gives the same result, and they stay
    within the group's own rows (after `Group.take` two groups share a storage, each its own run of rows).
    """

    def __init__(self, keep: list[int], size: int, split: bool = False) -> None:
        self.count = len(keep)
        self.split = split  # made by `Group.take`: the rows left behind belong to another group now
        self.keeps_all = self.count == size  # nothing to do
        self.run: slice | None = None
        self.holes: list[int] = []
        self.movers: list[int] = []
        self._indices: dict = {}
        if keep and keep[-1] - keep[0] + 1 == len(keep):
            self.run = slice(keep[0], keep[-1] + 1)
            self.order = list(keep)
            return
        kept = set(keep)
        self.holes = [b for b in range(self.count) if b not in kept]
        self.movers = [b for b in keep if b >= self.count]
        self.order = list(range(self.count))
        for hole, mover in zip(self.holes, self.movers):
            self.order[hole] = mover

    def _rows(self, which: str, width: int, device) -> Tensor:
        """The rows of the holes or of the movers, as an index tensor (made once per width and device)."""
        key = (which, width, str(device))
        if key not in self._indices:
            positions = self.holes if which == "holes" else self.movers
            rows = [b * width + j for b in positions for j in range(width)]
            self._indices[key] = torch.tensor(rows, dtype=torch.long, device=device)
        return self._indices[key]

    def select(self, x: Tensor) -> Tensor:
        """The kept sentences' rows of ``x`` in the new order, without touching ``x``: a view for a run, else
        a copy."""
        if self.keeps_all:
            return x
        if self.run is not None:
            return x[self.run]
        if "order" not in self._indices:
            self._indices["order"] = torch.tensor(self.order, dtype=torch.long, device=x.device)
        return x.index_select(0, self._indices["order"])

    def apply(self, x: Tensor, width: int = 1, dim: int = 0) -> Tensor:
        """The kept sentences' rows of ``x`` (``width`` consecutive rows per sentence along ``dim``), in the
        new order: a view of ``x``, whose rows may have moved in place."""
        if self.keeps_all:
            return x
        if self.run is not None:
            rows = slice(self.run.start * width, self.run.stop * width)
            return x[(slice(None),) * dim + (rows,)]
        if self.holes:
            moved = x.index_select(dim, self._rows("movers", width, x.device))
            x.index_copy_(dim, self._rows("holes", width, x.device), moved)
        return x.narrow(dim, 0, self.count * width)

    def apply_all(self, x, width: int = 1, dim: int = 0):
        """`apply` to a tensor or to each tensor of a tuple (multi-head attention's (keys, values))."""
        if isinstance(x, tuple):
            return tuple(self.apply(t, width, dim) for t in x)
        return self.apply(x, width, dim)

    def apply_state(self, state: tuple[Tensor, Tensor | None], width: int = 1) -> tuple[Tensor, Tensor | None]:
        """`apply` to a decoder state: hidden (layers, rows, H) along its rows, extra (rows, ...) or None."""
        hidden, extra = state
        return self.apply(hidden, width, dim=1), None if extra is None else self.apply(extra, width)

    def reorder(self, values: list) -> list:
        """A per-sentence list in the new order."""
        return [values[b] for b in self.order]


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
