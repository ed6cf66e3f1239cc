"""What a killed run needs to continue exactly where its last checkpoint left it.

A resumable checkpoint (``checkpoints/step_NNNNNNNN.pt``) holds, besides the model: the optimizer (and
fp16 gradient scaler) state, the position in the data order (`BatchIterator.state_dict`), every random
number generator's state, and a `TrainState`: step, early-stopping state, evaluation history, train
loss curve, and the wall-clock time already spent (which ``trainer.max_minutes`` counts).

``trainer.resume=auto`` continues from the newest ``step_N.pt`` in the run directory (and starts a new
run when there is none); ``trainer.resume=PATH`` from that checkpoint file, or the newest in that run
directory. Everything is plain tensors and Python values, so ``weights_only=True`` loads it.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import CheckpointError, load_checkpoint, non_finite_tensors, step_checkpoints

#: Entries of a checkpoint that only a resumable (``step_N.pt``) checkpoint has.
RESUME_KEYS = ("optimizer", "iterator", "rng", "state")

#: Settings a run cannot change when it resumes: they decide the shapes of the weights, the data, or
#: its order. Keys under these prefixes are compared, except for the paths in `PATH_KEYS`.
FIXED_PREFIXES = ("data.", "model.", "attention.", "trainer.seed", "trainer.batch_tokens", "trainer.batch_size")
PATH_KEYS = ("data.root", "data.cache_dir")

#: Never reported as a change: the resume setting itself.
IGNORED_KEYS = ("trainer.resume",)


class TrainingError(Exception):
    """Training cannot go on (another run owns the directory, the loss diverged); the message says why."""


@dataclass
class TrainState:
    """The training loop's own counters, saved in every resumable checkpoint."""

    step: int = 0
    best_bleu: float = -1.0
    bad_evals: int = 0  # evaluations since the last BLEU gain (early stopping)
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per evaluation
    train_curve: list[list[float]] = field(default_factory=list)  # [step, mean train loss] every log_every steps
    elapsed: float = 0.0  # seconds since the run started, evaluations included (for max_minutes)
    total_tokens: int = 0  # target tokens of the completed log windows (for the mean tokens/s)
    train_seconds: float = 0.0  # their training time
    window_tokens: int = 0  # the current log window: target tokens,
    window_loss: float = 0.0  # summed loss of the steps that were not skipped,
    window_loss_tokens: int = 0  # and their target tokens
    skipped_steps: int = 0  # updates skipped for a non-finite loss
    resumes: list[dict[str, Any]] = field(default_factory=list)  # {step, checkpoint, time} of each resume

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainState:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ---- random number generators ------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python's, NumPy's and PyTorch's (CPU and every CUDA device) generator states, as plain values."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(state), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put every generator back into the state `rng_state` recorded."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- finding and checking the checkpoint to resume from ------------------------------------------------


def newest_step_checkpoint(run_or_checkpoint_dir: Path) -> Path | None:
    """The newest ``step_N.pt`` in ``DIR/checkpoints`` or ``DIR`` itself; None when there is none."""
    for directory in (run_or_checkpoint_dir / "checkpoints", run_or_checkpoint_dir):
        found = step_checkpoints(directory)
        if found:
            return found[-1][1]
    return None


def find_resume_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint ``trainer.resume`` names, or None for a new run.

    ``null``/``""``/``false``: None. ``auto``: the newest ``step_N.pt`` of ``run_dir``, None when it has
    none. Anything else is a path: a checkpoint file, or a run directory (its newest ``step_N.pt``);
    a path that does not exist or holds no resumable checkpoint is a CheckpointError.
    """
    if resume is None or str(resume).strip().lower() in ("", "none", "null", "false", "no"):
        return None
    if str(resume).strip().lower() == "auto":
        return newest_step_checkpoint(run_dir)
    path = Path(str(resume)).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = newest_step_checkpoint(path)
        if found is None:
            raise CheckpointError(
                f"trainer.resume={resume}: no step_N.pt checkpoint in {path} or {path / 'checkpoints'}"
            )
        return found
    raise CheckpointError(f"trainer.resume={resume}: no such checkpoint file or run directory")


def earlier_runs_hint(run_dir: Path) -> str:
    """For a ``resume=auto`` that found nothing: the newest sibling run directory that has a checkpoint."""
    parent = run_dir.resolve().parent
    if not parent.is_dir():
        return ""
    candidates = [d for d in parent.iterdir() if d.is_dir() and d != run_dir.resolve() and newest_step_checkpoint(d)]
    if not candidates:
        return ""
    latest = max(candidates, key=lambda d: d.stat().st_mtime)
    return f" (to continue {latest}, run the same command with hydra.run.dir={latest} trainer.resume=auto)"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Differences between a checkpoint's config and the current one, as ``key: old -> new`` lines:
    (those that make the checkpoint unusable, those that are allowed, such as a longer ``max_steps``)."""
    old, new = flatten(saved), flatten(current)
    fixed, allowed = [], []
    for key in sorted(set(old) | set(new)):
        if key in IGNORED_KEYS or old.get(key) == new.get(key):
            continue
        line = f"{key}: {old.get(key, '(unset)')} -> {new.get(key, '(unset)')}"
        # a key only one side has (a setting added by a newer version) is reported; the weights' shapes
        # are still checked when they are loaded
        is_fixed = key.startswith(FIXED_PREFIXES) and key not in PATH_KEYS and key in old and key in new
        (fixed if is_fixed else allowed).append(line)
    return fixed, allowed


def load_resumable(path: Path, config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Load a checkpoint to resume from and check that it can be: it is a complete training state, its
    weights are finite, and it was made with the same data, model and batching as ``config``.
    Returns (payload, the allowed config changes). Raises CheckpointError naming the file."""
    payload = load_checkpoint(path)
    missing = [key for key in RESUME_KEYS if key not in payload]
    if missing:
        raise CheckpointError(
            f"cannot resume from {payload['path']}: it holds no training state ({', '.join(missing)} missing); "
            "best.pt keeps only the weights, for translating. Resume from a checkpoints/step_N.pt file"
        )
    bad = non_finite_tensors(payload["model"])
    if bad:
        raise CheckpointError(f"cannot resume from {payload['path']}: non-finite values in {', '.join(bad[:3])}")
    fixed, allowed = config_changes(payload["config"], config)
    if fixed:
        raise CheckpointError(
            f"cannot resume from {payload['path']}: it was trained with other settings ("
            + "; ".join(fixed[:8]) + ("; ..." if len(fixed) > 8 else "")
            + "). Resume with the same data/model/attention overrides as the run it continues"
        )
    return payload, allowed


# ---- one run per directory -------------------------------------------------------------------------------


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN_DIR/.train.lock`` while training: a second s2s-train in the same directory (say, a
    resume started while the first run still lives) stops with a TrainingError instead of both writing
    the same checkpoints. The kernel releases the lock when the process dies, even by SIGKILL."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no locking
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".train.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            raise TrainingError(
                f"another s2s-train (pid {owner}) is training in {run_dir}; let it finish, or stop it "
                "before resuming there"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
