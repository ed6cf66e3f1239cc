"""Length-bucketed batches with a token budget (or a fixed number of sentences), seeded shuffling.

Sentences of similar length are batched together so that little compute goes to padding: the
examples are sorted by length (ties broken at random), cut into batches whose padded size
``n_sentences * max(src_len, tgt_len)`` stays within ``batch_tokens`` (or that hold ``batch_size``
sentences), and the batches are shuffled. Each epoch reshuffles with ``seed + epoch``, so a run is
reproducible and resumable from (epoch, batch index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Batch:
    src: Tensor  # (batch, src_len) ids, source + EOS, padded with PAD_ID
    src_len: Tensor  # (batch,)
    tgt_in: Tensor  # (batch, tgt_len) BOS + target
    tgt_out: Tensor  # (batch, tgt_len) target + EOS
    indices: list[int]  # positions of these examples in the dataset
    total_tgt_tokens: int | None = None  # target tokens of the global batch this is one rank's share of
    align_target: Tensor | None = None  # (batch, tgt_len, src_len) guided alignment's target attention, or None

    @property
    def num_tgt_tokens(self) -> int:
        """Real target tokens (pieces + EOS), the unit of tokens/s."""
        return int((self.tgt_out != PAD_ID).sum())

    @property
    def loss_tokens(self) -> int:
        """The tokens the summed loss is divided by: those of the whole global batch (all ranks)."""
        return self.total_tgt_tokens if self.total_tgt_tokens is not None else self.num_tgt_tokens

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.src.to(device, non_blocking=True),
            self.src_len.to(device, non_blocking=True),
            self.tgt_in.to(device, non_blocking=True),
            self.tgt_out.to(device, non_blocking=True),
            self.indices,
            self.total_tgt_tokens,
            None if self.align_target is None else self.align_target.to(device, non_blocking=True),
        )


def pad(seqs: Sequence[Sequence[int]], prefix: Sequence[int] = (), suffix: Sequence[int] = ()
        ) -> tuple[Tensor, Tensor]:
    """Pad id sequences (lists or arrays) into (batch, max_len) with PAD_ID; return the tensor and the true
    lengths."""
    lengths = [len(prefix) + len(s) + len(suffix) for s in seqs]
    out = np.full((len(seqs), max(lengths)), PAD_ID, dtype=np.int64)  # (batch, max_len)
    start = len(prefix)
    for i, s in enumerate(seqs):
        out[i, :start] = prefix
        out[i, start : start + len(s)] = s
        out[i, start + len(s) : lengths[i]] = suffix
    return torch.from_numpy(out), torch.tensor(lengths, dtype=torch.long)


def make_batch(src: list[list[int]], tgt: list[list[int]] | None, indices: list[int],
               links: list[np.ndarray] | None = None) -> Batch:
    """Padded tensors of these examples; with ``links`` (guided alignment's (source piece, target piece) pairs per
    example) also the attention they are pulled towards (`s2s_attn.data.guidance.target_distribution`)."""
    src_t, src_len = pad(src, suffix=[EOS_ID])
    if tgt is None:
        empty = torch.zeros((len(src), 0), dtype=torch.long)
        return Batch(src_t, src_len, empty, empty, indices)
    tgt_in, _ = pad(tgt, prefix=[BOS_ID])
    tgt_out, _ = pad(tgt, suffix=[EOS_ID])
    align_target = None
    if links is not None:
        from .guidance import target_distribution

        align_target = target_distribution(links, tgt_out.size(1), src_t.size(1))
    return Batch(src_t, src_len, tgt_in, tgt_out, indices, align_target=align_target)


def bucket_batches(
    src_lens: np.ndarray,
    tgt_lens: np.ndarray,
    batch_tokens: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    shuffle: bool = True,
) -> list[np.ndarray]:
    """Group example indices into length-sorted batches; shuffle the batch order when asked.

    ``batch_tokens`` caps ``len(batch) * max(padded length)``; ``batch_size`` caps sentences.
    One of them must be given (both: both caps apply). Every index appears in exactly one batch.
    """
    if not batch_tokens and not batch_size:
        raise ValueError("give trainer.batch_tokens or trainer.batch_size (a positive number)")
    for name, value in (("batch_tokens", batch_tokens), ("batch_size", batch_size)):
        if value is not None and value <= 0:
            raise ValueError(f"trainer.{name} must be positive, got {value}")
    rng = np.random.default_rng(seed)
    n = len(src_lens)
    lengths = np.maximum(np.asarray(src_lens, dtype=np.int32), np.asarray(tgt_lens, dtype=np.int32)) + 1  # EOS/BOS
    tie_break = rng.random(n) if shuffle else np.arange(n)
    order = np.lexsort((tie_break, lengths))  # by length, ties at random
    if n < 1 << 31:
        order = order.astype(np.int32)  # what the batches keep: 4 bytes a sentence
    ordered = lengths[order]  # non-decreasing: a batch's longest sentence is its last
    batches: list[np.ndarray] = []
    start = 0
    while start < n:  # one batch at a time: the longest prefix of the rest within both caps (at least one)
        size = n - start
        if batch_size:
            size = min(size, batch_size)
        if batch_tokens:
            size = min(size, max(1, batch_tokens // int(ordered[start])))  # later sentences are no shorter
            fits = np.arange(2, size + 1) * ordered[start + 1 : start + size] <= batch_tokens
            too_many = np.flatnonzero(~fits)
            if len(too_many):
                size = int(too_many[0]) + 1
        batches.append(order[start : start + size])
        start += size
    if shuffle:
        rng.shuffle(batches)
    return batches


def shard(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's share of a batch of example indices: every ``world_size``-th one from ``rank`` on.

    The shares of all ranks are disjoint and together are the whole batch; as a bucketed batch is sorted
    by length, every share gets sentences of about the same lengths (the ranks wait little for each other).
    """
    return indices[rank::world_size]


class BatchIterator:
    """Endless, resumable iterator over training batches: yields (epoch, index_in_epoch, Batch).

    With ``world_size`` > 1 (data-parallel training) every rank builds the same global batches and
    yields its share of each (`shard`: disjoint, together the whole
    batch), with the global batch's target token count in ``Batch.total_tgt_tokens``. A global batch
    of fewer sentences than ranks is passed over by every rank (counted in ``skipped_small``).
    """

    def __init__(
        self,
        src: Sequence[Sequence[int]],
        tgt: Sequence[Sequence[int]],
        batch_tokens: int | None,
        batch_size: int | None,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        links: list[np.ndarray] | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        if links is not None and len(links) != len(src):
            raise ValueError(f"{len(links)} guided-alignment link lists for {len(src)} training pairs")
        self.src, self.tgt, self.links = src, tgt, links
        self.rank, self.world_size, self.skipped_small = rank, world_size, 0
        # a `s2s_attn.data.store.TokenColumn` knows its lengths; lists are measured
        self.src_lens = getattr(src, "lengths", None)
        self.tgt_lens = getattr(tgt, "lengths", None)
        if self.src_lens is None or self.tgt_lens is None:
            self.src_lens = np.array([len(s) for s in src], dtype=np.int64)
            self.tgt_lens = np.array([len(t) for t in tgt], dtype=np.int64)
        self.batch_tokens, self.batch_size, self.seed = batch_tokens, batch_size, seed
        self.epoch, self.position = 0, 0
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        return bucket_batches(
            self.src_lens, self.tgt_lens, self.batch_tokens, self.batch_size, seed=self.seed + epoch
        )

    def __len__(self) -> int:
        return len(self._batches)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = self._epoch_batches(self.epoch)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[int, int, Batch]:
        if self.position >= len(self._batches):
            self.epoch += 1
            self.position = 0
            self._batches = self._epoch_batches(self.epoch)
        global_indices = self._batches[self.position]
        self.position += 1
        if self.world_size == 1:
            indices = global_indices.tolist()
            return self.epoch, self.position, self._batch(indices)
        if len(global_indices) < self.world_size:  # a rank would get no sentence
            self.skipped_small += 1
            return next(self)
        indices = shard(global_indices, self.rank, self.world_size).tolist()
        batch = self._batch(indices)
        batch.total_tgt_tokens = int((self.tgt_lens[global_indices].astype(np.int64) + 1).sum())  # + EOS
        return self.epoch, self.position, batch


    def _batch(self, indices: list[int]) -> Batch:
        links = None if self.links is None else [self.links[i] for i in indices]
        return make_batch([self.src[i] for i in indices], [self.tgt[i] for i in indices], indices, links)


def inference_batches(src: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar source length, for decoding (order restored by caller)."""
    order = sorted(range(len(src)), key=lambda i: len(src[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
