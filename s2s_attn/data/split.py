"""Cleaning and splitting: length filters, de-duplication, and the split grouped by source sentence."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from .errors import DataError
from .readers import Pair
from .text import count_words, source_key


def filter_pairs(
    pairs: Iterable[Pair],
    min_words: int = 1,
    max_words: int | None = 50,
    max_ratio: float | None = 3.0,
) -> tuple[list[Pair], dict[str, int]]:
    """Drop pairs that are too short, too long, or too different in length.

    Lengths come from `count_words` (words, or characters for Chinese/Japanese). A pair is removed
    when its shorter side has fewer than `min_words` ("too_short"), else when its longer side has more
    than `max_words` ("too_long"), else when longer/shorter exceeds `max_ratio` ("length_ratio").
    `None` turns a limit off. Each removed pair is counted once, under the first rule it fails.

    Returns the kept pairs (in order) and ``{"too_short": n, "too_long": n, "length_ratio": n}``.
    """
    kept: list[Pair] = []
    removed = {"too_short": 0, "too_long": 0, "length_ratio": 0}
    for pair in pairs:
        a, b = count_words(pair[0]), count_words(pair[1])
        shorter, longer = min(a, b), max(a, b)
        if shorter < min_words:
            removed["too_short"] += 1
        elif max_words is not None and longer > max_words:
            removed["too_long"] += 1
        elif max_ratio is not None and (shorter == 0 or longer / shorter > max_ratio):
            removed["length_ratio"] += 1
        else:
            kept.append(pair)
    return kept, removed


def deduplicate(pairs: Iterable[Pair]) -> tuple[list[Pair], int]:
    """Drop exact duplicate (source, target) pairs, keeping the first; return (pairs, number removed)."""
    seen: set[Pair] = set()
    kept: list[Pair] = []
    removed = 0
    for pair in pairs:
        if pair in seen:
            removed += 1
        else:
            seen.add(pair)
            kept.append(pair)
    return kept, removed


def split_grouped(pairs: Sequence[Pair], valid_size: int, test_size: int, seed: int) -> dict[str, list[Pair]]:
    """Split pairs into train/valid/test so that no valid or test source sentence occurs in train.

    Pairs are grouped by `source_key` of their source (lower-cased, without punctuation and whitespace),
    so all translations of one source sentence land in the same split. The groups, in order of first
    appearance, are shuffled with ``random.Random(seed)``; then whole groups go to test until it holds at
    least `test_size` pairs, then to valid until it holds at least `valid_size`, and the rest to train.
    So test and valid may be a little larger than asked (by less than one group; Tatoeba groups are a
    handful of pairs), and the test split does not depend on `valid_size`. Within each split, pairs keep
    their input order. The result depends only on the input and `seed`, not on Python's hash seed.

    Raises DataError if a size is below 1 or if the groups run out before all three splits are non-empty.
    """
    if valid_size < 1 or test_size < 1:
        raise DataError(
            f"valid_size={valid_size} and test_size={test_size} must both be at least 1. "
            "Set data.valid_size and data.test_size to the number of pairs wanted in each split."
        )
    groups: dict[str, list[int]] = {}
    for index, (src, _) in enumerate(pairs):
        groups.setdefault(source_key(src), []).append(index)
    order = list(groups.values())
    random.Random(seed).shuffle(order)

    test: list[int] = []
    valid: list[int] = []
    train: list[int] = []
    for group in order:
        if len(test) < test_size:
            test.extend(group)
        elif len(valid) < valid_size:
            valid.extend(group)
        else:
            train.extend(group)
    if not train or not valid:
        raise DataError(
            f"not enough data to split: {len(pairs):,} pairs with {len(groups):,} distinct source sentences "
            f"cannot fill test_size={test_size:,} and valid_size={valid_size:,} and leave training data. "
            "Lower data.valid_size and data.test_size, relax the length filters, or use a larger corpus."
        )
    return {
        "train": [pairs[i] for i in sorted(train)],
        "valid": [pairs[i] for i in sorted(valid)],
        "test": [pairs[i] for i in sorted(test)],
    }


def count_sources_in(pairs: Iterable[Pair], reference: Iterable[Pair]) -> int:
    """Number of pairs in `pairs` whose source (by `source_key`) also occurs in `reference`."""
    seen = {source_key(src) for src, _ in reference}
    return sum(1 for src, _ in pairs if source_key(src) in seen)
