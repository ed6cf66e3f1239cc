"""Training's recurrent loops as autograd functions with their own backward.

`AdditiveRecurrence` is the Bahdanau decoder's loop over the target with additive attention; `GRULayer` is the
encoder's bidirectional GRU layer (as ``nn.GRU`` over packed sequences computes it) and the Luong decoder's GRU
without input feeding. Both compute every weight gradient once after the loop, as one large product over all
steps. In float32 on the CPU the element-wise work of each step (the GRU cell, the additive attention and its
context; forward and backward) runs in the compiled kernels (`s2s_attn.fast.kernels`), which these loops need:
where they cannot be built the reference model's loops run instead. In float32 `GRULayer`'s whole loop runs in C++
(``gru_layer_forward`` / ``gru_layer_backward``, the encoder's two directions side by side on the two threads), and
without gradients (decoding's encoder) its forward loop alone (``gru_layer_inference``).

The decoder's loop
------------------

`BahdanauDecoder.features` runs this instead of its step-by-step loop when it applies
(`fused_recurrence_applies`: one GRU layer, additive attention, float32 without autocast or under bf16 autocast,
the kernels built). The function
computes the same thing as the loop, with the products grouped differently:

* forward, per step: one product for the previous state's two uses, ``[W_hh; W_q] s_{t-1}`` (the GRU's
  hidden gates and the attention query), the attention, and the context's part of the GRU input gates;
* backward, per step: only what the next (earlier) step needs, the gradients of s_{t-1} and of the
  context (two products, (batch, 3H + A) x (3H + A, H) and (batch, 3H) x (3H, C));
* backward, once after the loop: every weight gradient, and that of the encoder outputs, as one large
  product over all steps (``d[W_hh; W_q] = sum_t dhq_t^T s_{t-1}`` as (3H + A, steps x batch) x
  (steps x batch, H)) instead of one small product and one weight-sized addition per step, which is how
  autograd computes the loop's.

Under bf16 autocast both functions keep their state and element-wise work in float32 and give the products
bf16 operands (``low``), as autocast does for the step-by-step loops: on a CPU with AMX bf16 products beat float32.
There `GRULayer`'s loop is Python around the same kernels (the C++ loops multiply in float32).

Shapes: batch B, target steps T, source positions S, hidden H, encoder size C, attention size A, gates G = 3H.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model.attention import BahdanauAttention, LuongConcatAttention
from ..model.decoder import BahdanauDecoder, LuongDecoder
from ..model.encoder import GRUEncoder
from . import gemm, kernels, torch_private

#: the attention classes whose score the fused loops compute, v . tanh(W_q q [+ b] + W_k k): these exactly, not
#: their subclasses
ADDITIVE_ATTENTIONS = (BahdanauAttention, LuongConcatAttention)


def _product(bias: Tensor, x: Tensor, weight_t: Tensor, low: torch.dtype | None) -> Tensor:
    """bias + x @ weight_t: one product (`gemm.linear`: MKL or oneDNN); with ``low`` (weight_t already in it) x is
    cast to it, and the product comes back in it and is added to the float32 bias (a bf16 tensor plus a float32
    one is float32)."""
    if low is None:
        return gemm.linear(x, weight_t.t(), bias)
    return torch.add(bias, torch.mm(_operand(x, low), weight_t))


class _PackedProduct:
    """bias + x @ weight.T for a loop that multiplies by the same weight at every step. In float32 on a CPU where
    MKL multiplies (`gemm.backend`), the weight is packed once (MKL's packed GEMM), which costs less than it saves
    over a sequence's per-step products. Elsewhere (oneDNN, bf16 products, other devices) it is `_product`. Only the
    forward loop uses it: in the backward the products need the transposed weights, and copying them costs more
    than packing saves."""

    def __init__(self, weight: Tensor, rows: int, low: torch.dtype | None):
        self.weight, self.rows, self.low = (gemm.loop_weight(weight) if low is None else weight), rows, low
        self.packed = None
        if (low is None and weight.device.type == "cpu" and weight.dtype == torch.float32
                and gemm.backend() == "blas"  # oneDNN's product is faster still where it is chosen
                and torch_private.mkl_packed_linear_works()):
            self.packed = torch_private.mkl_pack(weight.contiguous(), rows)

    def __call__(self, x: Tensor, bias: Tensor) -> Tensor:
        """bias + x @ weight.T; bias (N,) or (rows, N), float32."""
        if self.packed is None:
            return _product(bias, x, self.weight.t(), self.low)
        if bias.dim() == 1:
            return torch_private.mkl_packed_linear(x, self.packed, self.weight, bias, self.rows)
        return torch_private.mkl_packed_linear(x, self.packed, self.weight, None, self.rows).add_(bias)


def _operand(t: Tensor, low: torch.dtype | None) -> Tensor:
    """A product's operand: ``t`` itself, or cast to ``low``."""
    return t if low is None else t.to(low)


def _low_precision(device_type: str) -> torch.dtype | None:
    """bf16 under bf16 autocast (the products' operand dtype), None without autocast; anything else is not
    supported by the fused functions."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.bfloat16


def _float32_with_kernels(x: Tensor) -> bool:
    """Whether the fused loops run on x: float32 on the CPU (the reference runs on CUDA: no gain was measured
    there), without autocast or under bf16 autocast, and the compiled kernels built."""
    if kernels.applies(x) is None:  # float32 on the CPU, kernels built
        return False
    return not torch.is_autocast_enabled("cpu") or torch.get_autocast_dtype("cpu") == torch.bfloat16


class AdditiveRecurrence(torch.autograd.Function):
    """(emb, h0, keys_proj, values, mask, ih_weight, ih_bias, hq_weight, hq_bias, energy_weight, low) ->
    (tops (B, T, H), contexts (B, T, C), attention (B, T, S)), float32 when ``low`` is set.

    emb: (B, T, E) the target embeddings (after dropout); h0: (B, H); keys_proj: (B, S, A) = W_k k_j;
    values: (B, S, C); mask: (B, S) True = real source position; ih_weight: (G, E + C) = W_ih, the GRU's
    input weight for [E y; c]; ih_bias: (G,) = b_ih; hq_weight: (G + A, H) = [W_hh; W_q];
    hq_bias: (G + A,) = [b_hh; b_q]; energy_weight: (A,) = v; low: None, or bf16 for bf16 products (the
    inputs may then be bf16 or float32; their gradients come back in their own dtypes).

    The embeddings' part of the input gates, W_ih,e E y + b_ih, is one product for all steps; W_ih comes whole
    and its gradient goes back whole (the two slices' gradients written into one tensor), rather than as two
    slices whose backward would each fill a W_ih-sized tensor with zeros and copy into it.
    """

    @staticmethod
    def forward(ctx, emb, h0, keys_proj, values, mask, ih_weight, ih_bias, hq_weight, hq_bias, energy_weight, low):
        with torch.autocast(emb.device.type, enabled=False):
            return AdditiveRecurrence._forward(ctx, emb, h0, keys_proj, values, mask, ih_weight, ih_bias, hq_weight,
                                               hq_bias, energy_weight, low)

    @staticmethod
    def _forward(ctx, emb, h0, keys_proj, values, mask, ih_weight, ih_bias, hq_weight, hq_bias, energy_weight, low):
        ctx.low, ctx.device_type = low, emb.device.type
        ctx.dtypes = [t.dtype for t in (emb, h0, keys_proj, values, mask, ih_weight, ih_bias, hq_weight, hq_bias,
                                        energy_weight)]
        if low is not None:  # float32 state and element-wise work, bf16 operands for the products
            emb, h0, keys_proj, values, ih_bias, hq_bias, energy_weight = (
                t.float() for t in (emb, h0, keys_proj, values, ih_bias, hq_bias, energy_weight))
            ih_weight, hq_weight = ih_weight.to(low), hq_weight.to(low)
        batch, steps, emb_size = emb.shape
        gates, size = ih_weight.size(0), h0.size(1)
        ctx_weight = ih_weight[:, emb_size:]  # (G, C) the context's columns of W_ih
        emb_gates = _product(ih_bias, emb.reshape(batch * steps, emb_size), ih_weight[:, :emb_size].t(), low)
        emb_gates = emb_gates.view(batch, steps, gates)  # (B, T, G): W_ih,e E y + b_ih, all steps in one product
        # time-major records for the backward: record[t] is one contiguous block
        states = h0.new_empty((steps + 1, batch, size))  # s_0 .. s_T
        states[0] = h0
        energies = keys_proj.new_empty((steps, *keys_proj.shape))  # (T, B, S, A) tanh(W_q s + b_q + W_k k)
        weights = values.new_empty((steps, batch, mask.size(1)))  # (T, B, S)
        contexts = values.new_empty((steps, batch, values.size(2)))  # (T, B, C)
        rz = h0.new_empty((steps, batch, 2 * size))  # reset and update gates
        candidates = h0.new_empty((steps, batch, size))  # n_t
        hidden_n = h0.new_empty((steps, batch, size))  # (W_hh s_{t-1} + b_hh)'s n part
        cells = kernels.ops()  # the element-wise work (`fused_recurrence_applies` checked that they were built)
        keys_proj, values, mask = keys_proj.contiguous(), values.contiguous(), mask.contiguous()
        h = h0
        hq_product, ctx_product = _PackedProduct(hq_weight, batch, low), _PackedProduct(ctx_weight, batch, low)
        for t in range(steps):
            hq = hq_product(h, hq_bias)  # (B, G + A)
            gh, query = hq[:, :gates], hq[:, gates:]
            # e_tj = v . tanh(W_q s + b_q + W_k k_j), a_t = masked softmax(e_t): exactly 0 on padding
            cells.additive_attention_forward(query, keys_proj, energy_weight, mask, energies[t], weights[t])
            cells.attention_context(weights[t], values, contexts[t])  # c_t = sum_j a_tj v_j
            gi = ctx_product(contexts[t], emb_gates[:, t])  # (B, G)
            # r, z = sigmoid(gi + gh)[r, z], n = tanh(gi_n + r * gh_n), s_t = (1 - z) * n + z * s_{t-1}
            cells.gru_forward(gi, gh, h, rz[t], candidates[t], states[t + 1], hidden_n[t], None)
            h = states[t + 1]
        ctx.save_for_backward(emb, states, energies, weights, contexts, rz, candidates, hidden_n, values,
                              ih_weight, hq_weight, energy_weight)
        tops = states[1:].transpose(0, 1).contiguous()
        return tops, contexts.transpose(0, 1).contiguous(), weights.transpose(0, 1).contiguous()

    @staticmethod
    def backward(ctx, d_tops, d_contexts, d_attention):
        with torch.autocast(ctx.device_type, enabled=False):
            grads = AdditiveRecurrence._backward(ctx, d_tops, d_contexts, d_attention)
        return (*(None if g is None else g.to(dtype) for g, dtype in zip(grads, ctx.dtypes)), None)

    @staticmethod
    def _backward(ctx, d_tops, d_contexts, d_attention):
        low = ctx.low
        (emb, states, energies, weights, contexts, rz, candidates, hidden_n, values,
         ih_weight, hq_weight, energy_weight) = ctx.saved_tensors
        steps, batch, size = candidates.shape
        emb_size = emb.size(2)
        ctx_weight = ih_weight[:, emb_size:]  # (G, C)
        if low is None:
            ctx_weight = gemm.loop_weight(ctx_weight)  # multiplied by at every step
        gates = 3 * size
        d_hq = states.new_empty((steps, batch, hq_weight.size(0)))  # (T, B, G + A): d(W_hh s + b_hh; W_q s + b_q)
        d_gi = states.new_empty((steps, batch, gates))  # (T, B, G): d(input gates), the embeddings' gradient too
        d_context_all = contexts.new_empty(contexts.shape)  # (T, B, C)
        d_scores_all = weights.new_empty(weights.shape)  # (T, B, S)
        d_keys = torch.zeros_like(energies[0])  # (B, S, A)
        dh = states.new_zeros((batch, size))
        cells = kernels.ops()
        # the kernels take unit column strides (autograd may hand over expanded tensors)
        d_tops, d_contexts, d_attention = (None if g is None else g.contiguous()
                                           for g in (d_tops, d_contexts, d_attention))
        carry = torch.empty_like(dh)
        d_weight = weights.new_empty(weights.shape[1:])  # (B, S)
        for t in reversed(range(steps)):
            # the GRU's backward: d_gi, the gates' part of d_hq, and carry = dh * z (what reaches s_{t-1} directly)
            cells.gru_backward(dh, None if d_tops is None else d_tops[:, t], rz[t], candidates[t], states[t],
                               hidden_n[t], None, d_gi[t], d_hq[t, :, :gates], carry)
            # the context c_t = sum_j a_tj v_j entered the input gates
            if low is None:
                d_context = gemm.matmul(d_gi[t], ctx_weight, out=d_context_all[t])  # (B, C)
            else:
                d_context = d_context_all[t].copy_(torch.mm(d_gi[t].to(low), ctx_weight))
            if d_contexts is not None:
                d_context.add_(d_contexts[:, t])
            # d a_tj = v_j . d c_t (+ the attention's own gradient)
            cells.attention_context_backward(values, d_context, None if d_attention is None else d_attention[:, t],
                                             d_weight)
            # through the softmax and tanh: the scores' gradient, added into d_keys, and the query's
            cells.additive_attention_backward(d_weight, weights[t], energies[t], energy_weight, d_keys,
                                              d_hq[t, :, gates:], d_scores_all[t])
            dh = _product(carry, d_hq[t], hq_weight, low)  # d s_{t-1}: through z's term and through W_hh, W_q
        rows = steps * batch
        flat_d_hq = d_hq.view(rows, -1)
        flat_d_gi = _operand(d_gi.view(rows, gates), low)  # (T B, G), time-major
        d_emb = d_ih_weight = d_hq_weight = None
        if ctx.needs_input_grad[0]:  # (T, B, E) -> (B, T, E)
            d_emb = torch.mm(flat_d_gi, ih_weight[:, :emb_size]).view(steps, batch, emb_size).transpose(0, 1)
        if ctx.needs_input_grad[5]:  # d W_ih = d_gi^T [E y; c]: both column blocks of one tensor
            emb_rows = _operand(emb.transpose(0, 1).reshape(rows, emb_size), low)  # (T B, E), time-major
            context_rows = _operand(contexts.view(rows, -1), low)
            if low is None:
                d_ih_weight = flat_d_gi.new_empty(ih_weight.shape)
                torch.mm(flat_d_gi.t(), emb_rows, out=d_ih_weight[:, :emb_size])
                torch.mm(flat_d_gi.t(), context_rows, out=d_ih_weight[:, emb_size:])
            else:
                d_ih_weight = torch.cat([flat_d_gi.t().mm(emb_rows), flat_d_gi.t().mm(context_rows)], dim=1)
        d_ih_bias = d_gi.view(rows, gates).sum(0) if ctx.needs_input_grad[6] else None
        if ctx.needs_input_grad[7]:
            d_hq_weight = _operand(flat_d_hq, low).t().mm(_operand(states[:-1].reshape(rows, size), low))
        d_hq_bias = flat_d_hq.sum(0) if ctx.needs_input_grad[8] else None
        d_values = None
        if ctx.needs_input_grad[3]:  # (B, S, T) x (B, T, C)
            d_values = torch.bmm(weights.permute(1, 2, 0), d_context_all.transpose(0, 1))
        d_energy_weight = None
        if ctx.needs_input_grad[9]:
            d_energy_weight = torch.mv(energies.reshape(-1, energies.size(-1)).t(), d_scores_all.reshape(-1))
        return (d_emb, dh, d_keys, d_values, None, d_ih_weight, d_ih_bias, d_hq_weight, d_hq_bias, d_energy_weight)


def fused_recurrence_applies(decoder, emb: Tensor) -> bool:
    """Whether `additive_recurrence` can stand in for the Bahdanau decoder's step loop over these embeddings: on the
    CPU with the compiled kernels, one GRU layer, additive attention (``bahdanau`` or ``luong_concat``), float32
    without autocast or under bf16 autocast (anything else keeps the loop)."""
    # exact classes: a subclass may compute something else (its own score), so it runs the step loop
    return (type(decoder) is BahdanauDecoder
            and decoder.num_layers == 1 and type(decoder.attention) in ADDITIVE_ATTENTIONS
            and _float32_with_kernels(emb))


def additive_recurrence(decoder, emb: Tensor, h0: Tensor, keys_proj: Tensor, values: Tensor,
                        mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The decoder's loop (`AdditiveRecurrence`) over the target embeddings emb (B, T, E), from its weights:
    -> (tops (B, T, H), contexts (B, T, C), attention (B, T, S))."""
    cell, attention = decoder.rnn.cells[0], decoder.attention
    query = attention.query_layer
    query_bias = query.bias if query.bias is not None else query.weight.new_zeros(query.out_features)
    hq_weight = torch.cat([cell.weight_hh, query.weight])  # (G + A, H)
    hq_bias = torch.cat([cell.bias_hh, query_bias])
    return AdditiveRecurrence.apply(emb, h0, keys_proj, values, mask, cell.weight_ih, cell.bias_ih, hq_weight, hq_bias,
                                    attention.energy_layer.weight.view(-1), _low_precision(emb.device.type))


class GRULayer(torch.autograd.Function):
    """One GRU layer, one or two directions, with its own backward.

    The encoder's bidirectional layer over padded sequences of different lengths computes what ``nn.GRU`` over
    packed sequences does: the forward direction stops at each sentence's last piece (its final state is the
    state there), the backward direction starts there from zeros, and the outputs are 0 on padding. The Luong
    decoder without input feeding runs one direction over the whole target from the bridged state, as
    ``nn.GRU(emb, h0)`` does.

    (input_gates, hh_weight, hh_bias, step_mask, h0, low) -> (outputs (S, D, B, H), final (D, B, H))

    input_gates: (S, D, B, G) = W_ih x + b_ih for each step and direction (D = 1 or 2), the backward direction's
    steps in reverse order (its step t reads source position S - 1 - t); hh_weight: (D, G, H) each direction's
    W_hh; hh_bias: (D, G); step_mask: (S, D, B, 1) bool, whether the step's position is a real piece of the
    sentence, or None (every step is); h0: (D, B, H) the initial states, or None (zeros); low: None, or bf16 for
    bf16 products (float32 states; the gradients come back in the inputs' dtypes).
    outputs: the states of each step (0 where the mask is False), in the same order as input_gates.

    Per step one batched product for all directions (``W_hh h``) forward and one backward (``dgh W_hh``);
    the weight gradient is one product over all steps after the loop. (The CPU ``nn.GRU`` computes a weight
    gradient at every step, and over packed sequences a zero-filled gradient of all input gates too.)
    """

    @staticmethod
    def forward(ctx, input_gates, hh_weight, hh_bias, step_mask, h0, low):
        ctx.low, ctx.device_type = low, input_gates.device.type
        ctx.dtypes = [None if t is None else t.dtype for t in (input_gates, hh_weight, hh_bias, None, h0)]
        with torch.autocast(ctx.device_type, enabled=False):
            if low is not None:
                input_gates, hh_bias, hh_weight = input_gates.float(), hh_bias.float(), hh_weight.to(low)
                h0 = None if h0 is None else h0.float()
            return GRULayer._forward(ctx, input_gates, hh_weight, hh_bias, step_mask, h0, low)

    @staticmethod
    def _forward(ctx, input_gates, hh_weight, hh_bias, step_mask, h0, low):
        steps, directions, batch, gates = input_gates.shape
        size = gates // 3
        states = input_gates.new_empty((steps + 1, directions, batch, size))  # the state before each step, the last
        states[0] = 0.0 if h0 is None else h0
        rz = input_gates.new_empty((steps, directions, batch, 2 * size))
        candidates = input_gates.new_empty((steps, directions, batch, size))
        cells = kernels.ops()  # (`fused_gru_applies` checked that they were built)
        if low is None:  # the whole loop in C++ (`gru_layer_forward`), no Python between steps
            hidden_n = input_gates.new_empty((steps, directions, batch, size))  # (W_hh h + b_hh)'s n part
            # oneDNN for both loops' products, (B, H) x (H, G) forward and (B, G) x (G, H) backward, if it takes both
            ctx.onednn = (gemm.onednn_takes(states[0, 0], hh_weight[0])
                          and gemm.onednn_takes(input_gates[0, 0], hh_weight[0].t()))
            cells.gru_layer_forward(input_gates.contiguous(), hh_weight.contiguous(), hh_bias.contiguous(),
                                    None if step_mask is None else step_mask.contiguous(), states, rz, candidates,
                                    hidden_n, ctx.onednn)
        else:
            hidden_n = GRULayer._bf16_forward_steps(input_gates, hh_weight, hh_bias, step_mask, states, rz,
                                                    candidates, cells, low)
        ctx.save_for_backward(states, rz, candidates, hidden_n, hh_weight, step_mask)
        outputs = states[1:].clone() if step_mask is None else states[1:] * step_mask  # 0 where the mask is False
        return outputs, states[-1].clone()

    @staticmethod
    def _bf16_forward_steps(input_gates, hh_weight, hh_bias, step_mask, states, rz, candidates, cells, low) -> Tensor:
        """`gru_layer_forward`'s loop with bf16 products: writes states[1:], rz and candidates -> hidden_n
        (S, D, B, H), the n part of W_hh h + b_hh."""
        steps, directions, batch, gates = input_gates.shape
        size = gates // 3
        hidden_gates = input_gates.new_empty((steps, directions, batch, gates))  # W_hh h + b_hh
        weight_t, bias = hh_weight.transpose(1, 2), hh_bias.unsqueeze(1)  # (D, H, G) bf16, (D, 1, G)
        rows = directions * batch  # the kernels see all directions' rows as one (D B, ...) matrix
        for t in range(steps):
            h = states[t]
            gh = torch.add(bias, torch.bmm(h.to(low), weight_t), out=hidden_gates[t])  # (D, B, G)
            cells.gru_forward(input_gates[t].view(rows, gates), gh.view(rows, gates), h.view(rows, size),
                              rz[t].view(rows, -1), candidates[t].view(rows, size), states[t + 1].view(rows, size),
                              None, None if step_mask is None else step_mask[t].view(rows))
        return hidden_gates[..., 2 * size :]

    @staticmethod
    def backward(ctx, d_outputs, d_final):
        with torch.autocast(ctx.device_type, enabled=False):
            grads = GRULayer._backward(ctx, d_outputs, d_final)
        return (*(None if g is None else g.to(dtype) for g, dtype in zip(grads, ctx.dtypes)), None)

    @staticmethod
    def _backward(ctx, d_outputs, d_final):
        low = ctx.low
        states, rz, candidates, hidden_n, hh_weight, step_mask = ctx.saved_tensors
        previous = states[:-1]
        steps, directions, batch, size = previous.shape
        gates = 3 * size
        d_gi = previous.new_empty((steps, directions, batch, gates))
        d_gh = previous.new_empty((steps, directions, batch, gates))
        dh = d_final.clone() if d_final is not None else previous.new_zeros((directions, batch, size))
        cells = kernels.ops()
        # the kernels take unit column strides (autograd may hand over expanded tensors)
        d_outputs = None if d_outputs is None else d_outputs.contiguous()
        if low is None:  # the whole loop in C++ (`gru_layer_backward`), dh becoming the initial states'
            cells.gru_layer_backward(previous, rz, candidates, hidden_n, hh_weight.contiguous(),
                                     None if step_mask is None else step_mask.contiguous(), d_outputs, dh, d_gi, d_gh,
                                     ctx.onednn)
        else:
            dh = GRULayer._bf16_backward_steps(previous, rz, candidates, hidden_n, hh_weight, step_mask, d_outputs, dh,
                                               d_gi, d_gh, cells, low)
        rows = steps * batch
        d_weight = d_bias = None
        if ctx.needs_input_grad[1]:  # (D, G, rows) x (D, rows, H)
            flat_d_gh = _operand(d_gh.transpose(0, 1).reshape(directions, rows, gates), low)
            flat_previous = _operand(previous.transpose(0, 1).reshape(directions, rows, size), low)
            d_weight = torch.bmm(flat_d_gh.transpose(1, 2), flat_previous)
        if ctx.needs_input_grad[2]:
            d_bias = d_gh.sum(0).sum(1)  # (D, G); two sums: a single one over dims (0, 2) is much slower
        d_h0 = dh if ctx.needs_input_grad[4] else None
        return d_gi, d_weight, d_bias, None, d_h0

    @staticmethod
    def _bf16_backward_steps(previous, rz, candidates, hidden_n, hh_weight, step_mask, d_outputs, dh, d_gi, d_gh, cells,
                             low) -> Tensor:
        """`gru_layer_backward`'s loop with bf16 products, last step first: writes d_gi and d_gh -> the initial
        states' gradient (D, B, H), from dh (D, B, H), the final states'."""
        steps, directions, batch, size = previous.shape
        gates, rows = 3 * size, directions * batch
        carry = torch.empty_like(dh)
        for t in range(steps - 1, -1, -1):
            cells.gru_backward(dh.view(rows, size), None if d_outputs is None else d_outputs[t].view(rows, size),
                               rz[t].view(rows, -1), candidates[t].view(rows, size), previous[t].view(rows, size),
                               hidden_n[t].view(rows, size), None if step_mask is None else step_mask[t].view(rows),
                               d_gi[t].view(rows, gates), d_gh[t].view(rows, gates), carry.view(rows, size))
            dh = carry + torch.bmm(d_gh[t].to(low), hh_weight)
        return dh


def fused_gru_applies(rnn: torch.nn.GRU, x: Tensor) -> bool:
    """Whether `GRULayer` (`bidirectional_gru`, `unidirectional_gru`) stands in for ``rnn``: one layer with biases,
    on the CPU with the compiled kernels, float32 without autocast or (with gradients) under bf16 autocast; without
    gradients (decoding, validation) float32 without autocast (`_inference_layer`). On a GPU nn.GRU is cuDNN's fused
    recurrence, which a loop of per-step kernel launches would not beat."""
    if not (type(rnn) is torch.nn.GRU and rnn.num_layers == 1 and rnn.bias):
        return False
    if not torch.is_grad_enabled():
        return _inference_layer(x) is not None
    return _float32_with_kernels(x)


def _inference_layer(x: Tensor):
    """The compiled kernels when a layer without gradients runs in C++ (`gru_layer_inference`: float32 on the CPU,
    no autocast), else None."""
    if torch.is_grad_enabled() or x.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type):
        return None
    return kernels.applies(x)


def _gru_layer(input_gates: Tensor, hh_weight: Tensor, hh_bias: Tensor, step_mask: Tensor | None,
               h0: Tensor | None, low: torch.dtype | None) -> tuple[Tensor, Tensor]:
    """`GRULayer` (same arguments and results); without gradients, where `_inference_layer` applies, its forward
    loop alone in C++ with decoding's tanh and sigmoid (nothing recorded for a backward), which beats nn.GRU's."""
    cells = _inference_layer(input_gates)
    if cells is None:
        return GRULayer.apply(input_gates, hh_weight, hh_bias, step_mask, h0, low)
    steps, directions, batch, gates = input_gates.shape
    states = input_gates.new_empty((steps + 1, directions, batch, gates // 3))
    states[0] = 0.0 if h0 is None else h0
    cells.gru_layer_inference(input_gates.contiguous(), hh_weight.contiguous(), hh_bias.contiguous(),
                              None if step_mask is None else step_mask.contiguous(), states,
                              gemm.onednn_takes(states[0, 0], hh_weight[0]))
    outputs = states[1:] if step_mask is None else states[1:] * step_mask  # 0 where the mask is False
    return outputs, states[-1]


def bidirectional_gru(rnn: torch.nn.GRU, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """``rnn`` (one bidirectional layer, batch first) over x (B, S, E) with these lengths (B,), as over packed
    sequences: -> (outputs (B, S, 2H), 0 on padding; final states (2, B, H))."""
    batch, steps, _ = x.shape
    size = rnn.hidden_size
    weight_ih = torch.cat([rnn.weight_ih_l0, rnn.weight_ih_l0_reverse])  # (2G, E)
    bias_ih = torch.cat([rnn.bias_ih_l0, rnn.bias_ih_l0_reverse])
    gi = torch.nn.functional.linear(x, weight_ih, bias_ih).transpose(0, 1)  # (S, B, 2G): one product
    gates = 3 * size
    input_gates = torch.stack([gi[..., :gates], gi[..., gates:].flip(0)], dim=1)  # (S, 2, B, G)
    positions = torch.arange(steps, device=x.device)
    real = positions.unsqueeze(1) < lengths.to(x.device).unsqueeze(0)  # (S, B)
    step_mask = torch.stack([real, real.flip(0)], dim=1).unsqueeze(-1)  # (S, 2, B, 1)
    hh_weight = torch.stack([rnn.weight_hh_l0, rnn.weight_hh_l0_reverse])  # (2, G, H)
    hh_bias = torch.stack([rnn.bias_hh_l0, rnn.bias_hh_l0_reverse])
    states, final = _gru_layer(input_gates, hh_weight, hh_bias, step_mask, None, _low_precision(x.device.type))
    outputs = torch.cat([states[:, 0], states[:, 1].flip(0)], dim=-1).transpose(0, 1)  # (B, S, 2H)
    return outputs, final


def unidirectional_gru(rnn: torch.nn.GRU, x: Tensor, h0: Tensor) -> Tensor:
    """``rnn`` (one layer, one direction, batch first) over every position of x (B, T, E) from h0 (1, B, H), as
    ``rnn(x, h0)[0]`` computes it: -> outputs (B, T, H)."""
    gi = torch.nn.functional.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0).transpose(0, 1)  # (T, B, G): one product
    states, _ = _gru_layer(gi.unsqueeze(1), rnn.weight_hh_l0.unsqueeze(0), rnn.bias_hh_l0.unsqueeze(0), None, h0,
                           _low_precision(x.device.type))
    return states[:, 0].transpose(0, 1)  # (B, T, H)


# The loops as `s2s_attn.fast.accelerate` installs them on the model (``GRUEncoder.fast``, ``decoder.fast_loop``):
# each computes its module's own loop, or returns None where it does not apply, and the module runs its own.

def encoder_loop(encoder: GRUEncoder, embedded: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor] | None:
    """`GRUEncoder`'s bidirectional GRU: -> (outputs (B, S, 2H), final (B, 2H)), or None."""
    if not (type(encoder) is GRUEncoder and encoder.rnn.bidirectional and fused_gru_applies(encoder.rnn, embedded)):
        return None
    outputs, h_n = bidirectional_gru(encoder.rnn, embedded, src_len)
    return outputs, torch.cat(list(h_n), dim=-1)


def bahdanau_loop(decoder: BahdanauDecoder, emb: Tensor, h0: Tensor, keys_proj: Tensor, values: Tensor,
                  mask: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """`BahdanauDecoder`'s teacher-forcing loop: -> (tops, contexts, attention), or None."""
    if not fused_recurrence_applies(decoder, emb):
        return None
    return additive_recurrence(decoder, emb, h0, keys_proj, values, mask)


def luong_loop(decoder: LuongDecoder, emb: Tensor, h0: Tensor) -> Tensor | None:
    """`LuongDecoder`'s GRU without input feeding over the whole target: -> tops (B, T, H), or None."""
    if not (type(decoder) is LuongDecoder and not decoder.input_feeding and fused_gru_applies(decoder.rnn, emb)):
        return None
    return unidirectional_gru(decoder.rnn, emb, h0)
