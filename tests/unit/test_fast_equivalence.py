"""The equivalence harness: every fast path of `s2s_attn.fast` computes what the reference model computes.

For each configuration of the grid below (decoder style x input feeding x attention x decoder layers x precision),
two copies of one model with the same weights see the same batch: the reference model (nothing installed) and the
model `accelerate` equips, as ``s2s-train`` runs it. They must agree on the loss, the attention, the gradient of
every parameter (also under guided alignment's extra loss on the attention), and the greedy and beam-5 outputs
and scores, within the tolerances stated once here. Where the
fast layer claims nothing, both run the same code and agree exactly; the last test checks that the grid reaches
every fast path there is.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from s2s_attn.data.guidance import target_distribution
from s2s_attn.decoding.beam import beam_search
from s2s_attn.decoding.greedy import greedy_decode
from s2s_attn.fast import Decision, accelerate, kernels
from s2s_attn.model.attention import ATTENTION_REGISTRY
from s2s_attn.model.loss import guided_alignment_loss
from s2s_attn.model.seq2seq import ModelConfig, Seq2Seq

#: per precision, (rtol, atol): ||fast - reference|| <= rtol ||reference|| + atol sqrt(n) for a tensor of n elements
#: (atol for gradients near zero, such as the attention query's at initialisation). float32 differs only in how sums
#: are grouped; under bf16 autocast the fast loops keep float32 state where autocast's modules round to bf16
TOLERANCE = {"fp32": (1e-5, 1e-7), "bf16": (3e-2, 1e-3)}

#: the decoder styles: (decoder, input feeding); Bahdanau's decoder has no input feeding
DECODERS = [("bahdanau", True), ("luong", True), ("luong", False)]

SOURCES = [[5, 9, 7, 11, 6, 8, 2], [12, 4, 9, 2], [7, 7, 13, 5, 10, 2], [3, 2]]  # ending in EOS (2), padded with 0
TARGETS = [[1, 6, 14, 9, 4, 2], [1, 8, 5, 2], [1, 11, 3, 7, 12, 15, 2], [1, 2]]  # BOS (1) ... EOS


def _grid() -> list:
    cases = []
    for decoder, feeding in DECODERS:
        for attention in sorted(ATTENTION_REGISTRY):
            for layers, precision in ((1, "fp32"), (1, "bf16"), (2, "fp32")):
                name = f"{decoder}{'' if decoder == 'bahdanau' else '+feed' if feeding else '-nofeed'}-{attention}"
                cases.append(pytest.param(decoder, feeding, attention, layers, precision,
                                          id=f"{name}-{layers}layer-{precision}"))
    return cases


def _models(decoder: str, feeding: bool, attention: str, layers: int) -> tuple[Seq2Seq, Seq2Seq, Decision]:
    """(reference, accelerated, what runs in the accelerated one): the same weights, training mode, dropout on."""
    torch.manual_seed(0)
    config = ModelConfig(src_vocab_size=16, tgt_vocab_size=18, emb_size=16, encoder_hidden=12,
                         decoder_hidden=24 if attention == "luong_dot" else 20, decoder_layers=layers,
                         output_size=16, attention=attention, attention_size=10, attention_heads=2,
                         decoder=decoder, input_feeding=feeding, dropout=0.2)
    reference = Seq2Seq(config)
    fast = copy.deepcopy(reference)
    return reference, fast, accelerate(fast)


def _batch(rows: list[list[int]]) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([row + [0] * (width - len(row)) for row in rows])


def _guided_target() -> torch.Tensor:
    """Guided alignment's target for the batch: target piece t of each sentence linked to its source pieces t and
    t + 1 (where they exist), so that rows spread over one or two pieces."""
    links = []
    for src, tgt in zip(SOURCES, TARGETS):
        pairs = [(s, t) for t in range(len(tgt) - 2) for s in (t, t + 1) if s < len(src) - 1]
        links.append(np.array(pairs, dtype=np.int16).reshape(-1, 2))
    return target_distribution(links, max(map(len, TARGETS)) - 1, max(map(len, SOURCES)))


def _train_pass(model: Seq2Seq, precision: str,
                guided: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """-> (loss, attention, gradient of every parameter) of one teacher-forced pass, dropout masks from seed 7;
    ``guided``: the loss with guided alignment's term (weight 0.5)."""
    model.train().zero_grad()
    src, tgt = _batch(SOURCES), _batch(TARGETS)
    src_len = (src != 0).sum(1)
    torch.manual_seed(7)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss, attention = model(src, src_len, tgt[:, :-1], tgt[:, 1:], label_smoothing=0.1)
    if guided:
        loss = loss + 0.5 * guided_alignment_loss(attention, _guided_target())
    loss.backward()
    return loss.detach(), attention.detach().float(), {name: p.grad for name, p in model.named_parameters()}


def _assert_close(got: torch.Tensor, want: torch.Tensor, precision: str, what: str) -> None:
    assert got.shape == want.shape, what
    rtol, atol = TOLERANCE[precision]
    got, want = got.double(), want.double()
    error, allowed = float((got - want).norm()), rtol * float(want.norm()) + atol * want.numel() ** 0.5
    assert error <= allowed, f"{what}: ||fast - reference|| = {error:.2e} > {allowed:.2e} ({precision})"


@pytest.mark.parametrize("guided", [False, True], ids=["translation-loss", "guided-alignment"])
@pytest.mark.parametrize("decoder, feeding, attention, layers, precision", _grid())
def test_the_fast_paths_train_what_the_reference_model_trains(decoder, feeding, attention, layers, precision, guided):
    reference, fast, _ = _models(decoder, feeding, attention, layers)
    want_loss, want_attention, want_grads = _train_pass(reference, precision, guided)
    got_loss, got_attention, got_grads = _train_pass(fast, precision, guided)
    _assert_close(got_loss, want_loss, precision, "loss")
    _assert_close(got_attention, want_attention, precision, "attention")
    for name, want in want_grads.items():
        got = got_grads[name]
        if want is None:  # (a weight this configuration does not use)
            assert got is None, name
            continue
        _assert_close(got, want, precision, f"gradient of {name}")


@pytest.mark.parametrize("decoder, feeding, attention, layers, precision",
                         [case for case in _grid() if case.values[4] == "fp32"])
def test_the_fast_paths_decode_what_the_reference_model_decodes(decoder, feeding, attention, layers, precision):
    reference, fast, _ = _models(decoder, feeding, attention, layers)
    src = _batch(SOURCES)
    src_len = (src != 0).sum(1)
    with torch.no_grad():
        outputs = []
        for model in (reference.eval(), fast.eval()):
            greedy, weights = greedy_decode(model, src, src_len, max_len=9, return_attention=True)
            beams = beam_search(model, src, src_len, beam_size=5, nbest=3, max_len=9)
            outputs.append((greedy, weights, beams))
    (want_greedy, want_weights, want_beams), (got_greedy, got_weights, got_beams) = outputs
    assert got_greedy == want_greedy
    for got, want in zip(got_weights, want_weights):
        _assert_close(got, want, precision, "greedy attention")
    for got, want in zip(got_beams, want_beams):
        assert [h.tokens for h in got] == [h.tokens for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-4)


def test_the_grid_reaches_every_fast_path():
    """A fast path the grid never installs would go unchecked: each component is claimed somewhere."""
    if kernels.ops() is None and os.environ.get("CI") != "true":
        pytest.skip("the compiled kernels could not be built here: the fast paths that need them are not claimed")
    claimed: dict[str, set[str]] = {}
    for case in _grid():
        decoder, feeding, attention, layers, _ = case.values
        decision = _models(decoder, feeding, attention, layers)[2]
        for component, implementation in decision.to_dict().items():
            claimed.setdefault(component, set()).add(implementation)
    unclaimed = [component for component, names in claimed.items()
                 if component != "products" and names == {"reference"}]
    assert not unclaimed, f"no configuration of the grid runs a fast {', '.join(unclaimed)}"
