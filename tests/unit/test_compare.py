"""s2s-compare on fake run directories: grouping, the table, the paired bootstrap, the plot, TensorBoard."""

from __future__ import annotations

import csv
import json
import random
import shutil
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from s2s_attn.cli.compare import main
from s2s_attn.evaluation.compare import COLUMNS, METRICS, collect_runs, compare, group_runs, table_rows

WORDS = ("le chat noir dort sur la table pendant que le chien mange une pomme rouge dans "
         "la cuisine avec son ami qui lit un livre tres long et beau").split()


def references(n: int = 30) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))) + " ." for _ in range(n)]


def damaged(refs: list[str], every: int, offset: int = 0, garble: bool = False) -> list[str]:
    """The references with every ``every``-th sentence (from ``offset``) changed: the last word dropped,
    or (``garble``) most words replaced."""
    rng = random.Random(every * 100 + offset)
    out = []
    for i, ref in enumerate(refs):
        words = ref.split()
        if garble:
            words = [w if rng.random() < 0.3 else rng.choice(("xx", "yy", "zz", "qq")) for w in words]
        elif i % every == offset:
            words = words[:-2] + words[-1:]
        out.append(" ".join(words))
    return out


def config(attention: str, seed: int, decoder: str = "bahdanau"):
    return OmegaConf.create({
        "data": {"name": "eng_fra", "root": "${oc.env:S2S_DATA_DIR,data}", "tgt_lang": "fr",
                 "spm": {"vocab_size": 8000}},
        "model": {"decoder": decoder, "emb_size": 256, "decoder_hidden": 512},
        "attention": {"name": attention, "size": 256 if attention == "bahdanau" else 128},
        "trainer": {"seed": seed, "lr": 0.001, "max_minutes": 20, "betas": [0.9, 0.999]},
        "logger": {"name": "tensorboard"},
        "experiment": None,
    })


def make_run(run_dir: Path, refs_path: Path, hyps: list[str], attention: str = "bahdanau", seed: int = 1,
             decoder: str = "bahdanau", test_bleu: float = 30.0, history_bleu=(10.0, 20.0, 25.0),
             with_config: bool = True) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "test.hyp").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    history = [
        {"step": 500 * (i + 1), "minutes": 2.0 * (i + 1), "valid_loss": 3.0 - i, "valid_ppl": 20.0 - i,
         "valid_bleu": b, "valid_chrf": 2 * b + i}
        for i, b in enumerate(history_bleu)
    ]
    results = {
        "attention": attention, "decoder": decoder, "data": "eng_fra", "seed": seed, "tgt_lang": "fr",
        "test_references": str(refs_path), "test_hypotheses": str(run_dir / "test.hyp"),
        "tokens_per_s": 5000.0 + seed, "wall_minutes": 20.5 + seed, "steps": 1500, "train_minutes": 20.0,
        "stop_reason": "max_minutes=20", "best_step": 1500, "best_valid_bleu": max(history_bleu),
        "test_bleu": test_bleu, "test_chrf": 2 * test_bleu, "bleu_signature": "nrefs:1|tok:13a",
        "chrf_signature": "nrefs:1", "parameters": 1_234_567 if attention == "bahdanau" else 1_200_000,
        "history": history, "checkpoint": str(run_dir / "checkpoints" / "best.pt"),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    if with_config:
        (run_dir / ".hydra").mkdir()
        OmegaConf.save(config(attention, seed, decoder), run_dir / ".hydra" / "config.yaml")
        overrides = [f"attention={attention}", f"trainer.seed={seed}"]
        (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return run_dir


@pytest.fixture
def sweep(tmp_path):
    """A Hydra-like sweep: bahdanau with seeds 1 and 2 (near-perfect), luong_dot (clearly worse), and
    luong_general (as good as bahdanau, other sentences damaged), plus an unfinished job."""
    refs = references()
    refs_path = tmp_path / "data" / "test.tgt"
    refs_path.parent.mkdir()
    refs_path.write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    root = tmp_path / "multirun" / "2025-01-01_12-00-00"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    make_run(root / "0-attention=bahdanau,trainer.seed=1", refs_path, damaged(refs, 5, 0), seed=1,
             test_bleu=80.0, history_bleu=(10.0, 20.0, 30.0))
    make_run(root / "1-attention=bahdanau,trainer.seed=2", refs_path, damaged(refs, 5, 1), seed=2,
             test_bleu=82.0, history_bleu=(12.0, 22.0, 34.0))
    make_run(root / "2-attention=luong_dot,trainer.seed=1", refs_path, damaged(refs, 1, garble=True),
             attention="luong_dot", seed=1, test_bleu=5.0, history_bleu=(2.0, 4.0, 6.0))
    make_run(root / "10-attention=luong_general,trainer.seed=1", refs_path, damaged(refs, 5, 2),
             attention="luong_general", seed=1, test_bleu=79.0, history_bleu=(9.0, 19.0, 29.0))
    unfinished = root / "3-attention=multihead,trainer.seed=1"
    (unfinished / ".hydra").mkdir(parents=True)
    OmegaConf.save(config("multihead", 1), unfinished / ".hydra" / "config.yaml")
    return tmp_path


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_runs_that_differ_only_in_seed_are_grouped_as_mean_and_std(sweep):
    runs, _ = collect_runs([sweep / "multirun"])
    variants, by_config = group_runs(runs)
    assert by_config
    assert [v.name for v in variants] == ["attention=bahdanau", "attention=luong_dot", "attention=luong_general"]
    bahdanau = variants[0]
    assert bahdanau.seeds == [1, 2]
    mean, std = bahdanau.mean_std("test_bleu")
    assert (mean, std) == (81.0, pytest.approx(statistics.stdev([80.0, 82.0])))
    assert bahdanau.mean_std("best_valid_chrf")[0] == pytest.approx(statistics.fmean([2 * 30.0 + 2, 2 * 34.0 + 2]))
    rows = {row[0]: row for row in table_rows(compare(runs, n_bootstrap=0))}
    test_bleu = COLUMNS.index("test BLEU")
    assert rows["attention=bahdanau"][1] == "2"
    assert rows["attention=bahdanau"][test_bleu] == "81.00 ± 1.41"
    assert rows["attention=luong_dot"][test_bleu] == "5.00"  # one run: a plain value


def test_variant_name_lists_every_key_that_differs(tmp_path):
    refs_path = tmp_path / "test.tgt"
    refs_path.write_text("a b c .\n")
    make_run(tmp_path / "r1", refs_path, ["a b c ."], attention="bahdanau")
    make_run(tmp_path / "r2", refs_path, ["a b c ."], attention="multihead", decoder="luong")
    variants, _ = group_runs(collect_runs([tmp_path])[0])
    assert [v.name for v in variants] == ["attention=bahdanau model.decoder=bahdanau",
                                          "attention=multihead model.decoder=luong"]


def test_per_run_paths_and_ignored_keys_do_not_split_a_variant(tmp_path):
    refs_path = tmp_path / "test.tgt"
    refs_path.write_text("a b c .\n")
    for seed, device in ((1, "cpu"), (2, "cuda")):
        run_dir = make_run(tmp_path / f"2025-01-0{seed}_12-00-00", refs_path, ["a b c ."], seed=seed)
        cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        cfg.trainer.resume = f"outputs/eng_fra-bahdanau/{run_dir.name}/checkpoints/last.pt"
        cfg.trainer.device = device
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    runs = collect_runs([tmp_path])[0]
    assert [v.name for v in group_runs(runs)[0]] == ["trainer.device=cpu", "trainer.device=cuda"]
    assert [len(v.runs) for v in group_runs(runs, ignore=["trainer.device"])[0]] == [2]


def test_a_run_that_was_resumed_after_a_crash_stays_in_its_variant(tmp_path):
    refs_path = tmp_path / "test.tgt"
    refs_path.write_text("a b c .\n")
    for seed in (1, 2):
        run_dir = make_run(tmp_path / f"r{seed}", refs_path, ["a b c ."], seed=seed)
        cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        cfg.trainer.resume = "auto" if seed == 2 else None
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    variants, _ = group_runs(collect_runs([tmp_path])[0])
    assert [len(v.runs) for v in variants] == [2]


def test_without_hydra_configs_runs_are_grouped_by_data_attention_decoder(tmp_path):
    refs_path = tmp_path / "test.tgt"
    refs_path.write_text("a b c .\n")
    for seed in (1, 2):
        make_run(tmp_path / f"b{seed}", refs_path, ["a b c ."], seed=seed, with_config=False)
    make_run(tmp_path / "l1", refs_path, ["a b ."], attention="luong_dot", with_config=False)
    variants, by_config = group_runs(collect_runs([tmp_path])[0])
    assert not by_config
    assert [(v.name, len(v.runs)) for v in variants] == [("attention=bahdanau", 2), ("attention=luong_dot", 1)]


def test_table_has_every_column_in_markdown_and_csv(sweep, capsys):
    out = sweep / "report"
    code, stdout, _ = run_cli(capsys, sweep / "multirun", "--out", out, "--bootstrap", "200")
    assert code == 0
    header = (out / "comparison.md").read_text().split("\n")
    table_header = next(line for line in header if line.startswith("| variant"))
    assert [c.strip() for c in table_header.strip("|").split("|")] == list(COLUMNS)
    assert table_header in stdout
    assert "paired bootstrap" in (out / "comparison.md").read_text()
    with (out / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    for key, _, _ in METRICS:
        assert f"{key}_mean" in rows[0] and f"{key}_std" in rows[0]
    by_variant = {r["variant"]: r for r in rows}
    assert float(by_variant["attention=bahdanau"]["test_bleu_mean"]) == 81.0
    assert float(by_variant["attention=bahdanau"]["test_bleu_std"]) == pytest.approx(2 ** 0.5)
    assert by_variant["attention=luong_dot"]["test_bleu_std"] == ""
    assert by_variant["attention=bahdanau"]["p_note"] == "baseline"


def test_paired_bootstrap_p_value_is_small_for_a_clearly_worse_variant(sweep):
    comparison = compare(collect_runs([sweep / "multirun"])[0])
    assert comparison.baseline.name == "attention=bahdanau"
    worse = comparison.significance["attention=luong_dot"]
    similar = comparison.significance["attention=luong_general"]
    assert worse.p_value < 0.05 and worse.cell == f"{worse.p_value:.4f}"
    assert worse.bleu < worse.baseline_bleu
    assert similar.p_value > 0.05
    assert (similar.run.seed, similar.baseline_run.seed) == (1, 1)
    assert "bs:1000" in worse.signature and "tok:13a" in worse.signature
    assert comparison.significance["attention=bahdanau"].cell == "baseline"


def test_identical_hypotheses_are_not_significant(sweep, capsys):
    from s2s_attn.evaluation.compare import paired_bootstrap

    run = collect_runs([sweep / "multirun"])[0][0]
    assert paired_bootstrap(run, run, n_samples=100).p_value == 1.0
    twin = sweep / "twin"
    shutil.copytree(run.path, twin / "0-attention=twin")
    results = json.loads((twin / "0-attention=twin" / "results.json").read_text())
    (twin / "0-attention=twin" / "results.json").write_text(json.dumps({**results, "attention": "twin",
                                                                        "test_hypotheses": "gone.hyp"}))
    shutil.rmtree(twin / "0-attention=twin" / ".hydra")
    code, stdout, _ = run_cli(capsys, run.path, twin, "--out", sweep / "r")
    assert code == 0 and stdout.splitlines()[3].endswith(" 1.0000 |")  # found test.hyp next to results.json
    assert "identical hypotheses, p = 1.0000" in (sweep / "r" / "comparison.md").read_text()


def test_baseline_option_and_different_references_give_n_a(sweep, capsys, tmp_path):
    other_refs = tmp_path / "other.tgt"
    other_refs.write_text("".join(f"other {i} .\n" for i in range(30)))
    make_run(sweep / "multirun" / "x" / "11-data=other", other_refs, [f"other {i} ." for i in range(30)],
             attention="additive")
    code, stdout, _ = run_cli(capsys, sweep / "multirun", "--out", sweep / "r", "--baseline", "luong_dot",
                              "--bootstrap", "100")
    assert code == 0
    assert next(line for line in stdout.splitlines() if "luong_dot " in line).endswith(" baseline |")
    assert "n/a (different references)" in stdout
    code, _, stderr = run_cli(capsys, sweep / "multirun", "--out", sweep / "r", "--baseline", "nope")
    assert code == 2 and "matches no variant" in stderr and "Traceback" not in stderr


def test_plot_is_written(sweep, capsys):
    out = sweep / "report"
    assert run_cli(capsys, sweep / "multirun", "--out", out, "--bootstrap", "0")[0] == 0
    png = out / "valid_bleu.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(str(png)).shape[0] > 100


def test_sweep_directory_is_searched_recursively(sweep):
    runs, skipped = collect_runs([sweep])  # two levels above the job directories
    assert sorted(r.path.name.split("-")[0] for r in runs) == ["0", "1", "10", "2"]
    assert [r.path.name.split("-")[0] for r in runs] == ["0", "1", "2", "10"]  # natural order
    again, _ = collect_runs([sweep, sweep / "multirun" / "2025-01-01_12-00-00" / "0-attention=bahdanau,trainer.seed=1"])
    assert len(again) == 4  # a run given twice counts once


def test_unfinished_run_is_reported_and_skipped(sweep, capsys):
    out = sweep / "report"
    code, stdout, stderr = run_cli(capsys, sweep / "multirun", "--out", out, "--bootstrap", "0")
    assert code == 0
    assert "skipped" in stderr and "3-attention=multihead,trainer.seed=1" in stderr
    assert "unfinished or failed" in stderr and "Traceback" not in stderr
    assert "multihead" not in stdout
    assert "3-attention=multihead" in (out / "comparison.md").read_text()


def test_no_runs_is_a_clear_error_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, stdout, stderr = run_cli(capsys, tmp_path / "empty", tmp_path / "missing")
    assert code == 2
    assert "no finished runs" in stderr and "no such directory" in stderr
    assert "Traceback" not in stderr and not list(tmp_path.glob("comparison.*"))


def test_tensorboard_curves_are_written(sweep, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = sweep / "report"
    for _ in range(2):  # a second comparison into the same place replaces the curves
        assert run_cli(capsys, sweep / "multirun", "--out", out, "--bootstrap", "0")[0] == 0
    logdirs = sorted(p.name for p in (out / "tensorboard").iterdir())
    assert logdirs == ["attention=bahdanau_seed1", "attention=bahdanau_seed2", "attention=luong_dot",
                       "attention=luong_general"]
    events = EventAccumulator(str(out / "tensorboard" / "attention=bahdanau_seed2"))
    events.Reload()
    scalars = events.Scalars("compare/valid_bleu")
    assert [(s.step, s.value) for s in scalars] == [(500, 12.0), (1000, 22.0), (1500, 34.0)]


def test_with_several_seeds_each_is_tested_against_the_same_seed_and_the_largest_p_is_shown(sweep, capsys):
    # luong_dot with seed 2 reproduces bahdanau's seed-2 output exactly: seed 1 is "significant", seed 2 is not
    refs_path = sweep / "data" / "test.tgt"
    refs = refs_path.read_text(encoding="utf-8").splitlines()
    root = sweep / "multirun" / "2025-01-01_12-00-00"
    make_run(root / "4-attention=luong_dot,trainer.seed=2", refs_path, damaged(refs, 5, 1), attention="luong_dot",
             seed=2, test_bleu=82.0)
    runs, _ = collect_runs([sweep / "multirun"])
    comparison = compare(runs, n_bootstrap=200)
    sig = comparison.significance["attention=luong_dot"]
    assert [(t.baseline_run.seed, t.run.seed) for t in sig.seed_pairs] == [(1, 1), (2, 2)]
    assert sig.seed_pairs[0].p_value < 0.05 and sig.p_value == 1.0  # the larger p speaks for the variant
    assert sig.cell == "1.0000 (max of 2 seeds)"  # worse on seed 1, equal on seed 2: not "better" anywhere
    sig.seed_pairs[1].bleu, sig.seed_pairs[1].baseline_bleu = 83.0, 82.0  # as if seed 2 were better
    assert sig.cell == "1.0000 (max of 2 seeds; better on some seeds, worse on others)"
    code, out, _ = run_cli(capsys, sweep / "multirun", "--out", sweep / "report", "--bootstrap", 200)
    assert code == 0 and "max of 2 seeds" in out
    details = (sweep / "report" / "comparison.md").read_text(encoding="utf-8")
    assert "seed 1 vs baseline seed 1" in details and "seed 2 vs baseline seed 2" in details
