#!/usr/bin/env python3
"""Measure training and decoding speed with the toolkit's own code paths; one JSON line per config.

    python scripts/benchmark.py                       # the default set of configurations
    python scripts/benchmark.py --steps 300 --configs "bahdanau=experiment=benchmark" \
        "luong_parallel=experiment=benchmark model.decoder=luong attention=luong_general model.input_feeding=false"

    python scripts/benchmark.py --checkpoint outputs/eng_fra-bahdanau/<date_time>   # decoding of a trained model

Each configuration runs in its own process (so peak RSS is its own), on the same prepared data:
``--warmup`` training steps, then ``--steps`` timed steps (target tokens/s and sentences/s in steady
state), then greedy and beam-5 decoding of ``--decode`` test sentences in batches of 64 (sentences/s).
Keys: config, overrides, train_tok_s, train_sent_s, steps, peak_rss_mib, greedy_sent_s, beam5_sent_s,
threads, params.

``--checkpoint RUN_DIR`` measures decoding of a trained model instead, on its run's test split: greedy
and beam 5 in batches of 64 (sentences/s and test BLEU for both), and beam 5 one sentence at a time
(``--unbatched N`` sentences, default all), giving the speed-up of batching the beam. Keys: config,
greedy_sent_s, greedy_bleu, beam5_sent_s, beam5_bleu, beam5_unbatched_sent_s, beam_batching_speedup,
decoded, peak_rss_mib, threads, bleu_signature.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's s2s_attn, installed or not

DEFAULT_CONFIGS = [
    "bahdanau=experiment=benchmark",
    "luong_general_feed=experiment=benchmark model.decoder=luong attention=luong_general",
    "luong_general_parallel=experiment=benchmark model.decoder=luong attention=luong_general "
    "model.input_feeding=false",
]


def timed(function, *args, **kwargs):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def measure_checkpoint(path: str, decode: int, unbatched: int | None, threads: int) -> dict:
    """Decoding speed and BLEU of a trained model on its run's test split: greedy, beam 5, beam 5 unbatched."""
    import torch

    from s2s_attn.cli.evaluate import split_files
    from s2s_attn.data.corpus import read_text_lines
    from s2s_attn.decoding.beam import SearchSettings
    from s2s_attn.decoding.translator import Translator
    from s2s_attn.evaluation.metrics import score

    torch.set_num_threads(threads)
    translator = Translator.from_checkpoint(path, device="cpu" if threads else "auto")
    src_path, ref_path = split_files(translator.config, "test")
    sources, references = read_text_lines(src_path)[:decode], read_text_lines(ref_path)[:decode]
    tgt_lang = str(translator.config["data"].get("tgt_lang", "en"))
    beam5 = SearchSettings(beam_size=5)
    translator.translate(sources[:64], batch_size=64, search=beam5)  # warm-up: thread pool, allocator
    greedy_seconds, greedy_hyps = timed(translator.translate, sources, batch_size=64)
    beam_seconds, beam_hyps = timed(translator.translate, sources, batch_size=64, search=beam5)
    few = sources[:unbatched] if unbatched else sources
    alone_seconds, alone_hyps = timed(translator.translate, few, batch_size=1, search=beam5)
    greedy_scores, beam_scores = score(greedy_hyps, references, tgt_lang), score(beam_hyps, references, tgt_lang)
    beam_rate, alone_rate = len(sources) / beam_seconds, len(few) / alone_seconds
    return {
        "config": f"checkpoint {path}",
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


def measure(name: str, overrides: list[str], steps: int, warmup: int, decode: int, threads: int) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from s2s_attn.cli import config_dir
    from s2s_attn.data.batching import BatchIterator
    from s2s_attn.decoding.beam import SearchSettings
    from s2s_attn.decoding.translator import Translator, resolve_device
    from s2s_attn.model.seq2seq import Seq2Seq
    from s2s_attn.training.trainer import StepRunner, load_corpus, model_config_from, set_seed

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    torch.set_num_threads(threads)
    set_seed(int(cfg.trainer.seed))
    device = resolve_device(str(cfg.trainer.device))
    corpus = load_corpus(cfg)
    model = Seq2Seq(model_config_from(cfg, corpus.tokenizer)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.trainer.lr))
    run_step = StepRunner(model, optimizer, device, str(cfg.trainer.precision),
                          float(cfg.trainer.label_smoothing), float(cfg.trainer.clip_grad))
    batches = BatchIterator(corpus.train_src, corpus.train_tgt, cfg.trainer.get("batch_tokens"),
                            cfg.trainer.get("batch_size"), seed=int(cfg.trainer.seed))
    for _ in range(warmup):
        run_step(next(batches)[2].to(device))
    tokens = sentences = 0
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)[2].to(device)
        _, n_tokens, _ = run_step(batch)
        tokens += n_tokens
        sentences += batch.src.size(0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - start

    model.eval()
    translator = Translator(model, corpus.tokenizer, device, corpus.max_src_pieces)
    src_ids = corpus.tokenizer.encode_src(corpus.test[0][:decode])
    decode_seconds, _ = timed(translator.translate_ids, src_ids, batch_size=64)
    beam_seconds, _ = timed(translator.translate_ids, src_ids, batch_size=64, search=SearchSettings(beam_size=5))
    return {
        "config": name,
        "overrides": " ".join(overrides),
        "train_tok_s": round(tokens / train_seconds, 1),
        "train_sent_s": round(sentences / train_seconds, 1),
        "steps": steps,
        "greedy_sent_s": round(len(src_ids) / decode_seconds, 1),
        "beam5_sent_s": round(len(src_ids) / beam_seconds, 1),
        "decoded": len(src_ids),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "params": model.num_parameters(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                        help='NAME=OVERRIDES, e.g. "bahdanau=experiment=benchmark trainer.batch_size=32"')
    parser.add_argument("--steps", type=int, default=200, help="timed training steps (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (default 20)")
    parser.add_argument("--decode", type=int, default=2000, help="test sentences to decode (default 2000)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--checkpoint", help="measure decoding of this trained run (greedy, beam 5, unbatched beam 5)")
    parser.add_argument("--unbatched", type=int, default=None,
                        help="with --checkpoint: sentences for the one-at-a-time beam (default: all)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.checkpoint:
        print(json.dumps(measure_checkpoint(args.checkpoint, args.decode, args.unbatched, args.threads)), flush=True)
        return 0

    if args.one:  # child process: measure one configuration
        name, _, overrides = args.one.partition("=")
        result = measure(name, overrides.split(), args.steps, args.warmup, args.decode, args.threads)
        print(json.dumps(result), flush=True)
        return 0

    failed = 0
    for spec in args.configs:
        if "=" not in spec:
            parser.error(f"--configs entries are NAME=OVERRIDES, got {spec!r}")
        cmd = [sys.executable, __file__, "--one", spec, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--decode", str(args.decode), "--threads", str(args.threads)]
        child = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        if child.returncode != 0 or not lines:
            failed += 1
            print(json.dumps({"config": spec.partition("=")[0], "error": child.stderr.strip()[-500:]}), flush=True)
        else:
            print(lines[-1], flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
