"""The learning-rate schedule."""

import pytest

from s2s_attn.training.trainer import LRSchedule


def test_warmup_then_constant():
    lr = LRSchedule(1e-3, "constant", warmup=10, max_steps=None, max_seconds=None)
    assert lr(0, 0) == pytest.approx(1e-4)
    assert lr(9, 0) == pytest.approx(1e-3)
    assert lr(5000, 0) == pytest.approx(1e-3)


def test_linear_decay_reaches_the_final_fraction_at_max_steps():
    lr = LRSchedule(1e-3, "linear", warmup=0, max_steps=100, max_seconds=None, final_fraction=0.1)
    assert lr(0, 0) == pytest.approx(1e-3)
    assert lr(50, 0) == pytest.approx(0.55e-3)
    assert lr(100, 0) == pytest.approx(1e-4)


def test_time_budget_drives_the_decay_when_there_is_no_step_limit():
    lr = LRSchedule(1e-3, "cosine", warmup=0, max_steps=None, max_seconds=600)
    assert lr(10, 0) == pytest.approx(1e-3)
    assert lr(10, 300) == pytest.approx(0.5e-3)
    assert lr(10, 600) == pytest.approx(0.0)


def test_decay_without_an_end_is_a_clear_error():
    with pytest.raises(ValueError, match="max_steps or trainer.max_minutes"):
        LRSchedule(1e-3, "linear", warmup=0, max_steps=None, max_seconds=None)


def test_unknown_schedule_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: constant, inverse_sqrt, linear, cosine"):
        LRSchedule(1e-3, "step", warmup=0, max_steps=None, max_seconds=None)
