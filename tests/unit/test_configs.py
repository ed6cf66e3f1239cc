"""The Hydra config tree composes for every option users can type."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException

from s2s_attn.cli import config_dir


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


def compose_with(*overrides):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_default_is_eng_fra_with_bahdanau_attention_and_a_20_minute_budget():
    cfg = compose_with()
    assert (cfg.data.name, cfg.attention.name, cfg.model.decoder) == ("eng_fra", "bahdanau", "bahdanau")
    assert cfg.trainer.max_minutes == 20


@pytest.mark.parametrize("data", options("data"))
def test_every_data_config_composes(data):
    assert compose_with(f"data={data}").data.name == data


def test_fra_eng_reads_the_same_file_with_columns_swapped():
    eng_fra, fra_eng = compose_with("data=eng_fra").data, compose_with("data=fra_eng").data
    assert eng_fra.corpus == fra_eng.corpus
    assert (fra_eng.src_column, fra_eng.tgt_column, fra_eng.src_lang) == (1, 0, "fr")


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_preset_composes(experiment):
    compose_with(f"experiment={experiment}")


def test_benchmark_preset_uses_64_sentence_batches():
    cfg = compose_with("experiment=benchmark")
    assert cfg.trainer.batch_size == 64 and cfg.trainer.batch_tokens is None


def test_unknown_attention_lists_the_valid_ones():
    with pytest.raises(HydraException, match="bahdanau"):
        compose_with("attention=no_such_attention")


def test_data_root_follows_the_environment(monkeypatch):
    monkeypatch.setenv("S2S_DATA_DIR", "/somewhere/else")
    from omegaconf import OmegaConf

    assert OmegaConf.to_container(compose_with().data, resolve=True)["root"] == "/somewhere/else"


def test_every_config_group_is_packaged_so_installed_commands_find_it():
    import tomllib

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = project["tool"]["setuptools"]
    groups = sorted(p.name for p in (root / "configs").iterdir() if p.is_dir() and not p.name.startswith("_"))
    for group in groups:
        assert f"s2s_attn.configs.{group}" in setuptools["packages"], group
        assert setuptools["package-data"][f"s2s_attn.configs.{group}"] == ["*.yaml"], group
