"""One training step: a non-finite loss never reaches the weights, and a run whose loss stays non-finite
stops with a message; trainer settings the run could not use fail before any work is done."""

import pytest
import torch

from s2s_attn.data.batching import make_batch
from s2s_attn.training.resume import TrainingError
from s2s_attn.training.trainer import StepRunner


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
