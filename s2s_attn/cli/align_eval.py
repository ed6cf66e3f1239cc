"""``s2s-align-eval CHECKPOINT --src FILE --tgt FILE --gold FILE``: score attention as word alignment (AER).

The model reads the gold source text and, with teacher forcing, the gold target text; its attention is
pooled from subword pieces to words (``--pieces``, ``--shift``), turned into links (``--method``) and compared
with the gold sure/possible links: alignment error rate, precision and recall, next to two baselines: the
diagonal, and the statistical aligner eflomal trained on the run's training text plus the gold sentences (its
forward, reverse and symmetrised links; computed once per data set and gold text, then cached).

Gold files: NAACL/WPT (``sent_no src_pos tgt_pos S|P``, 1-based) or Pharaoh (``i-j`` / ``i-j-P``,
0-based, one line per sentence); ``--format auto`` tells them apart. The first index of a gold link is
taken as the model's source word; ``--reverse`` says it is the target word (e.g. a French->English
model on the English-French NAACL gold: ``--src dev.f --tgt dev.e --reverse``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..evaluation.alignment import COMBINATIONS, DEFAULT_PIECES, PIECE_POOLS, SHIFTS
from . import fail

PROG = "s2s-align-eval"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.splitlines()[0].split(": ", 1)[-1],
        epilog="Example: s2s-align-eval outputs/eng_fra-bahdanau/<date_time> --src $S2S_DATA_DIR/alignments/"
               "en-fr/dev.e --tgt $S2S_DATA_DIR/alignments/en-fr/dev.f --gold $S2S_DATA_DIR/alignments/en-fr/"
               "dev.wa.nonullalign",
    )
    parser.add_argument("checkpoint", help="run directory written by s2s-train, or a checkpoint file in it")
    parser.add_argument("--src", required=True, help="source text of the model's direction, one tokenised sentence "
                                                     "per line (words separated by spaces)")
    parser.add_argument("--tgt", required=True, help="target text, line-parallel to --src")
    parser.add_argument("--gold", required=True, help="gold alignment file (NAACL/WPT or Pharaoh format)")
    parser.add_argument("--format", default="auto", choices=["auto", "naacl", "pharaoh"],
                        help="gold file format (default: auto-detect)")
    parser.add_argument("--method", default="argmax", choices=["argmax", "threshold"],
                        help="argmax: each target word -> its most-attended source word (default); threshold: every "
                             "pair with word-level attention >= --threshold")
    parser.add_argument("--threshold", type=float, default=0.3, help="for --method threshold (default 0.3)")
    parser.add_argument("--reverse", action="store_true",
                        help="the gold links' first index is the model's TARGET word (the gold file is in the "
                             "other direction than the model)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N sentences")
    parser.add_argument("--backward", metavar="CHECKPOINT", default=None,
                        help="a model of the opposite direction (target->source); its links are combined with "
                             "the forward model's (--combine)")
    parser.add_argument("--combine", default="intersection", choices=list(COMBINATIONS),
                        help="how to combine with --backward (default intersection)")
    parser.add_argument("--pieces", default=DEFAULT_PIECES, choices=list(PIECE_POOLS),
                        help="subword pieces -> words: first (each word's first piece; default), sum (source pieces "
                             "summed, target rows averaged) or max")
    parser.add_argument("--shift", default="predict", choices=list(SHIFTS),
                        help="the attention row of a target word: predict (the step that predicts it; default) or "
                             "read (the next step, which reads it)")
    parser.add_argument("--no-aligner", action="store_true",
                        help="leave out the eflomal baseline (it needs the run's training text and eflomal)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch (default 64)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    args = parser.parse_args(argv)
    if not 0.0 < args.threshold <= 1.0:
        parser.error(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.limit is not None and args.limit <= 0:
        parser.error(f"--limit must be positive, got {args.limit}")
    if args.batch_size <= 0:
        parser.error(f"--batch-size must be positive, got {args.batch_size}")
    return args


def format_scores(aer: float, precision: float, recall: float, what: str) -> str:
    return f"AER {aer:.3f}  precision {precision:.3f}  recall {recall:.3f}  ({what})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from ..decoding.translator import Translator
    from ..evaluation.alignment import evaluate_alignment, read_gold_set
    from ..training.checkpoint import CheckpointError

    try:
        src_lines, tgt_lines, gold = read_gold_set(args.src, args.tgt, args.gold, args.format, reverse=args.reverse)
    except (OSError, ValueError) as error:
        return fail(PROG, str(error))
    if args.limit is not None:
        src_lines, tgt_lines = src_lines[: args.limit], tgt_lines[: args.limit]
        gold = {k: g for k, g in gold.items() if k < args.limit}
    try:
        translator = Translator.from_checkpoint(args.checkpoint, device=args.device)
        backward = Translator.from_checkpoint(args.backward, device=args.device) if args.backward else None
    except (CheckpointError, OSError, ValueError) as error:
        return fail(PROG, str(error))
    try:
        result = evaluate_alignment(translator, src_lines, tgt_lines, gold, method=args.method,
                                    threshold=args.threshold, batch_size=args.batch_size, backward=backward,
                                    how=args.combine, pieces=args.pieces, shift=args.shift)
    except ValueError as error:
        return fail(PROG, str(error))
    method = "argmax" if args.method == "argmax" else f"threshold {args.threshold:g}"
    method += f", pieces {args.pieces}, shift {args.shift}"
    if backward is not None:
        method += f", {args.combine} with the backward model"
    sentences = f"{result['sentences']} sentences"
    print(format_scores(result["aer"], result["precision"], result["recall"], f"attention, {method}, {sentences}"))
    print(format_scores(result["diagonal_aer"], result["diagonal_precision"], result["diagonal_recall"],
                        f"diagonal baseline, {sentences}"))
    if not args.no_aligner:
        print_aligner_rows(translator.config, src_lines, tgt_lines, gold, sentences)
    return 0


def print_aligner_rows(config, src_lines, tgt_lines, gold, sentences: str) -> None:
    """The eflomal baseline's rows, or one line saying why there are none."""
    from ..data.aligner import AlignerMissing
    from ..data.errors import DataError
    from ..evaluation.alignment import aligner_baseline, run_training_text

    try:
        train_src, train_tgt, src_lang, tgt_lang, data_dir = run_training_text(config)
    except (DataError, OSError, KeyError, ValueError) as error:
        print(f"no eflomal baseline: the run's training text is not available here ({error})")
        return
    try:
        rows = aligner_baseline(train_src, train_tgt, src_lang, tgt_lang, src_lines, tgt_lines, gold, data_dir,
                                log=lambda message: print(message, file=sys.stderr))
    except AlignerMissing as error:
        print(f"no eflomal baseline: {error}")
        return
    pairs = f"trained on the run's {len(train_src):,} training pairs + the gold sentences"
    for how, row in rows.items():
        print(format_scores(row["aer"], row["precision"], row["recall"], f"eflomal {how}, {pairs}, {sentences}"))


if __name__ == "__main__":
    sys.exit(main())
