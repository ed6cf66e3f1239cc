"""Recurrent decoders that consult an attention module at every step.

Decoder styles are registered by name (``model.decoder=``). The attention is any module from
``s2s_attn.model.attention``; the decoder only relies on its interface.

    bahdanau  attend with the previous state s_{t-1}, feed the context into the GRU (RNNsearch)
    luong     run the GRU first, attend with the new state h_t, combine into h~_t = tanh(W_c [c_t; h_t]);
              optionally feed h~_{t-1} into the next GRU input ("input feeding", Luong et al. 2015)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .attention import Attention
from .dropout import Dropout
from .registry import Registry

DECODER_REGISTRY = Registry("model.decoder")
register_decoder = DECODER_REGISTRY.register

#: a fast teacher-forcing loop (set as ``decoder.fast_loop`` by `s2s_attn.fast.accelerate` for the exact classes it
#: claims): the decoder's own loop computed another way, or None where it does not apply. Bahdanau: (decoder, emb
#: (batch, tgt_len, emb), s_0 (batch, H), keys_proj, values, src_mask) -> (tops (batch, tgt_len, H), contexts
#: (batch, tgt_len, enc), attention (batch, tgt_len, src_len)). Luong without input feeding: (decoder, emb, h_0
#: (layers, batch, H)) -> tops (batch, tgt_len, H).
FastLoop = Callable[..., "tuple[Tensor, Tensor, Tensor] | Tensor | None"]


class Decoder(nn.Module):
    """Common interface of all decoder styles.

    The state passed between steps is a tuple ``(hidden, extra)``: ``hidden`` is
    (layers, batch, hidden_size); ``extra`` is style-specific (the previous attentional vector for
    input feeding, or None).
    """

    name = "base"
    hidden_size: int
    num_layers: int
    bridge: nn.Linear
    # seams for `s2s_attn.fast.accelerate`, which sets them for the exact classes it claims: the teacher-forcing
    # loop computed another way (`FastLoop`), and a factory of fused decoding steps (`s2s_attn.decoding.step`)
    fast_loop: FastLoop | None = None
    fast_stepper: Callable | None = None

    def bridge_hidden(self, encoder_final: Tensor) -> Tensor:
        """s_0 = tanh(W_b h_enc): encoder_final (batch, encoder_size) -> (layers, batch, hidden_size)."""
        bridged = torch.tanh(self.bridge(encoder_final))  # (batch, layers * H)
        return bridged.view(-1, self.num_layers, self.hidden_size).transpose(0, 1).contiguous()

    @staticmethod
    def tie_output_to_embedding(output: nn.Linear, embedding: nn.Embedding) -> None:
        """Share the target embedding matrix with the vocabulary projection (same (vocab, emb) shape)."""
        if output.in_features != embedding.embedding_dim:
            raise ValueError(
                f"model.tie_embeddings needs model.output_size == model.emb_size "
                f"(got {output.in_features} and {embedding.embedding_dim})"
            )
        output.weight = embedding.weight

    def init_state(self, encoder_final: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def step_logits(
        self,
        prev_tokens: Tensor,
        state: tuple[Tensor, Tensor | None],
        keys_proj: Tensor,
        values: Tensor,
        src_mask: Tensor,
        out: Tensor | None = None,
        output_weight_t: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor | None], Tensor]:
        """One decoding step: (logits (batch, vocab), new state, attention (batch, src_len)).

        prev_tokens: (batch,) the previous output ids (BOS first); keys_proj, values, src_mask as
        returned by ``Seq2Seq.encode``. ``out``: an optional (batch, vocab) buffer the logits are
        written into; ``output_weight_t``: the output weight as (output_size, vocab), contiguous, if the
        caller keeps one (see `output_logits`).
        """
        raise NotImplementedError

    def output_logits(self, features: Tensor, out: Tensor | None = None,
                      weight_t: Tensor | None = None) -> Tensor:
        """``self.output(features)``: (batch, output_size) -> logits (batch, vocab), written into ``out``
        when given (and of the features' dtype), from ``weight_t`` if given: the weight as (output_size,
        vocab), contiguous, which decoding keeps, since few-row products read it faster than the transposed
        weight. Decoding passes one buffer for all its steps: a fresh (batch, vocab) tensor every step is
        fresh memory (glibc maps a new block for each one this large), and its page faults cost a sizeable share
        of the product's time. The product, then the bias: the same values as ``addmm``, which first copies the
        bias into every row of the output, an extra pass."""
        weight_t = self.output.weight.t() if weight_t is None else weight_t
        if out is None or self.output.bias is None or not out.dtype == features.dtype == weight_t.dtype:
            return self.output(features)
        return torch.mm(features, weight_t, out=out).add_(self.output.bias)

    def step(self, prev_tokens, state, keys_proj, values, src_mask):
        """`step_logits` with log-probabilities: (log-probs (batch, vocab) in fp32, new state, attention)."""
        logits, state, weights = self.step_logits(prev_tokens, state, keys_proj, values, src_mask)
        return torch.log_softmax(logits.float(), dim=-1), state, weights

    def features(
        self, tgt_in: Tensor, encoder_final: Tensor, keys_proj: Tensor, values: Tensor, src_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Teacher-forced pass up to the output layer: (features (batch, tgt_len, output_size), attention
        (batch, tgt_len, src_len)). ``self.output(features)`` are the logits; training feeds the features
        of the non-padding positions to the fused output layer and loss (`s2s_attn.model.loss`)."""
        raise NotImplementedError

    def forward(
        self, tgt_in: Tensor, encoder_final: Tensor, keys_proj: Tensor, values: Tensor, src_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Teacher-forced pass: (logits (batch, tgt_len, vocab), attention (batch, tgt_len, src_len))."""
        features, attention = self.features(tgt_in, encoder_final, keys_proj, values, src_mask)
        return self.output(features), attention


def gru_cell(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """One GRU cell update, as ``nn.GRU`` computes it (gate order r, z, n), from its input gates
    gi = W_ih x + b_ih and hidden gates gh = W_hh h + b_hh, each (batch, 3H); h: (batch, H) -> new h."""
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)  # = (1 - z) * n + z * h


class GRUCellStack(nn.Module):
    """A stack of GRU cells whose first layer's input is split into a precomputable part.

    The first layer's input is ``[embedding; context]``. The embedding part of the input-to-gates
    product is computed for all target positions at once (one large matrix product instead of one
    per step); only the context part is multiplied inside the loop. The maths is exactly that of
    ``nn.GRUCell`` on the concatenated input.
    """

    def __init__(self, emb_size: int, ctx_size: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.emb_size, self.ctx_size, self.hidden_size = emb_size, ctx_size, hidden_size
        self.cells = nn.ModuleList(
            [nn.GRUCell(emb_size + ctx_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers)]
        )
        self.dropout = Dropout(dropout)

    def embed_gates(self, emb: Tensor) -> Tensor:
        """emb: (batch, tgt_len, emb) -> (batch, tgt_len, 3 * hidden), bias included."""
        cell = self.cells[0]
        return torch.nn.functional.linear(emb, cell.weight_ih[:, : self.emb_size], cell.bias_ih)

    def context_weight(self) -> Tensor:
        """The context columns of the first layer's W_ih: (3H, ctx), in the autocast dtype if one is on.

        A loop over the target takes this slice once and passes it to every step: slicing inside each
        step would make each step's backward write (and add) a zero gradient as large as all of W_ih,
        and under autocast each step would cast it again (autocast caches casts of parameters, not of
        slices of them).
        """
        weight = self.cells[0].weight_ih[:, self.emb_size :]
        device_type = weight.device.type
        if torch.is_autocast_enabled(device_type):
            weight = weight.to(torch.get_autocast_dtype(device_type))
        return weight

    def forward(self, emb_gates: Tensor, ctx: Tensor, hidden: Tensor, context_weight: Tensor | None = None) -> Tensor:
        """emb_gates: (batch, 3H); ctx: (batch, ctx); hidden: (layers, batch, H) -> new hidden.

        context_weight: `context_weight()`, taken once per sequence by a caller that loops over steps.
        """
        cell = self.cells[0]
        h = hidden[0]  # (batch, H)
        if context_weight is None:
            context_weight = self.context_weight()
        gi = emb_gates + torch.nn.functional.linear(ctx, context_weight)
        gh = torch.nn.functional.linear(h, cell.weight_hh, cell.bias_hh)  # (batch, 3H)
        h = gru_cell(gi, gh, h)
        new_hidden = [h]
        for layer, cell in enumerate(self.cells[1:], start=1):
            h = cell(self.dropout(h), hidden[layer])
            new_hidden.append(h)
        return torch.stack(new_hidden)  # (layers, batch, H)


@register_decoder("bahdanau")
class BahdanauDecoder(Decoder):
    """Bahdanau-style (RNNsearch) decoder: attend with the previous state, feed the context in.

        c_t, a_t = attention(s_{t-1}, keys, values)
        s_t      = GRU([E y_{t-1}; c_t], s_{t-1})
        o_t      = tanh(W_o [s_t; c_t; E y_{t-1}])
        p(y_t)   = softmax(W_out o_t)

    The output layer (the costly vocabulary projection) runs once for all steps after the loop.
    """

    def __init__(
        self,
        vocab_size: int,
        emb_size: int,
        hidden_size: int,
        encoder_size: int,
        attention: Attention,
        num_layers: int = 1,
        output_size: int = 256,
        dropout: float = 0.1,
        pad_id: int = 0,
        tie_embeddings: bool = False,
        input_feeding: bool = True,
    ) -> None:
        """``input_feeding`` is accepted for a uniform constructor and ignored: this decoder always
        feeds the context c_t into the GRU."""
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_id)
        self.dropout = Dropout(dropout)
        self.bridge = nn.Linear(encoder_size, hidden_size * num_layers)
        self.attention = attention
        self.rnn = GRUCellStack(emb_size, encoder_size, hidden_size, num_layers, dropout)
        self.pre_output = nn.Linear(hidden_size + encoder_size + emb_size, output_size)
        self.output = nn.Linear(output_size, vocab_size)
        if tie_embeddings:
            self.tie_output_to_embedding(self.output, self.embedding)

    def init_state(self, encoder_final: Tensor) -> tuple[Tensor, None]:
        """encoder_final: (batch, encoder_size) -> hidden (layers, batch, hidden_size)."""
        return self.bridge_hidden(encoder_final), None

    def _pre_output(self, hidden_top: Tensor, context: Tensor, emb: Tensor) -> Tensor:
        """(…, H), (…, enc), (…, emb) -> dropout(o_t) (…, output_size), what the output layer projects."""
        out = torch.tanh(self.pre_output(torch.cat([hidden_top, context, emb], dim=-1)))
        return self.dropout(out)

    def _forward_step(self, step_gates: Tensor, hidden: Tensor, keys_proj: Tensor, values: Tensor,
                      src_mask: Tensor, context_weight: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """One step of the recurrence, the one teacher forcing, greedy and beam search all run: the embedding's
        input gates of y_{t-1} (batch, 3H) and s_{t-1} (layers, batch, H) -> (s_t (layers, batch, H),
        c_t (batch, enc), a_t (batch, src_len))."""
        context, weights = self.attention(hidden[-1], keys_proj, values, src_mask)  # attend with s_{t-1}
        hidden = self.rnn(step_gates, context, hidden, context_weight)  # GRU([E y_{t-1}; c_t], s_{t-1})
        return hidden, context, weights

    def step_logits(self, prev_tokens, state, keys_proj, values, src_mask, out=None, output_weight_t=None):
        hidden, _ = state
        emb = self.dropout(self.embedding(prev_tokens))  # (batch, emb)
        hidden, context, weights = self._forward_step(self.rnn.embed_gates(emb), hidden, keys_proj, values, src_mask)
        features = self._pre_output(self.dropout(hidden[-1]), context, emb)  # (batch, output_size)
        logits = self.output_logits(features, out, output_weight_t)  # (batch, vocab)
        return logits, (hidden, None), weights

    def features(self, tgt_in, encoder_final, keys_proj, values, src_mask):
        emb = self.dropout(self.embedding(tgt_in))  # (batch, tgt_len, emb)
        hidden, _ = self.init_state(encoder_final)
        if self.fast_loop is not None and (
                looped := self.fast_loop(self, emb, hidden[0], keys_proj, values, src_mask)) is not None:
            tops_t, contexts_t, attention = looped  # the loop below as one function with its own backward
            features = self._pre_output(self.dropout(tops_t), contexts_t, emb)  # (batch, tgt_len, output_size)
            return features, attention
        emb_gates = self.rnn.embed_gates(emb)  # (batch, tgt_len, 3H)
        context_weight = self.rnn.context_weight()  # (3H, enc), sliced once (see GRUCellStack)
        tops, contexts, attentions = [], [], []
        # unbind: one backward for all steps (indexing emb_gates[:, t] would give each step's backward a
        # zero gradient of the whole (batch, tgt_len, 3H) tensor to fill and add)
        for step_gates in emb_gates.unbind(1):
            hidden, context, weights = self._forward_step(step_gates, hidden, keys_proj, values, src_mask,
                                                          context_weight)
            tops.append(hidden[-1])
            contexts.append(context)
            attentions.append(weights)
        tops_t = torch.stack(tops, dim=1)  # (batch, tgt_len, H)
        contexts_t = torch.stack(contexts, dim=1)  # (batch, tgt_len, enc)
        features = self._pre_output(self.dropout(tops_t), contexts_t, emb)  # (batch, tgt_len, output_size)
        return features, torch.stack(attentions, dim=1)  # (batch, tgt_len, src_len)


@register_decoder("luong")
class LuongDecoder(Decoder):
    """Luong-style (global attention) decoder: run the GRU first, then attend with the new state.

        h_t      = GRU([E y_{t-1}; h~_{t-1}], h_{t-1})      (h~_{t-1} only with input feeding)
        c_t, a_t = attention(h_t, keys, values)
        h~_t     = tanh(W_c [c_t; h_t])                     (output_size,)
        p(y_t)   = softmax(W_out dropout(h~_t))

    h_0 = tanh(W_b h_enc) as in `BahdanauDecoder`; h~_0 = 0. The state's ``extra`` slot carries
    h~_{t-1} (batch, output_size) after dropout, the vector the output layer saw (as in OpenNMT-py),
    or None without input feeding. ``output_size`` is the size of h~, so ``tie_embeddings`` needs
    output_size == emb_size, as for the Bahdanau decoder.

    Without input feeding nothing in the recurrence depends on the attention, so the teacher-forced
    ``forward`` runs the GRU (an ``nn.GRU``) over the whole target in one call and attends for all
    steps at once with the 3-D query. With input feeding it loops over the steps; in both cases
    the vocabulary projection runs once for all steps.
    """

    def __init__(
        self,
        vocab_size: int,
        emb_size: int,
        hidden_size: int,
        encoder_size: int,
        attention: Attention,
        num_layers: int = 1,
        output_size: int = 256,
        dropout: float = 0.1,
        pad_id: int = 0,
        tie_embeddings: bool = False,
        input_feeding: bool = True,
    ) -> None:
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.output_size, self.input_feeding = output_size, input_feeding
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_id)
        self.dropout = Dropout(dropout)
        self.bridge = nn.Linear(encoder_size, hidden_size * num_layers)
        self.attention = attention
        self.rnn = nn.GRU(
            emb_size + (output_size if input_feeding else 0),
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.combine = nn.Linear(encoder_size + hidden_size, output_size, bias=False)  # W_c
        self.output = nn.Linear(output_size, vocab_size)
        if tie_embeddings:
            self.tie_output_to_embedding(self.output, self.embedding)

    def init_state(self, encoder_final: Tensor) -> tuple[Tensor, Tensor | None]:
        """-> (h_0 (layers, batch, hidden_size), h~_0 zeros (batch, output_size) or None)."""
        hidden = self.bridge_hidden(encoder_final)  # (layers, batch, H)
        if not self.input_feeding:
            return hidden, None
        return hidden, hidden.new_zeros(hidden.size(1), self.output_size)  # (batch, output_size)

    def attend(self, tops: Tensor, keys_proj: Tensor, values: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor]:
        """h_t -> (dropout(h~_t), a_t) for one step (batch, H) or all steps (batch, tgt_len, H).

        Returns (batch, [tgt_len,] output_size) and (batch, [tgt_len,] src_len).
        """
        context, weights = self.attention(tops, keys_proj, values, src_mask)  # (batch, [tgt_len,] enc)
        attentional = torch.tanh(self.combine(torch.cat([context, tops], dim=-1)))  # (batch, [tgt_len,] out)
        return self.dropout(attentional), weights

    def _forward_step(self, step_input: Tensor, feed: Tensor | None, hidden: Tensor, keys_proj: Tensor,
                      values: Tensor, src_mask: Tensor, gru_step=None) -> tuple[Tensor, Tensor, Tensor]:
        """One step, the one greedy and beam search run and teacher forcing with input feeding loops over: the
        GRU first, then attend with its new state. step_input: E y_{t-1} (batch, emb), or what ``gru_step``
        takes (`_fed_gru`); feed: h~_{t-1} (batch, output_size) or None; hidden: (layers, batch, H) ->
        (dropout(h~_t) (batch, output_size), new hidden (layers, batch, H), a_t (batch, src_len))."""
        top, hidden = (gru_step or self._module_gru_step)(step_input, feed, hidden)  # h_t: (batch, H)
        attentional, weights = self.attend(top, keys_proj, values, src_mask)  # (batch, out)
        return attentional, hidden, weights

    def _module_gru_step(self, step_emb: Tensor, feed: Tensor | None, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """h_t = GRU([E y_{t-1}; h~_{t-1}], h_{t-1}) with the ``nn.GRU`` module: -> (h_t (batch, H), new hidden)."""
        rnn_input = step_emb if feed is None else torch.cat([step_emb, feed.to(step_emb.dtype)], dim=-1)
        top, hidden = self.rnn(rnn_input.unsqueeze(1), hidden)  # (batch, 1, H), (layers, batch, H)
        return top.squeeze(1), hidden

    def step_logits(self, prev_tokens, state, keys_proj, values, src_mask, out=None, output_weight_t=None):
        hidden, feed = state  # (layers, batch, H), (batch, output_size) or None
        emb = self.dropout(self.embedding(prev_tokens))  # (batch, emb)
        attentional, hidden, weights = self._forward_step(emb, feed, hidden, keys_proj, values, src_mask)
        logits = self.output_logits(attentional, out, output_weight_t)  # (batch, vocab)
        new_state = (hidden, attentional if self.input_feeding else None)
        return logits, new_state, weights

    def features(self, tgt_in, encoder_final, keys_proj, values, src_mask):
        emb = self.dropout(self.embedding(tgt_in))  # (batch, tgt_len, emb)
        hidden, feed = self.init_state(encoder_final)
        if feed is None:  # the whole target in one call: (batch, tgt_len, H)
            tops = None if self.fast_loop is None else self.fast_loop(self, emb, hidden)  # nn.GRU's maths
            if tops is None:
                tops, _ = self.rnn(emb, hidden)
            attentionals, attentions = self.attend(tops, keys_proj, values, src_mask)  # 3-D query
        else:
            step_inputs, gru_step = self._fed_gru(emb)
            steps, weights_per_step = [], []
            for step_input in step_inputs:
                feed, hidden, weights = self._forward_step(step_input, feed, hidden, keys_proj, values, src_mask,
                                                           gru_step)  # (batch, out), (layers, batch, H)
                steps.append(feed)
                weights_per_step.append(weights)
            attentionals = torch.stack(steps, dim=1)  # (batch, tgt_len, output_size)
            attentions = torch.stack(weights_per_step, dim=1)  # (batch, tgt_len, src_len)
        return attentionals, attentions  # (batch, tgt_len, output_size), (batch, tgt_len, src_len)

    def _fed_gru(self, emb: Tensor):
        """The GRU of a loop with input feeding, emb (batch, tgt_len, emb) -> (one input per step, a function
        (step input, fed h~ (batch, output_size), hidden (layers, batch, H)) -> (top (batch, H), new hidden)).

        One layer without autocast: the step inputs are the embeddings' part of the input gates,
        W_ih,e y + b_ih (batch, 3H), computed for all steps in one product; a step adds the fed h~'s part
        W_ih,f h~ (its slice of W_ih taken once, as in `GRUCellStack.context_weight`) and updates as ``nn.GRU``
        does. Otherwise (more layers, or autocast, under which ``nn.GRU`` keeps the recurrence in float32) the
        step inputs are the embeddings and a step calls ``nn.GRU`` on [E y; h~]. The unbind gives one backward
        for all steps."""
        rnn = self.rnn
        if self.num_layers > 1 or torch.is_autocast_enabled(emb.device.type):
            return emb.unbind(1), self._module_gru_step
        emb_size = emb.size(-1)
        emb_gates = torch.nn.functional.linear(emb, rnn.weight_ih_l0[:, :emb_size], rnn.bias_ih_l0)  # (B, T, 3H)
        feed_weight = rnn.weight_ih_l0[:, emb_size:]  # (3H, output_size)

        def cell_step(step_gates, feed, hidden):
            h = hidden[0]  # (batch, H)
            gi = step_gates + torch.nn.functional.linear(feed, feed_weight)  # (batch, 3H)
            h = gru_cell(gi, torch.nn.functional.linear(h, rnn.weight_hh_l0, rnn.bias_hh_l0), h)
            return h, h.unsqueeze(0)

        return emb_gates.unbind(1), cell_step
