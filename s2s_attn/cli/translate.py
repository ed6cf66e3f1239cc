"""``s2s-translate RUN_DIR [-i FILE] [-o FILE] [--beam K] [--nbest N]``: translate text line by line.

Reads a file or standard input (an interactive prompt when standard input is a terminal), writes one
detokenised translation per input line (empty lines stay empty) in input order. Greedy decoding by
default; ``--beam K`` uses batched beam search with length normalisation (``--length-penalty``,
``--alpha``) and an optional coverage penalty. ``--nbest N`` writes the N best translations of each
line as ``LINE ||| translation ||| log-probability ||| ranking score`` (LINE from 1), best first.
Inputs longer than the model's limit (``data.max_src_pieces``) are truncated with a warning.
With ``--attention out.jsonl`` it also writes one JSON object per input line:
``{"line": i, "source": ..., "translation": ..., "src_tokens": [...], "tgt_tokens": [...],
"attention": [[...], ...]}`` (i from 1; SentencePiece pieces plus ``</s>``; attention rows are target
tokens, columns source tokens, rounded to 4 decimals, the mean of the heads for multi-head attention;
empty lists for an empty line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys

from tqdm import tqdm

from ..decoding import DECODE_BATCH_SIZE
from ..outputs import atomic_output, unwritable_file, write_atomic
from . import fail

PROG = "s2s-translate"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="run directory written by s2s-train, or a checkpoint file in it")
    parser.add_argument("-i", "--input", default="-", help="input file, one sentence per line (default: stdin)")
    parser.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    parser.add_argument("--attention", metavar="FILE",
                        help="also write each line's tokens and attention matrix to FILE as JSON lines")
    parser.add_argument("--beam", type=int, default=1, metavar="K", help="beam size (default 1: greedy)")
    parser.add_argument("--nbest", type=int, default=1, metavar="N",
                        help="write the N best translations per line (N <= beam; default 1)")
    parser.add_argument("--length-penalty", default="gnmt", choices=["gnmt", "average", "none"],
                        help="beam ranking: gnmt: logp / ((5 + len) / 6)^alpha (default); average: logp / len^alpha; "
                             "none: logp")
    parser.add_argument("--alpha", type=float, default=0.6, help="length penalty strength (default 0.6)")
    parser.add_argument("--coverage-penalty", type=float, default=0.0, metavar="BETA",
                        help="GNMT coverage penalty weight (default 0: off)")
    parser.add_argument("--max-len-ratio", type=float, default=2.0,
                        help="at most this many output pieces per source piece, plus 10 (default 2.0)")
    parser.add_argument("--batch-size", type=int, default=DECODE_BATCH_SIZE,
                        help=f"sentences per batch (default {DECODE_BATCH_SIZE}; 1 = one at a time)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        parser.error(f"--batch-size must be positive, got {args.batch_size}")
    if args.beam < 1:
        parser.error(f"--beam must be at least 1, got {args.beam}")
    if not 1 <= args.nbest <= args.beam:
        parser.error(f"--nbest must be between 1 and --beam ({args.beam}), got {args.nbest}")
    if args.nbest > 1 and args.attention:
        parser.error("--attention goes with one translation per line; drop --nbest")
    if args.coverage_penalty < 0 or args.max_len_ratio <= 0:
        parser.error("--coverage-penalty must be >= 0 and --max-len-ratio > 0")
    return args


def search_settings(args: argparse.Namespace):
    from ..decoding.beam import SearchSettings

    return SearchSettings(beam_size=args.beam, nbest=args.nbest, length_penalty=args.length_penalty,
                          alpha=args.alpha, coverage_penalty=args.coverage_penalty, max_len_ratio=args.max_len_ratio)


def interactive(translator, search) -> int:
    """A prompt: one sentence in, its translation out, until end of input (Ctrl-D) or Ctrl-C."""
    print("Type a sentence and press Enter (Ctrl-D to quit).", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if search.nbest > 1:
            for text, logp, _ in translator.translate_nbest([line], search)[0]:
                print(f"{logp:9.3f}  {text}")
        else:
            print(translator.translate([line], search=search)[0])


def read_lines(path: str) -> list[str]:
    """The input's lines, split on newlines only: a vertical tab, form feed or U+2028 inside a line is a
    control character to clean, not a line break that would shift every later output line."""
    from ..data.text import read_text_lines

    if path != "-":
        return read_text_lines(path)
    lines = sys.stdin.buffer.read().decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    for path, option in ((args.output, "-o"), (args.attention, "--attention")):  # before any work
        if path and path != "-" and (reason := unwritable_file(path)):
            return fail(PROG, f"cannot write {option} {path}: {reason}")
    from ..decoding.translator import Translator
    from ..training.checkpoint import CheckpointError

    try:
        translator = Translator.from_checkpoint(args.checkpoint, device=args.device)
        search = search_settings(args)
        if args.input == "-" and sys.stdin.isatty():
            return interactive(translator, search)
        lines = read_lines(args.input)
    except (CheckpointError, OSError, ValueError) as error:
        return fail(PROG, str(error))
    outputs: list[str] = []
    chunk = max(args.batch_size * 16, 1)
    progress = tqdm(total=len(lines), desc="translate", unit="sent", disable=args.input == "-" or len(lines) <= chunk,
                    file=sys.stderr)
    with atomic_output(args.attention) if args.attention else contextlib.nullcontext() as attention_file:
        for start in range(0, len(lines), chunk):
            part = lines[start : start + chunk]
            if search.nbest > 1:
                for k, nbest in enumerate(translator.translate_nbest(part, search, batch_size=args.batch_size)):
                    outputs.extend(f"{start + k + 1} ||| {text} ||| {logp:.4f} ||| {norm:.4f}"
                                   for text, logp, norm in nbest)
            elif attention_file is None:
                outputs.extend(translator.translate(part, batch_size=args.batch_size, search=search))
            else:
                items = translator.translate_with_attention(part, batch_size=args.batch_size, search=search)
                for k, item in enumerate(items):
                    outputs.append(item.translation)
                    record = {"line": start + k + 1, "source": item.source, "translation": item.translation,
                              "src_tokens": item.src_tokens, "tgt_tokens": item.tgt_tokens,
                              "attention": item.attention_rows(4)}
                    attention_file.write(json.dumps(record, ensure_ascii=False) + "\n")
            progress.update(len(part))
    progress.close()
    if translator.truncated:
        print(f"s2s-translate: {translator.truncated} over-long input line(s) truncated to "
              f"{translator.max_src_pieces} pieces", file=sys.stderr)
    text = "".join(line + "\n" for line in outputs)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        write_atomic(args.output, text.encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
