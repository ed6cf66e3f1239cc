"""Recurrent decoders that consult an attention module at every step.

Decoder styles are registered by name (``model.decoder=``). The attention is any module from
``s2s_attn.model.attention``; the decoder only relies on its interface.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .attention import Attention

DECODER_REGISTRY: dict[str, type[Decoder]] = {}


def register_decoder(name: str) -> Callable[[type[Decoder]], type[Decoder]]:
    def decorator(cls: type[Decoder]) -> type[Decoder]:
        if name in DECODER_REGISTRY:
            raise ValueError(f"decoder {name!r} is registered twice")
        DECODER_REGISTRY[name] = cls
        cls.name = name
        return cls

    return decorator


class Decoder(nn.Module):
    """Common interface of all decoder styles.

    The state passed between steps is a tuple ``(hidden, extra)``: ``hidden`` is
    (layers, batch, hidden_size); ``extra`` is style-specific (the previous attentional vector for
    input feeding, or None).
    """

    name = "base"
    hidden_size: int

    def init_state(self, encoder_final: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def step(
        self,
        prev_tokens: Tensor,
        state: tuple[Tensor, Tensor | None],
        keys_proj: Tensor,
        values: Tensor,
        src_mask: Tensor,
    ) -> tuple[Tensor, tuple[Tensor, Tensor | None], Tensor]:
        """One decoding step: (log-probs (batch, vocab), new state, attention (batch, src_len))."""
        raise NotImplementedError

    def forward(
        self, tgt_in: Tensor, encoder_final: Tensor, keys_proj: Tensor, values: Tensor, src_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Teacher-forced pass: (logits (batch, tgt_len, vocab), attention (batch, tgt_len, src_len))."""
        raise NotImplementedError


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
        self.dropout = nn.Dropout(dropout)

    def embed_gates(self, emb: Tensor) -> Tensor:
        """emb: (batch, tgt_len, emb) -> (batch, tgt_len, 3 * hidden), bias included."""
        cell = self.cells[0]
        return torch.nn.functional.linear(emb, cell.weight_ih[:, : self.emb_size], cell.bias_ih)

    def forward(self, emb_gates: Tensor, ctx: Tensor, hidden: Tensor) -> Tensor:
        """emb_gates: (batch, 3H); ctx: (batch, ctx); hidden: (layers, batch, H) -> new hidden."""
        cell = self.cells[0]
        h = hidden[0]  # (batch, H)
        gi = emb_gates + torch.nn.functional.linear(ctx, cell.weight_ih[:, self.emb_size :])
        gh = torch.nn.functional.linear(h, cell.weight_hh, cell.bias_hh)  # (batch, 3H)
        i_r, i_z, i_n = gi.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = n + z * (h - n)  # = (1 - z) * n + z * h
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
    ) -> None:
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.bridge = nn.Linear(encoder_size, hidden_size * num_layers)
        self.attention = attention
        self.rnn = GRUCellStack(emb_size, encoder_size, hidden_size, num_layers, dropout)
        self.pre_output = nn.Linear(hidden_size + encoder_size + emb_size, output_size)
        self.output = nn.Linear(output_size, vocab_size)
        if tie_embeddings:
            if output_size != emb_size:
                raise ValueError(
                    f"model.tie_embeddings needs model.output_size == model.emb_size "
                    f"(got {output_size} and {emb_size})"
                )
            self.output.weight = self.embedding.weight

    def init_state(self, encoder_final: Tensor) -> tuple[Tensor, None]:
        """encoder_final: (batch, encoder_size) -> hidden (layers, batch, hidden_size)."""
        bridged = torch.tanh(self.bridge(encoder_final))  # (batch, layers * H)
        hidden = bridged.view(-1, self.num_layers, self.hidden_size).transpose(0, 1).contiguous()
        return hidden, None

    def _logits(self, hidden_top: Tensor, context: Tensor, emb: Tensor) -> Tensor:
        """(…, H), (…, enc), (…, emb) -> logits (…, vocab)."""
        out = torch.tanh(self.pre_output(torch.cat([hidden_top, context, emb], dim=-1)))
        return self.output(self.dropout(out))

    def step(self, prev_tokens, state, keys_proj, values, src_mask):
        hidden, _ = state
        emb = self.dropout(self.embedding(prev_tokens))  # (batch, emb)
        context, weights = self.attention(hidden[-1], keys_proj, values, src_mask)
        hidden = self.rnn(self.rnn.embed_gates(emb), context, hidden)
        logits = self._logits(self.dropout(hidden[-1]), context, emb)  # (batch, vocab)
        return torch.log_softmax(logits.float(), dim=-1), (hidden, None), weights

    def forward(self, tgt_in, encoder_final, keys_proj, values, src_mask):
        emb = self.dropout(self.embedding(tgt_in))  # (batch, tgt_len, emb)
        emb_gates = self.rnn.embed_gates(emb)  # (batch, tgt_len, 3H)
        hidden, _ = self.init_state(encoder_final)
        tops, contexts, attentions = [], [], []
        for t in range(tgt_in.size(1)):
            context, weights = self.attention(hidden[-1], keys_proj, values, src_mask)
            hidden = self.rnn(emb_gates[:, t], context, hidden)
            tops.append(hidden[-1])
            contexts.append(context)
            attentions.append(weights)
        tops_t = torch.stack(tops, dim=1)  # (batch, tgt_len, H)
        contexts_t = torch.stack(contexts, dim=1)  # (batch, tgt_len, enc)
        logits = self._logits(self.dropout(tops_t), contexts_t, emb)  # (batch, tgt_len, vocab)
        return logits, torch.stack(attentions, dim=1)  # (batch, tgt_len, src_len)
