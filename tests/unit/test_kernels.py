"""The compiled kernels for the recurrent loops' element-wise work (`s2s_attn.fast.kernels`): with them the
training loops give the Python loops' outputs and gradients in float32 (the tiny model's sizes, 12, 20 and 10,
are not multiples of the vector width, so the kernels' row tails are exercised too), padding keeps exactly 0
attention, and when they cannot be built training goes on without them, or stops with a clear error when they
were asked for."""

import logging
import os

import pytest
import torch

from s2s_attn.data.batching import make_batch
from s2s_attn.fast import gemm, kernels
from s2s_attn.model.encoder import GRUEncoder

from ..conftest import set_fast_loop

SOURCES = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
TARGETS = [[4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15]]


@pytest.fixture(autouse=True)
def blas_products(monkeypatch):
    """The products from the BLAS in every run compared here, with and without the kernels: where oneDNN is
    chosen (`s2s_attn.fast.gemm`) the encoder's loop multiplies with it only beside the kernels, and the
    attention gradients below, differences of nearly equal terms, turn those products' other rounding into
    2-4x the error (still ~1e-4 relative): a difference of libraries, not of the kernels' formulas."""
    monkeypatch.setattr(gemm, "_choice", "blas")


@pytest.fixture
def compiled():
    if kernels.ops() is None:
        if os.environ.get("CI") == "true":  # CI has a compiler and ninja: a failed build fails the suite
            pytest.fail("the compiled kernels could not be built under CI")
        pytest.skip("the compiled kernels could not be built here (they need a C++ compiler and ninja); "
                    "the Python loops are tested in test_recurrence.py")


def train_step(model):
    """Features, attention and every parameter's gradient of a random linear function of the features."""
    model.zero_grad()
    batch = make_batch(SOURCES, TARGETS, [0, 1, 2])
    values, final, keys_proj, mask = model.encode(batch.src, batch.src_len)
    features, attention = model.decoder.features(batch.tgt_in, final, keys_proj, values, mask)
    probe = torch.randn(features.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (features * probe.to(features.dtype)).sum().backward()
    return features.detach(), attention.detach(), {name: p.grad.clone() for name, p in model.named_parameters()
                                                   if p.grad is not None}


def relative_error(got, exact) -> float:
    return float((got.double() - exact).abs().max() / exact.abs().max())


def assert_as_accurate(with_kernels, python, exact, name):
    """The kernels' float32 result is as close to the float64 one as the Python loops' float32 result (some
    gradients, the attention's above all, are differences of nearly equal terms: float32 leaves ~1e-4 of them,
    so a fixed tolerance could not tell rounding from a wrong formula)."""
    error, python_error = relative_error(with_kernels, exact), relative_error(python, exact)
    assert error <= 3 * python_error + 1e-5, f"{name}: {error:.3g} from float64, the Python loop {python_error:.3g}"


def with_and_without_kernels(monkeypatch, run):
    with_them = run()
    monkeypatch.setattr(kernels, "_mode", "false")
    assert kernels.ops() is None
    without = run()
    monkeypatch.undo()
    return with_them, without


@pytest.mark.parametrize("variant", [dict(decoder="bahdanau"), dict(decoder="luong", attention="luong_general",
                                                                    input_feeding=False)],
                         ids=["bahdanau", "luong-nofeed"])
def test_the_kernels_give_the_python_loops_outputs_and_gradients(compiled, make_tiny_model, monkeypatch, variant):
    model = make_tiny_model(**variant).train()
    with torch.no_grad():  # sharper attention than the initialisation's near-uniform one: gradients worth comparing
        for name, param in model.decoder.attention.named_parameters():
            param.mul_(20.0 if "energy" in name else 3.0)
    exact_features, exact_attention, exact_grads = train_step(model.double())  # the Python loops in float64
    (features, attention, grads), (plain_features, plain_attention, plain_grads) = with_and_without_kernels(
        monkeypatch, lambda: train_step(model.float()))
    torch.testing.assert_close(features, plain_features, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attention, plain_attention, rtol=1e-5, atol=1e-6)
    assert torch.all(attention[1, :, 3:] == 0)  # the second source: two pieces and EOS, then padding
    assert grads.keys() == plain_grads.keys() == exact_grads.keys()
    for name, exact in exact_grads.items():
        assert_as_accurate(grads[name], plain_grads[name], exact, name)


def test_the_kernels_keep_the_encoders_packed_sequence_semantics(compiled, monkeypatch):
    torch.manual_seed(0)
    encoder = GRUEncoder(30, 8, 6, dropout=0.0)
    set_fast_loop(encoder, True)
    lengths = torch.tensor([7, 3, 5, 1])  # unsorted, and a one-piece sentence
    src = torch.randint(4, 30, (4, 7))

    def run():
        encoder.zero_grad()
        outputs, final = encoder(src, lengths)
        probe = torch.randn(outputs.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        ((outputs * probe.to(outputs.dtype)).sum() + final.sum()).backward()
        return outputs.detach(), final.detach(), {name: p.grad.clone() for name, p in encoder.named_parameters()}

    encoder.double()
    exact_outputs, exact_final, exact_grads = run()
    encoder.float()
    (outputs, final, grads), (plain_outputs, plain_final, plain_grads) = with_and_without_kernels(monkeypatch, run)
    torch.testing.assert_close(outputs, plain_outputs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(final, plain_final, rtol=1e-5, atol=1e-6)
    assert torch.all(outputs[1, 3:] == 0) and torch.all(outputs[3, 1:] == 0)  # padding
    for name, exact in exact_grads.items():
        assert_as_accurate(grads[name], plain_grads[name], exact, name)


@pytest.mark.parametrize("size", [10, 70, 512])  # a row tail only, whole blocks and a tail, whole blocks
def test_the_attention_context_kernels_compute_the_loops_bmm(compiled, size):
    generator = torch.Generator().manual_seed(size)
    batch, src = 5, 7
    values = torch.randn(batch, src, size, generator=generator)
    weights = torch.softmax(torch.randn(batch, 3, src, generator=generator), dim=-1)[:, 1]  # rows of a larger tensor
    weights[2, 4:] = 0.0  # padding
    context = torch.full((batch, size), float("nan"))
    kernels.ops().attention_context(weights, values, context)
    torch.testing.assert_close(context, torch.bmm(weights.unsqueeze(1), values).squeeze(1), rtol=1e-5, atol=1e-6)
    d_context = torch.randn(batch, size, generator=generator)
    d_extra = torch.randn(batch, 2, src, generator=generator)[:, 0]
    expected = torch.bmm(values, d_context.unsqueeze(2)).squeeze(2)
    d_weights = torch.full((batch, src), float("nan"))
    kernels.ops().attention_context_backward(values, d_context, None, d_weights)
    torch.testing.assert_close(d_weights, expected, rtol=1e-5, atol=1e-5)
    kernels.ops().attention_context_backward(values, d_context, d_extra, d_weights)
    torch.testing.assert_close(d_weights, expected + d_extra, rtol=1e-5, atol=1e-5)


def test_the_kernels_run_on_float32_cpu_tensors_only(compiled):
    assert kernels.applies(torch.zeros(2, dtype=torch.float32)) is not None
    assert kernels.applies(torch.zeros(2, dtype=torch.float64)) is None
    assert kernels.applies(torch.zeros(2), torch.zeros(2, dtype=torch.bfloat16)) is None


@pytest.fixture
def fresh_state(monkeypatch):
    """The module as before its first build attempt; restored afterwards."""
    monkeypatch.setattr(kernels, "_ops", None)
    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setattr(kernels, "_mode", "auto")


def failing_build():
    raise RuntimeError("Error building extension: c++: command not found")


def test_without_a_compiler_auto_warns_once_and_keeps_the_python_loops(fresh_state, monkeypatch, caplog,
                                                                       make_tiny_model):
    monkeypatch.setattr(kernels, "_build", failing_build)
    with caplog.at_level(logging.WARNING, logger="s2s_attn.fast.kernels"):
        assert kernels.ops() is None
        assert kernels.ops() is None
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "command not found" in warnings[0] and "Python loops" in warnings[0]
    features, _, grads = train_step(make_tiny_model().train())  # training still works
    assert torch.isfinite(features).all() and grads


def test_kernels_true_fails_clearly_when_they_cannot_be_built(fresh_state, monkeypatch):
    monkeypatch.setattr(kernels, "_build", failing_build)
    with pytest.raises(kernels.KernelBuildError, match="fast.kernels=true.*command not found"):
        kernels.configure("true")


def test_kernels_false_never_builds(fresh_state, monkeypatch):
    monkeypatch.setattr(kernels, "_build", lambda: pytest.fail("built although fast.kernels=false"))
    kernels.configure(False)
    assert kernels.ops() is None


def test_an_unknown_mode_lists_the_valid_ones(fresh_state):
    with pytest.raises(ValueError, match="auto, true, false.*'sometimes'"):
        kernels.configure("sometimes")


@pytest.mark.parametrize("cap", ["DEFAULT", "AVX2"])
def test_the_source_compiles_for_the_other_cpu_capabilities(cap):
    """This machine builds the AVX512 variant; a CPU without it builds another one, whose code paths (the scalar
    tanh, AVX2's) are only compiled there: check that they compile (syntax and types, no code generated)."""
    import shutil
    import subprocess
    import sysconfig

    from torch.utils.cpp_extension import include_paths

    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        pytest.skip("no C++ compiler on the PATH")
    includes = [f"-I{path}" for path in [*include_paths(), sysconfig.get_paths()["include"]]]
    command = [compiler, "-fsyntax-only", "-std=c++20", *includes, *kernels.compiler_flags(cap), str(kernels.SOURCE)]
    result = subprocess.run(command, capture_output=True, text=True)
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 0, "\n".join(errors[:10])


def random_layer(directions: int, steps: int = 6, batch: int = 5, size: int = 20, masked: bool = True):
    """GRULayer's arguments for one or two directions: sentences of lengths 6, 2, 4, 1, 6 (masked) or a given
    initial state (one direction, unmasked), float32."""
    generator = torch.Generator().manual_seed(3)
    input_gates = torch.randn(steps, directions, batch, 3 * size, generator=generator)
    hh_weight = torch.randn(directions, 3 * size, size, generator=generator) * 0.3
    hh_bias = torch.randn(directions, 3 * size, generator=generator) * 0.1
    step_mask = h0 = None
    if masked:
        real = torch.arange(steps).unsqueeze(1) < torch.tensor([6, 2, 4, 1, 6]).unsqueeze(0)  # (S, B)
        step_mask = torch.stack([real, real.flip(0)][:directions], dim=1).unsqueeze(-1)  # (S, D, B, 1)
    else:
        h0 = torch.randn(directions, batch, size, generator=generator)
    return input_gates, hh_weight, hh_bias, step_mask, h0


@pytest.mark.parametrize("choice", ["blas", "onednn"])
@pytest.mark.parametrize("directions,masked", [(2, True), (1, False)], ids=["encoder", "luong-decoder"])
def test_the_compiled_layer_loop_computes_the_python_loops_steps(compiled, monkeypatch, choice, directions, masked):
    """GRULayer's whole loop in C++ (gru_layer_forward / gru_layer_backward: the two directions side by side on two
    threads) against its Python loop over the same kernels and products: the same states and gradients (up to the
    order of the backward's additions), with either library's products."""
    from s2s_attn.fast import recurrence

    if choice == "onednn" and not gemm.onednn_available():
        pytest.skip("this PyTorch build has no oneDNN")
    monkeypatch.setattr(gemm, "_choice", choice)
    input_gates, hh_weight, hh_bias, step_mask, h0 = random_layer(directions, masked=masked)

    def run(compiled_loop: bool):
        monkeypatch.setattr(recurrence, "COMPILED_LAYER_LOOP", compiled_loop)
        leaves = [t.clone().requires_grad_() for t in (input_gates, hh_weight, hh_bias)]
        start = None if h0 is None else h0.clone().requires_grad_()
        outputs, final = recurrence.GRULayer.apply(*leaves, step_mask, start, None)
        probe = torch.randn(outputs.shape, generator=torch.Generator().manual_seed(1))
        ((outputs * probe).sum() + final.square().sum()).backward()
        grads = [t.grad for t in leaves] + ([] if start is None else [start.grad])
        return outputs.detach(), final.detach(), grads

    outputs, final, grads = run(True)
    if masked:  # the one-piece sentence (row 3): 0 after its first step forward, before its last one backward
        assert torch.all(outputs[1:, 0, 3] == 0) and torch.all(outputs[:-1, 1, 3] == 0)
    plain_outputs, plain_final, plain_grads = run(False)
    torch.testing.assert_close(outputs, plain_outputs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(final, plain_final, rtol=1e-6, atol=1e-6)
    for got, expected in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("choice", ["blas", "onednn"])
def test_without_gradients_the_compiled_encoder_gives_nn_grus_outputs(compiled, monkeypatch, choice):
    """Decoding's encoder (no gradients): the layer loop in C++ with decoding's tanh and sigmoid, against nn.GRU
    over packed sequences; 0 on padding exactly."""
    from s2s_attn.fast import recurrence

    if choice == "onednn" and not gemm.onednn_available():
        pytest.skip("this PyTorch build has no oneDNN")
    monkeypatch.setattr(gemm, "_choice", choice)
    encoder = GRUEncoder(30, 8, 20, dropout=0.0).eval()
    set_fast_loop(encoder, True)
    lengths = torch.tensor([7, 3, 5, 1])  # unsorted, and a one-piece sentence
    src = torch.randint(4, 30, (4, 7))
    calls = []
    real_layer = recurrence._inference_layer

    class Recording:  # the kernels, noting which are called
        def __getattr__(self, name):
            calls.append(name)
            return getattr(compiled_ops, name)

    def recording_layer(x):
        return None if real_layer(x) is None else Recording()

    compiled_ops = kernels.ops()
    monkeypatch.setattr(recurrence, "_inference_layer", recording_layer)
    with torch.inference_mode():
        outputs, final = encoder(src, lengths)
        set_fast_loop(encoder, False)
        plain_outputs, plain_final = encoder(src, lengths)
    assert calls == ["gru_layer_inference"]  # the compiled loop ran, for the first call only
    torch.testing.assert_close(outputs, plain_outputs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(final, plain_final, rtol=1e-5, atol=1e-6)
    assert torch.all(outputs[1, 3:] == 0) and torch.all(outputs[3, 1:] == 0)


def test_a_build_lock_left_by_an_interrupted_build_is_cleared_not_waited_for(tmp_path):
    """PyTorch waits without end while its ``lock`` file exists; a build killed mid-way leaves one behind."""
    (tmp_path / "lock").touch()
    with kernels.build_lock(tmp_path):
        assert not (tmp_path / "lock").exists()


def test_the_kernels_build_in_a_folder_of_their_own_under_the_extensions_root(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert kernels.build_root().parent == tmp_path
    assert kernels.build_root().name.startswith("s2s_attn-py")
