"""The fast layer stands in for the reference model only where it computes the same function: ``fast=off`` and
``fast=auto`` train the same loss curve from the same seed, the run says which implementation ran each component
(its log and results.json), and the reference model depends on nothing outside ``s2s_attn/model``."""

import ast
import logging
from pathlib import Path

import pytest

from s2s_attn.fast import FastSettings, accelerate, gemm, kernels
from s2s_attn.model.attention import ATTENTION_REGISTRY, BahdanauAttention
from s2s_attn.training.trainer import train

from ..conftest import REPO_ROOT
from .test_toy_training import toy_config

MODEL_DIR = REPO_ROOT / "s2s_attn" / "model"
SHORT = ["trainer.max_steps=40", "trainer.eval_every=20", "trainer.log_every=5", "model.dropout=0.2",
         "data.train_size=1500", "model.emb_size=16", "model.encoder_hidden=16", "model.decoder_hidden=32",
         "model.output_size=16", "attention.size=16", "logger.attention_images=0", "trainer.threads=1"]


@pytest.fixture
def restore_process_settings(monkeypatch):
    """fast=off switches the kernels and the products' library off for the whole process: put them back after."""
    monkeypatch.setattr(kernels, "_mode", kernels._mode)
    monkeypatch.setattr(gemm, "_choice", gemm._choice)


@pytest.mark.parametrize("overrides", [[], ["model.decoder=luong", "model.input_feeding=false",
                                             "attention=luong_general"]], ids=["bahdanau", "luong"])
def test_fast_off_and_fast_auto_train_the_same_loss_curve_from_a_seed(tmp_path, restore_process_settings, caplog,
                                                                      overrides):
    with caplog.at_level(logging.INFO, logger="s2s_attn.training.trainer"):
        fast = train(toy_config(tmp_path, *SHORT, *overrides), tmp_path / "auto")
    assert "implementations: encoder: fused GRU layer" in caplog.text  # one line at start, in the log
    reference = train(toy_config(tmp_path, *SHORT, *overrides, "fast=off"), tmp_path / "off")
    assert fast["implementations"]["decoder_loop"] != "reference"
    assert set(reference["implementations"].values()) == {"reference", "PyTorch"}
    assert [step for step, _ in fast["train_loss"]] == [5, 10, 15, 20, 25, 30, 35, 40]
    # the same dropout masks and the same maths: only the rounding of differently grouped sums differs
    for (step, got), (_, want) in zip(fast["train_loss"], reference["train_loss"]):
        assert got == pytest.approx(want, rel=2e-4), f"step {step}"
    for got, want in zip(fast["history"], reference["history"]):
        assert got["valid_loss"] == pytest.approx(want["valid_loss"], rel=2e-4)


def test_the_decision_names_a_fast_implementation_only_for_what_it_claims(make_tiny_model):
    decision = accelerate(make_tiny_model())
    assert decision.encoder.startswith("fused GRU layer")
    assert decision.decoder_loop.startswith("fused additive-attention loop")
    assert decision.decoding_step == "fused Bahdanau step"
    assert decision.loss.startswith("blockwise")
    for model, loop, step in [(make_tiny_model(decoder_layers=2), "reference", "reference"),
                              (make_tiny_model(attention="multihead"), "reference", "reference"),
                              (make_tiny_model(decoder="luong"), "reference", "fused Luong step"),
                              (make_tiny_model(decoder="luong", input_feeding=False), "fused GRU layer", None)]:
        decision = accelerate(model)
        assert decision.decoder_loop.startswith(loop) and (step is None or decision.decoding_step == step)


def test_fast_off_leaves_every_seam_to_the_reference(make_tiny_model):
    model = make_tiny_model()
    decision = accelerate(model, FastSettings(enabled=False))
    assert set(decision.to_dict().values()) == {"reference", "PyTorch"}
    assert model.encoder.fast is None and model.decoder.fast_loop is None and model.decoder.fast_stepper is None
    assert model.fast_loss is None
    assert all(getattr(module, "fast", None) is None for module in model.modules())


def test_a_registered_subclass_is_not_claimed(monkeypatch, make_tiny_model):
    class Sharper(BahdanauAttention):
        def score(self, query, keys_proj):
            return 3.0 * super().score(query, keys_proj)

    monkeypatch.setitem(ATTENTION_REGISTRY, "sharper", Sharper)
    model = make_tiny_model(attention="sharper")
    decision = accelerate(model)
    assert decision.decoder_loop == "reference" and decision.decoding_step == "reference"
    assert model.decoder.fast_loop is None and model.decoder.fast_stepper is None


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, relative level) of every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_the_reference_model_imports_nothing_from_outside_it_and_no_private_torch():
    allowed = ("torch", "__future__", "collections", "dataclasses", "math", "typing")
    for path in sorted(MODEL_DIR.glob("*.py")):
        for module, level in _imports(path):
            if level == 1:  # within s2s_attn/model
                continue
            assert level == 0 and module.split(".")[0] in allowed, f"{path.name} imports {'.' * level}{module}"
            assert not module.startswith("torch._"), f"{path.name} imports {module}"
        text = path.read_text()
        assert "torch.ops." not in text and "torch._C" not in text, path.name
