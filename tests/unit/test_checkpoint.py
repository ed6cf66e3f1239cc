"""Checkpoints: atomic, loaded with weights_only=True, never NaN, the last K kept, and bad files give clear errors."""

import os
import pickle

import pytest
import torch

from s2s_attn.data.tokenizer import Tokenizer
from s2s_attn.decoding.translator import Translator
from s2s_attn.training.checkpoint import (
    CheckpointError,
    bytes_to_tensor,
    load_checkpoint,
    prune_step_checkpoints,
    remove_stale_temporaries,
    save_checkpoint,
    step_checkpoint_path,
    step_checkpoints,
    tokenizer_from,
    tokenizer_tensors,
)


def minimal_payload(model):
    return {
        "model_config": model.config.to_dict(),
        "model": model.state_dict(),
        "config": {"data": {"max_src_pieces": 50}},
        "step": 3,
        "src_spm": bytes_to_tensor(b"not-a-real-model"),
        "tgt_spm": bytes_to_tensor(b"not-a-real-model"),
    }


def test_round_trip_keeps_weights_and_records_versions(tmp_path, tiny_model):
    save_checkpoint(tmp_path / "c.pt", minimal_payload(tiny_model))
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["step"] == 3
    assert "torch" in loaded["versions"]
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(loaded["model"][name], tensor)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_truncated_checkpoint_is_a_clear_error(tmp_path, tiny_model):
    save_checkpoint(tmp_path / "c.pt", minimal_payload(tiny_model))
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="c.pt"):
        load_checkpoint(tmp_path / "c.pt")


def test_foreign_checkpoint_is_rejected(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an s2s-attn checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/s2s_attn_pwned",))


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    if os.path.exists("/tmp/s2s_attn_pwned"):
        os.unlink("/tmp/s2s_attn_pwned")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "s2s-attn-checkpoint", "model": RunsCode()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not os.path.exists("/tmp/s2s_attn_pwned")


def test_checkpoint_of_another_shape_names_the_file(tmp_path, tiny_model):
    payload = minimal_payload(tiny_model)
    payload["model_config"]["emb_size"] = 32  # the weights no longer fit the model it describes
    save_checkpoint(tmp_path / "c.pt", payload)
    with pytest.raises(CheckpointError, match="c.pt"):
        Translator.from_checkpoint(tmp_path / "c.pt", device="cpu")


def test_run_directory_resolves_to_its_best_checkpoint(tmp_path, tiny_model):
    save_checkpoint(tmp_path / "checkpoints" / "best.pt", minimal_payload(tiny_model))
    (tmp_path / "checkpoints" / "empty").mkdir()
    assert load_checkpoint(tmp_path)["path"].endswith("best.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "checkpoints" / "missing.pt")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path / "checkpoints" / "empty")


def test_random_bytes_are_a_clear_error_naming_the_file(tmp_path):
    (tmp_path / "noise.pt").write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="noise.pt.*corrupt"):
        load_checkpoint(tmp_path / "noise.pt")


def test_a_model_with_nan_weights_is_never_written_and_the_old_checkpoint_stays(tmp_path, tiny_model):
    save_checkpoint(tmp_path / "c.pt", minimal_payload(tiny_model))
    before = (tmp_path / "c.pt").read_bytes()
    payload = minimal_payload(tiny_model)
    name = next(iter(payload["model"]))
    payload["model"] = {**payload["model"], name: torch.full_like(payload["model"][name], float("nan"))}
    with pytest.raises(CheckpointError, match=f"refusing to write .*c.pt.*non-finite values in {name}"):
        save_checkpoint(tmp_path / "c.pt", payload)
    assert (tmp_path / "c.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint_and_no_temporary(tmp_path, tiny_model, monkeypatch):
    save_checkpoint(tmp_path / "c.pt", minimal_payload(tiny_model))
    before = (tmp_path / "c.pt").read_bytes()

    def disk_full(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path / "c.pt", minimal_payload(tiny_model))
    assert (tmp_path / "c.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_only_the_newest_k_step_checkpoints_are_kept_and_best_is_never_pruned(tmp_path, tiny_model):
    for step in (5, 10, 15, 20):
        save_checkpoint(step_checkpoint_path(tmp_path, step), minimal_payload(tiny_model))
    save_checkpoint(tmp_path / "best.pt", minimal_payload(tiny_model))
    removed = prune_step_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in removed] == ["step_00000005.pt", "step_00000010.pt"]
    assert [(step, p.name) for step, p in step_checkpoints(tmp_path)] == [(15, "step_00000015.pt"),
                                                                         (20, "step_00000020.pt")]
    assert (tmp_path / "best.pt").is_file()


def test_temporaries_of_a_killed_save_are_removed_and_never_loaded(tmp_path, tiny_model):
    save_checkpoint(step_checkpoint_path(tmp_path, 7), minimal_payload(tiny_model))
    (tmp_path / ".step_00000009.pt.abc123.tmp").write_bytes(b"PK\x03\x04 a save killed halfway")
    assert [step for step, _ in step_checkpoints(tmp_path)] == [7]
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".step_00000009.pt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000007.pt"]


def test_run_directory_without_best_resolves_to_its_newest_step_checkpoint(tmp_path, tiny_model):
    for step in (100, 20):
        save_checkpoint(step_checkpoint_path(tmp_path / "checkpoints", step), minimal_payload(tiny_model))
    assert load_checkpoint(tmp_path)["path"].endswith("step_00000100.pt")


def test_the_tokenizer_travels_with_its_vocabularies(tmp_path):
    from tests.unit.test_tokenizer import SENTENCES_FR, write_train

    tok = Tokenizer.train_or_load(write_train(tmp_path), {"vocab_size": 80}, log=lambda _: None)
    entries = tokenizer_tensors(tok)
    assert set(entries) == {"src_spm", "tgt_spm", "src_pieces", "tgt_pieces"}
    again = tokenizer_from(entries)
    assert again.tgt_vocab_size == tok.tgt_vocab_size and again.src_vocab_size == tok.src_vocab_size
    assert again.encode_tgt(SENTENCES_FR[:4]) == tok.encode_tgt(SENTENCES_FR[:4])
    older = tokenizer_from({"src_spm": entries["src_spm"], "tgt_spm": entries["tgt_spm"]})  # before the lists
    assert older.tgt_vocab_size == tok.tgt.get_piece_size()
    broken = {**entries, "tgt_pieces": torch.tensor([0, 1, 2, 3, 99_999])}
    with pytest.raises(CheckpointError, match="unreadable tokenizer"):
        tokenizer_from(broken)
