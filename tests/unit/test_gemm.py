"""The library that multiplies the training loops' float32 matrices on the CPU (`s2s_attn.fast.gemm`): oneDNN and
the BLAS compute the same products, training with either gives the same loss and gradients to float32
rounding, oneDNN gets only weights it multiplies fast and a bounded number of shapes, and ``fast.gemm`` checks
its value."""

import pytest
import torch

from s2s_attn.data.batching import make_batch
from s2s_attn.fast import gemm

needs_onednn = pytest.mark.skipif(not gemm.onednn_available(), reason="this PyTorch build has no oneDNN")
BACKENDS = ["blas", pytest.param("onednn", marks=needs_onednn)]


@pytest.fixture
def use(monkeypatch):
    """use(backend): multiply with it for the rest of the test."""
    return lambda backend: monkeypatch.setattr(gemm, "_choice", backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_and_matmul_compute_the_plain_products(use, backend):
    use(backend)
    generator = torch.Generator().manual_seed(0)
    x, weight = torch.randn(7, 20, generator=generator), torch.randn(30, 20, generator=generator)
    bias, rows_bias = torch.randn(30, generator=generator), torch.randn(7, 30, generator=generator)
    exact = x.double() @ weight.double().t()
    torch.testing.assert_close(gemm.linear(x, weight).double(), exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gemm.linear(x, weight, bias).double(), exact + bias.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gemm.linear(x, weight, rows_bias).double(), exact + rows_bias.double(), rtol=1e-5,
                               atol=1e-5)
    weight_t = weight.t().contiguous()  # (20, 30): matmul's second operand, and a transposed view as the weight
    torch.testing.assert_close(gemm.matmul(x, weight_t).double(), exact, rtol=1e-5, atol=1e-5)
    out = torch.full((7, 30), float("nan"))
    assert gemm.linear(x, weight, bias, out=out) is out
    torch.testing.assert_close(out.double(), exact + bias.double(), rtol=1e-5, atol=1e-5)


SOURCES = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
TARGETS = [[4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15]]


@needs_onednn
@pytest.mark.parametrize("variant", [dict(decoder="bahdanau"), dict(decoder="luong", attention="luong_general",
                                                                    input_feeding=False),
                                     dict(decoder="luong", attention="luong_general", input_feeding=True)],
                         ids=["bahdanau", "luong-nofeed", "luong-feed"])
def test_training_with_onednn_gives_the_blas_loss_and_gradients(make_tiny_model, use, variant):
    model = make_tiny_model(**variant).train()
    batch = make_batch(SOURCES, TARGETS, [0, 1, 2])

    def step(backend):
        use(backend)
        model.zero_grad()
        loss, _ = model(batch.src, batch.src_len, batch.tgt_in, batch.tgt_out, 0.1)
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    (blas_loss, blas_grads), (onednn_loss, onednn_grads) = step("blas"), step("onednn")
    torch.testing.assert_close(onednn_loss, blas_loss, rtol=1e-5, atol=1e-5)
    assert onednn_grads.keys() == blas_grads.keys()
    for name, grad in blas_grads.items():
        torch.testing.assert_close(onednn_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_auto_chooses_onednn_on_amd_cpus_only(monkeypatch):
    monkeypatch.setattr(gemm, "_choice", "auto")
    monkeypatch.setattr(gemm, "onednn_available", lambda: True)
    monkeypatch.setattr(gemm, "cpu_vendor", lambda: "AuthenticAMD")
    assert gemm.backend() == "onednn"
    monkeypatch.setattr(gemm, "cpu_vendor", lambda: "GenuineIntel")
    assert gemm.backend() == "blas"
    monkeypatch.setattr(gemm, "cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(gemm, "onednn_available", lambda: False)
    assert gemm.backend() == "blas"


def test_an_unknown_setting_lists_the_valid_ones_and_onednn_needs_a_build_with_it(monkeypatch):
    monkeypatch.setattr(gemm, "_choice", "auto")
    with pytest.raises(ValueError, match="fast.gemm must be one of auto, blas, onednn, got 'mkl'"):
        gemm.configure("mkl")
    monkeypatch.setattr(gemm, "onednn_available", lambda: False)
    with pytest.raises(ValueError, match="oneDNN.s product is not available"):
        gemm.configure("onednn")
    gemm.configure("BLAS")
    assert gemm.backend() == "blas"


def test_a_weight_oneDNN_would_multiply_slowly_goes_to_the_blas_or_is_copied_once(use):
    """oneDNN takes a contiguous weight or its transposed view; a slice of columns (W_ih's embedding part) would
    run in its slow reference kernel, so `linear` gives it to the BLAS and `loop_weight` copies it."""
    weight = torch.randn(30, 50)
    assert gemm._dense(weight) and gemm._dense(weight.t())
    columns = weight[:, :20]  # (30, 20), row stride 50
    assert not gemm._dense(columns) and not gemm._dense(columns.t())
    use("blas")
    assert gemm.loop_weight(columns) is columns  # the BLAS takes it as it is
    if gemm.onednn_available():
        use("onednn")
        copied = gemm.loop_weight(columns)
        assert copied.is_contiguous() and torch.equal(copied, columns)
        assert gemm.loop_weight(weight) is weight
        x = torch.randn(4, 20)
        torch.testing.assert_close(gemm.linear(x, columns), x @ columns.t())


@needs_onednn
def test_onednn_takes_a_bounded_set_of_row_counts_whatever_came_before(use, monkeypatch):
    """Each shape costs oneDNN a cached primitive (memory), so it takes padded_rows's row counts and the BLAS the
    rest (same result); the choice depends on the shape alone, so a resumed run makes the same choices."""
    use("onednn")
    calls = []
    real = gemm.torch_private.onednn_linear
    monkeypatch.setattr(gemm.torch_private, "onednn_linear", lambda *args: calls.append(args[0].size(0)) or real(*args))
    weight = torch.randn(6, 5)
    for rows in (3, 8, 9, 16, 64, 65, 80, 3, 8):
        x = torch.randn(rows, 5)
        torch.testing.assert_close(gemm.linear(x, weight), x @ weight.t())
        assert gemm.onednn_takes(x, weight) == (rows in (8, 16, 64, 80))
    assert calls == [8, 16, 64, 80, 8]


# decoding's per-step products (`table_product`): weights kept as (inputs, outputs), row counts that change every
# few steps


def test_padded_rows_bound_the_shapes_oneDNN_sees_and_waste_at_most_a_quarter():
    padded = {rows: gemm.padded_rows(rows) for rows in range(1, 1025)}
    assert all(rows <= p for rows, p in padded.items())
    assert all(p - rows < 8 for rows, p in padded.items() if rows <= 64)  # multiples of 8 up to 64
    assert all((p - rows) / rows < 0.25 for rows, p in padded.items() if rows > 64)
    assert [gemm.padded_rows(r) for r in (1, 8, 9, 64, 65, 80, 81, 128, 129, 320, 321)] == [
        8, 8, 16, 64, 80, 80, 96, 128, 160, 320, 384]
    assert len(set(padded.values())) == 8 + 4 * 4  # 64 in steps of 8, then four per doubling up to 1,024


@pytest.mark.parametrize("rows", [0, 1, 5, 9, 64, 65, 321])
@pytest.mark.parametrize("backend", BACKENDS)
def test_table_product_computes_the_plain_product(use, backend, rows):
    use(backend)
    generator = torch.Generator().manual_seed(rows)
    wide = torch.randn(rows, 40, generator=generator)
    x = wide[:, :33]  # a slice of columns, as the Luong step's features without their last column
    table, bias = torch.randn(33, 50, generator=generator), torch.randn(50, generator=generator)
    exact = x.double() @ table.double()
    torch.testing.assert_close(gemm.table_product(x, table).double(), exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gemm.table_product(x, table, bias).double(), exact + bias.double(), rtol=1e-5,
                               atol=1e-5)
    out = torch.full((rows, 50), float("nan"))
    assert gemm.table_product(x, table, out=out) is out
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_onednn_gives_a_row_the_same_bits_whatever_rows_are_multiplied_beside_it(use):
    """What batched decoding needs to give a sentence what it gets alone: a row's product must not depend on the
    rows beside it (their number included, and so the zero rows of `padded_rows`)."""
    use("onednn")
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(257, 600, generator=generator)  # the output layer's shape: (O + 1, V)
    x = torch.randn(100, 257, generator=generator)
    together = gemm.table_product(x, table)
    for rows in (1, 5, 9, 64, 65):
        assert torch.equal(gemm.table_product(x[:rows], table), together[:rows])


DECODING_VARIANTS = [dict(decoder="bahdanau"),  # `AdditiveBahdanauStepper`
                     dict(decoder="luong", attention="luong_general", input_feeding=False),  # `LuongStepper`
                     dict(decoder="luong", attention="luong_general", input_feeding=True)]
DECODE_SOURCES = [[5 + (7 * i + j) % 24 for j in range(2 + i % 8)] for i in range(11)]


@needs_onednn
@pytest.mark.parametrize("variant", DECODING_VARIANTS, ids=["bahdanau", "luong-nofeed", "luong-feed"])
def test_decoding_with_onednn_gives_each_sentence_what_it_gets_alone(make_tiny_model, use, monkeypatch, variant):
    from s2s_attn.data.tokenizer import EOS_ID
    from s2s_attn.decoding.beam import beam_search
    from s2s_attn.decoding.greedy import greedy_decode

    use("onednn")
    padded = []  # the row counts oneDNN multiplied: proof that it did
    monkeypatch.setattr(gemm, "padded_rows", lambda rows, plain=gemm.padded_rows: padded.append(rows) or plain(rows))
    model = make_tiny_model(**variant)
    with torch.no_grad():
        model.decoder.output.weight.mul_(15.0)
        model.decoder.output.bias[EOS_ID] += 0.5  # outputs of different lengths: rows leave at different steps
    batch = make_batch(DECODE_SOURCES, None, list(range(len(DECODE_SOURCES))))
    greedy, _ = greedy_decode(model, batch.src, batch.src_len, max_len=12)
    beams = beam_search(model, batch.src, batch.src_len, beam_size=4, nbest=2, max_len=12)
    assert padded
    for i, source in enumerate(DECODE_SOURCES):
        single = make_batch([source], None, [0])
        assert greedy_decode(model, single.src, single.src_len, max_len=12)[0][0] == greedy[i]
        alone = beam_search(model, single.src, single.src_len, beam_size=4, nbest=2, max_len=12)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in beams[i]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in beams[i]], abs=1e-4)


def test_an_unknown_S2S_GEMM_value_is_an_error_that_lists_the_valid_ones(monkeypatch):
    monkeypatch.setattr(gemm, "_choice", "mkl")  # as S2S_GEMM=mkl sets it at import
    with pytest.raises(ValueError, match="S2S_GEMM must be one of auto, blas, onednn, got 'mkl'"):
        gemm.table_product(torch.randn(2, 3), torch.randn(3, 4))
