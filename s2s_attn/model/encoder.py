"""Recurrent encoder: embeddings -> multi-layer bidirectional GRU over packed sequences.

This is the reference: ``nn.GRU`` over packed sequences. On the CPU `s2s_attn.fast` may stand in for the GRU of
this exact class (``GRUEncoder.fast``) with a loop that computes the same function."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .dropout import Dropout

#: a fast implementation's signature: (encoder, embedded (batch, src_len, emb), src_len (batch,)) ->
#: (outputs before dropout (batch, src_len, output_size), final (batch, output_size)), or None where it does not apply
FastEncoder = Callable[["GRUEncoder", Tensor, Tensor], "tuple[Tensor, Tensor] | None"]


class GRUEncoder(nn.Module):
    """Encode a padded batch of source token ids.

    forward(src, src_len) -> (outputs, final)
        src:     (batch, src_len) token ids, padded with ``pad_id``
        src_len: (batch,) true lengths (>= 1)
        outputs: (batch, src_len, output_size), zeros on padding
        final:   (batch, output_size) the last layer's final state, both directions concatenated
    """

    def __init__(
        self,
        vocab_size: int,
        emb_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.1,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_id)
        self.dropout = Dropout(dropout)
        self.rnn = nn.GRU(
            emb_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.num_directions = 2 if bidirectional else 1
        # set by `s2s_attn.fast.accelerate` where a fast recurrence claims this exact encoder
        self.fast: FastEncoder | None = None
        self.output_size = hidden_size * self.num_directions

    def forward(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor]:
        embedded = self.dropout(self.embedding(src))  # (batch, src_len, emb)
        if self.fast is not None and (encoded := self.fast(self, embedded, src_len)) is not None:
            outputs, final = encoded  # the same GRU, computed by a fused loop with its own backward
            return self.dropout(outputs), final
        packed = pack_padded_sequence(
            embedded, src_len.cpu(), batch_first=True, enforce_sorted=False
        )
        packed_out, h_n = self.rnn(packed)  # h_n: (layers * directions, batch, hidden)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src.size(1))
        # (batch, src_len, hidden * directions)
        last_layer = h_n[-self.num_directions :]  # (directions, batch, hidden)
        final = torch.cat(list(last_layer), dim=-1)  # (batch, hidden * directions)
        return self.dropout(outputs), final
