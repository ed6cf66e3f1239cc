"""The whole translator: encoder -> attention + decoder -> output layer, built from the config."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .attention import build_attention
from .decoder import DECODER_REGISTRY
from .encoder import GRUEncoder
from .loss import FastLoss, linear_cross_entropy

INITIALISERS = ("uniform", "xavier")


@dataclass
class ModelConfig:
    """Constructor arguments of `Seq2Seq`; stored in every checkpoint to rebuild the exact model."""

    src_vocab_size: int
    tgt_vocab_size: int
    emb_size: int = 256
    encoder_hidden: int = 256
    encoder_layers: int = 1
    bidirectional: bool = True
    decoder: str = "bahdanau"
    decoder_hidden: int = 512
    decoder_layers: int = 1
    input_feeding: bool = True  # luong decoder: feed h~_{t-1} into the GRU; bahdanau ignores it
    output_size: int = 256
    dropout: float = 0.1
    tie_embeddings: bool = False
    attention: str = "bahdanau"
    attention_size: int = 256
    attention_heads: int = 1  # multihead only
    init: str = "uniform"  # uniform: U(-init_range, init_range) everywhere (OpenNMT-py); xavier: Glorot (Joey NMT)
    init_range: float = 0.1
    pad_id: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class Seq2Seq(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        decoder_class = DECODER_REGISTRY.get_class(config.decoder)  # fails early, listing the valid names
        self.encoder = GRUEncoder(
            config.src_vocab_size,
            config.emb_size,
            config.encoder_hidden,
            num_layers=config.encoder_layers,
            bidirectional=config.bidirectional,
            dropout=config.dropout,
            pad_id=config.pad_id,
        )
        attention = build_attention(
            config.attention,
            query_size=config.decoder_hidden,
            key_size=self.encoder.output_size,
            attn_size=config.attention_size,
            heads=config.attention_heads,
        )
        self.decoder = decoder_class(
            vocab_size=config.tgt_vocab_size,
            emb_size=config.emb_size,
            hidden_size=config.decoder_hidden,
            encoder_size=self.encoder.output_size,
            attention=attention,
            num_layers=config.decoder_layers,
            output_size=config.output_size,
            dropout=config.dropout,
            pad_id=config.pad_id,
            tie_embeddings=config.tie_embeddings,
            input_feeding=config.input_feeding,
        )
        self.fast_loss: FastLoss | None = None  # set by `s2s_attn.fast.accelerate`: the same sum, another way
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise every parameter by ``config.init``; the padding ids' embedding rows are zero.

        uniform: U(-init_range, init_range) for every weight and bias, as OpenNMT-py does.
        xavier:  Glorot-uniform for every matrix (embeddings included), zero biases, as Joey NMT does; it
                 keeps the signal through the attention's projections at unit scale, which lets the
                 parameter-light dot-product scores (luong_dot, multihead) start learning sooner.
        """
        if self.config.init not in INITIALISERS:
            raise ValueError(f"unknown model.init {self.config.init!r}; valid: {', '.join(INITIALISERS)}")
        for param in self.parameters():
            if self.config.init == "uniform":
                nn.init.uniform_(param, -self.config.init_range, self.config.init_range)
            elif param.dim() >= 2:
                nn.init.xavier_uniform_(param)
            else:
                nn.init.zeros_(param)
        with torch.no_grad():
            self.encoder.embedding.weight[self.config.pad_id].zero_()
            self.decoder.embedding.weight[self.config.pad_id].zero_()

    def encode(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> (values (batch, src_len, enc), final (batch, enc), keys_proj, mask (batch, src_len))."""
        values, final = self.encoder(src, src_len)
        mask = src != self.config.pad_id  # (batch, src_len)
        keys_proj = self.decoder.attention.precompute(values)
        return values, final, keys_proj, mask

    def forward(
        self, src: Tensor, src_len: Tensor, tgt_in: Tensor, tgt_out: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> tuple[Tensor, Tensor]:
        """Teacher forcing.

        Without ``tgt_out``: (logits (batch, tgt_len, vocab), attention (batch, tgt_len, src_len)).
        With ``tgt_out`` (batch, tgt_len): (the summed cross-entropy over its non-padding positions, a
        float32 scalar, attention). The output layer and the loss then run only on those positions
        (`s2s_attn.model.loss.linear_cross_entropy`, or ``fast_loss`` where it is set).
        """
        values, final, keys_proj, mask = self.encode(src, src_len)
        if tgt_out is None:
            return self.decoder(tgt_in, final, keys_proj, values, mask)
        features, attention = self.decoder.features(tgt_in, final, keys_proj, values, mask)
        rows = (tgt_out != self.config.pad_id).reshape(-1).nonzero().squeeze(1)  # non-padding positions: (n,)
        features = features.reshape(-1, features.size(-1)).index_select(0, rows)  # (n, output_size)
        output = self.decoder.output
        loss_function = linear_cross_entropy if self.fast_loss is None else self.fast_loss
        loss = loss_function(features, output.weight, output.bias, tgt_out.reshape(-1).index_select(0, rows),
                             label_smoothing)
        return loss, attention

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
