"""Shared fixtures: tiny models and the location of the real corpora (when present)."""

from __future__ import annotations

import importlib.util
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


def _require_kernels() -> None:
    """Skip where the compiled kernels cannot be built (with the reason); fail under CI=true, which has a compiler."""
    from s2s_attn.fast import kernels

    if kernels.ops() is None:
        reason = "the compiled kernels could not be built here (they need a C++ compiler and ninja)"
        if os.environ.get("CI") == "true":  # CI has both: a build that fails there is a bug, not a skip
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def compiled():
    """The compiled CPU kernels (`s2s_attn.fast.kernels.ops()`), which every fast path needs."""
    from s2s_attn.fast import kernels

    _require_kernels()
    return kernels.ops()


@pytest.fixture(params=["kernel", "general"])
def kernel_path(request, monkeypatch):
    """Beam search's log-softmax on both of its paths (`s2s_attn.decoding.beam.block_log_probs`): the compiled
    kernel's and the general one (CUDA, or no kernels). -> "kernel" or "general"."""
    from s2s_attn.fast import kernels

    if request.param == "kernel":
        _require_kernels()
    else:
        monkeypatch.setattr(kernels, "_mode", "false")
    return request.param


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


def set_fast_loop(module, on: bool) -> None:
    """Install (or remove) the fast loop of a `GRUEncoder` or a decoder, as `s2s_attn.fast.accelerate` does."""
    from s2s_attn.fast import recurrence
    from s2s_attn.model.encoder import GRUEncoder

    if isinstance(module, GRUEncoder):
        module.fast = recurrence.encoder_loop if on else None
    else:
        loop = recurrence.bahdanau_loop if module.name == "bahdanau" else recurrence.luong_loop
        module.fast_loop = loop if on else None


def _make_tiny_model(attention: str = "bahdanau", decoder: str = "bahdanau", input_feeding: bool = True,
                     fast: bool = True, **overrides):
    from s2s_attn.fast import accelerate
    from s2s_attn.model.seq2seq import ModelConfig, Seq2Seq

    settings = dict(
        src_vocab_size=30, tgt_vocab_size=25, emb_size=16, encoder_hidden=12, decoder_hidden=20,
        output_size=16, attention_size=10, attention_heads=2, dropout=0.0,
    )
    if attention == "luong_dot":
        settings["decoder_hidden"] = 24  # the dot score needs decoder state size == encoder output (2 x 12)
    settings.update(overrides)
    torch.manual_seed(0)
    config = ModelConfig(attention=attention, decoder=decoder, input_feeding=input_feeding, **settings)
    model = Seq2Seq(config).eval()
    if fast:  # as s2s-train and a translator from a checkpoint run it (fast=auto)
        accelerate(model)
    return model


@pytest.fixture
def make_tiny_model():
    """Factory: ``make_tiny_model(attention=..., decoder=..., input_feeding=..., fast=..., **ModelConfig fields)``
    -> a small Seq2Seq in eval mode, no dropout, seeded, with the fast paths that claim it (``fast=False``: the
    reference model alone)."""
    return _make_tiny_model


@pytest.fixture
def tiny_model():
    """The default tiny model: Bahdanau decoder and attention."""
    return _make_tiny_model()


def _model_variants() -> list:
    from s2s_attn.model.attention import ATTENTION_REGISTRY

    decoders = [("bahdanau", True), ("luong", True), ("luong", False)]  # bahdanau ignores input feeding
    return [
        pytest.param(
            dict(decoder=decoder, input_feeding=feeding, attention=attention),
            id=f"{decoder}{'' if decoder == 'bahdanau' else '+feed' if feeding else '-nofeed'}-{attention}",
        )
        for decoder, feeding in decoders
        for attention in sorted(ATTENTION_REGISTRY)
    ]


@pytest.fixture(params=_model_variants())
def any_tiny_model(request):
    """Every decoder style (luong with and without input feeding) x every registered attention."""
    return _make_tiny_model(**request.param)


BENCHMARK_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


@pytest.fixture
def benchmark_script():
    """scripts/benchmark.py loaded as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("benchmark_script", BENCHMARK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def explore_runs(tmp_path_factory):
    """Two tiny toy runs for the explorer's tests, trained once per session (`integration/explore_runs.py`)."""
    from .integration.explore_runs import train_explore_runs

    return train_explore_runs(tmp_path_factory.mktemp("explore"))


def write_reversal_gold(src_file: Path, gold_file: Path) -> Path:
    """The toy reversal's gold alignment (the anti-diagonal) for the sentences of ``src_file``, in NAACL format."""
    from s2s_attn.data.synthetic import toy_alignment

    with gold_file.open("w") as f:
        for k, line in enumerate(src_file.read_text().splitlines()):
            for s, t in sorted(toy_alignment(line, "reverse")):
                f.write(f"{k + 1:04d} {s + 1} {t + 1} S\n")
    return gold_file
