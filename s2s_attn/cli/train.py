"""``s2s-train``: train a translator; every config value is a Hydra override.

    s2s-train                                    # default: eng->fra, GRU + Bahdanau attention
    s2s-train data=toy trainer.max_steps=2000
    s2s-train -m attention=bahdanau,luong_general  # a sweep, one run directory each
    s2s-train data=toy hydra.run.dir=runs/toy trainer.resume=auto   # continue a killed run

Exit status: 0 when training finished, 2 for a problem with the data, config or a checkpoint, 1 when
training could not go on (diverged, or another s2s-train owns the run directory); the message says which.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from . import config_dir

log = logging.getLogger("s2s_attn")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float:
    from ..data.corpus import DataError
    from ..training.checkpoint import CheckpointError
    from ..training.resume import TrainingError
    from ..training.trainer import train

    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    log.info("run directory: %s", run_dir)
    try:
        results = train(cfg, run_dir)
    except (DataError, CheckpointError, ValueError, FileNotFoundError, TrainingError) as error:
        log.error("error: %s", error)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # one bad variant must not end the whole sweep
            return float("nan")
        sys.exit(1 if isinstance(error, TrainingError) else 2)
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
