"""One training step: a non-finite loss never reaches the weights, and a run whose loss stays non-finite
stops with a message; trainer settings the run could not use fail before any work is done."""

import pytest
import torch
from omegaconf import OmegaConf

from s2s_attn.data.batching import make_batch
from s2s_attn.training.resume import TrainingError
from s2s_attn.training.trainer import StepRunner, check_trainer_config


class Poisoned(torch.nn.Module):
    """The wrapped model, but its logits are NaN on the calls listed in ``bad_calls`` (1-based)."""

    def __init__(self, model, bad_calls):
        super().__init__()
        self.model, self.bad_calls, self.calls = model, set(bad_calls), 0

    def forward(self, *args):
        self.calls += 1
        logits, attention = self.model(*args)
        return (logits * float("nan") if self.calls in self.bad_calls else logits), attention


def a_batch():
    return make_batch([[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14]], [0, 1])


def runner(model, max_bad_steps=3):
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return StepRunner(model, optimizer, torch.device("cpu"), "fp32", label_smoothing=0.0, clip_grad=1.0,
                      max_bad_steps=max_bad_steps)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_non_finite_loss_skips_the_update_and_is_counted(tiny_model):
    model = Poisoned(tiny_model, bad_calls={2})
    step = runner(model)
    step(a_batch())
    assert not step.last_skipped
    before = weights(model)
    step(a_batch())
    assert step.last_skipped and step.skipped == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no update at all
    step(a_batch())
    assert not step.last_skipped and step.skipped == 1 and step.bad_in_a_row == 0
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_too_many_non_finite_steps_in_a_row_stop_training_with_a_message(tiny_model):
    step = runner(Poisoned(tiny_model, bad_calls={1, 2, 4, 5, 6}), max_bad_steps=3)
    for _ in range(4):  # bad, bad, good (the count starts again), bad
        step(a_batch())
    with pytest.raises(TrainingError, match="not finite in 3 steps in a row .*trainer.max_bad_steps=3.*lr"):
        step(a_batch())
        step(a_batch())
    assert step.skipped == 5


def test_max_bad_steps_zero_skips_forever_without_stopping(tiny_model):
    step = runner(Poisoned(tiny_model, bad_calls=set(range(1, 13))), max_bad_steps=0)
    for _ in range(12):
        step(a_batch())
    assert step.skipped == 12


def gradients_of_one_step(model, clip_grad: float):
    """(the gradient norm the step returned, the gradients the optimizer saw) of one step with plain SGD at lr 0."""
    model.train()
    seen = {}

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            seen.update({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
            return super().step(closure)

    step = StepRunner(model, Recording(model.parameters(), lr=0.0), torch.device("cpu"), "fp32", label_smoothing=0.0,
                      clip_grad=clip_grad)
    _, _, norm = step(a_batch())
    return norm, seen


@pytest.mark.parametrize("clip_grad", [1e-3, 1.0, 1e6, 0.0])
def test_clipping_scales_the_gradients_as_clip_grad_norm_does_and_only_above_the_limit(tiny_model, clip_grad):
    norm, seen = gradients_of_one_step(tiny_model, clip_grad)
    tiny_model.zero_grad(set_to_none=True)  # the same step by hand (lr 0: the same weights)
    batch = a_batch()
    loss_sum, _ = tiny_model(batch.src, batch.src_len, batch.tgt_in, batch.tgt_out)
    (loss_sum / batch.loss_tokens).backward()
    expected = {name: p.grad.clone() for name, p in tiny_model.named_parameters() if p.grad is not None}
    expected_norm = float(torch.nn.utils.get_total_norm(list(expected.values())))
    assert norm == pytest.approx(expected_norm, rel=1e-6)  # the norm before clipping
    if clip_grad:  # what clip_grad_norm_ gives
        torch.nn.utils.clip_grad_norm_([p for p in tiny_model.parameters() if p.grad is not None], clip_grad)
        expected = {name: p.grad.clone() for name, p in tiny_model.named_parameters() if p.grad is not None}
    assert seen.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(seen[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    scaled = float(torch.nn.utils.get_total_norm(list(seen.values())))
    assert scaled == pytest.approx(min(expected_norm, clip_grad or float("inf")), rel=1e-4)


def trainer_cfg(**overrides):
    base = dict(batch_tokens=2000, batch_size=None, max_steps=None, max_minutes=20, eval_every=500, log_every=50,
                save_every=250, keep_last=3, patience=10, max_bad_steps=10, lr=0.001)
    return OmegaConf.create({**base, **overrides})


@pytest.mark.parametrize("overrides,message", [
    ({"batch_size": 0}, "trainer.batch_size must be a positive integer (or null), got 0"),
    ({"batch_size": -4}, "trainer.batch_size must be a positive integer (or null), got -4"),
    ({"batch_tokens": 0}, "trainer.batch_tokens must be a positive integer"),
    ({"batch_tokens": None, "batch_size": None}, "give trainer.batch_tokens or trainer.batch_size"),
    ({"batch_size": "many"}, "trainer.batch_size must be a positive integer (or null), got 'many'"),
    ({"eval_every": 0}, "trainer.eval_every must be a positive integer, got 0"),
    ({"keep_last": 0}, "trainer.keep_last must be a positive integer, got 0"),
    ({"max_steps": 2.5}, "trainer.max_steps must be a positive integer (or null), got 2.5"),
    ({"max_minutes": -1}, "trainer.max_minutes must be a positive number (or null), got -1"),
    ({"patience": -1}, "trainer.patience must be a non-negative integer (or null), got -1"),
    ({"lr": 0}, "trainer.lr must be a positive number, got 0"),
    ({"clip_grad": -1.0}, "trainer.clip_grad must be a non-negative number (or null), got -1.0"),
])
def test_unusable_trainer_settings_fail_fast_naming_the_setting(overrides, message):
    with pytest.raises(ValueError) as info:
        check_trainer_config(trainer_cfg(**overrides))
    assert str(info.value).startswith(message)


def test_the_default_trainer_settings_pass():
    from hydra import compose, initialize_config_dir

    from s2s_attn.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        check_trainer_config(compose("config").trainer)
    check_trainer_config(trainer_cfg(batch_tokens=None, batch_size=64, save_every=None, patience=0))
    check_trainer_config(trainer_cfg(clip_grad=None))  # no clipping
    check_trainer_config(trainer_cfg(clip_grad=0))
