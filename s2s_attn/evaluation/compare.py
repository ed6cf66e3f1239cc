"""Compare finished training runs: group seeds of one configuration, tabulate, test, plot.

The pieces behind ``s2s-compare`` (see :mod:`s2s_attn.cli.compare`):

* :func:`collect_runs` finds run directories (those holding ``results.json``) under the given
  paths, recursively (a Hydra sweep directory works), and reports the ones it skipped and why.
* :func:`group_runs` puts runs whose configs differ only in ``trainer.seed`` into one
  :class:`Variant` and names each variant by the config keys that differ between variants.
* :func:`compare` adds the paired bootstrap test of test BLEU against a baseline variant
  (sacrebleu's ``PairedTest``) and returns a :class:`Comparison`.
* :func:`markdown_table`, :func:`write_markdown`, :func:`write_csv`, :func:`plot_valid_bleu` and
  :func:`write_tensorboard` render it; :func:`write_outputs` writes all of them.

Configs are compared as Hydra saved them in ``<run>/.hydra/config.yaml``, i.e. with interpolations
left unresolved (``${oc.env:...}`` is compared as written, not as it resolves today).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import statistics
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..outputs import atomic_output, write_atomic
from .metrics import bleu_tokenizer_for

DEFAULT_BASELINE_ATTENTION = "bahdanau"
DEFAULT_BOOTSTRAP = 1000
DEFAULT_BOOTSTRAP_SEED = 12345  # sacrebleu's own default seed
TENSORBOARD_TAG = "compare/valid_bleu"

# Config keys never used to tell variants apart: the seed (that is what a variant averages over) and
# Hydra's own settings. Keys match themselves and everything below them.
ALWAYS_IGNORED = ("trainer.seed", "trainer.resume", "hydra")  # a resumed run is the same variant
# Without .hydra/config.yaml, runs are grouped by these results.json fields (shown as these keys).
FALLBACK_KEYS = (("data", "data"), ("attention", "attention"), ("model.decoder", "decoder"))


class CompareError(Exception):
    """A problem the user can fix (no runs, unknown baseline): reported without a traceback."""


# ---- metrics: (results key, column title, number format) ----------------------------------------------
METRICS: tuple[tuple[str, str, str], ...] = (
    ("parameters", "parameters", ",.0f"),
    ("best_valid_bleu", "best valid BLEU", ".2f"),
    ("best_valid_chrf", "best valid chrF", ".2f"),
    ("test_bleu", "test BLEU", ".2f"),
    ("test_chrf", "test chrF", ".2f"),
    ("steps", "steps", ".0f"),
    ("tokens_per_s", "tokens/s", ".0f"),
    ("wall_minutes", "wall time (min)", ".1f"),
)
COLUMNS: tuple[str, ...] = ("variant", "runs", *(title for _, title, _ in METRICS), "p vs baseline")


@dataclass
class Run:
    """One finished run: its directory, ``results.json`` and (when present) its flattened config."""

    path: Path
    results: dict[str, Any]
    config: dict[str, Any] | None = None  # flattened, dotted keys, interpolations unresolved

    @property
    def seed(self) -> int | None:
        seed = self.results.get("seed")
        if seed is None and self.config is not None:
            seed = self.config.get("trainer.seed")
        try:
            return int(seed) if seed is not None else None
        except (TypeError, ValueError):
            return None

    @property
    def attention(self) -> str:
        value = self.results.get("attention")
        if value is None and self.config is not None:
            value = self.config.get("attention.name")
        return str(value) if value is not None else "?"

    @property
    def history(self) -> list[dict[str, Any]]:
        history = self.results.get("history") or []
        return [h for h in history if isinstance(h, dict)]

    def metric(self, key: str) -> float | None:
        """A number for the table; ``best_valid_chrf`` is the best ``valid_chrf`` of the history."""
        if key == "best_valid_chrf":
            values = [h.get("valid_chrf") for h in self.history]
            return _max_number(values)
        value = self.results.get(key)
        if key == "best_valid_bleu" and _number(value) is None:
            return _max_number([h.get("valid_bleu") for h in self.history])
        return _number(value)


@dataclass
class Skipped:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Variant:
    """Runs whose configs differ only in the seed; ``runs`` sorted by seed."""

    name: str
    runs: list[Run]
    settings: dict[str, str] = field(default_factory=dict)  # the differing keys that name it

    @property
    def attention(self) -> str:
        return self.runs[0].attention

    @property
    def seeds(self) -> list[int | None]:
        return [run.seed for run in self.runs]

    def values(self, key: str) -> list[float]:
        return [v for v in (run.metric(key) for run in self.runs) if v is not None]

    def mean_std(self, key: str) -> tuple[float | None, float | None]:
        """Mean and sample standard deviation (None with fewer than 2 values) of a metric over seeds."""
        values = self.values(key)
        if not values:
            return None, None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


@dataclass
class Significance:
    """The paired bootstrap test of one variant's test BLEU against the baseline's."""

    p_value: float | None = None
    note: str = ""  # "baseline", or why there is no p-value
    reason: str = ""  # the longer explanation of ``note``
    baseline_run: Run | None = None
    run: Run | None = None
    baseline_bleu: float | None = None
    bleu: float | None = None
    signature: str | None = None
    seed_pairs: list[Significance] = field(default_factory=list)  # every same-seed test, when there are several

    @property
    def cell(self) -> str:
        if self.note == "baseline":
            return "baseline"
        if self.p_value is not None:
            tested = [pair for pair in self.seed_pairs if pair.p_value is not None]
            if len(tested) <= 1:
                return f"{self.p_value:.4f}"
            signs = {(pair.bleu or 0.0) > (pair.baseline_bleu or 0.0) for pair in tested if pair.bleu is not None}
            disagree = "; better on some seeds, worse on others" if len(signs) > 1 else ""
            return f"{self.p_value:.4f} (max of {len(tested)} seeds{disagree})"
        return f"n/a ({self.note})" if self.note else "n/a"


@dataclass
class Comparison:
    variants: list[Variant]
    baseline: Variant
    significance: dict[str, Significance]  # by variant name
    n_bootstrap: int = DEFAULT_BOOTSTRAP
    bootstrap_seed: int = DEFAULT_BOOTSTRAP_SEED
    grouped_by_config: bool = True
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        return [run for variant in self.variants for run in variant.runs]


# ---- finding runs ------------------------------------------------------------------------------------------


def natural_key(text: str) -> list[Any]:
    """Sort ``2-x`` before ``10-x`` (Hydra's job numbers)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", text)]


def _looks_like_run(path: Path) -> bool:
    return (path / ".hydra").is_dir() or (path / "checkpoints").is_dir()


def _walk_runs(root: Path) -> Iterator[tuple[Path, bool]]:
    """(directory, finished) for every run directory at or below ``root``, in natural order."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if "results.json" in filenames:
            dirnames[:] = []
            yield here, True
        elif _looks_like_run(here):
            dirnames[:] = []
            yield here, False
        else:
            dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)


def load_run(path: str | Path) -> Run:
    """Read ``results.json`` and ``.hydra/config.yaml`` of a run directory (ValueError if unreadable)."""
    path = Path(path)
    try:
        results = json.loads((path / "results.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"unreadable results.json ({error})") from error
    if not isinstance(results, dict):
        raise ValueError("results.json does not hold a JSON object")
    return Run(path=path, results=results, config=load_config(path))


def load_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``.hydra/config.yaml`` flattened to dotted keys (unresolved), or None if absent/unreadable."""
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        container = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
    except Exception:  # a malformed YAML file: group this run by its results.json instead
        return None
    return flatten(container) if isinstance(container, dict) else None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": [1, 2]}`` (lists are leaves)."""
    if isinstance(tree, dict):
        if not tree and prefix:
            return {prefix: {}}
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: tree}


def collect_runs(paths: Iterable[str | Path]) -> tuple[list[Run], list[Skipped]]:
    """Finished runs at or below ``paths`` (each once), and the directories skipped with the reason."""
    runs: list[Run] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    for arg in paths:
        path = Path(arg)
        if path.is_file() and path.name == "results.json":
            path = path.parent
        if not path.exists():
            skipped.append(Skipped(path, "no such directory"))
            continue
        if not path.is_dir():
            skipped.append(Skipped(path, "not a directory (expected a run or sweep directory)"))
            continue
        found = False
        for run_dir, finished in _walk_runs(path):
            found = True
            key = run_dir.resolve()
            if key in seen:
                continue
            seen.add(key)
            if not finished:
                skipped.append(Skipped(run_dir, "no results.json (unfinished or failed run)"))
                continue
            try:
                runs.append(load_run(run_dir))
            except ValueError as error:
                skipped.append(Skipped(run_dir, str(error)))
        if not found:
            skipped.append(Skipped(path, "no results.json here or in any subdirectory"))
    return runs, skipped


# ---- grouping and naming ---------------------------------------------------------------------------------


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in ignore)


def _names_own_directory(value: Any, run_dir: Path) -> bool:
    """A string value naming the run's own directory (an output path): it differs from run to run."""
    if not isinstance(value, str):
        return False
    name = run_dir.name
    if str(run_dir.resolve()) in value or str(run_dir) in value:
        return True
    return len(name) >= 6 and any(c.isdigit() for c in name) and name in value


def grouping_settings(run: Run, use_config: bool, ignore: Sequence[str] = ()) -> dict[str, str]:
    """The settings that decide a run's group, as canonical strings (JSON of the values)."""
    if use_config and run.config is not None:
        ignore = (*ALWAYS_IGNORED, *ignore)
        return {
            key: _canonical(value)
            for key, value in run.config.items()
            if not _ignored(key, ignore) and not _names_own_directory(value, run.path)
        }
    return {key: _canonical(run.results.get(field_name)) for key, field_name in FALLBACK_KEYS
            if not _ignored(key, ignore)}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _display(canonical: str | None) -> str:
    """A config value as one would type it as a Hydra override."""
    if canonical is None:
        return "<unset>"
    value = json.loads(canonical)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return json.dumps(value)  # numbers, true/false, null


def _variant_names(settings: list[dict[str, str]]) -> list[tuple[str, dict[str, str]]]:
    """Names from the keys whose values differ between groups; ``attention.name`` reads ``attention=...``."""
    keys = sorted({key for s in settings for key in s})
    differing = [key for key in keys if len({s.get(key) for s in settings}) > 1]
    groups = {key.split(".")[0] for key in differing if key.count(".") == 1 and key.endswith(".name")}

    def named(s: dict[str, str], collapse: bool) -> tuple[str, dict[str, str]]:
        parts: dict[str, str] = {}
        for key in differing:
            top = key.split(".")[0]
            if collapse and top in groups:
                if key == f"{top}.name":
                    parts[top] = _display(s.get(key))
                continue
            parts[key] = _display(s.get(key))
        ordered = dict(sorted(parts.items()))
        return " ".join(f"{k}={v}" for k, v in ordered.items()), ordered

    names = [named(s, collapse=True) for s in settings]
    if len({n for n, _ in names}) < len(names):  # a group choice alone does not tell them apart
        names = [named(s, collapse=False) for s in settings]
    return names


def group_runs(runs: Sequence[Run], ignore: Sequence[str] = ()) -> tuple[list[Variant], bool]:
    """Group runs that differ only in ``trainer.seed``; returns (variants, grouped by full config?).

    Runs are grouped by their whole ``.hydra/config.yaml`` (minus the seed, ``hydra.*``, values naming
    the run's own directory, and ``ignore``) when every run has one; otherwise by (data, attention,
    decoder) from ``results.json``. Variants keep the order in which their first run was found.
    """
    if not runs:
        raise CompareError("no runs to compare")
    use_config = all(run.config is not None for run in runs)
    groups: dict[str, list[Run]] = {}
    group_settings: dict[str, dict[str, str]] = {}
    for run in runs:
        settings = grouping_settings(run, use_config, ignore)
        key = _canonical(settings)
        groups.setdefault(key, []).append(run)
        group_settings.setdefault(key, settings)
    keys = list(groups)
    if len(keys) == 1:
        names = [(groups[keys[0]][0].attention, {})]
    else:
        names = _variant_names([group_settings[k] for k in keys])
    variants = []
    for key, (name, shown) in zip(keys, names):
        members = sorted(groups[key], key=lambda r: (r.seed is None, r.seed or 0, natural_key(str(r.path))))
        variants.append(Variant(name=name, runs=members, settings=shown))
    return variants, use_config


def choose_baseline(variants: Sequence[Variant], name: str | None = None) -> Variant:
    """``name`` matched against variant names (whole, or ``key=value`` words of it) or attention names;
    by default the first variant with Bahdanau attention, else the first variant."""
    if not variants:
        raise CompareError("no variants to compare")
    if name is None:
        for variant in variants:
            if variant.attention == DEFAULT_BASELINE_ATTENTION:
                return variant
        return variants[0]
    for variant in variants:
        if variant.name == name:
            return variant
    words = set(name.split())
    matches = [v for v in variants if v.attention == name or words <= set(v.name.split())]
    if len(matches) == 1:
        return matches[0]
    listing = "; ".join(f"{v.name!r} (attention {v.attention})" for v in variants)
    if not matches:
        raise CompareError(f"--baseline {name!r} matches no variant; the variants are: {listing}")
    which = "; ".join(repr(v.name) for v in matches)
    raise CompareError(f"--baseline {name!r} matches several variants ({which}): give the full variant name")


# ---- significance ----------------------------------------------------------------------------------------


def _resolve_file(recorded: Any, run: Run, fallback: str | None = None) -> Path | None:
    """A path recorded in results.json: as written, else relative to the run's ancestors (training ran
    from the project root), else ``fallback`` inside the run directory (a run directory that moved)."""
    candidates: list[Path] = []
    if recorded:
        recorded = Path(str(recorded))
        candidates.append(recorded)
        if not recorded.is_absolute():
            candidates.extend(parent / recorded for parent in run.path.resolve().parents)
    if fallback:
        candidates.append(run.path / fallback)
    return next((c for c in candidates if c.is_file()), None)


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


@contextmanager
def _sacrebleu_seed(seed: int):
    """PairedTest takes its seed from $SACREBLEU_SEED: set it for the duration of the test."""
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SACREBLEU_SEED", None)
        else:
            os.environ["SACREBLEU_SEED"] = old


def paired_bootstrap(baseline: Run, system: Run, n_samples: int = DEFAULT_BOOTSTRAP,
                     seed: int = DEFAULT_BOOTSTRAP_SEED) -> Significance:
    """sacrebleu's paired bootstrap resampling of test BLEU, ``system`` against ``baseline``.

    Both runs must have their test hypotheses and identical references (compared by content); the BLEU
    tokenizer follows the target language (``zh`` for zh/cmn, else ``13a``).
    """
    result = Significance(baseline_run=baseline, run=system)

    def unavailable(note: str, reason: str) -> Significance:
        result.note, result.reason = note, reason
        return result

    refs_paths = [_resolve_file(r.results.get("test_references"), r) for r in (baseline, system)]
    hyps_paths = [_resolve_file(r.results.get("test_hypotheses"), r, "test.hyp") for r in (baseline, system)]
    for run, refs, hyps in zip((baseline, system), refs_paths, hyps_paths):
        if refs is None:
            return unavailable("no references", f"test references of {run.path} not found "
                               f"(results.json says {run.results.get('test_references')!r})")
        if hyps is None:
            return unavailable("no hypotheses", f"test hypotheses of {run.path} not found "
                               f"(results.json says {run.results.get('test_hypotheses')!r})")
    base_refs, sys_refs = (_read_lines(p) for p in refs_paths)
    if base_refs != sys_refs:
        return unavailable("different references", f"the test references differ: {refs_paths[1]} "
                           f"is not the same text as the baseline's {refs_paths[0]}")
    base_lang, sys_lang = (str(r.results.get("tgt_lang", "en")) for r in (baseline, system))
    tokenize = bleu_tokenizer_for(base_lang)
    if bleu_tokenizer_for(sys_lang) != tokenize:
        return unavailable("different target language", f"target languages {base_lang} and {sys_lang} differ")
    base_hyps, sys_hyps = (_read_lines(p) for p in hyps_paths)
    for hyps, path in ((base_hyps, hyps_paths[0]), (sys_hyps, hyps_paths[1])):
        if len(hyps) != len(base_refs):
            return unavailable("line counts differ", f"{path} has {len(hyps)} lines for {len(base_refs)} references")
    if n_samples <= 0:
        return unavailable("not run", "the test was switched off (--bootstrap 0)")
    if base_hyps == sys_hyps:
        # sacrebleu's paired_bs gives identical systems p = 1/(n+1) (no resample differs by more than 0):
        # the same output is no evidence of a difference
        result.p_value, result.reason = 1.0, "identical hypotheses"
        return result

    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    with _sacrebleu_seed(seed):
        test = PairedTest(
            [("baseline", base_hyps), ("system", sys_hyps)],
            {"BLEU": BLEU(tokenize=tokenize)},
            references=[base_refs],
            test_type="bs",
            n_samples=n_samples,
        )
        signatures, scores = test()
    metric = next(iter(signatures))
    base_result, sys_result = scores[metric]
    result.p_value = float(sys_result.p_value)
    result.baseline_bleu, result.bleu = float(base_result.score), float(sys_result.score)
    result.signature = signatures[metric].format()
    return result


def pair_for_test(baseline: Variant, variant: Variant) -> tuple[Run, Run]:
    """The baseline's first run (lowest seed), and the variant's run with the same seed, else its first."""
    base_run = baseline.runs[0]
    same_seed = [r for r in variant.runs if r.seed is not None and r.seed == base_run.seed]
    return base_run, (same_seed[0] if same_seed else variant.runs[0])


def same_seed_pairs(baseline: Variant, variant: Variant) -> list[tuple[Run, Run]]:
    """Every (baseline run, variant run) that share a seed, in seed order."""
    by_seed = {r.seed: r for r in baseline.runs if r.seed is not None}
    return [(by_seed[r.seed], r) for r in sorted(variant.runs, key=lambda r: r.seed or 0) if r.seed in by_seed]


def compare(runs: Sequence[Run], baseline: str | None = None, n_bootstrap: int = DEFAULT_BOOTSTRAP,
            bootstrap_seed: int = DEFAULT_BOOTSTRAP_SEED, ignore: Sequence[str] = (),
            skipped: Sequence[Skipped] = ()) -> Comparison:
    """Group ``runs`` into variants, pick the baseline and test every other variant against it."""
    if not runs:
        raise CompareError("no finished runs to compare")
    variants, by_config = group_runs(runs, ignore)
    base = choose_baseline(variants, baseline)
    significance: dict[str, Significance] = {}
    for variant in variants:
        if variant is base:
            significance[variant.name] = Significance(note="baseline", baseline_run=base.runs[0], run=base.runs[0])
            continue
        pairs = same_seed_pairs(base, variant) or [pair_for_test(base, variant)]
        tests = [paired_bootstrap(base_run, run, n_bootstrap, bootstrap_seed) for base_run, run in pairs]
        # the least significant seed pair speaks for the variant: a difference that one seed shows and
        # another does not is training noise, not evidence
        with_p = [t for t in tests if t.p_value is not None]
        chosen = max(with_p, key=lambda t: t.p_value) if with_p else tests[0]
        chosen.seed_pairs = tests if len(tests) > 1 else []
        significance[variant.name] = chosen
    return Comparison(variants, base, significance, n_bootstrap, bootstrap_seed, by_config, list(skipped))


# ---- rendering ---------------------------------------------------------------------------------------------


def format_cell(mean: float | None, std: float | None, fmt: str) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:{fmt}}" if std is None else f"{mean:{fmt}} ± {std:{fmt}}"


def table_rows(comparison: Comparison) -> list[list[str]]:
    """One row of display strings per variant, in :data:`COLUMNS` order."""
    rows = []
    for variant in comparison.variants:
        row = [variant.name, str(len(variant.runs))]
        for key, _, fmt in METRICS:
            mean, std = variant.mean_std(key)
            if len(variant.runs) == 1:
                std = None
            row.append(format_cell(mean, std, fmt))
        row.append(comparison.significance[variant.name].cell)
        rows.append(row)
    return rows


def markdown_table(comparison: Comparison) -> str:
    """An aligned Markdown table (readable as plain text on a console too)."""
    rows = [[cell.replace("|", "\\|") for cell in row] for row in table_rows(comparison)]
    header = list(COLUMNS)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    left = {0}  # the variant column is text; the others are numbers

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i not in left else ":" + "-" * (w + 1)
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def explanation(comparison: Comparison) -> str:
    """What the columns and the test mean."""
    multi = any(len(v.runs) > 1 for v in comparison.variants)
    grouping = ("runs whose configs (.hydra/config.yaml) differ only in trainer.seed form one variant"
                if comparison.grouped_by_config else
                "runs are grouped by (data, attention, decoder) from results.json, as some runs have no "
                ".hydra/config.yaml")
    text = (
        f"Each row is a variant: {grouping}; *runs* is the number of seeds. "
        + ("Numbers are mean ± sample standard deviation over the seeds (a plain value for one run). "
           if multi else "")
        + "*best valid BLEU/chrF*: the best validation scores during training (greedy decoding); "
        "*test BLEU/chrF*: the test set, decoded with the checkpoint of best validation BLEU; "
        "*tokens/s*: target tokens per second of training; *wall time*: the whole run, evaluations included. "
        f"*p vs baseline*: sacrebleu's paired bootstrap resampling of test BLEU ({comparison.n_bootstrap} "
        f"resamples, seed {comparison.bootstrap_seed}) of each run of the variant against the run of the "
        f"baseline (`{comparison.baseline.name}`) with the same training seed (else the baseline's first run "
        "against the variant's first); with several seeds the table shows the largest p. A small p (e.g. "
        "< 0.05) means the BLEU difference is unlikely to be chance *on this test set*; it says nothing "
        "about training noise, which only the spread over seeds (± std) shows."
    )
    return text


def significance_details(comparison: Comparison) -> list[str]:
    lines = []
    for variant in comparison.variants:
        chosen = comparison.significance[variant.name]
        if chosen.note == "baseline":
            continue
        for sig in chosen.seed_pairs or [chosen]:
            lines.append(_significance_line(variant, sig))
    return lines


def _significance_line(variant: Variant, sig: Significance) -> str:
    pair = ""
    if sig.run is not None and sig.baseline_run is not None:
        pair = f"seed {sig.run.seed} vs baseline seed {sig.baseline_run.seed}"
    if sig.p_value is not None:
        scores = (f"BLEU {sig.bleu:.2f} vs {sig.baseline_bleu:.2f}"
                  if sig.bleu is not None and sig.baseline_bleu is not None else sig.reason)
        return f"`{variant.name}`: {pair}: {scores}, p = {sig.p_value:.4f}"
    return f"`{variant.name}`: {pair}: no p-value: {sig.reason or sig.note}"


def write_markdown(comparison: Comparison, path: str | Path) -> Path:
    path = Path(path)
    parts = [f"# Comparison of {len(comparison.runs)} runs in {len(comparison.variants)} variants", "",
             markdown_table(comparison), "", explanation(comparison), ""]
    signature = next((s.signature for s in comparison.significance.values() if s.signature), None)
    details = significance_details(comparison)
    if details:
        parts += ["## Significance", "", *(f"- {d}" for d in details)]
        if signature:
            parts += ["", f"sacrebleu signature: `{signature}`"]
        parts.append("")
    parts += ["## Runs", ""]
    for variant in comparison.variants:
        for run in variant.runs:
            parts.append(f"- `{variant.name}` seed {run.seed}: `{run.path}`")
    if comparison.skipped:
        parts += ["", "## Skipped", "", *(f"- `{s.path}`: {s.reason}" for s in comparison.skipped)]
    write_atomic(path, ("\n".join(parts) + "\n").encode("utf-8"))
    return path


def write_csv(comparison: Comparison, path: str | Path) -> Path:
    """Raw numbers, one row per variant: ``<metric>_mean`` and ``<metric>_std`` (empty for one run)."""
    path = Path(path)
    header = ["variant", "attention", "decoder", "data", "runs", "seeds"]
    for key, _, _ in METRICS:
        header += [f"{key}_mean", f"{key}_std"]
    header += ["p_value", "p_note", "baseline", "compared_seed", "baseline_seed", "run_dirs"]
    with atomic_output(path, "w", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for variant in comparison.variants:
            first = variant.runs[0].results
            row: list[Any] = [variant.name, variant.attention, first.get("decoder", ""), first.get("data", ""),
                              len(variant.runs), " ".join(str(s) for s in variant.seeds)]
            for key, _, _ in METRICS:
                mean, std = variant.mean_std(key)
                row += ["" if mean is None else repr(mean), "" if std is None else repr(std)]
            sig = comparison.significance[variant.name]
            row += ["" if sig.p_value is None else repr(sig.p_value), sig.reason or sig.note,
                    variant is comparison.baseline,
                    "" if sig.run is None else sig.run.seed,
                    "" if sig.baseline_run is None else sig.baseline_run.seed,
                    ";".join(str(r.path) for r in variant.runs)]
            writer.writerow(row)
    return path


def plot_valid_bleu(comparison: Comparison, path: str | Path) -> Path:
    """Validation BLEU against steps, one line per run, one color (and legend entry) per variant."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(9, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    styles = ("-", "--", ":", "-.")
    for index, variant in enumerate(comparison.variants):
        color = f"C{index % 10}"
        labelled = False
        for k, run in enumerate(variant.runs):
            points = [(h.get("step"), h.get("valid_bleu")) for h in run.history]
            points = [(s, b) for s, b in points if _number(s) is not None and _number(b) is not None]
            if not points:
                continue
            steps, bleu = zip(*points)
            label = f"{variant.name} ({len(variant.runs)} run{'s' if len(variant.runs) > 1 else ''})"
            ax.plot(steps, bleu, color=color, linestyle=styles[k % len(styles)], marker="o", markersize=3,
                    linewidth=1.5, alpha=0.9, label=None if labelled else label)
            labelled = True
    ax.set_xlabel("training step")
    ax.set_ylabel("validation BLEU (greedy)")
    ax.set_title(f"Validation BLEU: {len(comparison.runs)} runs, {len(comparison.variants)} variants"
                 " (line style: seed)")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title="variant", fontsize="small")
    fig.tight_layout()
    with atomic_output(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return path


def tensorboard_names(comparison: Comparison) -> list[tuple[str, Run]]:
    """(sub-directory, run): ``<variant>`` for a single run, ``<variant>_seed<k>`` for several."""
    names: list[tuple[str, Run]] = []
    used: set[str] = set()
    for variant in comparison.variants:
        base = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", variant.name).strip("_") or "variant"
        for run in variant.runs:
            name = base if len(variant.runs) == 1 else f"{base}_seed{run.seed}"
            unique, n = name, 2
            while unique in used:
                unique, n = f"{name}_{n}", n + 1
            used.add(unique)
            names.append((unique, run))
    return names


def write_tensorboard(comparison: Comparison, log_dir: str | Path) -> Path:
    """The validation BLEU curves under ``log_dir/<variant>[_seed<k>]`` with tag ``compare/valid_bleu`` (and
    ``compare/valid_chrf``), so that ``tensorboard --logdir log_dir`` overlays them. Event files left there
    by an earlier comparison are replaced, so curves do not double."""
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(log_dir)
    for name, run in tensorboard_names(comparison):
        run_dir = log_dir / name
        if run_dir.is_dir():
            for old in run_dir.glob("events.out.tfevents.*"):
                old.unlink()
        writer = SummaryWriter(log_dir=str(run_dir))
        try:
            for entry in run.history:
                step = entry.get("step")
                if _number(step) is None:
                    continue
                for key, tag in (("valid_bleu", TENSORBOARD_TAG), ("valid_chrf", "compare/valid_chrf")):
                    value = _number(entry.get(key))
                    if value is not None:
                        writer.add_scalar(tag, value, int(step))
        finally:
            writer.close()
    return log_dir


def write_outputs(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """comparison.md, comparison.csv, valid_bleu.png and tensorboard/ in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "markdown": write_markdown(comparison, out_dir / "comparison.md"),
        "csv": write_csv(comparison, out_dir / "comparison.csv"),
        "plot": plot_valid_bleu(comparison, out_dir / "valid_bleu.png"),
        "tensorboard": write_tensorboard(comparison, out_dir / "tensorboard"),
    }


# ---- helpers ---------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _max_number(values: Iterable[Any]) -> float | None:
    numbers = [n for n in (_number(v) for v in values) if n is not None]
    return max(numbers) if numbers else None
