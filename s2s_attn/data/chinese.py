"""Chinese script conversion: Tatoeba's Chinese side mixes traditional and simplified characters, so by default
(``data.zh_script=simplified``) it is converted to simplified with OpenCC before de-duplication, and a model
trained on it gets the same conversion of its input when it translates."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import DataError
from .readers import Pair

CHINESE_LANGS = ("zh", "cmn", "zho", "chi")
ZH_SCRIPTS = ("simplified", "keep")
DEFAULT_ZH_SCRIPT = "simplified"


def is_chinese(lang: str) -> bool:
    """``zh``, ``cmn``, ``zh-CN``, ``zh_Hant``, ...: a language code whose first part names Chinese."""
    return re.split(r"[-_]", str(lang).lower())[0] in CHINESE_LANGS


def chinese_sides(data_cfg: Mapping[str, Any]) -> tuple[int, ...]:
    """0 for a Chinese source, 1 for a Chinese target (from data.src_lang / data.tgt_lang)."""
    return tuple(i for i, key in enumerate(("src_lang", "tgt_lang")) if is_chinese(data_cfg.get(key) or ""))


def zh_script(data_cfg: Mapping[str, Any]) -> str:
    """``data.zh_script`` (``simplified`` when the config leaves it out)."""
    return str(data_cfg.get("zh_script", DEFAULT_ZH_SCRIPT))


def to_simplified(pairs: Sequence[Pair], sides: Sequence[int]) -> tuple[list[Pair], int]:
    """Convert the Chinese side(s) of every pair from traditional to simplified characters with OpenCC
    (its ``t2s`` conversion: characters and common phrases), so that one meaning has one spelling.
    Returns (pairs, number of pairs that changed)."""
    if not sides:
        return list(pairs), 0
    try:
        import opencc
    except ImportError as error:  # a dependency of the package; only a broken install lacks it
        raise DataError("data.zh_script=simplified needs the 'opencc' package (pip install opencc); "
                        "or set data.zh_script=keep to leave the Chinese text as it is") from error
    convert = opencc.OpenCC("t2s").convert
    converted, changed = [], 0
    for pair in pairs:
        new = tuple(convert(text) if i in sides else text for i, text in enumerate(pair))
        changed += new != tuple(pair)
        converted.append((new[0], new[1]))
    return converted, changed


def input_script_converter(data_cfg: Mapping[str, Any]) -> Callable[[str], str] | None:
    """For translating with a model: the conversion its training data had on the source side (OpenCC t2s
    for a Chinese source with ``zh_script=simplified``), else None."""
    if 0 not in chinese_sides(data_cfg) or zh_script(data_cfg) != "simplified":
        return None
    import opencc

    return opencc.OpenCC("t2s").convert


def script_sides(data_cfg: Mapping[str, Any]) -> tuple[int, ...]:
    """The sides (0 source, 1 target) whose Chinese text ``data.zh_script`` converts to simplified script."""
    script, sides = zh_script(data_cfg), chinese_sides(data_cfg)
    if script not in ZH_SCRIPTS:
        raise DataError(f"unknown data.zh_script={script!r}; valid: {', '.join(ZH_SCRIPTS)}")
    if script == "keep" or not sides:
        return ()
    try:
        import opencc  # noqa: F401
    except ImportError as error:  # a dependency of the package; only a broken install lacks it
        raise DataError("data.zh_script=simplified needs the 'opencc' package (pip install opencc); "
                        "or set data.zh_script=keep to leave the Chinese text as it is") from error
    return sides
