"""Shared fixtures: tiny models and the location of the real corpora (when present)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """The real corpora: $S2S_DATA_DIR, else ../shared/data next to the checkout; None if absent."""
    candidates = [os.environ.get("S2S_DATA_DIR"), REPO_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "tatoeba" / "eng-fra.tsv").is_file():
            return Path(candidate)
    return None


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_model():
    from s2s_attn.model.seq2seq import ModelConfig, Seq2Seq

    torch.manual_seed(0)
    config = ModelConfig(
        src_vocab_size=30, tgt_vocab_size=25, emb_size=16, encoder_hidden=12, decoder_hidden=20,
        output_size=16, attention_size=10, dropout=0.0,
    )
    return Seq2Seq(config).eval()
