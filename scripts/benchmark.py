#!/usr/bin/env python3
"""Measure training and decoding speed with the toolkit's own code paths; one JSON line per config.

    python scripts/benchmark.py                       # the default set of configurations
    python scripts/benchmark.py --steps 300 --configs "bahdanau=experiment=benchmark" \
        "luong_parallel=experiment=benchmark model.decoder=luong attention=luong_general model.input_feeding=false"

    python scripts/benchmark.py --checkpoint outputs/eng_fra-bahdanau/<date_time>   # decoding of a trained model
    python scripts/benchmark.py --peer onmt_mlp --peer-seconds 600   # OpenNMT-py beside us, on its split

Each configuration runs in its own process (so peak RSS is its own), on the same prepared data: ``--warmup``
training steps, then ``--steps`` timed steps (target tokens/s and sentences/s in steady state), then greedy and
beam-5 decoding of ``--decode`` test sentences in batches of 64 (sentences/s; after a warm-up of 64 sentences,
which also builds the decoding tables of the now frozen model), with the model trained so far or, with
``--decode-after-steps N``, trained on (untimed) to N steps in all: a barely trained model's outputs are longer,
so decoding speed depends on how trained the model is. Keys: config, overrides, train_tok_s (all timed steps),
train_tok_s_median and train_tok_s_windows (the median and the list of the target tokens/s of each 50-step window:
the peers' statistic, below), train_sent_s, steps, peak_rss_mib, greedy_sent_s, beam5_sent_s, decode_model_steps
(the steps the decoding model was trained), greedy_out_pieces (mean pieces per greedy output), threads, params, and
the arithmetic: mflop_per_tok (FLOPs of a training step per target token, counted by
``torch.utils.flop_counter`` on real batches), gflops (achieved: that x train_tok_s), gemm_gflops (an fp32 matmul
of the whole-batch output-layer shape, 704 x 512 x 8000, measured in the same process on the same threads: the
faster of torch.matmul and the library the training loops multiply with, gemm_backend), gemm_gflops_step (the
per-step GRU shape, 64 x 512 x 1536) and gemm_share (gflops / gemm_gflops: the share of the machine's
matrix-multiply ceiling the training step reaches).

``--peer RUN`` (onmt_mlp, onmt_general, joey_bahdanau, joey_luong) first installs and trains that peer
with the scripts of ``../shared/bench/peers`` (setup.sh, run_all.sh; package registries only) for
``--peer-seconds``, prints its figures (config "peer:RUN"), then measures the configuration compared with it
(bahdanau for the Bahdanau runs, luong_general_parallel for the Luong ones) on the peers' own split, and prints the
ratio ours / peer (config "ratio:..."), all from this one run; configurations no peer is compared with come last.
A shared machine's speed drifts by 10-20% over minutes, so ``--peer-rounds N`` measures each such pair N times,
ours first every other round, and prints each round's ratios and then their medians (with
train_tok_s_rounds). Each of our
configurations then decodes with a model trained as many steps as the checkpoint its peer decoded with (that
peer's decode_model_steps; batches of 64 sentences on both sides), unless ``--decode-after-steps`` says otherwise.
A peer's train_tok_s is the median of its 50-step windows' logged rates after warm-up (their parse_throughput.py);
the ratio's train_tok_s divides our rate over all timed steps by it, train_tok_s_median our median 50-step window
(the same statistic on both sides: one slow phase of a shared machine moves a median less).

``--ablate`` measures what each fast path gains instead (`s2s_attn.fast`): for each configuration, the same
``--steps`` training batches run again and again, with one component's fast implementation installed and then
removed (the reference runs), in ``--rounds`` rounds that alternate which goes first; the same for the compiled
kernels, for the whole fast layer at once, and for decoding's fused step (greedy and beam 5 on ``--decode`` test
sentences). Keys: config, and per component fast and reference (median target tokens/s, or sentences/s) and gain
(fast / reference - 1); a component no fast path claims in that configuration is null.

``--checkpoint RUN_DIR`` measures decoding of a trained model instead, on its run's test split: greedy
and beam 5 in batches of ``--batch-size`` (default: s2s-translate's, 128; the side-by-side runs above decode
in batches of 64, as the peers do), with sentences/s and test BLEU for both, and beam 5 one sentence at a
time (``--unbatched N`` sentences, default all), giving the speed-up of batching the beam. Keys: config,
batch_size, greedy_sent_s, greedy_bleu, beam5_sent_s, beam5_bleu, beam5_unbatched_sent_s,
beam_batching_speedup, decoded, peak_rss_mib, threads, bleu_signature.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's s2s_attn, installed or not

from s2s_attn.decoding import DECODE_BATCH_SIZE  # noqa: E402  (torch-free)

DEFAULT_CONFIGS = [
    "bahdanau=experiment=benchmark",
    "bahdanau_bf16=experiment=benchmark trainer.precision=bf16",
    "bahdanau_tokens=experiment=benchmark trainer.batch_size=null trainer.batch_tokens=800",
    "luong_general_feed=experiment=benchmark model.decoder=luong attention=luong_general",
    "luong_general_parallel=experiment=benchmark model.decoder=luong attention=luong_general "
    "model.input_feeding=false",
]


# fp32 matrix products at the shapes that dominate this model (as ../shared/bench/peers/matmul_bench.py):
# (M, K, N) for one decoder step of a batch of 64, and for the output layer over a whole batch at once
GEMM_SHAPES = {"step": (64, 512, 1536), "batch": (704, 512, 8000)}

WINDOW_STEPS = 50  # the peers' progress lines come every 50 steps; parse_throughput.py takes the median window


def gemm_gflops(shape: tuple[int, int, int], product=None, seconds: float = 1.0) -> float:
    """Median GFLOP/s of an fp32 product (M, K) x (K, N) (``product``: ``torch.matmul`` by default) over
    ``seconds`` of repeats, on the threads this process uses: the ceiling the model's own GFLOP/s is compared
    with."""
    import torch

    product = product or torch.matmul
    m, k, n = shape
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(5):
        product(a, b)
    reps = 1
    while True:  # calibrate: one timing sample lasts >= 0.05 s
        start = time.perf_counter()
        for _ in range(reps):
            product(a, b)
        if time.perf_counter() - start > 0.05:
            break
        reps *= 2
    samples, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 5:
        start = time.perf_counter()
        for _ in range(reps):
            product(a, b)
        samples.append((time.perf_counter() - start) / reps)
    samples.sort()
    return 2.0 * m * k * n / samples[len(samples) // 2] / 1e9


def _count_uncounted_products() -> None:
    """Teach ``FlopCounterMode`` the products it does not know: MKL's packed product (``mkl::_mkl_linear``, the
    decoder loops' forward products in float32 on the CPU where MKL multiplies) and oneDNN's
    (``mkldnn::_linear_pointwise``, the training loops' products where oneDNN multiplies: `s2s_attn.fast.gemm`),
    x (..., K) times the (N, K) weight, 2 x rows x K x N each; and the compiled GRU layer loops
    (``s2s_attn::gru_layer_forward`` / ``_backward`` / ``_inference``), whose per-step products the counter cannot
    see inside them: one (B, H) x (H, 3H) product per step and direction, 2 x S x D x B x H x 3H. Without these
    formulas the counter would miss part of every training step's products."""
    import torch
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    packed = getattr(torch.ops.mkl, "_mkl_linear", None)
    if packed is not None and packed not in flop_registry:
        @register_flop_formula(packed)
        def _packed_flops(x_shape, packed_shape, weight_shape, *args, **kwargs) -> int:
            return 2 * math.prod(x_shape[:-1]) * x_shape[-1] * weight_shape[0]

    onednn = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if onednn is not None and onednn not in flop_registry:
        @register_flop_formula(onednn)
        def _onednn_flops(x_shape, *args, **kwargs) -> int:
            # (x, weight, bias, attr, ...) or, the ``binary`` overload, (x, other, weight, bias, attr)
            weight_shape = args[0] if isinstance(args[2], str) else args[1]
            return 2 * math.prod(x_shape[:-1]) * x_shape[-1] * weight_shape[0]

    from s2s_attn.fast import kernels

    compiled = kernels.ops()
    if compiled is None:
        return

    def layer_flops(steps_shape, weight_shape) -> int:
        """steps_shape (S, D, B, ...): a step's rows for each direction; weight_shape (D, 3H, H)."""
        steps, directions, batch = steps_shape[:3]
        return 2 * steps * directions * batch * weight_shape[1] * weight_shape[2]

    for name in ("gru_layer_forward", "gru_layer_inference"):
        op = getattr(compiled, name, None)
        if op is not None and op not in flop_registry:
            register_flop_formula(op)(lambda input_gates_shape, weight_shape, *args, **kwargs:
                                      layer_flops(input_gates_shape, weight_shape))
    backward = getattr(compiled, "gru_layer_backward", None)
    if backward is not None and backward not in flop_registry:
        register_flop_formula(backward)(lambda previous_shape, rz_shape, n_shape, hidden_n_shape, weight_shape, *args,
                                        **kwargs: layer_flops(previous_shape, weight_shape))


FLOP_COUNT_STEPS = 5  # training steps `count_flops_per_token` runs (untimed, between the warm-up and the timed ones)


def count_flops_per_token(run_step, batches, device, count: int = FLOP_COUNT_STEPS) -> float:
    """FLOPs of a training step (forward and backward) per target token, counted by PyTorch's
    ``FlopCounterMode`` (matrix products, GRU gates included) over ``count`` real batches."""
    from torch.utils.flop_counter import FlopCounterMode

    _count_uncounted_products()

    flops = tokens = 0
    for _ in range(count):
        batch = next(batches)[2].to(device)
        with FlopCounterMode(display=False) as counter:
            _, n_tokens, _ = run_step(batch)
        flops += counter.get_total_flops()
        tokens += n_tokens
    return flops / max(tokens, 1)


def timed(function, *args, **kwargs):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def measure_checkpoint(path: str, decode: int, unbatched: int | None, threads: int, batch_size: int) -> dict:
    """Decoding speed and BLEU of a trained model on its run's test split: greedy, beam 5, beam 5 unbatched."""
    import torch

    from s2s_attn.cli.evaluate import split_files
    from s2s_attn.data.text import read_text_lines
    from s2s_attn.decoding.beam import SearchSettings
    from s2s_attn.decoding.translator import Translator
    from s2s_attn.evaluation.metrics import score

    torch.set_num_threads(threads)
    translator = Translator.from_checkpoint(path, device="cpu" if threads else "auto")
    src_path, ref_path = split_files(translator.config, "test")
    sources, references = read_text_lines(src_path)[:decode], read_text_lines(ref_path)[:decode]
    tgt_lang = str(translator.config["data"].get("tgt_lang", "en"))
    beam5 = SearchSettings(beam_size=5)
    translator.translate(sources[:batch_size], batch_size=batch_size, search=beam5)  # warm-up: threads, allocator
    greedy_seconds, greedy_hyps = timed(translator.translate, sources, batch_size=batch_size)
    beam_seconds, beam_hyps = timed(translator.translate, sources, batch_size=batch_size, search=beam5)
    few = sources[:unbatched] if unbatched else sources
    alone_seconds, alone_hyps = timed(translator.translate, few, batch_size=1, search=beam5)
    greedy_scores, beam_scores = score(greedy_hyps, references, tgt_lang), score(beam_hyps, references, tgt_lang)
    beam_rate, alone_rate = len(sources) / beam_seconds, len(few) / alone_seconds
    return {
        "config": f"checkpoint {path}",
        "batch_size": batch_size,
        "greedy_sent_s": round(len(sources) / greedy_seconds, 1),
        "greedy_bleu": round(greedy_scores.bleu, 2),
        "beam5_sent_s": round(beam_rate, 1),
        "beam5_bleu": round(beam_scores.bleu, 2),
        "beam5_unbatched_sent_s": round(alone_rate, 1),
        "beam_batching_speedup": round(beam_rate / alone_rate, 2),
        "unbatched_same_output": alone_hyps == beam_hyps[: len(few)],
        "decoded": len(sources),
        "decoded_unbatched": len(few),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
        "bleu_signature": greedy_scores.bleu_signature,
    }


def measure(name: str, overrides: list[str], steps: int, warmup: int, decode: int, threads: int,
            decode_after: int | None = None) -> dict:
    """Train ``warmup`` + `FLOP_COUNT_STEPS` + ``steps`` steps (the last ``steps`` timed), then, untimed, on up to
    ``decode_after`` steps in all if given, and decode with the model trained so far."""
    import torch
    from hydra import compose, initialize_config_dir

    from s2s_attn.cli import config_dir
    from s2s_attn.data.batching import BatchIterator
    from s2s_attn.decoding.beam import SearchSettings
    from s2s_attn.decoding.translator import Translator, resolve_device
    from s2s_attn.fast import accelerate, configure_process, gemm
    from s2s_attn.model.seq2seq import Seq2Seq
    from s2s_attn.training.trainer import (
        StepRunner,
        fast_settings,
        load_corpus,
        make_optimizer,
        model_config_from,
        set_seed,
    )

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    configure_process(fast_settings(cfg))  # as s2s-train: the compiled kernels, the matrix-product library
    torch.set_num_threads(threads)
    set_seed(int(cfg.trainer.seed))
    device = resolve_device(str(cfg.trainer.device))
    corpus = load_corpus(cfg)
    model = Seq2Seq(model_config_from(cfg, corpus.tokenizer)).to(device).train()
    implementations = accelerate(model, fast_settings(cfg))
    optimizer = make_optimizer(model, cfg.trainer)
    run_step = StepRunner(model, optimizer, device, str(cfg.trainer.precision),
                          float(cfg.trainer.label_smoothing), float(cfg.trainer.clip_grad))
    batches = BatchIterator(corpus.train_src, corpus.train_tgt, cfg.trainer.get("batch_tokens"),
                            cfg.trainer.get("batch_size"), seed=int(cfg.trainer.seed))
    for _ in range(warmup):
        run_step(next(batches)[2].to(device))
    flops_per_token = count_flops_per_token(run_step, batches, device)
    tokens = sentences = 0
    window_rates, window_tokens, window_start = [], 0, time.perf_counter()
    start = window_start
    for step in range(1, steps + 1):
        batch = next(batches)[2].to(device)
        _, n_tokens, _ = run_step(batch)
        tokens += n_tokens
        window_tokens += n_tokens
        sentences += batch.src.size(0)
        if step % WINDOW_STEPS == 0:  # the peers' statistic: target tokens/s of each 50-step window
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            window_rates.append(window_tokens / (now - window_start))
            window_tokens, window_start = 0, now
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - start
    trained = warmup + FLOP_COUNT_STEPS + steps
    while decode_after is not None and trained < decode_after:  # decoding speed depends on how trained the model is
        run_step(next(batches)[2].to(device))
        trained += 1

    model.eval()
    translator = Translator(model, corpus.tokenizer, device, corpus.max_src_pieces, frozen=True)
    src_ids = corpus.tokenizer.encode_src(corpus.test[0][:decode])
    translator.translate_ids(src_ids[:64], batch_size=64, search=SearchSettings(beam_size=5))  # warm-up
    decode_seconds, greedy_hyps = timed(translator.translate_ids, src_ids, batch_size=64)
    beam_seconds, _ = timed(translator.translate_ids, src_ids, batch_size=64, search=SearchSettings(beam_size=5))
    train_tok_s = tokens / train_seconds
    ceiling = {}  # the faster of torch.matmul (the BLAS) and the library the training loops use
    if device.type == "cpu":
        products = [torch.matmul] + ([gemm.matmul] if gemm.backend() != "blas" else [])
        ceiling = {key: max(gemm_gflops(shape, product) for product in products) for key, shape in GEMM_SHAPES.items()}
    achieved = flops_per_token * train_tok_s / 1e9
    return {
        "config": name,
        "overrides": " ".join(overrides),
        "train_tok_s": round(train_tok_s, 1),
        "train_tok_s_median": round(statistics.median(window_rates), 1) if window_rates else None,
        "train_tok_s_windows": [round(rate) for rate in window_rates],
        "mflop_per_tok": round(flops_per_token / 1e6, 2),
        "gflops": round(achieved, 1),
        "gemm_gflops": round(ceiling["batch"], 1) if ceiling else None,
        "gemm_gflops_step": round(ceiling["step"], 1) if ceiling else None,
        "gemm_share": round(achieved / ceiling["batch"], 3) if ceiling else None,
        "gemm_backend": gemm.backend() if device.type == "cpu" else None,
        "train_sent_s": round(sentences / train_seconds, 1),
        "steps": steps,
        "greedy_sent_s": round(len(src_ids) / decode_seconds, 1),
        "beam5_sent_s": round(len(src_ids) / beam_seconds, 1),
        "decoded": len(src_ids),
        "decode_model_steps": trained,
        "greedy_out_pieces": round(statistics.mean(len(hyp) for hyp in greedy_hyps), 2) if greedy_hyps else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "params": model.num_parameters(),
        "implementations": implementations.to_dict(),
    }


PEER_RUNS = ("onmt_mlp", "onmt_general", "joey_bahdanau", "joey_luong")
OUR_CONFIG_FOR_PEER = {"onmt_mlp": "bahdanau", "joey_bahdanau": "bahdanau",
                       "onmt_general": "luong_general_parallel", "joey_luong": "luong_general_parallel"}
PEER_TOK_PER_STEP = 695.4  # target tokens per batch of 64 on the peers' split (their collect.py)


def _seams(model) -> dict[str, list[tuple[object, str]]]:
    """The fast layer's seams on a model, per component: (object, attribute) pairs (`s2s_attn.fast.accelerate`)."""
    return {"encoder": [(model.encoder, "fast")], "decoder_loop": [(model.decoder, "fast_loop")],
            "loss": [(model, "fast_loss")]}


def _alternate(rounds: int, run, switch) -> tuple[list[float], list[float]]:
    """Rates of ``run()`` with ``switch(True)`` (fast) and ``switch(False)`` (reference), in rounds that alternate
    which goes first (ABBA), so that a drift of the machine's speed counts against both."""
    fast, reference = [], []
    for round_ in range(rounds):
        for enabled in ((True, False) if round_ % 2 == 0 else (False, True)):
            switch(enabled)
            (fast if enabled else reference).append(run())
    switch(True)
    return fast, reference


def _gain(fast: list[float], reference: list[float]) -> dict:
    f, r = statistics.median(fast), statistics.median(reference)
    return {"fast": round(f, 1), "reference": round(r, 1), "gain": round(f / r - 1, 4)}


def ablate(name: str, overrides: list[str], steps: int, rounds: int, decode: int, threads: int,
           only: set[str] | None = None) -> dict:
    """What each fast path gains, measured as the module doc says (``--ablate``)."""
    import torch
    from hydra import compose, initialize_config_dir

    from s2s_attn.cli import config_dir
    from s2s_attn.data.batching import BatchIterator
    from s2s_attn.decoding.beam import SearchSettings
    from s2s_attn.decoding.translator import Translator, resolve_device
    from s2s_attn.fast import accelerate, configure_process, kernels
    from s2s_attn.model.seq2seq import Seq2Seq
    from s2s_attn.training.trainer import (
        StepRunner,
        fast_settings,
        load_corpus,
        make_optimizer,
        model_config_from,
        set_seed,
    )

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    configure_process(fast_settings(cfg))
    torch.set_num_threads(threads)
    set_seed(int(cfg.trainer.seed))
    device = resolve_device(str(cfg.trainer.device))
    corpus = load_corpus(cfg)
    model = Seq2Seq(model_config_from(cfg, corpus.tokenizer)).to(device).train()
    decision = accelerate(model, fast_settings(cfg))
    optimizer = make_optimizer(model, cfg.trainer)
    run_step = StepRunner(model, optimizer, device, str(cfg.trainer.precision),
                          float(cfg.trainer.label_smoothing), float(cfg.trainer.clip_grad))
    iterator = BatchIterator(corpus.train_src, corpus.train_tgt, cfg.trainer.get("batch_tokens"),
                             cfg.trainer.get("batch_size"), seed=int(cfg.trainer.seed))
    batches = [next(iterator)[2].to(device) for _ in range(steps)]

    def train_rate() -> float:
        start, tokens = time.perf_counter(), 0
        for batch in batches:
            tokens += run_step(batch)[1]
        return tokens / (time.perf_counter() - start)

    for _ in range(2):  # warm-up: the kernels' build, the allocator, the products' first shapes
        train_rate()
    seams = _seams(model)
    installed = {key: [(obj, attr, getattr(obj, attr)) for obj, attr in pairs] for key, pairs in seams.items()}
    installed["all"] = [entry for key in seams for entry in installed[key]]

    def seam_switch(entries):
        def switch(enabled: bool) -> None:
            for obj, attr, value in entries:
                setattr(obj, attr, value if enabled else None)
        return switch

    result = {"config": name, "overrides": " ".join(overrides), "steps": steps, "rounds": rounds,
              "implementations": decision.to_dict(), "threads": torch.get_num_threads()}
    def wanted(key: str) -> bool:
        return only is None or key in only

    for key, entries in installed.items():
        if not wanted(key):
            continue
        claimed = any(value is not None for _, _, value in entries)
        result[key] = _gain(*_alternate(rounds, train_rate, seam_switch(entries))) if claimed else None
    mode = kernels._mode
    if kernels.ops() is not None and wanted("kernels"):
        def kernel_switch(enabled: bool) -> None:
            kernels._mode = mode if enabled else "false"
        result["kernels"] = _gain(*_alternate(rounds, train_rate, kernel_switch))

    model.eval()
    translator = Translator(model, corpus.tokenizer, device, corpus.max_src_pieces, frozen=True)
    src_ids = corpus.tokenizer.encode_src(corpus.test[0][:decode])
    stepper = model.decoder.fast_stepper
    for label, search in (("greedy", SearchSettings()), ("beam5", SearchSettings(beam_size=5))):
        def decode_rate(search=search) -> float:
            seconds, _ = timed(translator.translate_ids, src_ids, batch_size=64, search=search)
            return len(src_ids) / seconds

        def stepper_switch(enabled: bool) -> None:
            model.decoder.fast_stepper = stepper if enabled else None

        if not wanted(f"decoding_step_{label}"):
            continue
        decode_rate()  # warm-up
        result[f"decoding_step_{label}"] = (_gain(*_alternate(rounds, decode_rate, stepper_switch))
                                            if stepper is not None else None)
    return result


def default_peers_bench() -> Path:
    return Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "peers"


def peer_split_overrides(peers_dir: Path) -> list[str]:
    """Hydra overrides that train and test our model on the peers' fixed split (their make_split.py)."""
    raw = peers_dir / "data" / "cur" / "raw"
    return ["data=parallel", f"data.train={raw}/train", f"data.valid={raw}/dev", f"data.test={raw}/test",
            "data.src_lang=en", "data.tgt_lang=fr", "data.max_words=20", "data.max_ratio=100", "data.dedup=false"]


def run_peer(run: str, bench: Path, peers_dir: Path, seconds: int) -> dict:
    """Train peer ``run`` for ``seconds`` with its own scripts (setup.sh, run_all.sh), then read its
    steady-state target tokens/s (parse_throughput.py), peak RSS and greedy / beam-5 decoding figures."""
    env = {**__import__("os").environ, "PEERS_DIR": str(peers_dir)}
    subprocess.run(["bash", str(bench / "setup.sh")], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["bash", str(bench / "run_all.sh"), str(seconds), run], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    out = peers_dir / "out"
    peer = run.split("_")[0]
    warmup = min(250, max(50, int(seconds) // 8))  # steady state: skip the first steps, as RESULTS.md does
    throughput = json.loads(subprocess.run(
        [sys.executable, str(bench / "parse_throughput.py"), peer, str(out / f"{run}.train.log"),
         str(PEER_TOK_PER_STEP), str(warmup)], check=True, capture_output=True, text=True).stdout)
    train = json.loads((out / f"{run}.train.json").read_text())
    greedy = json.loads((out / f"{run}.beam1.json").read_text())
    beam = json.loads((out / f"{run}.beam5.json").read_text())
    return {
        "config": f"peer:{run}",
        "train_tok_s": throughput.get("peer_tok_s_median"),
        "peak_rss_mib": round(float(train["ru_maxrss_MiB"]), 1),
        "greedy_sent_s": greedy.get("sent_per_s_gen"),
        "beam5_sent_s": beam.get("sent_per_s_gen"),
        "greedy_bleu": greedy.get("bleu"),
        "train_seconds": seconds,
        **peer_decoding_model(out, run, greedy.get("ckpt")),
    }


def peer_decoding_model(out: Path, run: str, checkpoint: str | None) -> dict:
    """How trained the peer's decoding model was and how long its greedy outputs are: decode_model_steps, the step
    number in the name of the checkpoint it decoded with (``model_step_900.pt``; else its ``RUN.ckpt.txt``), and
    greedy_out_pieces, the mean number of pieces per line of its greedy output (``RUN.beam1.sp``); None where
    they cannot be read."""
    if checkpoint is None and (out / f"{run}.ckpt.txt").is_file():
        checkpoint = (out / f"{run}.ckpt.txt").read_text().strip()
    numbers = re.findall(r"\d+", Path(checkpoint).name) if checkpoint else []
    output = out / f"{run}.beam1.sp"
    lines = output.read_text(encoding="utf-8").splitlines() if output.is_file() else []
    return {
        "decode_model_steps": int(numbers[-1]) if numbers else None,
        "greedy_out_pieces": round(statistics.mean(len(line.split()) for line in lines), 2) if lines else None,
    }


def ratios(ours: dict, peer: dict) -> dict:
    """ours / peer for the speed figures (higher is better) and peak RSS (lower is better); training both as our
    rate over all timed steps (train_tok_s) and as our median 50-step window (train_tok_s_median) over the peer's
    median window."""
    result = {"config": f"ratio:{ours['config']}/{peer['config']}"}
    for key in ("train_tok_s", "greedy_sent_s", "beam5_sent_s", "peak_rss_mib"):
        if ours.get(key) and peer.get(key):
            result[key] = round(float(ours[key]) / float(peer[key]), 2)
    if ours.get("train_tok_s_median") and peer.get("train_tok_s"):  # the same statistic on both sides
        result["train_tok_s_median"] = round(float(ours["train_tok_s_median"]) / float(peer["train_tok_s"]), 2)
    return result


def peer_decode_steps(config: str, peers: dict[str, dict]) -> int | None:
    """The steps our configuration ``config`` trains before decoding beside these peers (run -> figures): those of
    the decoding checkpoint of the peer it is compared with (`OUR_CONFIG_FOR_PEER`), else the most of any peer's;
    None where no peer says."""
    matched = [figures for run, figures in peers.items() if OUR_CONFIG_FOR_PEER.get(run) == config]
    steps = [figures.get("decode_model_steps") or 0 for figures in (matched or list(peers.values()))]
    return max(steps, default=0) or None


def enumerate_schedule(peer_runs: list[str], configs: list[str], rounds: int) -> list[tuple[int, tuple[str, str]]]:
    """The order of a side-by-side run: (round, ("peer", run) or ("ours", config)). Each peer is measured next to
    the configuration it is compared with (`OUR_CONFIG_FOR_PEER`), so that a pair's two figures are minutes apart;
    every other round measures ours first, so that a machine's drift within a pair cancels over the rounds.
    Configurations that no peer is compared with follow, once per round. Without peers: each configuration once."""
    if not peer_runs:
        return [(0, ("ours", config)) for config in configs]
    schedule = []
    paired = {OUR_CONFIG_FOR_PEER[run] for run in peer_runs}
    for round_number in range(rounds):
        for run in peer_runs:
            pair = [("peer", run)] + ([("ours", OUR_CONFIG_FOR_PEER[run])] if OUR_CONFIG_FOR_PEER[run] in configs
                                      else [])
            schedule += [(round_number, step) for step in (pair[::-1] if round_number % 2 else pair)]
        schedule += [(round_number, ("ours", config)) for config in configs if config not in paired]
    return schedule


def median_ratios(rounds: list[dict]) -> dict:
    """One pair's ratios over the rounds (`ratios` of each, with its "round"): the median of each figure, and
    ``train_tok_s_rounds``, the training ratio of each round."""
    result = {"config": rounds[0]["config"], "rounds": len(rounds)}
    for key in ("train_tok_s", "train_tok_s_median", "greedy_sent_s", "beam5_sent_s", "peak_rss_mib"):
        values = [r[key] for r in rounds if key in r]
        if values:
            result[key] = round(statistics.median(values), 2)
    result["train_tok_s_rounds"] = [r.get("train_tok_s") for r in rounds]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                        help='NAME=OVERRIDES, e.g. "bahdanau=experiment=benchmark trainer.batch_size=32"')
    parser.add_argument("--steps", type=int, default=200, help="timed training steps (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (default 20)")
    parser.add_argument("--decode", type=int, default=2000, help="test sentences to decode (default 2000)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--checkpoint", help="measure decoding of this trained run (greedy, beam 5, unbatched beam 5)")
    parser.add_argument("--batch-size", type=int, default=DECODE_BATCH_SIZE,
                        help=f"with --checkpoint: sentences per batch (default {DECODE_BATCH_SIZE}, s2s-translate's)")
    parser.add_argument("--unbatched", type=int, default=None,
                        help="with --checkpoint: sentences for the one-at-a-time beam (default: all)")
    parser.add_argument("--peer", action="append", choices=PEER_RUNS, default=[],
                        help="also train and decode this peer (OpenNMT-py / Joey NMT, from the shared bench "
                             "scripts) in this run, on its fixed split, which our configurations then use too; "
                             "prints its figures and our ratio to it (repeatable)")
    parser.add_argument("--peer-seconds", type=int, default=600,
                        help="with --peer: the peer's training budget in seconds (default 600)")
    parser.add_argument("--peer-rounds", type=int, default=1,
                        help="with --peer: measure each peer and the configuration compared with it this many "
                             "times, side by side, ours first every other round; prints each round's ratios and "
                             "their medians (default 1)")
    parser.add_argument("--peers-bench", type=Path, default=default_peers_bench(),
                        help="the peers' bench scripts (default: ../shared/bench/peers beside the checkout)")
    parser.add_argument("--peers-dir", type=Path, default=Path(".peers").resolve(),
                        help="where the peers' virtual environments, split and runs go (default .peers)")
    parser.add_argument("--decode-after-steps", type=int, default=None,
                        help="train each configuration on (untimed) to this many steps in all before decoding "
                             "(default: none; with --peer, the steps of the peer checkpoint that decoded, so that "
                             "both sides decode with a model trained as many steps)")
    parser.add_argument("--ablate", action="store_true",
                        help="measure what each fast path gains, on --steps batches in --rounds alternating rounds")
    parser.add_argument("--rounds", type=int, default=4, help="--ablate: rounds of each pair (default 4)")
    parser.add_argument("--only", help="--ablate: these comma-separated components only (e.g. encoder,loss)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.checkpoint:
        result = measure_checkpoint(args.checkpoint, args.decode, args.unbatched, args.threads, args.batch_size)
        print(json.dumps(result), flush=True)
        return 0

    if args.ablate:
        for spec in args.configs:
            name, _, overrides = spec.partition("=")
            only = set(args.only.split(",")) if args.only else None
            print(json.dumps(ablate(name, overrides.split(), args.steps, args.rounds, args.decode, args.threads,
                                    only)),
                  flush=True)
        return 0

    if args.one:  # child process: measure one configuration
        name, _, overrides = args.one.partition("=")
        result = measure(name, overrides.split(), args.steps, args.warmup, args.decode, args.threads,
                         args.decode_after_steps)
        print(json.dumps(result), flush=True)
        return 0

    for spec in args.configs:
        if "=" not in spec:
            parser.error(f"--configs entries are NAME=OVERRIDES, got {spec!r}")
    if args.peer and not (args.peers_bench / "run_all.sh").is_file():
        parser.error(f"--peer needs the peers' bench scripts; none in {args.peers_bench} (see --peers-bench)")

    failed = 0
    peers: dict[str, dict] = {}  # the latest figures of each peer
    extra = " " + " ".join(peer_split_overrides(args.peers_dir)) if args.peer else ""
    specs = {spec.partition("=")[0]: spec for spec in args.configs}
    per_round: dict[str, list[dict]] = {}  # ratio name -> that pair's ratios, one per round
    mine: dict[tuple[int, str], dict] = {}  # (round, our config) -> figures, for the ratio with the adjacent peer
    compared: set[tuple[int, str]] = set()  # (round, peer run) whose ratio is printed
    for round_number, (kind, name) in enumerate_schedule(args.peer, list(specs), args.peer_rounds):
        tag = {"round": round_number} if args.peer_rounds > 1 else {}
        if kind == "peer":
            try:
                peers[name] = {**run_peer(name, args.peers_bench, args.peers_dir, args.peer_seconds), **tag}
                print(json.dumps(peers[name]), flush=True)
            except (subprocess.CalledProcessError, OSError, ValueError, KeyError) as error:
                failed += 1
                print(json.dumps({"config": f"peer:{name}", "error": str(error)[-500:], **tag}), flush=True)
                continue
        else:
            spec = specs[name]
            cmd = [sys.executable, __file__, "--one", spec + extra, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--decode", str(args.decode), "--threads", str(args.threads)]
            decode_after = args.decode_after_steps
            if decode_after is None and peers:
                decode_after = peer_decode_steps(name, peers)
            if decode_after is not None:
                cmd += ["--decode-after-steps", str(decode_after)]
            child = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
            if child.returncode != 0 or not lines:
                failed += 1
                print(json.dumps({"config": name, "error": child.stderr.strip()[-500:], **tag}), flush=True)
                continue
            mine[(round_number, name)] = {**json.loads(lines[-1]), **tag}
            print(json.dumps(mine[(round_number, name)]), flush=True)
        for run, peer in peers.items():  # a pair is complete when both of this round are in
            ours = mine.get((round_number, OUR_CONFIG_FOR_PEER[run]))
            if (peer.get("round", 0) == round_number and ours is not None and (round_number, run) not in compared
                    and (kind, name) in (("peer", run), ("ours", OUR_CONFIG_FOR_PEER[run]))):
                compared.add((round_number, run))
                ratio = {**ratios(ours, peer), **tag}
                per_round.setdefault(ratio["config"], []).append(ratio)
                print(json.dumps(ratio), flush=True)
    if args.peer_rounds > 1:
        for rounds in per_round.values():
            print(json.dumps(median_ratios(rounds)), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
