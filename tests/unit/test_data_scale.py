"""scripts/data_scale.py's building blocks: the synthetic corpus builder (unique, disjoint, deterministic, streamed
in batches) and the process-tree RSS sampler. No s2s-train run here."""

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "data_scale.py"


@pytest.fixture(scope="module")
def data_scale():
    spec = importlib.util.spec_from_file_location("data_scale_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_tsv(tmp_path):
    words = ["red", "green", "blue", "cat", "dog", "bird", "sun", "moon", "tree", "house", "river", "stone"]
    lines = [f"The {a} {b}.\tLe {b} {a} !" for a in words[:6] for b in words[6:]]  # 36 pairs
    lines += ["only one field", ""]  # skipped
    path = tmp_path / "tiny.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read(directory: Path, name: str) -> list[str]:
    return (directory / name).read_text(encoding="utf-8").splitlines()


def test_the_corpus_has_n_unique_pairs_and_valid_and_test_disjoint_from_train(data_scale, tiny_tsv, tmp_path):
    out = tmp_path / "corpus"
    progress = []
    meta = data_scale.build_corpus(tiny_tsv, out, 3000, held_out=100, batch=256, progress=progress.append)
    assert meta["pairs"] == 3000 and meta["source_pairs"] == 36
    train = list(zip(read(out, "train.en"), read(out, "train.fr")))
    valid = list(zip(read(out, "valid.en"), read(out, "valid.fr")))
    test = list(zip(read(out, "test.en"), read(out, "test.fr")))
    assert len(train) == 3000 and len(valid) == 100 and len(test) == 100
    assert len(set(train)) == 3000
    assert len(set(valid) | set(test)) == 200
    held_english = {en for en, _ in valid + test}
    assert not held_english & {en for en, _ in train}  # disjoint by pair and by English side
    for en, fr in train[:50]:  # 1 to 3 source pairs, joined in the same order on both sides
        n = en.count("The ")
        assert 1 <= n <= 3 and fr.count("Le ") == n
        assert "\t" not in en + fr
    assert progress and progress[-1].startswith("corpus-3000: 3,000/3,000")


def test_the_corpus_is_deterministic_for_a_seed_and_is_reused(data_scale, tiny_tsv, tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        data_scale.build_corpus(tiny_tsv, tmp_path / name, 500, seed=seed, held_out=20, batch=128)
    files = data_scale.SPLIT_FILES
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert (tmp_path / "a" / "train.en").read_bytes() != (tmp_path / "c" / "train.en").read_bytes()
    meta, reused = data_scale.ensure_corpus(tiny_tsv, tmp_path / "a", 500, seed=5)
    assert not reused  # held_out differs from the script's 1,000: rebuilt
    meta, reused = data_scale.ensure_corpus(tiny_tsv, tmp_path / "a", 500, seed=5)
    assert reused and meta["source_sha256"] == data_scale.sha256_file(tiny_tsv)


def test_the_corpus_is_written_in_batches_not_held_in_memory(data_scale, tiny_tsv, tmp_path, monkeypatch):
    """Each batch of drawn lines goes to disk before the next is drawn: the file grows while lines are drawn."""
    out = tmp_path / "corpus"
    sizes = []
    draw = data_scale.draw_lines

    def watched(rng, english, french, count):
        train = out / "train.en"
        sizes.append(train.stat().st_size if train.exists() else 0)
        return draw(rng, english, french, count)

    monkeypatch.setattr(data_scale, "draw_lines", watched)
    data_scale.build_corpus(tiny_tsv, out, 2000, held_out=10, batch=100)
    assert len(sizes) >= 20 and len(set(sizes)) >= 10  # many draws, and the file grew between them


def test_too_small_a_source_is_an_error_not_an_endless_loop(data_scale, tmp_path):
    source = tmp_path / "two.tsv"
    source.write_text("A.\tUn.\nB.\tDeux.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot give|no new pair"):
        data_scale.build_corpus(source, tmp_path / "corpus", 100, held_out=2)


def test_the_hash_set_adds_each_value_once(data_scale):
    rng = np.random.default_rng(0)
    seen, reference = data_scale.HashSet64(), set()
    for _ in range(40):
        values = rng.integers(0, 5000, size=300).astype(np.uint64)
        mask = seen.add_new(values)
        expected = []
        for value in values.tolist():
            expected.append(value not in reference)
            reference.add(value)
        assert mask.tolist() == expected
    assert len(seen) == len(reference)
    assert len(seen.levels) <= 12


def test_the_sampler_sums_the_rss_of_the_process_tree(data_scale):
    """The parent holds little; its child allocates 200 MB and holds them for a second."""
    child = "import time; b = bytearray(200 * 1024 * 1024); time.sleep(1.0)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    proc = subprocess.Popen([sys.executable, "-c", parent])
    sampler = data_scale.RssSampler(proc.pid, interval=0.05, phase="run").start()
    try:
        proc.wait(timeout=30)
    finally:
        peaks = sampler.stop()
    assert proc.returncode == 0
    assert peaks["run"] >= 150 * 1024 * 1024
    assert sampler.samples >= 5


def test_the_sampler_splits_its_peak_by_phase(data_scale):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6); b = bytearray(120 << 20); "
                             "time.sleep(0.8)"])
    sampler = data_scale.RssSampler(proc.pid, interval=0.05, phase="preparation").start()
    try:
        time.sleep(0.3)
        sampler.set_phase("training")
        proc.wait(timeout=30)
    finally:
        peaks = sampler.stop()
    assert peaks["preparation"] < 100 << 20 <= peaks["training"]


FAKE_TRAINER = r"""
import sys, time
print("[t][s2s_attn.training.trainer][INFO] - device: cpu (1 CPU threads)", flush=True)
held = bytearray(150 << 20)
time.sleep(0.5)
print("[t][s2s_attn.training.trainer][INFO] - data: 10 train, 2 valid, 2 test pairs (/x)", flush=True)
del held
for n in range(4):
    sys.stderr.write(f"\rtrain:  {25 * n}%|##  | {n}/3 [00:00<00:00, 1.00step/s, loss=1.0]")
    sys.stderr.flush()
    time.sleep(0.8)
time.sleep(60)  # stopped before: its progress showed step 3
"""


def test_a_run_is_timed_from_its_lines_as_they_arrive_and_stopped_at_its_last_step(data_scale, tmp_path):
    """Progress records start with a carriage return (tqdm): step 1 counts when it arrives, not when step 2's record
    ends it; the data line splits the peak; the run is stopped once it shows the last step."""
    start = time.monotonic()
    result = data_scale.run_training([sys.executable, "-c", FAKE_TRAINER], 3, tmp_path / "run.log", interval=0.05,
                                     timeout=30)
    assert time.monotonic() - start < 15 and result["stopped"]
    assert result["train_pairs"] == 10 and result["test_pairs"] == 2
    assert 0.4 <= result["prep_s"] < 1.5
    assert result["first_progress_step"] == 1
    assert 0.6 <= result["to_step1_s"] - result["to_data_s"] < 1.4  # 0.8 s; 1.6 s if it waited for step 2's record
    assert result["to_last_step_s"] - result["to_step1_s"] >= 1.4
    assert result["peak_rss_prep_mib"] >= 140 > result["peak_rss_train_mib"]
    assert "1/3 [" in (tmp_path / "run.log").read_text()
