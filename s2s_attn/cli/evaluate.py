"""``s2s-evaluate RUN_DIR [--split test|valid | --src FILE --ref FILE] [--beam K]``: BLEU and chrF of a model.

Translates a split of the run's own prepared data (default: test) or any source file, and scores the
output against the references with sacrebleu: BLEU with the tokenizer that fits the target language
(``zh`` for Chinese, ``13a`` otherwise; the same `score` function validation uses during training) and
chrF. Prints the scores and sacrebleu's signatures, and writes the hypotheses and a JSON file with the
scores next to each other (``--out``, default ``RUN_DIR/eval``), named by split and decoding, e.g.
``test.beam5.hyp`` and ``test.beam5.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ..data.text import read_text_lines
from ..decoding import DECODE_BATCH_SIZE
from ..outputs import unwritable_dir, write_atomic
from . import fail
from .translate import search_settings

PROG = "s2s-evaluate"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].split(": ", 1)[-1],
                                     epilog="Example: s2s-evaluate outputs/eng_fra-bahdanau/<date_time> --beam 5")
    parser.add_argument("checkpoint", help="run directory written by s2s-train, or a checkpoint file in it")
    parser.add_argument("--split", default="test", choices=["test", "valid"],
                        help="which split of the run's prepared data to score (default test)")
    parser.add_argument("--src", help="score this source file instead of a split (one sentence per line)")
    parser.add_argument("--ref", help="the references of --src, line-parallel")
    parser.add_argument("--tgt-lang", default=None,
                        help="target language for the BLEU tokenizer with --src/--ref (default: the run's)")
    parser.add_argument("--out", default=None, help="where to write hypotheses and scores (default RUN_DIR/eval)")
    parser.add_argument("--beam", type=int, default=1, metavar="K", help="beam size (default 1: greedy)")
    parser.add_argument("--length-penalty", default="gnmt", choices=["gnmt", "average", "none"])
    parser.add_argument("--alpha", type=float, default=0.6, help="length penalty strength (default 0.6)")
    parser.add_argument("--coverage-penalty", type=float, default=0.0, metavar="BETA")
    parser.add_argument("--max-len-ratio", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=DECODE_BATCH_SIZE,
                        help=f"sentences per batch (default {DECODE_BATCH_SIZE})")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    args = parser.parse_args(argv)
    args.nbest = 1
    if (args.src is None) != (args.ref is None):
        parser.error("--src and --ref go together")
    if args.batch_size <= 0 or args.beam < 1:
        parser.error("--batch-size and --beam must be positive")
    if args.coverage_penalty < 0 or args.max_len_ratio <= 0:
        parser.error("--coverage-penalty must be >= 0 and --max-len-ratio > 0")
    return args


def split_files(config: dict, split: str) -> tuple[Path, Path]:
    """The run's prepared ``<split>.src`` / ``<split>.tgt`` (re-prepared from the corpus if the cache is gone)."""
    from ..data.corpus import prepare_data

    data_dir = prepare_data(config["data"], log=lambda message: print(message, file=sys.stderr))
    return data_dir / f"{split}.src", data_dir / f"{split}.tgt"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from ..data.errors import DataError
    from ..decoding.translator import Translator
    from ..evaluation.metrics import score
    from ..training.checkpoint import CheckpointError

    try:
        translator = Translator.from_checkpoint(args.checkpoint, device=args.device)
        search = search_settings(args)
        config = translator.config
        if args.src:
            src_path, ref_path, name = Path(args.src), Path(args.ref), Path(args.src).stem
        else:
            src_path, ref_path = split_files(config, args.split)
            name = args.split
        sources, references = read_text_lines(src_path), read_text_lines(ref_path)
    except (CheckpointError, DataError, OSError, ValueError) as error:
        return fail(PROG, str(error))
    if len(sources) != len(references):
        return fail(PROG, f"{src_path} has {len(sources)} lines but {ref_path} has {len(references)}; they must be "
                    "line-parallel")
    if not sources:
        return fail(PROG, f"{src_path} is empty: nothing to evaluate")
    tgt_lang = args.tgt_lang or str(config["data"].get("tgt_lang", "en"))
    decoding = "greedy" if args.beam == 1 else f"beam{args.beam}"
    out_dir = Path(args.out) if args.out else translator.checkpoint_path.parent.parent / "eval"
    if reason := unwritable_dir(out_dir):  # before the decoding, not after it
        return fail(PROG, f"cannot write the results to {out_dir}: {reason}")
    start = time.time()
    hypotheses = translator.translate(sources, batch_size=args.batch_size, search=search)
    seconds = time.time() - start
    scores = score(hypotheses, references, tgt_lang)
    out_dir.mkdir(parents=True, exist_ok=True)
    hyp_path, json_path = out_dir / f"{name}.{decoding}.hyp", out_dir / f"{name}.{decoding}.json"
    write_atomic(hyp_path, "".join(h + "\n" for h in hypotheses).encode("utf-8"))
    record = {"checkpoint": str(translator.checkpoint_path), "source": str(src_path), "references": str(ref_path),
              "hypotheses": str(hyp_path), "sentences": len(sources), "decoding": vars(search),
              "bleu": scores.bleu, "chrf": scores.chrf, "bleu_signature": scores.bleu_signature,
              "chrf_signature": scores.chrf_signature, "seconds": seconds,
              "sentences_per_second": len(sources) / max(seconds, 1e-9), "truncated_inputs": translator.truncated}
    write_atomic(json_path, json.dumps(record, indent=1).encode("utf-8"))
    print(f"{name} ({len(sources)} sentences, {decoding}): BLEU {scores.bleu:.2f}  chrF {scores.chrf:.2f}  "
          f"[{len(sources) / max(seconds, 1e-9):.0f} sentences/s]")
    print(f"BLEU signature: {scores.bleu_signature}")
    print(f"chrF signature: {scores.chrf_signature}")
    print(f"hypotheses: {hyp_path}\nscores:     {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
