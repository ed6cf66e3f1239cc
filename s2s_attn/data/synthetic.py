"""A synthetic translation task the code generates itself: no corpus, no network.

``reverse``: the source is a sequence of lower-case "words" (letters); the target is the same sequence
reversed and upper-cased, so target word j aligns with source word ``n - 1 - j``. A correct model
reaches near 100% exact match within a minute on a CPU, which makes the task a fast end-to-end test
and a demo whose attention map (the anti-diagonal) is known in advance.

``copy`` keeps the order (a diagonal alignment).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TOY_TASKS = ("reverse", "copy")


def make_toy_pair(rng: random.Random, task: str, vocab: list[str], min_len: int, max_len: int) -> tuple[str, str]:
    words = [rng.choice(vocab) for _ in range(rng.randint(min_len, max_len))]
    target = list(reversed(words)) if task == "reverse" else list(words)
    return " ".join(words), " ".join(w.upper() for w in target)


def toy_alignment(source: str, task: str) -> list[tuple[int, int]]:
    """Gold (source word, target word) links of a toy pair, 0-based."""
    n = len(source.split())
    return [(n - 1 - j if task == "reverse" else j, j) for j in range(n)]


def write_toy_splits(out_dir: str | os.PathLike, cfg: Mapping[str, Any]) -> dict[str, int]:
    """Write {train,valid,test}.{src,tgt} for the toy task described by ``cfg``; return the counts.

    cfg keys: toy_task ("reverse" | "copy"), toy_vocab (number of distinct words, <= 26),
    toy_min_len, toy_max_len, train_size, valid_size, test_size, split_seed.
    Valid and test pairs never occur in train.
    """
    task = cfg.get("toy_task", "reverse")
    if task not in TOY_TASKS:
        raise ValueError(f"unknown data.toy_task {task!r}; valid: {', '.join(TOY_TASKS)}")
    n_words = int(cfg.get("toy_vocab", 20))
    if not 2 <= n_words <= 26:
        raise ValueError(f"data.toy_vocab must be between 2 and 26, got {n_words}")
    vocab = [chr(ord("a") + i) for i in range(n_words)]
    min_len, max_len = int(cfg.get("toy_min_len", 3)), int(cfg.get("toy_max_len", 10))
    rng = random.Random(int(cfg.get("split_seed", 1)))
    sizes = {
        "test": int(cfg.get("test_size", 200)),
        "valid": int(cfg.get("valid_size", 200)),
        "train": int(cfg.get("train_size", 10000)),
    }
    seen: set[str] = set()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, size in sizes.items():  # held-out splits first, so train can avoid their sources
        pairs = []
        attempts = 0
        while len(pairs) < size:
            attempts += 1
            if attempts > 100 * size + 1000:
                raise ValueError("toy task too small for the requested sizes: raise toy_vocab or toy_max_len")
            src, tgt = make_toy_pair(rng, task, vocab, min_len, max_len)
            if src in seen:  # no held-out source twice, and none of them in train
                continue
            if split != "train":
                seen.add(src)
            pairs.append((src, tgt))
        for side, index in (("src", 0), ("tgt", 1)):
            tmp = out / f".{split}.{side}.tmp"
            tmp.write_text("".join(p[index] + "\n" for p in pairs), encoding="utf-8")
            os.replace(tmp, out / f"{split}.{side}")
    return sizes
