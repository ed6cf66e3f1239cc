"""The compiled kernels (`s2s_attn.fast.kernels`): single kernels against the PyTorch operations they replace
(sizes that are not multiples of the vector width, so the row tails run too), decoding's encoder loop in C++
against nn.GRU, the build (its lock, its folder, the other CPUs' variants), and what happens when they cannot be
built: the reference model runs after one warning, or the run stops with a clear error when they were asked for.
The fused loops built on them are tested in test_recurrence.py and test_fast_equivalence.py."""

import logging
import os

import pytest
import torch

from s2s_attn.data.batching import make_batch
from s2s_attn.fast import accelerate, gemm, kernels
from s2s_attn.model.encoder import GRUEncoder

from ..conftest import set_fast_loop

SOURCES = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
TARGETS = [[4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15]]


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


def test_without_a_compiler_auto_warns_once_and_runs_the_reference_model(fresh_state, monkeypatch, caplog,
                                                                         make_tiny_model):
    monkeypatch.setattr(kernels, "_build", failing_build)
    with caplog.at_level(logging.WARNING, logger="s2s_attn.fast.kernels"):
        assert kernels.ops() is None
        assert kernels.ops() is None
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "command not found" in warnings[0] and "reference model runs" in warnings[0]
    model = make_tiny_model()  # accelerated as s2s-train does it: nothing claimed
    assert set(accelerate(model).to_dict().values()) == {"reference", "PyTorch"}
    assert model.encoder.fast is None and model.decoder.fast_loop is None and model.fast_loss is None
    batch = make_batch(SOURCES, TARGETS, [0, 1, 2])
    loss, _ = model.train()(batch.src, batch.src_len, batch.tgt_in, batch.tgt_out)
    loss.backward()  # training still works
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.decoder.parameters())


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
