"""Every setting has a rule, and a setting that breaks it stops the run at once with one line naming the key, the
value and what is allowed (s2s_attn/schema.py)."""

from __future__ import annotations

import copy
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from s2s_attn.cli import config_dir
from s2s_attn.schema import SCHEMAS, ConfigError, validate


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


def composed(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def plain(*overrides: str) -> dict:
    return OmegaConf.to_container(composed(*overrides), resolve=True)


def schema_keys(schema: type, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, dataclass field) of every leaf setting of a schema."""
    found = []
    for item in fields(schema):
        default = item.default_factory() if callable(item.default_factory) else None
        if is_dataclass(default):
            found += schema_keys(type(default), f"{prefix}{item.name}.")
        else:
            found.append((f"{prefix}{item.name}", item))
    return found


EVERY_KEY = [(group, key, item) for group, schema in SCHEMAS.items() for key, item in schema_keys(schema)]


def with_value(config: dict, group: str, key: str, value) -> dict:
    config = copy.deepcopy(config)
    node = config.setdefault(group, {})
    *parents, leaf = key.split(".")
    for parent in parents:
        node = node.setdefault(parent, {})
    node[leaf] = value
    return config


def assert_one_line(error: ConfigError, *phrases: str) -> None:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message, message
    for phrase in phrases:
        assert phrase in message, message


# ---- what passes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("group,option", [(group, option) for group in ("data", "attention", "alignment", "trainer",
                                                                        "experiment")
                                          for option in options(group)])
def test_every_shipped_config_passes(group, option):
    overrides = [f"{group}={option}"]
    if option == "parallel":
        overrides += ["data.train=c/train", "data.valid=c/dev", "data.test=c/test", "data.src_lang=en",
                      "data.tgt_lang=fr"]
    validate(composed(*overrides))


@pytest.mark.parametrize("overrides", [
    ["model.decoder=luong", "model.input_feeding=false", "attention=luong_general"],
    ["trainer.batch_tokens=null", "trainer.batch_size=64", "trainer.patience=0", "trainer.clip_grad=null"],
    ["fast.kernels=true", "fast.gemm=blas", "trainer.max_minutes=null", "trainer.max_steps=100"],
    ["fast=off"],
    ["attention=luong_dot", "model.decoder_hidden=512"],
    ["model.tie_embeddings=true", "model.output_size=256", "model.emb_size=256"],
])
def test_settings_people_change_pass(overrides):
    validate(composed(*overrides))


# ---- every key, every wrong value ------------------------------------------------------------------------

def test_every_setting_of_every_schema_has_a_rule():
    """A key added to a schema without a rule fails here."""
    missing = [f"{group}.{key}" for group, key, item in EVERY_KEY if "rule" not in item.metadata]
    assert not missing, f"schema fields without a rule: {missing}"


@pytest.mark.parametrize("group,key,item", EVERY_KEY, ids=[f"{g}.{k}" for g, k, _ in EVERY_KEY])
def test_every_key_refuses_its_wrong_values_in_one_line(group, key, item):
    base = plain("data=toy")
    rule = item.metadata["rule"]
    assert rule.wrong_values(), f"{group}.{key}: its rule names no value it refuses"
    for wrong in rule.wrong_values():
        with pytest.raises(ConfigError) as info:
            validate(with_value(base, group, key, wrong))
        assert_one_line(info.value, f"{group}.{key}")


# ---- the inputs users get wrong --------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,phrases", [
    (["trainer.label_smoothing=1.5"], ["trainer.label_smoothing=1.5", "[0, 1)"]),
    (["trainer.warmup_steps=-5"], ["trainer.warmup_steps=-5", ">= 0"]),
    (["trainer.lr=0"], ["trainer.lr=0", "> 0"]),
    (["trainer.lr=fast"], ["trainer.lr='fast'", "a number > 0"]),
    (["trainer.batch_size=0"], ["trainer.batch_size=0", "null or a whole number >= 1"]),
    (["trainer.batch_tokens=null"], ["trainer.batch_tokens and trainer.batch_size are both null"]),
    (["trainer.precision=fp8"], ["trainer.precision='fp8'", "auto, fp32, bf16 or fp16"]),
    (["trainer.device=gpu"], ["trainer.device='gpu'", "auto, cpu, cuda or cuda:N"]),
    (["model.dropout=1"], ["model.dropout=1", "[0, 1)"]),
    (["model.decoder=transformer"], ["model.decoder='transformer'", "a registered decoder style"]),
    (["attention=luong_dot", "model.decoder_hidden=300"], ["luong_dot", "model.decoder_hidden", "512"]),
    (["model.tie_embeddings=true", "model.output_size=128"], ["model.tie_embeddings", "128", "256"]),
    (["attention=multihead", "attention.heads=3"], ["attention.size=256", "attention.heads=3"]),
    (["+trainer.learning_rate=0.1"], ["unknown setting trainer.learning_rate"]),
    (["data=parallel"], ["data.train is missing"]),
    (["data.spm.vocab_size=0"], ["data.spm.vocab_size=0"]),
    (["data.max_ratio=0.5"], ["data.max_ratio=0.5", ">= 1"]),
])
def test_impossible_settings_fail_with_one_line_naming_them(overrides, phrases):
    with pytest.raises(ConfigError) as info:
        validate(composed(*overrides))
    assert_one_line(info.value, *phrases)
