"""A run killed with SIGKILL and resumed with ``trainer.resume=auto`` ends exactly where an uninterrupted
run ends; resuming counts the time already spent, appends to the history, refuses unusable
checkpoints; a diverging run stops without writing a NaN checkpoint.

The subprocess tests run ``python -m s2s_attn.cli.train`` as a user would, the others call ``train()``
directly; all train a tiny model on the toy task on the CPU with one thread (more threads only slow a
model this small down).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from s2s_attn.cli import config_dir
from s2s_attn.model.seq2seq import Seq2Seq
from s2s_attn.training.checkpoint import CheckpointError, load_checkpoint, step_checkpoints
from s2s_attn.training.resume import TrainingError
from s2s_attn.training.trainer import train

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data=toy", "data.train_size=1500", "data.valid_size=40", "data.test_size=20",
    "model.emb_size=16", "model.encoder_hidden=16", "model.decoder_hidden=32", "model.output_size=16",
    "model.dropout=0.2", "attention.size=16", "trainer.batch_size=32", "trainer.batch_tokens=null",
    "trainer.max_minutes=null", "trainer.log_every=10", "trainer.patience=0", "trainer.device=cpu",
    "logger.attention_images=0", "trainer.threads=1",
]


def cli(tmp_path: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "s2s_attn.cli.train", *TINY, f"data.cache_dir={tmp_path}/cache", *overrides]


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "0"}


def tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def wait_for_checkpoint(directory: Path, at_least: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not any(step >= at_least for step, _ in step_checkpoints(directory)):
        assert process.poll() is None, "the training process ended before it could be killed"
        assert time.time() < deadline, f"no checkpoint of step {at_least} after {timeout}s"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("batches", [[], ["trainer.batch_size=null", "trainer.batch_tokens=300"]],
                         ids=["fixed-batches", "token-budgets"])  # token budgets: a new product shape every few steps
def test_a_run_killed_with_sigkill_and_resumed_ends_bit_for_bit_like_an_uninterrupted_run(tmp_path, batches):
    steps = ["trainer.max_steps=120", "trainer.eval_every=40", "trainer.save_every=10", "trainer.keep_last=2",
             *batches]
    whole = subprocess.run(cli(tmp_path, *steps, f"hydra.run.dir={tmp_path}/whole"), cwd=tmp_path, env=cli_env(),
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-2000:]

    run = tmp_path / "killed"
    first = subprocess.Popen(cli(tmp_path, *steps, f"hydra.run.dir={run}"), cwd=tmp_path, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_checkpoint(run / "checkpoints", 40, first)
        time.sleep(random.uniform(0.0, 0.3))  # somewhere after step 40: mid-step, mid-save or mid-log
    finally:
        first.kill()  # SIGKILL: no handler runs, nothing is flushed
        first.wait()
    assert first.returncode == -9
    assert not (run / "results.json").exists()
    killed_at = step_checkpoints(run / "checkpoints")[-1][0]
    assert 40 <= killed_at < 120

    resumed = subprocess.run(cli(tmp_path, *steps, f"hydra.run.dir={run}", "trainer.resume=auto"), cwd=tmp_path,
                             env=cli_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"resuming from {run / 'checkpoints'}/step_{killed_at:08d}.pt (step {killed_at})" in resumed.stdout

    # Bit for bit: on the CPU with a fixed thread count PyTorch's kernels are deterministic, and the
    # resumed run restores every state the arithmetic depends on, so no tolerance is needed.
    for name in ("step_00000120.pt", "best.pt"):
        expected = load_checkpoint(tmp_path / "whole" / "checkpoints" / name)["model"]
        actual = load_checkpoint(run / "checkpoints" / name)["model"]
        assert all(torch.equal(expected[k], actual[k]) for k in expected), name
    want = json.loads((tmp_path / "whole" / "results.json").read_text())
    got = json.loads((run / "results.json").read_text())
    assert got["train_loss"] == want["train_loss"] and len(want["train_loss"]) == 12
    assert [(h["step"], h["valid_loss"]) for h in got["history"]] == [(h["step"], h["valid_loss"])
                                                                       for h in want["history"]]
    assert (got["test_bleu"], got["steps"]) == (want["test_bleu"], 120)
    assert [r["step"] for r in got["resumes"]] == [killed_at]
    # TensorBoard: one point per step, the killed process's points after its checkpoint dropped
    assert tensorboard_scalars(run, "train/loss") == tensorboard_scalars(tmp_path / "whole", "train/loss")
    assert [step for step, _ in tensorboard_scalars(run, "valid/bleu")] == [40, 80, 120]
    # the log goes on in the same file; only the newest keep_last step checkpoints remain
    assert (run / "train.log").read_text().count("run directory:") == 2
    assert [step for step, _ in step_checkpoints(run / "checkpoints")] == [110, 120]


def toy_config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"data.cache_dir={tmp_path}/cache", *overrides])


def test_resuming_counts_the_time_already_spent_and_appends_to_the_history(tmp_path):
    run = tmp_path / "run"
    first = train(toy_config(tmp_path, "trainer.max_steps=20", "trainer.eval_every=10"), run)
    assert [h["step"] for h in first["history"]] == [10, 20]
    # A budget smaller than the minutes already spent: the resumed run stops at once. Had it started
    # the clock afresh it would run at least one step (the budget is checked before each step).
    spent = first["history"][-1]["minutes"]  # by the last checkpoint
    out = train(toy_config(tmp_path, "trainer.max_steps=1000", "trainer.eval_every=10",
                           f"trainer.max_minutes={spent / 2}", "trainer.resume=auto"), run)
    assert out["steps"] == 20 and out["stop_reason"].startswith("max_minutes")
    assert out["train_minutes"] >= spent
    longer = train(toy_config(tmp_path, "trainer.max_steps=30", "trainer.eval_every=10", "trainer.resume=auto"),
                   run)
    assert [h["step"] for h in longer["history"]] == [10, 20, 30]
    assert [r["step"] for r in longer["resumes"]] == [20, 20]
    assert [step for step, _ in longer["train_loss"]] == [10, 20, 30]


def test_resume_auto_in_a_fresh_directory_starts_a_new_run(tmp_path, caplog):
    caplog.set_level("INFO")
    out = train(toy_config(tmp_path, "trainer.max_steps=10", "trainer.eval_every=10", "trainer.resume=auto"),
                tmp_path / "new")
    assert out["steps"] == 10 and out["resumes"] == []
    assert "no checkpoint in" in caplog.text and "starting a new run" in caplog.text


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    train(toy_config(root, "trainer.max_steps=20", "trainer.eval_every=10"), root / "run")
    return root


def test_resuming_with_another_model_or_data_is_refused_before_anything_runs(finished_run, tmp_path):
    cfg = toy_config(finished_run, "attention=luong_general", "trainer.max_steps=40",
                     f"trainer.resume={finished_run / 'run'}")
    with pytest.raises(CheckpointError, match=r"step_00000020\.pt: it was trained with other settings "
                                              r"\(attention.name: bahdanau -> luong_general"):
        train(cfg, tmp_path / "other")
    assert not (tmp_path / "other" / "checkpoints").exists()


def test_resuming_from_an_older_checkpoint_sets_the_later_ones_aside_and_repeats_the_same_steps(finished_run,
                                                                                                 tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    later = load_checkpoint(run / "checkpoints" / "step_00000020.pt")["model"]
    out = train(toy_config(finished_run, "trainer.max_steps=20", "trainer.eval_every=10",
                           f"trainer.resume={run / 'checkpoints' / 'step_00000010.pt'}"), run)
    assert out["steps"] == 20 and [r["step"] for r in out["resumes"]] == [10]
    assert (run / "checkpoints" / "abandoned-step_00000020.pt").is_file()  # kept, but never resumed from
    again = load_checkpoint(run / "checkpoints" / "step_00000020.pt")["model"]
    assert all(torch.equal(later[k], again[k]) for k in later)


def test_resuming_into_a_new_directory_brings_the_best_checkpoint_along(finished_run, tmp_path):
    out = train(toy_config(finished_run, "trainer.max_steps=30", "trainer.eval_every=10",
                           f"trainer.resume={finished_run / 'run'}"), tmp_path / "continued")
    assert [h["step"] for h in out["history"]] == [10, 20, 30]
    assert (tmp_path / "continued" / "checkpoints" / "best.pt").is_file()
    assert (finished_run / "run" / "checkpoints" / "step_00000020.pt").is_file()  # the source run is untouched


def test_a_checkpoint_whose_tensors_do_not_fit_the_model_is_refused_naming_it(finished_run, tmp_path):
    import shutil

    from s2s_attn.training.checkpoint import save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    newest = step_checkpoints(run / "checkpoints")[-1][1]
    payload = load_checkpoint(newest)
    for key in ("format", "format_version", "versions", "path"):
        payload.pop(key)
    name = next(iter(payload["model"]))
    payload["model"][name] = torch.zeros(3, 3)  # same config, foreign weights
    save_checkpoint(newest, payload)
    with pytest.raises(CheckpointError, match=f"cannot resume from {newest}: it does not fit this model"):
        train(toy_config(finished_run, "trainer.max_steps=40", "trainer.resume=auto"), run)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/s2s_attn_resume_pwned",))


@pytest.mark.parametrize("damage", ["truncated", "malicious"])
def test_a_damaged_newest_checkpoint_is_a_clear_error_naming_it(finished_run, tmp_path, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    newest = step_checkpoints(run / "checkpoints")[-1][1]
    if damage == "truncated":
        newest.write_bytes(newest.read_bytes()[:1000])
    else:
        newest.write_bytes(pickle.dumps({"format": "s2s-attn-checkpoint", "model": RunsCode()}, protocol=2))
    with pytest.raises(CheckpointError, match=f"cannot load checkpoint {newest}"):
        train(toy_config(finished_run, "trainer.max_steps=40", "trainer.resume=auto"), run)
    assert not os.path.exists("/tmp/s2s_attn_resume_pwned")


def test_a_diverging_run_stops_with_a_message_and_never_writes_a_nan_checkpoint(tmp_path, monkeypatch):
    forward = Seq2Seq.forward
    calls = {"train": 0}

    def diverges_after_15_steps(self, *args, **kwargs):
        logits, attention = forward(self, *args, **kwargs)
        if self.training:
            calls["train"] += 1
            if calls["train"] > 15:
                logits = logits * float("nan")
        return logits, attention

    monkeypatch.setattr(Seq2Seq, "forward", diverges_after_15_steps)
    cfg = toy_config(tmp_path, "trainer.max_steps=100", "trainer.eval_every=50", "trainer.save_every=5",
                     "trainer.max_bad_steps=3")
    with pytest.raises(TrainingError, match="not finite in 3 steps in a row"):
        train(cfg, tmp_path / "run")
    saved = step_checkpoints(tmp_path / "run" / "checkpoints")
    assert [step for step, _ in saved][-1] == 15
    for _, path in saved:
        assert all(torch.isfinite(t).all() for t in load_checkpoint(path)["model"].values())


def test_a_few_non_finite_steps_are_skipped_counted_and_training_goes_on(tmp_path, monkeypatch):
    forward = Seq2Seq.forward
    calls = {"train": 0}

    def two_bad_steps(self, *args, **kwargs):
        logits, attention = forward(self, *args, **kwargs)
        if self.training:
            calls["train"] += 1
            if calls["train"] in (4, 5):
                logits = logits * float("nan")
        return logits, attention

    monkeypatch.setattr(Seq2Seq, "forward", two_bad_steps)
    out = train(toy_config(tmp_path, "trainer.max_steps=20", "trainer.eval_every=20", "trainer.max_bad_steps=3"),
                tmp_path / "run")
    assert out["steps"] == 20 and out["skipped_steps"] == 2
    assert all(loss == loss for _, loss in out["train_loss"])  # no NaN in the logged curve
