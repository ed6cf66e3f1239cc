"""``s2s-translate RUN_DIR_OR_CHECKPOINT [-i FILE] [-o FILE] [--attention FILE]``: translate text line by line.

Reads a file or standard input, writes one detokenised translation per input line (empty lines stay
empty) in input order. With ``--attention out.jsonl`` it also writes one JSON object per input line:
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="s2s-translate", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="run directory written by s2s-train, or a checkpoint file in it")
    parser.add_argument("-i", "--input", default="-", help="input file, one sentence per line (default: stdin)")
    parser.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    parser.add_argument("--attention", metavar="FILE",
                        help="also write each line's tokens and attention matrix to FILE as JSON lines")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch (default 64)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        parser.error(f"--batch-size must be positive, got {args.batch_size}")
    return args


def read_lines(path: str) -> list[str]:
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    return data.decode("utf-8", errors="replace").splitlines()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from ..decoding.translator import Translator
    from ..training.checkpoint import CheckpointError

    try:
        translator = Translator.from_checkpoint(args.checkpoint, device=args.device)
        lines = read_lines(args.input)
    except (CheckpointError, OSError, ValueError) as error:
        print(f"s2s-translate: error: {error}", file=sys.stderr)
        return 2
    outputs: list[str] = []
    chunk = max(args.batch_size * 16, 1)
    show = args.input != "-" and len(lines) > chunk
    try:
        attention_file = open(args.attention, "w", encoding="utf-8") if args.attention else None
    except OSError as error:
        print(f"s2s-translate: error: cannot write --attention file: {error}", file=sys.stderr)
        return 2
    with attention_file or contextlib.nullcontext():
        for start in tqdm(range(0, len(lines), chunk), desc="translate", unit="chunk", disable=not show):
            part = lines[start : start + chunk]
            if attention_file is None:
                outputs.extend(translator.translate(part, batch_size=args.batch_size))
                continue
            for k, item in enumerate(translator.translate_with_attention(part, batch_size=args.batch_size)):
                outputs.append(item.translation)
                record = {"line": start + k + 1, "source": item.source, "translation": item.translation,
                          "src_tokens": item.src_tokens, "tgt_tokens": item.tgt_tokens,
                          "attention": item.attention_rows(4)}
                attention_file.write(json.dumps(record, ensure_ascii=False) + "\n")
    text = "".join(line + "\n" for line in outputs)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
