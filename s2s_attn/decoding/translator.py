"""Translate text with a trained model: tokenise, batch by length, decode, detokenise, restore order."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..data.batching import inference_batches, make_batch
from ..data.tokenizer import Tokenizer
from ..model.seq2seq import ModelConfig, Seq2Seq
from ..training.checkpoint import CheckpointError, load_checkpoint, tensor_to_bytes
from .greedy import greedy_decode

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when it is available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name} but CUDA is not available here; use auto or cpu")
    return torch.device(name)


class Translator:
    """A model plus its tokenizers; ``translate`` maps raw sentences to raw translations."""

    def __init__(
        self, model: Seq2Seq, tokenizer: Tokenizer, device: torch.device, max_src_pieces: int = 200
    ) -> None:
        self.model, self.tokenizer, self.device = model.eval(), tokenizer, device
        self.max_src_pieces = max_src_pieces
        self.truncated = 0

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto") -> Translator:
        payload = load_checkpoint(path)
        try:
            model = Seq2Seq(ModelConfig(**payload["model_config"]))
            model.load_state_dict(payload["model"])
        except (TypeError, RuntimeError, ValueError) as error:
            first = str(error).strip().splitlines()[0][:300]
            raise CheckpointError(
                f"{payload['path']} does not match this version's model: {first}"
            ) from None
        tokenizer = Tokenizer(tensor_to_bytes(payload["src_spm"]), tensor_to_bytes(payload["tgt_spm"]))
        dev = resolve_device(device)
        translator = cls(model.to(dev), tokenizer, dev, int(payload["config"]["data"].get("max_src_pieces", 200)))
        translator.config = payload["config"]
        translator.checkpoint_path = Path(payload["path"])
        return translator

    @torch.no_grad()
    def translate_ids(self, src_ids: list[list[int]], batch_size: int = 64, return_attention: bool = False):
        """Decode lists of source piece ids; returns target ids (and attention) in input order."""
        hyps: list[list[int] | None] = [None] * len(src_ids)
        atts: list[torch.Tensor | None] = [None] * len(src_ids)
        for indices in inference_batches(src_ids, batch_size):
            batch = make_batch([src_ids[i] for i in indices], None, indices).to(self.device)
            out, att = greedy_decode(self.model, batch.src, batch.src_len, return_attention=return_attention)
            for j, i in enumerate(indices):
                hyps[i] = out[j]
                if att is not None:
                    atts[i] = att[j]
        return (hyps, atts) if return_attention else hyps

    def translate(self, lines: list[str], batch_size: int = 64) -> list[str]:
        """Translate raw sentences; empty (or whitespace-only) lines give empty lines."""
        from ..data.corpus import normalize_text

        cleaned = [normalize_text(line) for line in lines]
        todo = [i for i, line in enumerate(cleaned) if line]
        src_ids = self.tokenizer.encode_src([cleaned[i] for i in todo])
        for k, ids in enumerate(src_ids):
            if len(ids) > self.max_src_pieces:
                self.truncated += 1
                log.warning(
                    "input line %d has %d subword pieces; truncated to %d",
                    todo[k] + 1, len(ids), self.max_src_pieces,
                )
                src_ids[k] = ids[: self.max_src_pieces]
        out_ids = self.translate_ids(src_ids, batch_size) if src_ids else []
        texts = self.tokenizer.decode_tgt(out_ids) if out_ids else []
        result = [""] * len(lines)
        for i, text in zip(todo, texts):
            result[i] = text
        return result
