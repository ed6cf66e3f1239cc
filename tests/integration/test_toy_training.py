"""The synthetic tasks train to >= 95% exact match within a fixed number of steps (a minute or so on a
2-core CPU), with every attention variant and both decoder styles. The bound is on steps, not wall-clock
time: a shared machine's slow phase must not fail a test; the suite's overall budget is what CI times."""

import pytest
from hydra import compose, initialize_config_dir

from s2s_attn.cli import config_dir
from s2s_attn.training.trainer import train

TOY_OVERRIDES = ["experiment=toy", "trainer.device=cpu"]  # the preset the README's tour trains


def toy_config(tmp_path, *extra):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=[*TOY_OVERRIDES, f"data.cache_dir={tmp_path}/cache", *extra])


def exact_match(tmp_path, run_dir) -> float:
    hyps = (run_dir / "test.hyp").read_text().splitlines()
    refs = (next((tmp_path / "cache").glob("toy-*")) / "test.tgt").read_text().splitlines()
    return sum(h == r for h, r in zip(hyps, refs)) / len(refs)


@pytest.mark.slow
def test_toy_reversal_reaches_95_percent_exact_match_within_1500_steps(tmp_path):
    # 1,500 steps: the reversal sits on a loss plateau for a few hundred steps, and the step at which it
    # leaves it moves with rounding-level changes (a different Adam implementation alone was enough); by
    # step 1,500 it is well past it
    results = train(toy_config(tmp_path, "trainer.max_steps=1500", "trainer.eval_every=500"), tmp_path / "run")
    exact = exact_match(tmp_path, tmp_path / "run")
    assert results["steps"] == 1500  # the step budget is the bound (patience 0: no early stop)
    assert exact >= 0.95, f"exact match {exact:.1%} after {results['steps']} steps"
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


# Every attention on the copy task (diagonal alignment), 800 steps each, spread over both decoder styles
# and both Luong-decoder modes (6 runs instead of 12). Xavier initialisation: with the default
# uniform(-0.1, 0.1), the parameter-free luong_dot and the multihead projections sit on a loss plateau
# for the first few hundred steps; with Xavier every attention x decoder pair learns the copy within them.
# scaled_dot with input feeding gets 1000: at 800 its BLEU is ~98 but a tenth of its copies can still miss a
# token, and where exactly it crosses 95% moves with rounding-level changes.
VARIANTS = [
    ("luong_dot", "luong", True, 800),
    ("luong_general", "bahdanau", True, 800),
    ("luong_concat", "luong", False, 800),
    ("scaled_dot", "luong", True, 1000),
    ("multihead", "bahdanau", True, 800),
    ("bahdanau", "luong", False, 800),
]


@pytest.mark.slow
@pytest.mark.parametrize("attention,decoder,input_feeding,steps", VARIANTS)
def test_every_variant_learns_the_copy_task_within_its_steps(tmp_path, attention, decoder, input_feeding, steps):
    cfg = toy_config(tmp_path, "data.toy_task=copy", f"trainer.max_steps={steps}", f"attention={attention}",
                     "attention.size=128", f"model.decoder={decoder}", f"model.input_feeding={input_feeding}",
                     "model.init=xavier", "logger.attention_images=0")
    results = train(cfg, tmp_path / "run")
    exact = exact_match(tmp_path, tmp_path / "run")
    assert results["steps"] == steps  # the step budget is the bound
    assert exact >= 0.95, f"{attention}/{decoder}: exact match {exact:.1%} after {results['steps']} steps"


def test_same_seed_gives_the_same_loss_curve(tmp_path):
    short = ["trainer.max_steps=30", "trainer.eval_every=15", "trainer.log_every=5", "model.dropout=0.2",
             "data.train_size=1500", "model.emb_size=16", "model.encoder_hidden=16", "model.decoder_hidden=32",
             "model.output_size=16", "attention.size=16", "logger.attention_images=0", "trainer.threads=1"]
    first = train(toy_config(tmp_path, *short), tmp_path / "a")
    second = train(toy_config(tmp_path, *short), tmp_path / "b")
    assert [step for step, _ in first["train_loss"]] == [5, 10, 15, 20, 25, 30]
    assert first["train_loss"] == second["train_loss"]  # exactly: same seed, same config, CPU
    assert [h["valid_loss"] for h in first["history"]] == [h["valid_loss"] for h in second["history"]]
    other_seed = train(toy_config(tmp_path, *short, "trainer.seed=2"), tmp_path / "c")
    assert other_seed["train_loss"] != first["train_loss"]  # the seed is what fixes the curve
