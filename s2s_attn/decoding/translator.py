"""Translate text with a trained model: tokenise, batch by length, decode, detokenise, restore order."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.batching import inference_batches, make_batch
from ..data.tokenizer import Tokenizer
from ..fast import FastSettings, accelerate, gemm
from ..model.seq2seq import ModelConfig, Seq2Seq
from ..training.checkpoint import CheckpointError, load_checkpoint, tokenizer_from
from . import DECODE_BATCH_SIZE
from .beam import SearchSettings, beam_search_stream
from .greedy import greedy_decode, greedy_stream
from .step import hold_tables, shared_tables

log = logging.getLogger(__name__)


@dataclass
class AttendedTranslation:
    """One sentence translated with its attention.

    ``src_tokens`` are the source's SentencePiece pieces plus ``</s>``; ``tgt_tokens`` the output's
    pieces plus ``</s>`` (unless decoding stopped at the length limit); ``attention`` is
    (len(tgt_tokens), len(src_tokens)) (the mean of the heads for multi-head attention) and ``heads``
    (heads, len(tgt_tokens), len(src_tokens)) for multi-head attention when asked for, else None.
    An empty input line gives empty lists and no matrix.
    """

    source: str
    translation: str
    src_tokens: list[str]
    tgt_tokens: list[str]
    attention: torch.Tensor | None
    heads: torch.Tensor | None = None

    def attention_rows(self, digits: int = 4) -> list[list[float]]:
        """The attention matrix as nested lists (target rows x source columns), rounded."""
        if self.attention is None:
            return []
        return [[round(float(v), digits) for v in row] for row in self.attention.tolist()]


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
        self, model: Seq2Seq, tokenizer: Tokenizer, device: torch.device, max_src_pieces: int = 200,
        frozen: bool = False,
    ) -> None:
        """``frozen``: the model's weights will not change any more (no training), so the decoding tables
        built from them (`s2s_attn.decoding.step.hold_tables`) are kept across calls; a translator made
        from a checkpoint is frozen, the trainer's validation translator is not."""
        self.model, self.tokenizer, self.device = model.eval(), tokenizer, device
        if frozen:
            hold_tables(model)
        self.max_src_pieces = max_src_pieces
        self.truncated = 0
        self.convert_source = None  # e.g. traditional -> simplified Chinese, as the training data was

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto") -> Translator:
        """A translator from a checkpoint file, or from a run directory written by s2s-train: its
        ``checkpoints/best.pt``, else its newest ``step_N.pt`` (`resolve_checkpoint`, as s2s-translate
        does). ``device``: ``auto`` (CUDA when available, else the CPU), ``cpu`` or ``cuda``."""
        payload = load_checkpoint(path)
        try:
            model = Seq2Seq(ModelConfig(**payload["model_config"]))
            model.load_state_dict(payload["model"])
        except (TypeError, RuntimeError, ValueError) as error:
            first = str(error).strip().splitlines()[0][:300]
            raise CheckpointError(
                f"{payload['path']} does not match this version's model: {first}"
            ) from None
        tokenizer = tokenizer_from(payload)
        dev = resolve_device(device)
        gemm.backend()  # an unknown S2S_GEMM value is a ValueError here, before any decoding
        model.to(dev)
        # the run's own choice (fast=off: the reference model), or the fast paths for a checkpoint without one
        implementations = accelerate(model, FastSettings.from_config(payload["config"].get("fast")))
        translator = cls(model, tokenizer, dev, int(payload["config"]["data"].get("max_src_pieces", 200)),
                         frozen=True)
        translator.implementations = implementations
        translator.config = payload["config"]
        from ..data.chinese import input_script_converter

        translator.convert_source = input_script_converter(payload["config"].get("data", {}))
        translator.checkpoint_path = Path(payload["path"])
        return translator

    @torch.no_grad()
    def translate_ids(self, src_ids: list[list[int]], batch_size: int = DECODE_BATCH_SIZE,
                      return_attention: bool = False, return_heads: bool = False,
                      search: SearchSettings | None = None):
        """Decode lists of source piece ids; returns target ids (and attention) in input order.

        ``return_attention``: (hyps, attention matrices); ``return_heads``: (hyps, attention matrices,
        per-head matrices or None each), see `greedy_decode`. ``search``: greedy (default, or
        beam_size 1) or beam search, whose best hypothesis (and its attention) is returned; per-head
        weights come from greedy decoding only (None each with a beam).
        """
        return_attention = return_attention or return_heads
        search = search or SearchSettings()
        hyps: list[list[int] | None] = [None] * len(src_ids)
        atts: list[torch.Tensor | None] = [None] * len(src_ids)
        heads: list[torch.Tensor | None] = [None] * len(src_ids)
        with shared_tables(self.model):  # the fast decoding step's tables: built once for all batches
            if search.beam_size > 1:
                for i, nbest in beam_search_stream(self.model, self.batches(src_ids, batch_size), batch_size, search,
                                                   return_attention):
                    hyps[i], atts[i] = nbest[0].tokens, nbest[0].attention
            elif not return_heads:
                for i, (ids, att, _) in greedy_stream(self.model, self.batches(src_ids, batch_size), batch_size,
                                                      return_attention, search.max_len_ratio, search.max_len_extra):
                    hyps[i], atts[i] = ids, att
            else:  # per-head weights: a batch at a time
                for src, src_len, indices in self.batches(src_ids, batch_size):
                    decoded = greedy_decode(self.model, src, src_len, return_attention=return_attention,
                                            return_heads=return_heads, max_len_ratio=search.max_len_ratio,
                                            max_len_extra=search.max_len_extra)
                    for j, i in enumerate(indices):
                        hyps[i] = decoded[0][j]
                        if return_attention:
                            atts[i] = decoded[1][j]
                        if return_heads:
                            heads[i] = decoded[2][j]
        if return_heads:
            return hyps, atts, heads
        return (hyps, atts) if return_attention else hyps

    def encode_lines(self, lines: list[str]) -> tuple[list[int], list[list[int]]]:
        """Normalise and encode raw lines: (indices of the non-empty lines, their source ids, truncated
        to ``max_src_pieces`` with a warning)."""
        from ..data.text import normalize_text

        cleaned = [normalize_text(line) for line in lines]
        if self.convert_source is not None:
            cleaned = [self.convert_source(line) for line in cleaned]
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
        return todo, src_ids

    def translate(self, lines: list[str], batch_size: int = DECODE_BATCH_SIZE,
                  search: SearchSettings | None = None) -> list[str]:
        """Translate raw sentences; empty (or whitespace-only) lines give empty lines."""
        todo, src_ids = self.encode_lines(lines)
        out_ids = self.translate_ids(src_ids, batch_size, search=search) if src_ids else []
        texts = self.tokenizer.decode_tgt(out_ids) if out_ids else []
        result = [""] * len(lines)
        for i, text in zip(todo, texts):
            result[i] = text
        return result

    @torch.no_grad()
    def translate_nbest(self, lines: list[str], search: SearchSettings,
                        batch_size: int = DECODE_BATCH_SIZE) -> list[list[tuple[str, float, float]]]:
        """The ``search.nbest`` best translations of each line, best first, as (text, log-probability,
        ranking score); an empty line gives an empty list."""
        todo, src_ids = self.encode_lines(lines)
        results: list[list[tuple[str, float, float]]] = [[] for _ in lines]
        with shared_tables(self.model):
            for j, hyps in beam_search_stream(self.model, self.batches(src_ids, batch_size), batch_size, search):
                texts = self.tokenizer.decode_tgt([h.tokens for h in hyps])
                results[todo[j]] = [(text, h.score, h.norm_score) for text, h in zip(texts, hyps)]
        return results

    def batches(self, src_ids: list[list[int]], batch_size: int):
        """(src, src_len, indices) of batches of similar source length, on the device, shortest first."""
        for indices in inference_batches(src_ids, batch_size):
            batch = make_batch([src_ids[i] for i in indices], None, indices).to(self.device)
            yield batch.src, batch.src_len, indices

    def attended(self, src_ids: list[int], out_ids: list[int], attention: torch.Tensor | None,
                 heads: torch.Tensor | None = None, source: str = "") -> AttendedTranslation:
        """Package one decoded sentence with its tokens (see `AttendedTranslation`)."""
        src_tokens = self.tokenizer.src_pieces_of(src_ids) + ["</s>"]
        tgt_tokens = self.tokenizer.tgt_pieces_of(out_ids) + ["</s>"]
        if attention is not None:
            tgt_tokens = tgt_tokens[: attention.size(0)]  # no </s> row when decoding hit the length limit
        translation = self.tokenizer.decode_tgt([out_ids])[0]
        return AttendedTranslation(source, translation, src_tokens, tgt_tokens, attention, heads)

    def translate_with_attention(self, lines: list[str], batch_size: int = DECODE_BATCH_SIZE, heads: bool = False,
                                 search: SearchSettings | None = None) -> list[AttendedTranslation]:
        """Translate raw sentences and keep each one's tokens and attention matrix (and, with
        ``heads``, the per-head matrices of multi-head attention). Empty lines give empty results."""
        todo, src_ids = self.encode_lines(lines)
        results = [AttendedTranslation(line, "", [], [], None) for line in lines]
        if not src_ids:
            return results
        if heads:
            out_ids, atts, head_atts = self.translate_ids(src_ids, batch_size, return_heads=True, search=search)
        else:
            out_ids, atts = self.translate_ids(src_ids, batch_size, return_attention=True, search=search)
            head_atts = [None] * len(src_ids)
        for k, i in enumerate(todo):
            results[i] = self.attended(src_ids[k], out_ids[k], atts[k], head_atts[k], source=lines[i])
        return results
