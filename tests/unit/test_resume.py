"""What resuming relies on: generator states survive a checkpoint, ``trainer.resume`` finds the right
file, an unusable checkpoint is refused with its name, and one run owns its directory."""

import os
import random

import numpy as np
import pytest
import torch

from s2s_attn.training.checkpoint import CheckpointError, bytes_to_tensor, save_checkpoint, step_checkpoint_path
from s2s_attn.training.resume import (
    TrainingError,
    TrainState,
    config_changes,
    earlier_runs_hint,
    find_resume_checkpoint,
    load_resumable,
    restore_rng,
    rng_state,
    run_lock,
)

CONFIG = {"data": {"name": "toy", "root": "/data", "cache_dir": "/cache"}, "model": {"emb_size": 16},
          "attention": {"name": "bahdanau"}, "trainer": {"seed": 1, "batch_size": 32, "max_steps": 60, "lr": 0.001}}


def draws():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_every_generator_continues_identically_after_a_checkpoint_round_trip(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = draws()
    draws()  # move every generator on
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert draws() == expected


def test_train_state_round_trips_and_ignores_unknown_keys():
    state = TrainState(step=40, best_bleu=12.5, bad_evals=1, history=[{"step": 30, "valid_bleu": 12.5}],
                       train_curve=[[10, 4.2]], elapsed=61.0)
    assert TrainState.from_dict({**state.to_dict(), "from_a_newer_version": 1}) == state


def resumable_payload(model, config=CONFIG, step=20):
    optimizer = torch.optim.Adam(model.parameters())
    return {
        "model_config": model.config.to_dict(), "model": model.state_dict(), "config": config, "step": step,
        "src_spm": bytes_to_tensor(b"spm"), "tgt_spm": bytes_to_tensor(b"spm"),
        "optimizer": optimizer.state_dict(), "iterator": {"epoch": 0, "position": step}, "rng": rng_state(),
        "state": TrainState(step=step).to_dict(),
    }


def test_auto_takes_the_newest_step_checkpoint_of_the_run_directory(tmp_path, tiny_model):
    for step in (20, 100, 40):
        save_checkpoint(step_checkpoint_path(tmp_path / "checkpoints", step), resumable_payload(tiny_model))
    save_checkpoint(tmp_path / "checkpoints" / "best.pt", resumable_payload(tiny_model))
    assert find_resume_checkpoint("auto", tmp_path).name == "step_00000100.pt"
    assert find_resume_checkpoint(str(tmp_path), tmp_path / "elsewhere").name == "step_00000100.pt"
    chosen = tmp_path / "checkpoints" / "step_00000020.pt"
    assert find_resume_checkpoint(str(chosen), tmp_path) == chosen


@pytest.mark.parametrize("setting", [None, "", "null", "false"])
def test_no_resume_setting_means_a_new_run(tmp_path, tiny_model, setting):
    save_checkpoint(step_checkpoint_path(tmp_path / "checkpoints", 20), resumable_payload(tiny_model))
    assert find_resume_checkpoint(setting, tmp_path) is None


def test_auto_in_an_empty_run_directory_starts_a_new_run_but_a_missing_path_is_an_error(tmp_path):
    assert find_resume_checkpoint("auto", tmp_path / "new-run") is None
    with pytest.raises(CheckpointError, match="no such checkpoint file or run directory"):
        find_resume_checkpoint(str(tmp_path / "typo"), tmp_path)
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(CheckpointError, match="no step_N.pt checkpoint in"):
        find_resume_checkpoint(str(tmp_path / "empty-run"), tmp_path)


def test_settings_that_change_shapes_or_data_block_a_resume_others_are_reported():
    current = {**CONFIG, "data": {**CONFIG["data"], "root": "/moved"}, "model": {"emb_size": 32, "init": "xavier"},
               "trainer": {**CONFIG["trainer"], "max_steps": 200, "resume": "auto"}}
    fixed, allowed = config_changes(CONFIG, current)
    assert fixed == ["model.emb_size: 16 -> 32"]
    assert allowed == ["data.root: /data -> /moved", "model.init: (unset) -> xavier",  # a newer version's key
                       "trainer.max_steps: 60 -> 200"]  # and trainer.resume is the point


def test_a_weights_only_checkpoint_cannot_be_resumed_from(tmp_path, tiny_model):
    payload = resumable_payload(tiny_model)
    for key in ("optimizer", "iterator", "rng", "state"):
        del payload[key]
    save_checkpoint(tmp_path / "best.pt", payload)
    with pytest.raises(CheckpointError, match="cannot resume from .*best.pt: it holds no training state"):
        load_resumable(tmp_path / "best.pt", CONFIG)


def test_a_checkpoint_of_another_configuration_is_refused_naming_file_and_settings(tmp_path, tiny_model):
    save_checkpoint(tmp_path / "step_00000020.pt", resumable_payload(tiny_model))
    other = {**CONFIG, "attention": {"name": "luong_dot"}, "data": {**CONFIG["data"], "name": "eng_fra"}}
    with pytest.raises(CheckpointError) as info:
        load_resumable(tmp_path / "step_00000020.pt", other)
    message = str(info.value)
    assert "step_00000020.pt" in message
    assert "attention.name: bahdanau -> luong_dot" in message and "data.name: toy -> eng_fra" in message


def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path, tiny_model):
    payload = resumable_payload(tiny_model)
    name = next(iter(payload["model"]))
    torch.save({"format": "s2s-attn-checkpoint", "format_version": 1, **payload,
                "model": {**payload["model"], name: payload["model"][name] * float("inf")}},
               tmp_path / "step_00000020.pt")  # written around save_checkpoint, which would refuse it
    with pytest.raises(CheckpointError, match=f"step_00000020.pt: non-finite values in {name}"):
        load_resumable(tmp_path / "step_00000020.pt", CONFIG)


def test_a_second_training_process_cannot_take_a_run_directory_in_use(tmp_path):
    with run_lock(tmp_path / "run"):
        with pytest.raises(TrainingError, match=r"another s2s-train \(pid \d+\) is training in"):
            with run_lock(tmp_path / "run"):
                pass
    with run_lock(tmp_path / "run"):  # released when the first one ends
        pass


def test_auto_in_a_new_hydra_directory_points_to_the_newest_earlier_run_with_checkpoints(tmp_path, tiny_model):
    outputs = tmp_path / "outputs" / "toy-bahdanau"
    for name in ("2026-01-01_10-00-00", "2026-01-02_10-00-00"):
        save_checkpoint(step_checkpoint_path(outputs / name / "checkpoints", 20), resumable_payload(tiny_model))
        os.utime(outputs / name, (0, int(name[8:10]) * 1000))
    (outputs / "2026-01-03_10-00-00").mkdir()  # an earlier run killed before its first checkpoint
    new = outputs / "2026-01-04_10-00-00"
    new.mkdir()
    assert find_resume_checkpoint("auto", new) is None
    hint = earlier_runs_hint(new)
    assert f"hydra.run.dir={outputs / '2026-01-02_10-00-00'} trainer.resume=auto" in hint
    assert earlier_runs_hint(tmp_path / "alone" / "run") == ""
