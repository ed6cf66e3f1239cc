"""``s2s-explore RUN_DIR [RUN_DIR ...]``: a local web page to type a sentence and see where each model looks.

One column per run: its translation (greedy, or beam search with k chosen on the page), the attention heatmap
with real tokens on both axes (hover for the weight), each head of multi-head attention, every hypothesis the
beam keeps at each step, and a slider over the run's step checkpoints to watch the attention form during
training. With ``--gold SRC TGT LINKS`` it also browses gold word alignments with the attention's links over
them and each run's AER beside the diagonal baseline's (the numbers of s2s-align-eval). With ``--export FILE.html
--input SENTENCES.txt`` it writes the same page for those sentences as one file that opens without a server.
The server binds to 127.0.0.1 unless told otherwise and only reads the run directories.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..outputs import unwritable_file, write_atomic
from . import fail

PROG = "s2s-explore"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.splitlines()[0].split(": ", 1)[-1],
        epilog="Example: s2s-explore outputs/eng_fra-bahdanau/<date_time> outputs/eng_fra-multihead/<date_time> "
               "--gold $S2S_DATA_DIR/alignments/en-fr/dev.e $S2S_DATA_DIR/alignments/en-fr/dev.f "
               "$S2S_DATA_DIR/alignments/en-fr/dev.wa.nonullalign",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by s2s-train")
    parser.add_argument("--port", type=int, default=8600, help="port to serve on (default 8600; 0: any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--gold", nargs=3, metavar=("SRC", "TGT", "LINKS"),
                        help="gold word alignments: source text, target text (tokenised, one sentence per line, in "
                             "the runs' direction) and the links file (NAACL/WPT or Pharaoh)")
    parser.add_argument("--gold-format", default="auto", choices=["auto", "naacl", "pharaoh"],
                        help="format of the links file (default: auto-detect)")
    parser.add_argument("--reverse", action="store_true",
                        help="the links' first index is the runs' TARGET word (as s2s-align-eval --reverse)")
    parser.add_argument("--beam", type=int, default=5, metavar="K",
                        help="the page's beam width to start with, and the one --export adds to greedy (default 5)")
    parser.add_argument("--export", metavar="FILE.html", help="write a self-contained page for --input and exit")
    parser.add_argument("--input", metavar="SENTENCES.txt", help="with --export: the sentences, one per line")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    args = parser.parse_args(argv)
    if not 1 <= args.beam <= 16:
        parser.error(f"--beam must be from 1 to 16, got {args.beam}")
    if bool(args.export) != bool(args.input):
        parser.error("--export and --input go together: --export FILE.html --input SENTENCES.txt")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be from 0 to 65535, got {args.port}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.export and (reason := unwritable_file(args.export)):
        return fail(PROG, f"cannot write --export {args.export}: {reason}")
    from ..data.text import read_text_lines
    from ..explore.server import Explorer, make_server
    from ..explore.views import ExplorerError, ExplorerRun, GoldSet

    try:
        sentences = None
        if args.input:
            lines = read_text_lines(args.input)
            sentences = [line.strip() for line in lines if line.strip()]
            if not sentences:
                return fail(PROG, f"{args.input} holds no sentence (every line is empty)")
            if len(sentences) < len(lines):
                print(f"{PROG}: skipped {len(lines) - len(sentences)} empty line(s) of {args.input}", file=sys.stderr)
        gold = GoldSet(*args.gold, fmt=args.gold_format, reverse=args.reverse) if args.gold else None
        runs = [ExplorerRun(path, index, device=args.device) for index, path in enumerate(args.runs)]
        explorer = Explorer(runs, gold, default_beam=max(args.beam, 2))
        if args.export:
            from ..explore.export import export_page

            write_atomic(args.export, export_page(explorer, sentences, args.beam).encode("utf-8"))
            print(f"{PROG}: wrote {args.export} ({len(sentences)} sentence(s), {len(runs)} run(s))", file=sys.stderr)
            return 0
        server = make_server(explorer, args.host, args.port)
    except (ExplorerError, OSError) as error:
        return fail(PROG, str(error))
    host, port = server.server_address[:2]
    print(f"{PROG}: serving {len(runs)} run(s) at http://{host}:{port}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(file=sys.stderr)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
