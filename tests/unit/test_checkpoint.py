"""Checkpoints: atomic, loaded with weights_only=True, and bad files give clear errors."""

import os
import pickle

import pytest
import torch

from s2s_attn.decoding.translator import Translator
from s2s_attn.training.checkpoint import CheckpointError, bytes_to_tensor, load_checkpoint, save_checkpoint


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
