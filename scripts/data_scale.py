#!/usr/bin/env python3
"""Data preparation and start-up at corpus scale: for a synthetic English->French corpus of N pairs, how fast
``s2s-train`` prepares it, how much memory that takes, and how long a second start (prepared data cached) takes.

    python scripts/data_scale.py --pairs 200000 1000000 4000000 [--workdir DIR] [--steps 30] \
        [--source ../shared/data/tatoeba/eng-fra.tsv] [--json out.json] [--markdown] [--override trainer.threads=4]

For each N:

1. The corpus, ``<workdir>/corpus-<N>/{train,valid,test}.{en,fr}`` (`build_corpus`): N unique training pairs and
   1,000 valid and 1,000 test pairs, each line 1 to 3 random pairs of the Tatoeba TSV (``English<TAB>French``)
   joined with a space on both sides in the same order (1, 2 or 3 with probabilities 0.1 / 0.3 / 0.6: median
   about 15 English and 17 French words), drawn with a seeded generator. Valid and test are drawn first; no
   training pair equals a valid or test pair, nor has the English side of one. Pairs are de-duplicated by
   64-bit hashes (`HashSet64`, sorted numpy arrays, 8 bytes a pair) and written in batches as they are drawn,
   so 20M pairs need about 160 MB of hashes and nothing else of the corpus in memory. A corpus whose
   ``meta.json`` names the same N, seed, generator version and source sha256 is reused.
2. Two ``s2s-train`` runs (``data=parallel``, ``data.cache_dir=<workdir>/cache-<N>``, ``trainer.max_steps=STEPS``):
   cold (the cache emptied first) and warm (the same cache), run directories ``<workdir>/runs/<N>-{cold,warm}``.
   Both streams of the run are read as they come (Hydra's console log goes to stdout, the progress bar to
   stderr; both are copied to ``<run dir>.log``) while `RssSampler` sums the memory (PSS, see `tree_rss_bytes`)
   of the process and all its descendants (``/proc/<pid>/task/*/children``) every 0.1 s. The peak is split at
   the trainer's line ``data: <n> train, <v> valid, <t> test pairs`` (logged when the data is ready):
   preparation before, training after.

How the times are measured (all from the launch of ``s2s-train``, wall clock, as the lines arrive):

* ``to_data_s``: launch to the ``data:`` line (interpreter, imports, Hydra, kernels, data preparation or
  loading from the cache).
* ``prep_s``: the trainer's ``device:`` line (logged just before it reads the data) to the ``data:`` line: the
  preparation itself; pairs/s = N / prep_s (cold). If the trainer logs no ``device:`` line, prep_s = to_data_s.
* ``to_step1_s``: launch to the first progress record at step 1. The trainer logs no line per step, so the run
  is given ``trainer.log_every=1``: then every step ends with a progress-bar refresh (tqdm ``set_postfix`` on
  stderr, written as ``\\r`` + the bar, so a record is taken as it arrives, not when the next ``\\r`` ends it)
  showing ``1/STEPS`` right after the first optimisation step. That setting adds one TensorBoard scalar write
  per step; nothing else in the trainer changes.

Before the first size, the compiled CPU kernels are built (or loaded) once in a process of their own, untimed
(``kernels_warmup_s`` in the JSON): otherwise the first cold run's preparation would include their first build.

The trainer has no switch for its final validation and test decoding, so the run is given no evaluation and no
checkpoint before ``STEPS`` (``trainer.eval_every=STEPS+1``, ``trainer.save_every=null``,
``trainer.max_minutes=null``, ``logger.attention_images=0``) and is stopped (SIGTERM to its process group, then
SIGKILL) once its progress shows step STEPS: the figures cover preparation and the first STEPS steps only.

The table and ``--json`` give for each N: the training pairs the trainer kept (after its length filter), the
cold preparation time and rate, the cold peaks (preparation / training), the warm times to the data line and to
step 1 and the warm peak; the JSON adds the machine (CPU model, cores), torch version and git commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

#: bump when the generated text for a given (source, N, seed) changes: older corpora are then rebuilt
GENERATOR_VERSION = 1
#: probabilities of joining 1, 2 or 3 source pairs into one line
JOIN_WEIGHTS = (0.1, 0.3, 0.6)
HELD_OUT = 1000
SPLIT_FILES = [f"{split}.{lang}" for split in ("train", "valid", "test") for lang in ("en", "fr")]

DATA_LINE = re.compile(r"\bdata: (\d+) train, (\d+) valid, (\d+) test pairs")
DEVICE_LINE = re.compile(r"\] - device: |^device: ")
PROGRESS = re.compile(r"\btrain:.*?(\d+)/(\d+) \[")


def default_source() -> Path:
    """The Tatoeba eng-fra TSV: under $S2S_DATA_DIR when set, else ../shared/data next to the checkout."""
    root = os.environ.get("S2S_DATA_DIR") or str(REPO_ROOT.parent / "shared" / "data")
    return Path(root) / "tatoeba" / "eng-fra.tsv"


# ---- the corpus ----------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_source(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The (English, French) sentences of a TSV, ``English<TAB>French[<TAB>...]`` per line; lines without both
    fields are skipped, whitespace inside a sentence is collapsed (no tab or newline can reach the output)."""
    english, french = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 2:
                continue
            en, fr = " ".join(fields[0].split()), " ".join(fields[1].split())
            if en and fr:
                english.append(en)
                french.append(fr)
    return english, french


def hashes64(lines: list[str]) -> np.ndarray:
    """64-bit hashes (blake2b) of strings, as a uint64 array."""
    digests = b"".join(hashlib.blake2b(line.encode("utf-8"), digest_size=8).digest() for line in lines)
    return np.frombuffer(digests, dtype="<u8").copy() if lines else np.zeros(0, dtype=np.uint64)


class HashSet64:
    """A set of 64-bit hashes kept as a few sorted numpy arrays whose sizes roughly halve from the first to the
    last (merged like a binary counter): 8 bytes an entry, O(log n) arrays to search, O(n log n) in all."""

    def __init__(self) -> None:
        self.levels: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(level) for level in self.levels)

    def contains(self, values: np.ndarray) -> np.ndarray:
        found = np.zeros(len(values), dtype=bool)
        for level in self.levels:
            pos = np.searchsorted(level, values)
            inside = pos < len(level)
            found[inside] |= level[pos[inside]] == values[inside]
        return found

    def add_new(self, values: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
        """Add the values not yet in the set; -> a mask of the positions added (the first occurrence of each new
        value). Positions where ``exclude`` is True are neither added nor marked."""
        values = np.asarray(values, dtype=np.uint64)
        candidates = np.flatnonzero(~exclude) if exclude is not None else np.arange(len(values))
        unique, first = np.unique(values[candidates], return_index=True)
        new = ~self.contains(unique)
        mask = np.zeros(len(values), dtype=bool)
        mask[candidates[first[new]]] = True
        self.insert_sorted(unique[new])
        return mask

    def insert_sorted(self, values: np.ndarray) -> None:
        if len(values):
            self.levels.append(values)
        while len(self.levels) > 1 and len(self.levels[-2]) <= 2 * len(self.levels[-1]):
            top = self.levels.pop()
            self.levels[-1] = np.sort(np.concatenate([self.levels[-1], top]), kind="stable")


def draw_lines(rng: np.random.Generator, english: list[str], french: list[str], count: int
               ) -> tuple[list[str], list[str]]:
    """``count`` lines, each 1 to 3 random source pairs joined in the same order on both sides."""
    joins = rng.choice(len(JOIN_WEIGHTS), size=count, p=JOIN_WEIGHTS) + 1
    picks = rng.integers(0, len(english), size=(count, len(JOIN_WEIGHTS))).tolist()
    en_lines = [" ".join([english[i] for i in row[:k]]) for row, k in zip(picks, joins.tolist())]
    fr_lines = [" ".join([french[i] for i in row[:k]]) for row, k in zip(picks, joins.tolist())]
    return en_lines, fr_lines


def pair_keys(en_lines: list[str], fr_lines: list[str]) -> np.ndarray:
    return hashes64([f"{en}\t{fr}" for en, fr in zip(en_lines, fr_lines)])


def build_corpus(source: str | os.PathLike, out_dir: str | os.PathLike, pairs: int, seed: int = 1,
                 held_out: int = HELD_OUT, batch: int = 65536,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Write ``out_dir/{train,valid,test}.{en,fr}``: ``pairs`` unique training pairs and ``held_out`` valid and
    test pairs, disjoint from each other and from train (by pair and by English side), drawn from ``source`` with
    ``seed``; streamed to disk in batches. Writes ``meta.json`` last and returns its contents."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)
    english, french = read_source(source)
    n_source = len(english)
    if n_source == 0:
        raise ValueError(f"{source}: no English<TAB>French pairs")
    if pairs + 2 * held_out > sum(n_source ** k for k in range(1, len(JOIN_WEIGHTS) + 1)):
        raise ValueError(f"{source}: {n_source} pairs cannot give {pairs + 2 * held_out} distinct lines")
    rng = np.random.default_rng(seed)
    seen = HashSet64()
    started = last_report = time.monotonic()

    def unique_lines(wanted: int, exclude_en: np.ndarray | None, sink) -> int:
        """Draw until ``wanted`` new pairs were passed to ``sink(en_lines, fr_lines)``; -> how many were."""
        got, barren = 0, 0
        while got < wanted:
            remaining = wanted - got
            en_lines, fr_lines = draw_lines(rng, english, french, min(batch, remaining + remaining // 8 + 16))
            exclude = None
            if exclude_en is not None:
                exclude = np.isin(hashes64(en_lines), exclude_en)
            mask = seen.add_new(pair_keys(en_lines, fr_lines), exclude)
            keep = np.flatnonzero(mask)[:remaining]
            if len(keep) == 0:
                barren += 1
                if barren >= 50:
                    raise ValueError(f"{source}: no new pair in 50 draws; too few source pairs for {pairs} lines")
                continue
            barren = 0
            sink([en_lines[i] for i in keep], [fr_lines[i] for i in keep])
            got += len(keep)
        return got

    held: list[tuple[list[str], list[str]]] = []
    unique_lines(2 * held_out, None, lambda en, fr: held.append((en, fr)))
    held_en = [line for en, _ in held for line in en]
    held_fr = [line for _, fr in held for line in fr]
    for split, start in (("valid", 0), ("test", held_out)):
        for lang, lines in (("en", held_en), ("fr", held_fr)):
            with open(out_dir / f"{split}.{lang}", "w", encoding="utf-8", newline="\n") as handle:
                handle.write("".join(line + "\n" for line in lines[start:start + held_out]))
    held_en_keys = np.unique(hashes64(held_en))
    held.clear()
    del held_en, held_fr

    written = 0
    with open(out_dir / "train.en", "w", encoding="utf-8", newline="\n") as en_out, \
            open(out_dir / "train.fr", "w", encoding="utf-8", newline="\n") as fr_out:
        def sink(en_lines: list[str], fr_lines: list[str]) -> None:
            nonlocal written, last_report
            en_out.write("".join(line + "\n" for line in en_lines))
            fr_out.write("".join(line + "\n" for line in fr_lines))
            written += len(en_lines)
            now = time.monotonic()
            if progress is not None and (now - last_report >= 5.0 or written == pairs):
                last_report = now
                progress(f"corpus-{pairs}: {written:,}/{pairs:,} train pairs ({100 * written / pairs:.0f}%), "
                         f"{written / max(now - started, 1e-9):,.0f} pairs/s")

        unique_lines(pairs, held_en_keys, sink)
    meta = {"pairs": pairs, "held_out": held_out, "seed": seed, "generator_version": GENERATOR_VERSION,
            "join_weights": list(JOIN_WEIGHTS), "source": str(Path(source).resolve()),
            "source_sha256": sha256_file(source), "source_pairs": n_source,
            "seconds": round(time.monotonic() - started, 2)}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def ensure_corpus(source: str | os.PathLike, out_dir: str | os.PathLike, pairs: int, seed: int = 1,
                  progress: Callable[[str], None] | None = None) -> tuple[dict, bool]:
    """The corpus of `build_corpus`, reused when ``meta.json`` says it was built from the same source (sha256),
    N, seed and generator version; -> (meta, reused)."""
    out_dir = Path(out_dir)
    try:
        meta = json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        meta = None
    wanted = {"pairs": pairs, "seed": seed, "generator_version": GENERATOR_VERSION, "held_out": HELD_OUT}
    if (meta is not None and all(meta.get(key) == value for key, value in wanted.items())
            and all((out_dir / name).is_file() for name in SPLIT_FILES)
            and meta.get("source_sha256") == sha256_file(source)):
        return meta, True
    return build_corpus(source, out_dir, pairs, seed=seed, progress=progress), False


# ---- memory of a process tree ----------------------------------------------------------------------------------


def _children_by_scan() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now (from /proc/<p>/task/*/children, or a scan of
    /proc/*/stat where the kernel has no children files)."""
    scan = None if os.path.exists(f"/proc/{pid}/task/{pid}/children") else _children_by_scan()
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        if scan is not None:
            queue.extend(scan.get(current, []))
            continue
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    queue.extend(int(child) for child in handle.read().split())
            except OSError:
                pass
    return tree


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM); 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def pss_kib(pid: int) -> int | None:
    """The proportional set size of a process (``Pss`` of /proc/<pid>/smaps_rollup), or None where unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def tree_rss_bytes(pid: int) -> int:
    """The memory of ``pid`` and its descendants, in bytes: their PSS summed (a page that forked workers share
    with their parent counts once, split among them), or their VmRSS where the kernel has no smaps_rollup."""
    total = 0
    for p in process_tree(pid):
        pss = pss_kib(p)
        total += pss if pss is not None else status_kib(p, "VmRSS")
    return 1024 * total


class RssSampler:
    """Samples `tree_rss_bytes` of a process every ``interval`` seconds in a thread and keeps the peak of each
    phase (`set_phase` takes a sample for the phase that ends, then starts the next)."""

    def __init__(self, pid: int, interval: float = 0.1, phase: str = "main") -> None:
        self.pid, self.interval, self.phase = pid, interval, phase
        self.peaks: dict[str, int] = {}
        self.samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> int:
        rss = tree_rss_bytes(self.pid)
        with self._lock:
            self.samples += 1
            if rss > self.peaks.get(self.phase, 0):
                self.peaks[self.phase] = rss
        return rss

    def set_phase(self, phase: str) -> None:
        self.sample()
        with self._lock:
            self.phase = phase
            self.peaks.setdefault(phase, 0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return dict(self.peaks)

    @property
    def peak(self) -> int:
        return max(self.peaks.values(), default=0)


# ---- one training run ----------------------------------------------------------------------------------------


def trainer_command() -> list[str]:
    """s2s-train of this checkout (run from the repository root, `-m` imports its package, not an installed
    copy that may be older)."""
    return [sys.executable, "-m", "s2s_attn.cli.train"]


def warm_kernels() -> float | None:
    """Build (or load) the compiled CPU kernels once, untimed, so that no run's preparation includes their first
    build (about 30 s of compiler, whose memory the process tree would count); -> seconds, None if it failed."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "from s2s_attn.fast import kernels; kernels.ops()"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    return round(time.monotonic() - start, 2) if done.returncode == 0 else None


def train_overrides(corpus_dir: Path, cache_dir: Path, run_dir: Path, steps: int, extra: list[str]) -> list[str]:
    return [
        "data=parallel", f"data.root={corpus_dir}", "data.train=train", "data.valid=valid", "data.test=test",
        "data.src_lang=en", "data.tgt_lang=fr", f"data.cache_dir={cache_dir}",
        f"trainer.max_steps={steps}", f"trainer.eval_every={steps + 1}", "trainer.save_every=null",
        "trainer.max_minutes=null", "trainer.log_every=1", "logger.attention_images=0",
        f"hydra.run.dir={run_dir}", *extra,
    ]


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_training(command: list[str], steps: int, log_path: Path, interval: float = 0.1, timeout: float = 3600.0,
                 env: dict[str, str] | None = None) -> dict:
    """Run ``command`` (an s2s-train), sampling its process tree's RSS, until its progress shows step ``steps``
    (then stop it) or it exits; -> times from launch, peaks (MiB) before and after the ``data:`` line, counts."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120", **(env or {})}
    events: dict[str, float] = {}
    found: dict[str, object] = {}
    reached = threading.Event()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_lock = threading.Lock()
    tail_lines: list[str] = []
    t0 = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env=env, cwd=REPO_ROOT)
    sampler = RssSampler(proc.pid, interval, phase="preparation").start()

    def on_record(record: str, stream: str, at: float) -> None:
        if "data" not in events and (match := DATA_LINE.search(record)):
            events["data"] = at
            found["counts"] = [int(g) for g in match.groups()]
            found["hwm_root_mib"] = status_kib(proc.pid, "VmHWM") / 1024
            sampler.set_phase("training")
        elif "device" not in events and DEVICE_LINE.search(record):
            events["device"] = at
        elif match := PROGRESS.search(record):
            step = int(match.group(1))
            if step >= 1 and "step1" not in events:
                events["step1"] = at
                found["first_progress_step"] = step
            if step >= steps and "last" not in events:
                events["last"] = at
                reached.set()

    def reader(pipe, stream: str, out) -> None:
        # tqdm writes "\r" + line, so a progress record ends only when the next one begins: the unfinished tail of
        # what has arrived is looked at at once too (a cut-off line cannot match: the patterns end in " [" and
        # "test pairs"; an event keeps its first time) and logged, with its arrival time, once it is complete.
        pending, pending_at = b"", 0.0
        fd = pipe.fileno()
        while True:
            chunk = os.read(fd, 65536)
            at = time.monotonic() - t0
            if not chunk:
                break
            *records, tail = re.split(rb"[\r\n]", pending + chunk)
            for i, raw in enumerate(records):
                stamp = pending_at if i == 0 and pending else at
                if raw.strip():
                    record = raw.decode("utf-8", "replace")
                    on_record(record, stream, stamp)
                    with log_lock:
                        out.write(f"{stamp:9.2f} {stream} {record}\n")
                        tail_lines.append(record)
                        del tail_lines[:-40]
            if records or not pending:  # the tail began in this chunk (else it continues the pending one)
                pending_at = at
            pending = tail
            if pending.strip():
                on_record(pending.decode("utf-8", "replace"), stream, pending_at)
        if pending.strip():
            with log_lock:
                out.write(f"{pending_at:9.2f} {stream} {pending.decode('utf-8', 'replace')}\n")

    with open(log_path, "w", encoding="utf-8") as out:
        out.write(f"# {' '.join(command)}\n")
        threads = [threading.Thread(target=reader, args=(pipe, name, out), daemon=True)
                   for pipe, name in ((proc.stdout, "out"), (proc.stderr, "err"))]
        for thread in threads:
            thread.start()
        deadline = t0 + timeout
        while proc.poll() is None and not reached.is_set() and time.monotonic() < deadline:
            reached.wait(0.2)
        stopped = proc.poll() is None
        sampler.sample()
        _stop_group(proc)
        for thread in threads:
            thread.join(timeout=10)
        peaks = sampler.stop()
    wall = time.monotonic() - t0
    if "last" not in events:
        why = "timed out" if time.monotonic() >= deadline else f"exited with status {proc.returncode}"
        raise RuntimeError(f"s2s-train {why} before step {steps} (log: {log_path}):\n" + "\n".join(tail_lines[-20:]))
    mib = 1 / (1 << 20)
    counts = found.get("counts", [None, None, None])
    return {
        "to_data_s": round(events["data"], 2) if "data" in events else None,
        "prep_s": round(events["data"] - events.get("device", 0.0), 2) if "data" in events else None,
        "to_step1_s": round(events["step1"], 2) if "step1" in events else None,
        "first_progress_step": found.get("first_progress_step"),
        "to_last_step_s": round(events["last"], 2),
        "wall_s": round(wall, 2),
        "stopped": stopped,
        "train_pairs": counts[0], "valid_pairs": counts[1], "test_pairs": counts[2],
        "peak_rss_prep_mib": round(peaks.get("preparation", 0) * mib, 1),
        "peak_rss_train_mib": round(peaks.get("training", 0) * mib, 1),
        "peak_rss_mib": round(max(peaks.values(), default=0) * mib, 1),
        "hwm_root_prep_mib": round(found["hwm_root_mib"], 1) if "hwm_root_mib" in found else None,
        "rss_samples": sampler.samples,
        "log": str(log_path),
    }


# ---- the report ------------------------------------------------------------------------------------------------


def machine() -> dict:
    model = None
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), None)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = status_meminfo_kib("MemTotal")
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "usable_cores": usable,
            "memory_gib": round(mem / (1 << 20), 1) if mem else None, "platform": platform.platform(),
            "python": platform.python_version()}


def status_meminfo_kib(field: str) -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def torch_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> dict:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


COLUMNS = [
    ("pairs", "N", "{:,}"),
    ("train_pairs", "kept", "{:,}"),
    ("prep_s", "prep s", "{:.1f}"),
    ("prep_pairs_s", "pairs/s", "{:,.0f}"),
    ("cold_to_step1_s", "cold→step 1 s", "{:.1f}"),
    ("cold_peak_prep_mib", "peak prep MiB", "{:,.0f}"),
    ("cold_peak_train_mib", "peak train MiB", "{:,.0f}"),
    ("warm_to_data_s", "warm→data s", "{:.1f}"),
    ("warm_to_step1_s", "warm→step 1 s", "{:.1f}"),
    ("warm_peak_mib", "warm peak MiB", "{:,.0f}"),
]


def table(rows: list[dict], markdown: bool) -> str:
    cells = [[fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in COLUMNS] for row in rows]
    heads = [head for _, head, _ in COLUMNS]
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---:" for _ in heads) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(head), *(len(row[i]) for row in cells)) for i, head in enumerate(heads)]
    lines = ["  ".join(head.rjust(width) for head, width in zip(heads, widths))]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def measure(pairs: int, args: argparse.Namespace) -> dict:
    workdir = Path(args.workdir).resolve()
    corpus_dir, cache_dir = workdir / f"corpus-{pairs}", workdir / f"cache-{pairs}"
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    meta, reused = ensure_corpus(args.source, corpus_dir, pairs, seed=args.seed, progress=say)
    built = "reused" if reused else f"built in {meta['seconds']:.1f} s"
    say(f"corpus-{pairs}: {built} ({corpus_dir})")
    row: dict = {"pairs": pairs, "corpus": str(corpus_dir), "corpus_reused": reused,
                 "corpus_build_s": None if reused else meta["seconds"]}
    shutil.rmtree(cache_dir, ignore_errors=True)
    for kind in ("cold", "warm"):
        run_dir = workdir / "runs" / f"{pairs}-{kind}"
        shutil.rmtree(run_dir, ignore_errors=True)
        command = trainer_command() + train_overrides(corpus_dir, cache_dir, run_dir, args.steps, args.override)
        say(f"corpus-{pairs}: {kind} s2s-train, {args.steps} steps ...")
        result = run_training(command, args.steps, run_dir.with_suffix(".log"), args.interval, args.timeout)
        row[kind] = result
        say(f"corpus-{pairs}: {kind}: data line at {result['to_data_s']} s, step 1 at {result['to_step1_s']} s, "
            f"peak {result['peak_rss_mib']:,.0f} MiB")
    cold, warm = row["cold"], row["warm"]
    row.update(
        train_pairs=cold["train_pairs"],
        prep_s=cold["prep_s"],
        prep_pairs_s=round(pairs / cold["prep_s"], 1) if cold["prep_s"] else None,
        cold_to_data_s=cold["to_data_s"],
        cold_to_step1_s=cold["to_step1_s"],
        cold_peak_prep_mib=cold["peak_rss_prep_mib"],
        cold_peak_train_mib=cold["peak_rss_train_mib"],
        warm_to_data_s=warm["to_data_s"],
        warm_prep_s=warm["prep_s"],
        warm_to_step1_s=warm["to_step1_s"],
        warm_peak_mib=warm["peak_rss_mib"],
        warm_peak_prep_mib=warm["peak_rss_prep_mib"],
        warm_peak_train_mib=warm["peak_rss_train_mib"],
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", required=True, help="corpus sizes (training pairs)")
    parser.add_argument("--workdir", default=str(REPO_ROOT / "outputs" / "data-scale"),
                        help="corpora, caches, run directories and logs (default: outputs/data-scale)")
    parser.add_argument("--steps", type=int, default=30, help="training steps of each run (default 30)")
    parser.add_argument("--source", default=str(default_source()), help="English<TAB>French TSV")
    parser.add_argument("--seed", type=int, default=1, help="the corpus generator's seed")
    parser.add_argument("--interval", type=float, default=0.1, help="RSS sampling interval, seconds")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds allowed for each run")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra s2s-train override (repeatable), e.g. trainer.threads=4")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args(argv)
    if args.steps < 1 or any(n < 1 for n in args.pairs):
        parser.error("--steps and --pairs must be positive")
    if not Path(args.source).is_file():
        parser.error(f"--source {args.source}: no such file")
    report = {"machine": machine(), "torch": torch_version(), "git": git_commit(), "steps": args.steps,
              "source": str(Path(args.source).resolve()), "source_sha256": sha256_file(args.source),
              "seed": args.seed, "overrides": args.override, "kernels_warmup_s": warm_kernels(), "results": []}
    for pairs in args.pairs:
        report["results"].append(measure(pairs, args))
        if args.json:  # after each size: a long sweep that fails later keeps what it measured
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    info = report["machine"]
    print(f"{info['cpu']}, {info['cores']} cores; torch {report['torch']}; commit "
          f"{(report['git']['commit'] or '?')[:12]}{' (dirty)' if report['git']['dirty'] else ''}; "
          f"{args.steps} steps")
    print(table(report["results"], args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
