"""Recurrent encoder: embeddings -> multi-layer bidirectional GRU over packed sequences.

On the CPU one bidirectional fp32 layer (the default) runs as `recurrence.GRULayer`, the same function with a
backward that computes W_hh's gradient once for all steps (``nn.GRU``'s CPU backward over packed sequences
computes it, and a zero-filled gradient of all input gates, at every step)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .dropout import Dropout
from .recurrence import bidirectional_gru, fused_gru_applies


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
        # one bidirectional layer runs as one autograd function (model/recurrence.py); False keeps nn.GRU over
        # packed sequences (tests compare the two)
        self.fused_recurrence = True
        self.output_size = hidden_size * self.num_directions

    def forward(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor]:
        embedded = self.dropout(self.embedding(src))  # (batch, src_len, emb)
        fused = self.fused_recurrence and self.rnn.bidirectional and fused_gru_applies(self.rnn, embedded)
        if fused:  # the same GRU with its own backward
            outputs, h_n = bidirectional_gru(self.rnn, embedded, src_len)
            return self.dropout(outputs), torch.cat(list(h_n), dim=-1)
        packed = pack_padded_sequence(
            embedded, src_len.cpu(), batch_first=True, enforce_sorted=False
        )
        packed_out, h_n = self.rnn(packed)  # h_n: (layers * directions, batch, hidden)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src.size(1))
        # (batch, src_len, hidden * directions)
        last_layer = h_n[-self.num_directions :]  # (directions, batch, hidden)
        final = torch.cat(list(last_layer), dim=-1)  # (batch, hidden * directions)
        return self.dropout(outputs), final
