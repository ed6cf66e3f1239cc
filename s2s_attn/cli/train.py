"""``s2s-train``: train a translator; every config value is a Hydra override.

    s2s-train                                    # default: eng->fra, GRU + Bahdanau attention
    s2s-train data=toy trainer.max_steps=2000
    s2s-train -m attention=bahdanau,luong_general  # a sweep, one run directory each
    s2s-train data=toy hydra.run.dir=runs/toy trainer.resume=auto   # continue a killed run
    torchrun --nproc_per_node=2 -m s2s_attn.cli.train trainer=ddp data=toy   # data-parallel, 2 processes

Exit status: 0 when training finished, 2 for a problem with the data, config or a checkpoint, 1 when
training could not go on (diverged, or another s2s-train owns the run directory); the message says which.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ..outputs import unwritable_dir
from . import config_dir, fail

log = logging.getLogger("s2s_attn")


#: Overrides for the processes of a torchrun job other than rank 0: Hydra gives them no run directory,
#: config copy or log file of their own (their ``${now:...}`` may name another second); they log
#: warnings to the console, and train in rank 0's run directory (which only rank 0 writes).
OTHER_RANK_OVERRIDES = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]


def other_rank() -> bool:
    """True in a process that torchrun started with a RANK other than 0."""
    return "WORLD_SIZE" in os.environ and os.environ.get("RANK", "0") != "0"


def output_root(argv: list[str]) -> tuple[str, str]:
    """(the setting, the directory) a run (or a ``-m`` sweep) will write into, from the command line: the given
    ``hydra.run.dir`` / ``hydra.sweep.dir``, else the directory the default one lies in."""
    sweep = "-m" in argv or "--multirun" in argv
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    given = next((arg.split("=", 1)[1] for arg in argv if arg.startswith(f"{key}=")), None)
    return key, given if given is not None else ("multirun" if sweep else "outputs")


def remove_unused_run_dir(run_dir: str | os.PathLike) -> None:
    """Remove a run directory that holds nothing but what Hydra wrote into it (``.hydra/`` and the log), and its
    parent if that is then empty: a run stopped by its settings, before any work, leaves nothing behind."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log"}:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.parent.rmdir()  # only if empty: a default run's outputs/<data>-<attention>/


#: whether the run directory named on the command line existed before this command (then it is left as it is)
_run_dir_existed = True


def main() -> None:
    global _run_dir_existed
    if other_rank():
        sys.argv.extend(OTHER_RANK_OVERRIDES)
    else:  # before Hydra creates it: an unwritable output directory is one line, not Hydra's traceback
        key, directory = output_root(sys.argv[1:])
        if "${" not in directory and (reason := unwritable_dir(directory)):
            sys.exit(fail("s2s-train", f"{key}={directory} cannot be used: {reason}"))
        given = any(arg.startswith(f"{key}=") for arg in sys.argv[1:])
        _run_dir_existed = key == "hydra.sweep.dir" or (given and Path(directory).exists())
    hydra_main()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    from ..data.errors import DataError
    from ..schema import ConfigError
    from ..training.checkpoint import CheckpointError
    from ..training.resume import TrainingError
    from ..training.trainer import train

    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    main_rank = not other_rank()
    if main_rank:
        log.info("run directory: %s", run_dir)
    else:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        results = train(cfg, run_dir)
    except (DataError, CheckpointError, ValueError, FileNotFoundError, TrainingError) as error:
        log.error("error: %s", error)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # one bad variant must not end the whole sweep
            return float("nan")
        if isinstance(error, ConfigError) and main_rank and not _run_dir_existed:
            remove_unused_run_dir(run_dir)
        sys.exit(1 if isinstance(error, TrainingError) else 2)
    if not main_rank:
        return None
    print(
        f"\nvalid BLEU {results['best_valid_bleu']:.2f} (best, step {results['best_step']}) | "
        f"test BLEU {results['test_bleu']:.2f} chrF {results['test_chrf']:.2f} | "
        f"{results['steps']} steps in {results['train_minutes']:.1f} min\n"
        f"signature: {results['bleu_signature']}\n"
        f"checkpoint: {results['checkpoint']}\n"
        f"translate:  echo 'I am cold.' | s2s-translate {run_dir}"
    )
    return float(results["best_valid_bleu"])


if __name__ == "__main__":
    main()
