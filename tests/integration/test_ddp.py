"""Data-parallel training as users start it: ``torchrun --nproc_per_node=2 -m s2s_attn.cli.train trainer=ddp``,
two Gloo processes on the CPU, on the toy task.

Each global batch is split between the two ranks and each rank divides its summed loss by the global
batch's tokens (times 2, as DDP averages gradients), so the run makes the updates of one process with
the same batches: its train loss curve matches a single-process run's up to float rounding (the
gradient is summed in another order). Only rank 0 writes; a DDP run resumes exactly across ranks.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s2s_attn.training.checkpoint import load_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data=toy", "data.train_size=1500", "data.valid_size=40", "data.test_size=20",
    "model.emb_size=16", "model.encoder_hidden=16", "model.decoder_hidden=32", "model.output_size=16",
    "model.dropout=0.0", "attention.size=16", "trainer.batch_size=32", "trainer.batch_tokens=null",
    "trainer.max_minutes=null", "trainer.log_every=5", "trainer.patience=0", "trainer.device=cpu",
    "trainer.eval_every=30", "trainer.save_every=null", "logger.attention_images=0", "trainer.threads=1",
]
STEPS = 30
#: Relative difference allowed between the loss curves of 2 ranks and of 1 process (measured: 4e-8 at most).
LOSS_RTOL = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def single(tmp: Path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "s2s_attn.cli.train", *TINY, f"data.cache_dir={tmp}/cache",
                f"hydra.run.dir={tmp}/{name}", *overrides], tmp)


def torchrun(tmp: Path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={free_port()}"]
    return run([*launcher, "-m", "s2s_attn.cli.train", "trainer=ddp", *TINY, f"data.cache_dir={tmp}/cache",
                f"hydra.run.dir={tmp}/{name}", *overrides], tmp)


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process and two DDP ranks, STEPS steps each, from the same prepared data."""
    tmp = tmp_path_factory.mktemp("ddp")
    single(tmp, "single", f"trainer.max_steps={STEPS}")
    ddp = torchrun(tmp, "ddp", f"trainer.max_steps={STEPS}")
    return tmp, ddp


@pytest.mark.slow
def test_two_gloo_ranks_train_like_one_process_with_the_same_global_batch(runs):
    tmp, _ = runs
    one, two = results(tmp / "single"), results(tmp / "ddp")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["steps"] == two["steps"] == STEPS
    steps = [s for s, _ in one["train_loss"]]
    assert steps == [s for s, _ in two["train_loss"]] == list(range(5, STEPS + 1, 5))
    for (step, want), (_, got) in zip(one["train_loss"], two["train_loss"]):
        assert got == pytest.approx(want, rel=LOSS_RTOL), f"step {step}"
    assert two["history"][-1]["valid_loss"] == pytest.approx(one["history"][-1]["valid_loss"], rel=1e-4)
    single_checkpoint = load_checkpoint(tmp / "single" / "checkpoints" / f"step_{STEPS:08d}.pt")
    uniform = math.log(single_checkpoint["model_config"]["tgt_vocab_size"])  # the loss of a uniform guess
    # it learned something (30 steps of the toy task leave it not far below a uniform guess over its vocabulary)
    assert one["train_loss"][-1][1] < min(one["train_loss"][0][1], uniform - 0.02)
    a = single_checkpoint["model"]
    b = load_checkpoint(tmp / "ddp" / "checkpoints" / f"step_{STEPS:08d}.pt")["model"]
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


@pytest.mark.slow
def test_only_rank_0_writes(runs):
    tmp, ddp = runs
    # rank 1's Hydra made no run directory, config copy or log file of its own (in its working directory)
    assert {p.name for p in tmp.iterdir()} <= {"cache", "ddp", "single", "resumed"}
    run_dir = tmp / "ddp"
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", f"step_{STEPS:08d}.pt"]
    assert ddp.stdout.count("\ntranslate:  echo") == 1  # the summary is printed once (by rank 0)

@pytest.mark.slow
def test_a_ddp_run_resumed_on_two_ranks_ends_bit_for_bit_like_an_uninterrupted_one(runs):
    tmp, _ = runs
    torchrun(tmp, "resumed", f"trainer.max_steps={STEPS // 2}")
    resumed = torchrun(tmp, "resumed", f"trainer.max_steps={STEPS}", "trainer.resume=auto")
    assert f"(step {STEPS // 2})" in resumed.stdout + resumed.stderr
    want = load_checkpoint(tmp / "ddp" / "checkpoints" / f"step_{STEPS:08d}.pt")
    got = load_checkpoint(tmp / "resumed" / "checkpoints" / f"step_{STEPS:08d}.pt")
    assert all(torch.equal(want["model"][k], got["model"][k]) for k in want["model"])
    assert len(got["rng_ranks"]) == 2
    assert results(tmp / "resumed")["train_loss"] == results(tmp / "ddp")["train_loss"]
