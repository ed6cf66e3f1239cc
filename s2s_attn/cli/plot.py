"""``s2s-plot RUN_DIR_OR_CHECKPOINT ["a sentence" ...] [--input FILE] [--out DIR]``: plot attention.

Translates each sentence greedily and writes, per sentence, a PNG heatmap (``attention_N.png``) and
a self-contained HTML page (``attention_N.html``: hover a cell for its weight; per-head tables for
multi-head attention) into ``--out`` (default: the current directory). Prints each translation and
the paths it wrote.

    s2s-plot outputs/eng_fra-bahdanau/<date_time> "I am cold." "Where is the station?"
    s2s-plot outputs/eng_fra-multihead/<date_time> --input sentences.txt --out plots/
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..outputs import atomic_output, unwritable_dir, write_atomic
from . import fail

PROG = "s2s-plot"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.splitlines()[0],
        epilog="Exit status: 0 on success, 2 for a bad checkpoint, no input sentence or an unwritable --out.",
    )
    parser.add_argument("checkpoint", help="run directory written by s2s-train, or a checkpoint file in it")
    parser.add_argument("sentences", nargs="*", metavar="SENTENCE", help="sentences to translate and plot")
    parser.add_argument("-i", "--input", metavar="FILE",
                        help="also read sentences from FILE, one per line (empty lines are skipped; - for stdin)")
    parser.add_argument("--out", default=".", metavar="DIR", help="where to write the files (default: .)")
    parser.add_argument("--prefix", default="attention", help="file name prefix (default: attention)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--dpi", type=int, default=120, help="PNG resolution (default 120)")
    return parser.parse_args(argv)


def read_sentences(args: argparse.Namespace) -> list[str]:
    sentences = [s for s in args.sentences if s.strip()]
    if args.input:
        if args.input == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.input, "rb") as f:
                data = f.read()
        sentences += [line for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return sentences


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    try:
        sentences = read_sentences(args)
    except OSError as error:
        return fail(PROG, f"cannot read --input: {error}")
    if not sentences:
        return fail(PROG, "nothing to plot: give sentences as arguments or with --input FILE (empty lines are skipped)")
    out_dir = Path(args.out)
    if reason := unwritable_dir(out_dir):
        return fail(PROG, f"cannot write --out {out_dir}: {reason}")
    out_dir.mkdir(parents=True, exist_ok=True)

    from ..decoding.translator import Translator
    from ..training.checkpoint import CheckpointError
    from ..viz.heatmap import attention_figure, attention_html, save_figure

    try:
        translator = Translator.from_checkpoint(args.checkpoint, device=args.device)
    except (CheckpointError, OSError, ValueError) as error:
        return fail(PROG, str(error))
    results = translator.translate_with_attention(sentences, heads=True)
    width = len(str(len(results)))
    for n, item in enumerate(results, start=1):
        if item.attention is None:  # a line that normalises to nothing
            print(f"[{n}] {item.source!r}: empty after normalisation, skipped", file=sys.stderr)
            continue
        name = f"{args.prefix}_{n:0{width}d}"
        png, page = out_dir / f"{name}.png", out_dir / f"{name}.html"
        try:
            fig = attention_figure(item.attention, item.src_tokens, item.tgt_tokens, title=item.source, dpi=args.dpi)
            with atomic_output(png, "wb") as handle:
                save_figure(fig, handle)
            html = attention_html(item.attention, item.src_tokens, item.tgt_tokens, source=item.source,
                                  translation=item.translation, title=f"Attention: {item.source}",
                                  heads=item.heads, png=png.name)
            write_atomic(page, html.encode("utf-8"))
        except OSError as error:
            return fail(PROG, f"cannot write into {out_dir}: {error}")
        print(f"[{n}] {item.source}\n    -> {item.translation}\n    {png}\n    {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
