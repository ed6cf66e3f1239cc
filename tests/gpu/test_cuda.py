"""On a CUDA GPU the reference model is what runs: a few training steps with bf16 autocast learn, and decoding
gives what it gives on the CPU. Skipped where there is no CUDA device; `scripts/gpu_check.sh` runs these and a
timing on a machine that has one."""

from __future__ import annotations

import math

import pytest
import torch

from s2s_attn.data.batching import make_batch
from s2s_attn.decoding.beam import beam_search
from s2s_attn.decoding.greedy import greedy_decode

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

SOURCES = [[5, 6, 7, 8, 9, 10], [8, 9, 11], [12, 13, 14, 15]]


def toy_run_config(tmp_path, *overrides: str):
    from hydra import compose, initialize_config_dir

    from s2s_attn.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=[
            "data=toy", "data.train_size=2000", "data.valid_size=50", "data.test_size=50",
            f"data.cache_dir={tmp_path}/cache", "trainer.device=cuda", "trainer.max_minutes=null",
            "trainer.max_steps=60", "trainer.eval_every=60", "trainer.batch_size=64", "trainer.batch_tokens=null",
            "logger.attention_images=1", *overrides])


@pytest.mark.parametrize("precision,guided", [("bf16", "none"), ("fp32", "none"), ("bf16", "eflomal")])
def test_a_few_training_steps_on_cuda_learn_with_bf16_autocast_and_in_fp32(tmp_path, precision, guided):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    from s2s_attn.data.aligner import eflomal_available
    from s2s_attn.training.trainer import train

    if guided != "none" and not eflomal_available():
        pytest.skip("eflomal is not installed (pip install eflomal)")
    results = train(toy_run_config(tmp_path, f"trainer.precision={precision}", f"guided_alignment={guided}"),
                    tmp_path / "run")
    assert results["steps"] == 60 and results["skipped_steps"] == 0
    first, last = results["train_loss"][0][1], results["train_loss"][-1][1]
    assert math.isfinite(last) and last < first  # it learned something


@pytest.mark.parametrize("decoder,attention", [("bahdanau", "bahdanau"), ("luong", "luong_general"),
                                               ("luong", "multihead")])
def test_cuda_decoding_gives_the_cpus_outputs(make_tiny_model, decoder, attention):
    cpu_model = make_tiny_model(decoder=decoder, attention=attention)
    cuda_model = make_tiny_model(decoder=decoder, attention=attention).cuda()
    cuda_model.load_state_dict(cpu_model.state_dict())
    batch = make_batch(SOURCES, None, [0, 1, 2])
    cpu_ids, cpu_attention = greedy_decode(cpu_model, batch.src, batch.src_len, max_len=8, return_attention=True)
    gpu_ids, gpu_attention = greedy_decode(cuda_model, batch.src.cuda(), batch.src_len.cuda(), max_len=8,
                                           return_attention=True)
    assert gpu_ids == cpu_ids
    for on_cpu, on_gpu in zip(cpu_attention, gpu_attention):
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)
    cpu_beam = beam_search(cpu_model, batch.src, batch.src_len, beam_size=4, max_len=8)
    gpu_beam = beam_search(cuda_model, batch.src.cuda(), batch.src_len.cuda(), beam_size=4, max_len=8)
    assert [s[0].tokens for s in gpu_beam] == [s[0].tokens for s in cpu_beam]
    assert [s[0].score for s in gpu_beam] == pytest.approx([s[0].score for s in cpu_beam], abs=1e-3)
