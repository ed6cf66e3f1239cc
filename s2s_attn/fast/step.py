"""Fused decoding steps: the reference decoder step (``step_logits``) computed with less arithmetic.

* `AdditiveBahdanauStepper` (the Bahdanau decoder, one layer, additive attention: ``bahdanau`` or
  ``luong_concat``, in eval mode under ``torch.inference_mode``) computes the same function with less
  arithmetic, from tables built once per set of weights (`BahdanauTables`):

  - the embedding's part of the GRU input gates and of the pre-output layer, for every target token
    (``E W^T + b``, (V, 3H) and (V, output_size)): a row lookup instead of two products per step;
  - one product per step with the new state s_t: the pre-output layer's W_p,h s_t, and the next step's
    W_hh s_t and attention query W_q s_t (carried in the state's ``extra`` slot, reordered with it);
  - the context enters only the GRU input and the pre-output layer, both linear: with
    ``project_values`` (beam search) the encoder outputs are projected once per batch,
    P_j = [W_ih,c; W_p,c] v_j, and each step takes sum_j a_tj P_j (one small batched product per
    sentence) instead of [W_ih,c; W_p,c] c_t (a (rows, 512) x (512, 1792) product): with five rows per
    sentence the projection is paid back within a few steps;
  - the encoder outputs stay one copy per sentence (the beams of a sentence broadcast against them),
    never repeated per row;
  - the output layer's bias is one more input row of its weight, fed a constant 1, so the product adds it;
  - the weights are stored (inputs, outputs), contiguous, which few-row products read fastest;
  - a pool's encoder tensors live in buffers with room to spare (``merge``): newcomers are copied into them,
    not the whole pool.

* `LuongStepper` (the Luong decoder, one layer, input feeding or not, every attention but multi-head, in
  eval mode under ``torch.inference_mode``) does the same for its step (`LuongTables`): the embedding's
  input gates from a table, the combine layer's W_c,h h_t and the next step's W_hh h_t in one product, the
  values projected by W_c,c once per batch with ``project_values``, the attention over one copy of the
  encoder tensors per sentence (its rows as a 3-D query), the output bias as a weight row; the same outputs.

  Both fast steppers keep the encoder tensors in `SentenceStepper`'s buffers. Their results equal
  `GenericStepper`'s up to float rounding (the sums are grouped differently; the tests compare both, and
  beam scores with teacher-forced log-probabilities).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..decoding.step import SOURCE_ROOM, decoder_tables
from ..decoding.stream import Compaction
from ..model.attention import Attention, masked_softmax
from ..model.decoder import BahdanauDecoder, LuongDecoder
from . import gemm, kernels
from .recurrence import ADDITIVE_ATTENTIONS


class BahdanauTables:
    """Weights of a `BahdanauDecoder` rearranged for `AdditiveBahdanauStepper` (see the module docstring)."""

    def __init__(self, decoder: BahdanauDecoder) -> None:
        attention, cell = decoder.attention, decoder.rnn.cells[0]
        emb, hidden, ctx = decoder.rnn.emb_size, decoder.hidden_size, decoder.rnn.ctx_size
        embedding, pre = decoder.embedding.weight, decoder.pre_output
        self.gates = 3 * hidden
        # the embedding's input gates and pre-output part, side by side (V, 3H + output_size): the compiled
        # `beam_mix` adds both to the mixed projected values in one pass
        self.emb_all = torch.cat([torch.addmm(cell.bias_ih, embedding, cell.weight_ih[:, :emb].t()),
                                  torch.addmm(pre.bias, embedding, pre.weight[:, hidden + ctx :].t())], dim=1)
        self.emb_gates, self.emb_pre = self.emb_all[:, : self.gates], self.emb_all[:, self.gates :]  # views
        query = attention.query_layer
        query_bias = query.bias if query.bias is not None else query.weight.new_zeros(query.out_features)
        # every weight is kept as (inputs, outputs), contiguous: products with few rows (one sentence's beams)
        # read it faster than the transposed view of an (outputs, inputs) weight
        self.h_weight_t = torch.cat([cell.weight_hh, query.weight]).t().contiguous()  # (H, 3H + A): W_hh and W_q
        self.h_bias = torch.cat([cell.bias_hh, query_bias])
        ctx_weight = torch.cat([cell.weight_ih[:, emb:], pre.weight[:, hidden : hidden + ctx]])  # (3H + O, ctx)
        self.ctx_weight_t = ctx_weight.t().contiguous()
        self.output_size = pre.out_features
        # s_t's products in one, (H, O + 3H + A): the pre-output's W_p,h s_t, and the next step's W_hh s_t and W_q s_t
        self.all_h_weight_t = torch.cat([pre.weight[:, :hidden].t(), self.h_weight_t], dim=1).contiguous()
        self.energy = attention.energy_layer.weight.view(-1)  # (A,)
        self.output_weight_t = output_weight_with_bias(decoder.output)  # (O + 1, V)


def output_weight_with_bias(output: torch.nn.Linear) -> Tensor:
    """The output layer's weight as (inputs + 1, V), contiguous, its last row the bias: a features row ending in a
    constant 1 gets the bias added by the product, saving a separate pass adding the bias. What the fused steps
    keep (`SentenceStepper._features` holds the 1)."""
    return torch.cat([output.weight.t(), output.bias.unsqueeze(0)]).contiguous()


def bahdanau_tables(decoder: BahdanauDecoder) -> BahdanauTables:
    """The decoder's `BahdanauTables` (see `decoder_tables`)."""
    return decoder_tables(decoder, BahdanauTables)


def fast_path_applies(model) -> bool:
    """Whether `AdditiveBahdanauStepper` can stand in for `GenericStepper` here: a one-layer `BahdanauDecoder` with
    additive attention (these classes exactly: a subclass computes its own step), float32 on the CPU with the
    compiled kernels, in eval mode under ``torch.inference_mode``."""
    decoder = model.decoder
    return (type(decoder) is BahdanauDecoder and type(decoder.attention) in ADDITIVE_ATTENTIONS
            and kernels.applies(decoder.output.weight) is not None and decoder.num_layers == 1 and not decoder.training
            and torch.is_inference_mode_enabled() and decoder.output.bias is not None
            and decoder.pre_output.bias is not None)


def luong_path_applies(model) -> bool:
    """Whether `LuongStepper` can stand in for `GenericStepper` here: a one-layer `LuongDecoder` with biases, float32
    on the CPU with the compiled kernels, in eval mode under ``torch.inference_mode``, whose attention's context is its
    weights times the values (the base ``Attention.forward``: every attention but multi-head)."""
    decoder = model.decoder
    return (type(decoder) is LuongDecoder and type(decoder.attention).forward is Attention.forward
            and kernels.applies(decoder.output.weight) is not None and decoder.num_layers == 1 and decoder.rnn.bias
            and not decoder.training and torch.is_inference_mode_enabled() and decoder.output.bias is not None)


class SentenceStepper:
    """What the fused steps share: their tables (`BahdanauTables` or `LuongTables`: ``ctx_weight_t``,
    ``output_size``, ``output_weight_t``), the encoder tensors kept one copy per sentence (a sentence's rows
    broadcast against them), with ``project_values`` the values projected by the tables' ``ctx_weight_t`` once,
    dropped with `keep` and grown with `merge` in buffers with room to spare, and a features buffer whose last
    column is 1 (the output bias' input)."""

    def __init__(self, tables, keys_proj: Tensor, values: Tensor, mask: Tensor, project_values: bool) -> None:
        self.tables, self.project_values = tables, project_values
        self.output_size, self.output_weight_t = tables.output_size, tables.output_weight_t
        if project_values:
            n, src_len, _ = values.shape
            values = gemm.table_product(values.reshape(n * src_len, -1), tables.ctx_weight_t).view(n, src_len, -1)
        self.keys_proj, self.values, self.mask = keys_proj, values, mask  # (n, S, ...), (n, S, ...), (n, S)
        self.buffers: tuple[Tensor, Tensor, Tensor] | None = None  # (keys, values, mask) of a pool: see `merge`
        self.feature_buffer: Tensor | None = None

    def _features(self, rows: int) -> Tensor:
        """(rows, O + 1) of a buffer kept across steps whose last column holds 1 (the output bias' input)."""
        if self.feature_buffer is None or self.feature_buffer.size(0) < rows:
            self.feature_buffer = self.output_weight_t.new_ones((rows, self.output_size + 1))
        return self.feature_buffer[:rows]

    def keep(self, compaction: Compaction) -> None:
        """Keep only the sentences the compaction keeps, in its order (one copy per sentence, whatever the width)."""
        if compaction.keeps_all:
            return
        self.keys_proj, self.values = compaction.apply(self.keys_proj), compaction.apply(self.values)
        self.mask = compaction.apply(self.mask)
        if compaction.split:  # the buffers' other rows belong to another group now (`Group.take`)
            self.buffers = None

    def merge(self, other: SentenceStepper, width: int) -> None:
        """Append the other stepper's sentences (after this one's); one copy per sentence, whatever the width.

        The pool's encoder tensors live in buffers of its own (``buffers``), so that a merge copies only the
        newcomers into the rows after the pool's (a pool takes a few sentences every few steps). The buffers
        are (re)made, with room for `SOURCE_ROOM` more source positions, when they are missing, too small, no
        longer start at the pool's first sentence (a slice kept by a `Compaction` run), or shared with another
        group (a split by `Group.take`)."""
        n, m = self.mask.size(0), other.mask.size(0)
        current, length = self.mask.size(1), max(self.mask.size(1), other.mask.size(1))
        if not self._owns_room(n + m, length):
            self._make_buffers(n + m, length + SOURCE_ROOM)
        keys, values, mask = self.buffers
        for buffer, theirs in ((keys, other.keys_proj), (values, other.values), (mask, other.mask)):
            buffer[:n, current:length].zero_()  # new padding positions of the pool's sentences (mask False)
            buffer[n : n + m, : theirs.size(1)].copy_(theirs)
            buffer[n : n + m, theirs.size(1) : length].zero_()
        self.keys_proj, self.values, self.mask = (buffer[: n + m, :length] for buffer in (keys, values, mask))

    def _owns_room(self, sentences: int, length: int) -> bool:
        if self.buffers is None:
            return False
        mask = self.buffers[2]
        return mask.size(0) >= sentences and mask.size(1) >= length and self.mask.data_ptr() == mask.data_ptr()

    def _make_buffers(self, sentences: int, length: int) -> None:
        """Buffers (sentences, length, ...) of zeros holding the pool's tensors in their first rows."""
        buffers = []
        for tensor in (self.keys_proj, self.values, self.mask):
            buffer = tensor.new_zeros((sentences, length, *tensor.shape[2:]))
            buffer[: tensor.size(0), : tensor.size(1)].copy_(tensor)
            buffers.append(buffer)
        self.buffers = tuple(buffers)


class AdditiveBahdanauStepper(SentenceStepper):
    """The Bahdanau decoder's step with additive attention, from `BahdanauTables` (module docstring)."""

    def __init__(self, model, keys_proj: Tensor, values: Tensor, mask: Tensor, project_values: bool) -> None:
        # (n, S, A) keys; (n, S, 3H + O) projected values, or (n, S, ctx) the values themselves
        super().__init__(bahdanau_tables(model.decoder), keys_proj, values, mask, project_values)

    def step(self, prev: Tensor, state, width: int, out: Tensor | None = None):
        tables = self.tables
        hidden, hq = state  # (1, rows, H), and W_hh s + b_hh, W_q s + b_q (rows, 3H + A) from the last step
        h = hidden[0]
        n, src_len, _ = self.keys_proj.shape
        rows = h.size(0)
        gh, query = hq[:, : tables.gates], hq[:, tables.gates :]
        compiled = kernels.ops()
        # v . tanh(W_q s + b_q + W_k k_j), masked softmax, in one pass per row: the (n, width, S, A) energies not kept
        weights = query.new_empty((n, width, src_len))
        compiled.beam_additive_attention(query, self.keys_proj, tables.energy, self.mask, width,
                                         weights.view(rows, src_len))
        if self.project_values:  # the embedding's parts + sum_j a_tj P_j in one pass
            inputs = query.new_empty((rows, tables.emb_all.size(1)))  # (rows, 3H + O)
            compiled.beam_mix(weights.view(rows, src_len), self.values, width, tables.emb_all, prev, inputs)
            gi, pre = inputs[:, : tables.gates], inputs[:, tables.gates :]
        else:
            context = torch.bmm(weights, self.values).view(rows, -1)  # (rows, ctx)
            mixed = gemm.table_product(context, tables.ctx_weight_t)
            gi = tables.emb_gates.index_select(0, prev).add_(mixed[:, : tables.gates])  # (rows, 3H)
            pre = tables.emb_pre.index_select(0, prev).add_(mixed[:, tables.gates :])  # (rows, O)
        h = gru_update(gi, gh, h)
        products = gemm.table_product(h, tables.all_h_weight_t)  # (rows, O + 3H + A)
        features = self._features(rows)  # (rows, O + 1): tanh(pre-output), then 1
        # (into a fresh tensor: in place into the strided views is slower)
        features[:, :-1] = (pre + products[:, : tables.output_size]).tanh_()
        hq = products[:, tables.output_size :].add_(tables.h_bias)  # the next step's
        logits = gemm.table_product(features, tables.output_weight_t, out=out)  # (rows, V), bias included
        return logits, (h.unsqueeze(0), hq), weights.view(rows, src_len)

    def prime_state(self, state):
        """The decoder's initial state in the form ``step`` takes and returns it: with W_hh s + b_hh and
        W_q s + b_q in ``extra``."""
        hidden, _ = state
        return hidden, gemm.table_product(hidden[0], self.tables.h_weight_t, self.tables.h_bias)  # (rows, 3H + A)


def gru_update(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """One GRU cell update from its input gates gi = W_ih x + b_ih and hidden gates gh = W_hh h + b_hh (rows, 3H),
    as ``nn.GRU`` computes it (gate order r, z, n), in one compiled pass (`gru_step`, float32 on the CPU, with
    decoding's rational tanh and sigmoid: a few 1e-7 from ``nn.GRU``'s)."""
    h_new = torch.empty_like(h)
    kernels.ops().gru_step(gi, gh, h, h_new)  # r, z = sigmoid(gi + gh)[r, z]; n = tanh(gi_n + r gh_n); (1-z) n + z h
    return h_new


class LuongTables:
    """Weights of a one-layer `LuongDecoder` rearranged for `LuongStepper`, each (inputs, outputs), contiguous:

    - the embedding's part of the GRU input gates for every target token (``E W_ih,e^T + b_ih``, (V, 3H));
    - with input feeding, W_ih,f^T (O, 3H), the fed h~'s part of the input gates;
    - the combine layer's two parts: W_c,c^T (C, O) for the context and, in one product with W_hh^T (the next
      step's hidden gates), W_c,h^T: (H, O + 3H);
    - the output layer with its bias as one more input row (O + 1, V).
    """

    def __init__(self, decoder: LuongDecoder) -> None:
        rnn, combine = decoder.rnn, decoder.combine.weight  # combine: (O, C + H) over [c_t; h_t]
        emb, hidden = decoder.embedding.embedding_dim, decoder.hidden_size
        ctx = combine.size(1) - hidden
        self.gates, self.output_size = 3 * hidden, decoder.output_size
        self.emb_gates = torch.addmm(rnn.bias_ih_l0, decoder.embedding.weight, rnn.weight_ih_l0[:, :emb].t())
        self.feed_weight_t = rnn.weight_ih_l0[:, emb:].t().contiguous() if decoder.input_feeding else None
        self.h_weight_t = rnn.weight_hh_l0.t().contiguous()  # (H, 3H)
        self.h_bias = rnn.bias_hh_l0
        self.ctx_weight_t = combine[:, :ctx].t().contiguous()  # (C, O)
        self.all_h_weight_t = torch.cat([combine[:, ctx:].t(), self.h_weight_t], dim=1).contiguous()  # (H, O + 3H)
        self.output_weight_t = output_weight_with_bias(decoder.output)  # (O + 1, V)


class LuongStepper(SentenceStepper):
    """The Luong decoder's step from `LuongTables` (one GRU layer, any attention whose context is its weights
    times the values, i.e. all but multi-head), computing what `LuongDecoder.step_logits` computes:

    - the embedding's input gates are a row lookup, and the previous state's hidden gates W_hh h + b_hh come
      from the last step's one product with the new state (carried in the state's ``extra`` slot, with the fed
      h~'s input gates W_ih,f h~ after them under input feeding);
    - the attention scores a sentence's rows as the 3-D query (sentences, width, H) of the training path, against
      one copy of the keys per sentence;
    - with ``project_values`` (beam search) the values are projected once per batch, P_j = W_c,c v_j, and
      each step takes sum_j a_tj P_j instead of W_c,c c_t;
    - the combine layer's W_c,h h_t and the next step's W_hh h_t are one product;
    - the output layer's bias is one more input row of its weight, fed a constant 1.

    `prime_state` turns ``LuongDecoder.init_state``'s ``extra`` (None, or h~_0 = 0 under input feeding) into
    the carried products."""

    def __init__(self, model, keys_proj: Tensor, values: Tensor, mask: Tensor, project_values: bool) -> None:
        self.attention = model.decoder.attention
        # (n, S, ·) keys; (n, S, O) projected values, or (n, S, ctx) the values themselves
        super().__init__(decoder_tables(model.decoder, LuongTables), keys_proj, values, mask, project_values)

    def step(self, prev: Tensor, state, width: int, out: Tensor | None = None):
        tables = self.tables
        hidden, carried = state  # (1, rows, H), (rows, 3H [+ 3H]): W_hh h + b_hh [, W_ih,f h~]
        h = hidden[0]
        rows, size = h.shape
        n, src_len = self.mask.shape
        gi = tables.emb_gates.index_select(0, prev)  # (rows, 3H)
        if tables.feed_weight_t is not None:
            gi.add_(carried[:, tables.gates :])
        h = gru_update(gi, carried[:, : tables.gates], h)
        weights = masked_softmax(self.attention.score(h.view(n, width, size), self.keys_proj), self.mask)
        mixed = torch.bmm(weights, self.values).view(rows, -1)  # (rows, O) projected, or (rows, C) the context
        if not self.project_values:
            mixed = gemm.table_product(mixed, tables.ctx_weight_t)
        products = gemm.table_product(h, tables.all_h_weight_t)  # (rows, O + 3H)
        features = self._features(rows)  # (rows, O + 1): h~_t, then 1
        features[:, :-1] = mixed.add_(products[:, : tables.output_size]).tanh_()  # (tanh into a strided view: slow)
        carried = products[:, tables.output_size :].add_(tables.h_bias)  # the next step's hidden gates
        if tables.feed_weight_t is not None:
            carried = torch.cat([carried, gemm.table_product(features[:, :-1], tables.feed_weight_t)], dim=1)
        logits = gemm.table_product(features, tables.output_weight_t, out=out)  # (rows, V), bias included
        return logits, (h.unsqueeze(0), carried), weights.view(rows, src_len)

    def prime_state(self, state):
        """The decoder's initial state in the form ``step`` takes and returns it: ``extra`` W_hh h + b_hh
        [, W_ih,f h~]."""
        hidden, feed = state
        carried = gemm.table_product(hidden[0], self.tables.h_weight_t, self.tables.h_bias)  # (rows, 3H)
        if self.tables.feed_weight_t is not None:
            carried = torch.cat([carried, gemm.table_product(feed, self.tables.feed_weight_t)], dim=1)
        return hidden, carried


def fused_stepper(model, keys_proj, values: Tensor, mask: Tensor, project_values: bool = False):
    """``decoder.fast_stepper`` (`s2s_attn.decoding.step.make_stepper`): `AdditiveBahdanauStepper` or
    `LuongStepper` where they apply (`fast_path_applies`, `luong_path_applies`), else None."""
    if fast_path_applies(model):
        return AdditiveBahdanauStepper(model, keys_proj, values, mask, project_values)
    if luong_path_applies(model):
        return LuongStepper(model, keys_proj, values, mask, project_values)
    return None
