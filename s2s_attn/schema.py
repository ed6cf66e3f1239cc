"""The rules every setting must follow: one schema per config group, checked before any work starts.

The YAML files in ``configs/`` keep the defaults and the comments users read; the dataclasses here keep the
rules: each field's type (checked by OmegaConf's structured configs, which also reject a key the schema does
not know) and its `Rule` (a range, a set of choices, a non-empty text). `validate` checks a composed config
against them, then the combinations that cannot work (``luong_dot`` with unequal sizes, tied embeddings of
unequal sizes, ...), and raises `ConfigError` with one line that names the key, the value and what is allowed.

    s2s-train trainer.label_smoothing=1.5
    error: trainer.label_smoothing=1.5 is not allowed: a number in [0, 1)

Every field has a rule (a test walks them all with wrong values), so a key added without one fails the suite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException


class ConfigError(ValueError):
    """A setting that breaks its rule, in one line: the key, the value, and what is allowed."""


# --------------------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True)
class Rule:
    """What a setting may be. ``allowed`` says it to the user; `accepts` checks a value of the field's type (None
    is checked by the field's optionality, before the rule); `wrong_values` are values the rule must refuse (the
    test that walks every key uses them)."""

    allowed: str

    def describe(self) -> str:
        """What is allowed, as the error message says it."""
        return self.allowed

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def wrong_values(self) -> list[Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Between(Rule):
    """A number in [low, high] (``high_open``: [low, high)); ``low_open``: (low, ...; None: no bound."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def wrong_values(self) -> list[Any]:
        wrong: list[Any] = ["abc"]
        if self.low is not None:
            wrong.append(self.low if self.low_open else self.low - 1)
        if self.high is not None:
            wrong.append(self.high if self.high_open else self.high + 1)
        return wrong


def at_least(low: int, what: str = "a whole number") -> Between:
    return Between(f"{what} >= {low}", low=low)


def probability(high_open: bool = True) -> Between:
    return Between(f"a number in [0, 1{')' if high_open else ']'}", low=0, high=1, high_open=high_open)


@dataclass(frozen=True)
class OneOf(Rule):
    """One of a fixed list of words, or of the names in a registry (``names``, looked up when checked)."""

    words: tuple[str, ...] = ()
    names: Callable[[], Iterable[str]] | None = None

    def choices(self) -> list[str]:
        return sorted(self.names()) if self.names is not None else list(self.words)

    def describe(self) -> str:
        return f"{self.allowed} ({', '.join(self.choices())})" if self.names is not None else self.allowed

    def accepts(self, value: Any) -> bool:
        return str(value).lower() in self.choices()  # ``true`` may reach a text field as True

    def wrong_values(self) -> list[Any]:
        return ["no_such_choice"]


@dataclass(frozen=True)
class Text(Rule):
    """Any non-empty text (a path, a name, a language code)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def wrong_values(self) -> list[Any]:
        return ["", "   "]


@dataclass(frozen=True)
class Flag(Rule):
    """true or false (the type check does the work)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def wrong_values(self) -> list[Any]:
        return ["maybe"]


@dataclass(frozen=True)
class AnyInteger(Rule):
    """Any whole number (a seed)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def wrong_values(self) -> list[Any]:
        return ["abc", 1.5]


def setting(default: Any, rule: Rule) -> Any:
    """A schema field: its default (MISSING: the config must give it) and its rule."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


# --------------------------------------------------------------------------------------------------------
# The schemas, one per config group


def _attention_names() -> Iterable[str]:
    from .model.attention import ATTENTION_REGISTRY

    return ATTENTION_REGISTRY


def _decoder_names() -> Iterable[str]:
    from .model.decoder import DECODER_REGISTRY

    return DECODER_REGISTRY


def _download_names() -> Iterable[str]:
    from .data.download import ARCHIVES, PARALLEL_CORPORA

    return [*ARCHIVES, *PARALLEL_CORPORA]


def _format_names() -> Iterable[str]:
    from .data.formats import FORMAT_REGISTRY

    return FORMAT_REGISTRY


@dataclass
class SentencePieceSchema:
    model_type: str = setting("bpe", OneOf("bpe or unigram", words=("bpe", "unigram")))
    vocab_size: int = setting(8000, at_least(8))
    joint: bool = setting(True, Flag("true or false"))
    src_vocab_size: int | None = setting(None, at_least(8, "null or a whole number"))
    tgt_vocab_size: int | None = setting(None, at_least(8, "null or a whole number"))
    character_coverage: float = setting(1.0, Between("a number in (0, 1]", low=0, high=1, low_open=True))
    prune_unused: bool = setting(True, Flag("true or false"))
    seed: int = setting(1, AnyInteger("a whole number"))


@dataclass
class DataSchema:
    """Every format's keys; which ones a format needs is checked in `_check_combinations`."""

    name: str = setting(MISSING, Text("a name for the prepared data"))
    format: str = setting(MISSING, OneOf("a registered data format", names=_format_names))
    root: str = setting("data", Text("the directory that holds the corpora"))
    cache_dir: str = setting("data/cache", Text("a writable directory"))
    workers: int | None = setting(None, at_least(1, "null (every core) or a whole number"))
    src_lang: str = setting("src", Text("a language code"))
    tgt_lang: str = setting("tgt", Text("a language code"))
    # tsv
    corpus: str | None = setting(None, Text("a file under data.root"))
    download: str | None = setting(None, OneOf("null or a corpus to download", names=_download_names))
    src_column: int = setting(0, at_least(0))
    tgt_column: int = setting(1, at_least(0))
    zh_script: str = setting("simplified", OneOf("simplified or keep", words=("simplified", "keep")))
    # parallel
    train: Any = setting(None, Text("a file prefix, or a list of them"))  # each item of a list is checked
    valid: str | None = setting(None, Text("a file prefix"))
    test: str | None = setting(None, Text("a file prefix"))
    # toy
    toy_task: str = setting("reverse", OneOf("reverse or copy", words=("reverse", "copy")))
    toy_vocab: int = setting(20, Between("a whole number in [2, 26]", low=2, high=26))
    toy_min_len: int = setting(3, at_least(1))
    toy_max_len: int = setting(10, at_least(1))
    train_size: int = setting(10000, at_least(1))
    # cleaning and splitting
    min_words: int = setting(1, at_least(0))
    max_words: int | None = setting(50, at_least(1, "null or a whole number"))
    max_ratio: float | None = setting(3.0, Between("null or a number >= 1", low=1))
    dedup: bool = setting(True, Flag("true or false"))
    valid_size: int = setting(1000, at_least(1))
    test_size: int = setting(1000, at_least(1))
    split_seed: int = setting(1, AnyInteger("a whole number"))
    max_src_pieces: int = setting(200, at_least(2))
    max_tgt_pieces: int = setting(200, at_least(2))
    spm: SentencePieceSchema = field(default_factory=SentencePieceSchema)


@dataclass
class ModelSchema:
    emb_size: int = setting(256, at_least(1))
    encoder_hidden: int = setting(256, at_least(1))
    encoder_layers: int = setting(1, at_least(1))
    bidirectional: bool = setting(True, Flag("true or false"))
    decoder: str = setting("bahdanau", OneOf("a registered decoder style", names=_decoder_names))
    input_feeding: bool = setting(True, Flag("true or false"))
    decoder_hidden: int = setting(512, at_least(1))
    decoder_layers: int = setting(1, at_least(1))
    output_size: int = setting(256, at_least(1))
    dropout: float = setting(0.1, probability())
    tie_embeddings: bool = setting(False, Flag("true or false"))
    init: str = setting("uniform", OneOf("uniform or xavier", words=("uniform", "xavier")))
    init_range: float = setting(0.1, Between("a number > 0", low=0, low_open=True))


@dataclass
class AttentionSchema:
    name: str = setting(MISSING, OneOf("a registered attention", names=_attention_names))
    size: int = setting(256, at_least(1))
    heads: int = setting(1, at_least(1))


@dataclass
class TrainerSchema:
    seed: int = setting(1, AnyInteger("a whole number"))
    device: str = setting("auto", Text("auto, cpu, cuda or cuda:N"))
    precision: str = setting("auto", OneOf("auto, fp32, bf16 or fp16", words=("auto", "fp32", "bf16", "fp16")))
    threads: int | None = setting(None, at_least(1, "null or a whole number"))
    batch_tokens: int | None = setting(2000, at_least(1, "null or a whole number"))
    batch_size: int | None = setting(None, at_least(1, "null or a whole number"))
    lr: float = setting(1e-3, Between("a number > 0", low=0, low_open=True))
    eps: float = setting(1e-8, Between("a number > 0", low=0, low_open=True))
    betas: list[float] = setting([0.9, 0.999], Between("two numbers in [0, 1)", low=0, high=1, high_open=True))
    lr_schedule: str = setting("constant", OneOf("constant, inverse_sqrt, linear or cosine",
                                                 words=("constant", "inverse_sqrt", "linear", "cosine")))
    warmup_steps: int = setting(0, at_least(0))
    lr_final_fraction: float = setting(0.0, probability(high_open=False))
    label_smoothing: float = setting(0.1, probability())
    clip_grad: float | None = setting(1.0, Between("null or a number >= 0", low=0))
    max_steps: int | None = setting(None, at_least(1, "null or a whole number"))
    max_minutes: float | None = setting(20, Between("null or a number > 0", low=0, low_open=True))
    eval_every: int = setting(500, at_least(1))
    eval_batch_size: int = setting(128, at_least(1))
    log_every: int = setting(50, at_least(1))
    patience: int | None = setting(10, at_least(0, "null or a whole number"))
    max_bad_steps: int | None = setting(10, at_least(0, "null or a whole number"))
    save_every: int | None = setting(250, at_least(1, "null or a whole number"))
    keep_last: int = setting(3, at_least(1))
    resume: str | None = setting(None, Text("null, auto, or a checkpoint or run directory"))
    ddp: bool = setting(False, Flag("true or false"))
    compile: bool = setting(False, Flag("true or false"))


@dataclass
class FastSchema:
    enabled: bool = setting(True, Flag("true or false"))
    kernels: str = setting("auto", OneOf("auto, true or false", words=("auto", "true", "false")))
    gemm: str = setting("auto", OneOf("auto, blas or onednn", words=("auto", "blas", "onednn")))
    keep_freed_memory: bool = setting(True, Flag("true or false"))


@dataclass
class LoggerSchema:
    name: str = setting("tensorboard", Text("the logger's name"))
    attention_images: int = setting(4, at_least(0))


@dataclass
class AlignmentSchema:
    name: str = setting("none", Text("none, or the name of a gold alignment set"))
    root: str | None = setting(None, Text("a directory"))
    text: dict[str, str] | None = setting(None, Text("a file per language"))
    gold: str | None = setting(None, Text("a gold alignment file"))
    gold_langs: list[str] | None = setting(None, Text("two language codes"))
    format: str = setting("auto", OneOf("auto, naacl or pharaoh", words=("auto", "naacl", "pharaoh")))
    method: str = setting("argmax", OneOf("argmax or threshold", words=("argmax", "threshold")))
    threshold: float = setting(0.3, Between("a number in (0, 1]", low=0, high=1, low_open=True))
    pieces: str = setting("first", OneOf("first, sum or max", words=("first", "sum", "max")))
    shift: str = setting("predict", OneOf("predict or read", words=("predict", "read")))
    aligner: str = setting("eflomal", OneOf("eflomal or none", words=("eflomal", "none")))


@dataclass
class GuidedAlignmentSchema:
    name: str = setting("none", OneOf("none or eflomal", words=("none", "eflomal")))
    weight: float = setting(0.05, Between("a number >= 0", low=0))
    symmetrization: str = setting("grow-diag-final-and", OneOf(
        "forward, reverse, intersection, union or grow-diag-final-and",
        words=("forward", "reverse", "intersection", "union", "grow-diag-final-and")))


#: config group -> its schema
SCHEMAS: dict[str, type] = {
    "data": DataSchema,
    "model": ModelSchema,
    "attention": AttentionSchema,
    "trainer": TrainerSchema,
    "fast": FastSchema,
    "logger": LoggerSchema,
    "alignment": AlignmentSchema,
    "guided_alignment": GuidedAlignmentSchema,
}


# --------------------------------------------------------------------------------------------------------
# Checking a config


def _type_words(annotation: Any) -> str:
    text = str(annotation)
    for word, said in (("bool", "true or false"), ("int", "a whole number"), ("float", "a number"),
                       ("list", "a list"), ("dict", "a mapping"), ("str", "text")):
        if word in text:
            return said
    return text


def _field_of(schema: type, path: list[str]):
    """The dataclass field at ``path`` (keys below the group) of ``schema``, or None."""
    current, found = schema, None
    for key in path:
        if current is None or not is_dataclass(current):
            return found
        found = next((f for f in fields(current) if f.name == key), None)
        if found is None:
            return None
        current = found.type if is_dataclass(found.type) else None
        if isinstance(found.default_factory, type) and is_dataclass(found.default_factory):
            current = found.default_factory
    return found


def _one_line(group: str, schema: type, error: OmegaConfBaseException, given: Mapping[str, Any]) -> ConfigError:
    """A ConfigError for OmegaConf's complaint about ``group`` (an unknown key, or a value of the wrong type)."""
    key = str(getattr(error, "full_key", "") or getattr(error, "key", "") or "")
    path = [part for part in key.split(".") if part]
    full = ".".join([group, *path])
    if isinstance(error, MissingMandatoryValue):
        return ConfigError(f"{full} is missing: give it on the command line ({full}=...)")
    found = _field_of(schema, path)
    if found is None:
        known = ", ".join(f.name for f in fields(schema))
        return ConfigError(f"unknown setting {full}: {group} has {known}")
    value: Any = given
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    rule = found.metadata.get("rule")
    allowed = rule.describe() if rule is not None else _type_words(found.type)
    return ConfigError(f"{full}={value!r} is not allowed: {allowed}")


def _walk(group: str, schema: type, node: Any) -> None:
    """Check every field's rule in a merged (typed) node of ``schema``."""
    for item in fields(schema):
        value = getattr(node, item.name)
        key = f"{group}.{item.name}"
        if is_dataclass(value):
            _walk(key, type(value), value)
            continue
        rule: Rule | None = item.metadata.get("rule")
        if rule is None:
            raise AssertionError(f"schema field {key} has no rule")  # a programming error, caught by the tests
        if value is None:  # allowed: the field is Optional (OmegaConf refused None for the others)
            continue
        items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
        if not all(rule.accepts(v) for v in items):
            raise ConfigError(f"{key}={_shown(value)} is not allowed: {rule.describe()}")


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_group(group: str, values: Mapping[str, Any]) -> Any:
    """``values`` (plain, resolved) checked against the group's schema: -> the typed object, or ConfigError."""
    schema = SCHEMAS[group]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        typed = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise _one_line(group, schema, error, values) from None
    _walk(group, schema, typed)
    return typed


def _check_combinations(typed: Mapping[str, Any]) -> None:
    """The settings that are allowed one by one but cannot work together."""
    data, model, attention, trainer = typed["data"], typed["model"], typed["attention"], typed["trainer"]
    needs = {"tsv": ("corpus",), "parallel": ("train", "valid", "test")}.get(data.format, ())
    for key in needs:
        if getattr(data, key) is None:
            raise ConfigError(f"data.{key} is missing: data.format={data.format} needs it (data.{key}=...)")
    if data.format == "toy" and data.toy_min_len > data.toy_max_len:
        raise ConfigError(f"data.toy_min_len={data.toy_min_len} is above data.toy_max_len={data.toy_max_len}")
    if data.src_column == data.tgt_column:
        raise ConfigError(f"data.src_column and data.tgt_column are both {data.src_column}: two different columns")
    if trainer.batch_tokens is None and trainer.batch_size is None:
        raise ConfigError("trainer.batch_tokens and trainer.batch_size are both null: give one (a positive number)")
    if len(trainer.betas) != 2:
        raise ConfigError(f"trainer.betas={trainer.betas} is not allowed: two numbers in [0, 1)")
    encoder_size = model.encoder_hidden * (2 if model.bidirectional else 1)
    if attention.name == "luong_dot" and model.decoder_hidden != encoder_size:
        raise ConfigError(
            f"attention=luong_dot needs model.decoder_hidden equal to the encoder output size ({encoder_size}), "
            f"got {model.decoder_hidden}: set model.decoder_hidden={encoder_size} or use attention=luong_general")
    if attention.name == "multihead" and attention.size % attention.heads:
        raise ConfigError(f"attention.size={attention.size} is not divisible by attention.heads={attention.heads}")
    if model.tie_embeddings and model.output_size != model.emb_size:
        raise ConfigError(f"model.tie_embeddings needs model.output_size == model.emb_size (got {model.output_size} "
                          f"and {model.emb_size})")
    device = trainer.device
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"trainer.device={device!r} is not allowed: auto, cpu, cuda or cuda:N")


def validate(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Check a composed run config (``hydra`` left out) against every group's schema and the combinations
    that cannot work: -> the typed groups; ConfigError (one line) for the first problem."""
    try:
        plain = (OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True) if isinstance(cfg, DictConfig)
                 else dict(cfg))
    except MissingMandatoryValue as error:
        raise ConfigError(f"{error.full_key} is missing: give it on the command line ({error.full_key}=...)") from None
    except OmegaConfBaseException as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"a setting cannot be read: {first}") from None
    unknown = sorted(set(plain) - set(SCHEMAS) - {"hydra"})
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]}: the groups are {', '.join(SCHEMAS)}")
    typed = {}
    for group in SCHEMAS:
        values = plain.get(group)
        if values is None and group in ("fast", "logger", "alignment", "guided_alignment"):
            values = {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{group}={values!r} is not allowed: a config group ({group}=NAME)")
        typed[group] = check_group(group, values)
    _check_combinations(typed)
    return typed
