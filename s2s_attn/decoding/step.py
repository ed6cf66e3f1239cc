"""One decoder step for a batch of sentences with ``width`` rows each (beams), as decoding runs it.

`Stepper` is what greedy decoding and beam search call: ``step(prev, state, width, out)`` ->
(logits (rows, V), new state, attention (rows, src_len)), rows = sentences x width, sentence b owning
rows b*width .. b*width+width-1, from a state that ``prime_state`` made of the decoder's initial one;
``keep(compaction)`` drops the sentences that are done (`Compaction`).

`GenericStepper` works for every decoder and attention: it calls ``model.decoder.step_logits`` (the reference
step) with the encoder outputs repeated for every row, and the output layer's weight kept as (inputs, outputs),
contiguous (`OutputTable`), which products with few rows read fastest. Where `s2s_attn.fast.accelerate` claimed the
decoder, ``decoder.fast_stepper`` builds a fused stepper instead (`s2s_attn.fast.step`) that computes the same
function.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
from torch import Tensor

from .stream import Compaction


def expand_rows(x, rows: Tensor):
    """Select batch rows of a tensor, or of every tensor in a tuple (multihead's (keys, values))."""
    if isinstance(x, tuple):
        return tuple(t.index_select(0, rows) for t in x)
    return x.index_select(0, rows)


DecoderState = tuple[Tensor, Tensor | None]  # (hidden (layers, rows, H), extra (rows, ...) or None)


def reorder_state(state: DecoderState, rows: Tensor) -> DecoderState:
    """Decoder state (hidden (layers, batch, H), extra (batch, ...) or None) -> the given batch rows."""
    hidden, extra = state
    return hidden.index_select(1, rows), (None if extra is None else extra.index_select(0, rows))


SOURCE_ROOM = 8  # source positions a pool's buffers keep free for longer newcomers (AdditiveBahdanauStepper)


def pad_source(x, length: int):
    """Encoder tensors widened with zeros to ``length`` source positions (the mask with False, so the new
    positions get attention weight 0): (n, S, ...) tensors on dim 1, multi-head (keys, values) tuples,
    (n, heads, S, d) each, on dim 2."""
    if isinstance(x, tuple):
        return tuple(_pad_dim(t, 2, length) for t in x)
    return _pad_dim(x, 1, length)


def _pad_dim(t: Tensor, dim: int, length: int) -> Tensor:
    missing = length - t.size(dim)
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def cat_sentences(a, b, length: int):
    """Two sets of encoder tensors (tensors, or multi-head tuples) padded to ``length`` source positions and
    concatenated along the batch."""
    if isinstance(a, tuple):
        return tuple(torch.cat([x, y]) for x, y in zip(pad_source(a, length), pad_source(b, length)))
    return torch.cat([pad_source(a, length), pad_source(b, length)])


def cat_states(a: DecoderState, b: DecoderState) -> DecoderState:
    """Decoder states of two sets of rows, one after the other (``extra`` None in both or in neither)."""
    extra = None if a[1] is None else torch.cat([a[1], b[1]])
    return torch.cat([a[0], b[0]], dim=1), extra


class StateRoom:
    """A beam group's decoder state between steps, kept in buffers with room for as many rows again: `carry` gathers
    the live rows into them (what `reorder_state` computes), and `join` appends another group's rows after those, so
    that a merge copies the newcomers' rows instead of concatenating the whole pool's (3.6 MB at 320 rows of the
    benchmark model's state). A group split by `Group.take` gives each part a new room (the old buffers then hold
    the rows of both). A state that lay in the buffers could not be gathered into them: ``index_select`` refuses
    overlapping memory with an error, never a silent mix-up."""

    def __init__(self) -> None:
        self.hidden: Tensor | None = None  # (1, room, H)
        self.extra: Tensor | None = None  # (room, ...), or None when the state has no extra

    def carry(self, state: DecoderState, rows: Tensor) -> DecoderState:
        """``reorder_state(state, rows)``, in the buffers; a state of several layers is reordered as it is."""
        hidden, extra = state
        count = rows.numel()
        if hidden.size(0) != 1:  # (layers, rows, H): one layer's rows would not be contiguous in a buffer
            return reorder_state(state, rows)
        if self.hidden is None or self.hidden.size(1) < count:  # a group's state changes only in its number of rows
            self.hidden = hidden.new_empty((1, 2 * count, hidden.size(2)))
            self.extra = None if extra is None else extra.new_empty((2 * count, *extra.shape[1:]))
        new_hidden = torch.index_select(hidden, 1, rows, out=self.hidden[:, :count])
        new_extra = None if extra is None else torch.index_select(extra, 0, rows, out=self.extra[:count])
        return new_hidden, new_extra

    def join(self, state: DecoderState, other: DecoderState) -> DecoderState:
        """``cat_states(state, other)``: in the buffers when ``state`` is their first rows and they have room."""
        hidden, extra = state
        n, m = hidden.size(1), other[0].size(1)
        # the state is the buffers' first rows (as `carry` left them) and they have room for the other's rows
        in_room = (self.hidden is not None and self.hidden.size(1) >= n + m
                   and hidden.data_ptr() == self.hidden.data_ptr()
                   and (extra is None or extra.data_ptr() == self.extra.data_ptr()))
        if not in_room:
            return cat_states(state, other)
        self.hidden[:, n : n + m].copy_(other[0])
        if extra is not None:
            self.extra[n : n + m].copy_(other[1])
        return self.hidden[:, : n + m], None if extra is None else self.extra[: n + m]


class GenericStepper:
    """``model.decoder.step_logits`` with the encoder outputs repeated for each of a sentence's rows."""

    def __init__(self, model, keys_proj, values: Tensor, mask: Tensor) -> None:
        self.decoder = model.decoder
        self.output_weight_t = decoder_tables(model.decoder, OutputTable).output_weight_t
        self.keys_proj, self.values, self.mask = keys_proj, values, mask
        self.width = 1  # rows per sentence the encoder tensors are repeated for

    def _repeat(self, width: int) -> None:
        sentences = self.mask.size(0) // self.width
        rows = torch.arange(sentences, device=self.mask.device).mul_(self.width).repeat_interleave(width)
        self.keys_proj, self.values = expand_rows(self.keys_proj, rows), self.values.index_select(0, rows)
        self.mask, self.width = self.mask.index_select(0, rows), width

    def step(self, prev: Tensor, state, width: int, out: Tensor | None = None):
        if width != self.width:
            self._repeat(width)
        return self.decoder.step_logits(prev, state, self.keys_proj, self.values, self.mask, out=out,
                                        output_weight_t=self.output_weight_t)

    def keep(self, compaction: Compaction) -> None:
        """Keep only the sentences the compaction keeps, in its order."""
        width = self.width
        self.keys_proj = compaction.apply_all(self.keys_proj, width)
        self.values, self.mask = compaction.apply(self.values, width), compaction.apply(self.mask, width)

    def prime_state(self, state):
        """The decoder's initial state in the form ``step`` takes and returns it (unchanged here)."""
        return state

    def merge(self, other: GenericStepper, width: int) -> None:
        """Append the other stepper's sentences (after this one's), both with ``width`` rows per sentence."""
        for stepper in (self, other):
            if stepper.width != width:
                stepper._repeat(width)
        length = max(self.mask.size(1), other.mask.size(1))
        self.keys_proj = cat_sentences(self.keys_proj, other.keys_proj, length)
        self.values = cat_sentences(self.values, other.values, length)
        self.mask = cat_sentences(self.mask, other.mask, length)


class OutputTable:
    """The output layer's weight as (output_size, V), contiguous, for `GenericStepper`: products with few rows read
    it faster than the transposed view of the (V, output_size) weight."""

    def __init__(self, decoder) -> None:
        self.output_weight_t = decoder.output.weight.t().contiguous()


# decoder -> its tables ({kind: tables}, empty until first needed), only while a `shared_tables` block is open
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def shared_tables(model):
    """Build the decoder's tables once for all the batches decoded inside the block (the weights must not
    change inside it: `Translator.translate_ids` opens one per call). Outside such a block every batch
    builds its own. Tables are never kept across blocks: an optimizer can change the weights in place
    without a trace (fused Adam leaves the tensors' version counters alone), and stale tables once gave
    validation BLEU 26 instead of 34 in the middle of a training run."""
    decoder = model.decoder
    if decoder in _TABLES:  # nested: the outer block owns the tables
        yield
        return
    _TABLES[decoder] = {}
    try:
        yield
    finally:
        _TABLES.pop(decoder, None)


def hold_tables(model) -> None:
    """Keep the decoder's tables for as long as the model lives, as if one `shared_tables` block stayed
    open: for a model whose weights no longer change (a `Translator` loaded from a checkpoint), so that
    every call after the first skips building them (a cost an interactive line would notice)."""
    _TABLES.setdefault(model.decoder, {})


def decoder_tables(decoder, kind):
    """The decoder's tables of this kind (`BahdanauTables`, `LuongTables`, `OutputTable`): those of the open
    `shared_tables` block, else freshly built."""
    if decoder not in _TABLES:
        return kind(decoder)
    built = _TABLES[decoder]
    if kind not in built:
        built[kind] = kind(decoder)
    return built[kind]


def make_stepper(model, keys_proj, values: Tensor, mask: Tensor, project_values: bool = False):
    """The fused stepper ``model.decoder.fast_stepper`` builds where it applies, else `GenericStepper`.
    ``project_values``: a fused stepper may project the encoder outputs once per batch (beam search)."""
    fast_stepper = getattr(model.decoder, "fast_stepper", None)
    if fast_stepper is not None and (stepper := fast_stepper(model, keys_proj, values, mask, project_values)):
        return stepper
    return GenericStepper(model, keys_proj, values, mask)
