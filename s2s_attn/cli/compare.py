"""``s2s-compare RUN_OR_SWEEP_DIR... [--out DIR] [--baseline NAME] [--bootstrap N]``: compare finished runs.

    s2s-compare multirun/2025-01-01_12-00-00              # a Hydra sweep: every run below it
    s2s-compare outputs/eng_fra-bahdanau/* outputs/eng_fra-luong_dot/* --out reports/attention
    s2s-compare multirun/... --baseline luong_dot --bootstrap 2000

Runs whose configs differ only in ``trainer.seed`` are one variant (mean ± std over the seeds). Prints
a table and writes comparison.md, comparison.csv, valid_bleu.png and tensorboard/ into ``--out``.
Directories without results.json (unfinished or failed runs) are reported and skipped.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..outputs import unwritable_dir
from . import fail

PROG = "s2s-compare"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from ..evaluation.compare import DEFAULT_BOOTSTRAP

    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.splitlines()[0],
        epilog="Exit status: 0 on success, 2 when there is nothing to compare or an argument is wrong.",
    )
    parser.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP_DIR",
                        help="run directories (with results.json) or directories searched recursively for them")
    parser.add_argument("--out", default=".",
                        help="where to write comparison.md/.csv, valid_bleu.png, tensorboard/ (default: .)")
    parser.add_argument("--baseline", metavar="NAME",
                        help="baseline variant: its name as printed (or words of it, e.g. attention=luong_dot) "
                             "or its attention name (default: the bahdanau variant, else the first)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, metavar="N",
                        help=f"paired bootstrap resamples for the p-values (default {DEFAULT_BOOTSTRAP}; 0: no test)")
    parser.add_argument("--ignore", action="append", default=[], metavar="KEY",
                        help="a config key (and everything below it) not to tell variants apart by, e.g. "
                             "trainer.device; repeatable (trainer.seed and hydra are always ignored)")
    args = parser.parse_args(argv)
    if args.bootstrap < 0:
        parser.error(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from ..evaluation.compare import CompareError, collect_runs, compare, markdown_table, write_outputs

    if reason := unwritable_dir(args.out):  # before the bootstrap, not after it
        return fail(PROG, f"cannot write --out {args.out}: {reason}")
    runs, skipped = collect_runs(args.paths)
    for item in skipped:
        print(f"s2s-compare: skipped {item}", file=sys.stderr)
    if not runs:
        return fail(PROG, f"no finished runs (results.json) found in {' '.join(args.paths)}")
    try:
        comparison = compare(runs, baseline=args.baseline, n_bootstrap=args.bootstrap, ignore=args.ignore,
                             skipped=skipped)
        print(markdown_table(comparison))
        for variant in comparison.variants:
            sig = comparison.significance[variant.name]
            if sig.note not in ("", "baseline", "not run") and sig.p_value is None:
                print(f"  {variant.name}: no p-value: {sig.reason}")
        outputs = write_outputs(comparison, args.out)
    except CompareError as error:
        return fail(PROG, str(error))
    except OSError as error:
        return fail(PROG, f"cannot write to {args.out}: {error}")
    n_runs = len(comparison.runs)
    print(f"\n{n_runs} run{'s' if n_runs != 1 else ''} in {len(comparison.variants)} variant"
          f"{'s' if len(comparison.variants) != 1 else ''}; baseline: {comparison.baseline.name}")
    print("wrote " + ", ".join(str(p) for p in outputs.values()))
    print(f"curves: tensorboard --logdir {outputs['tensorboard']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
