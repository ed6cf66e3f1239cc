"""Cleaning and splitting: length filters, de-duplication, and the split grouped by source sentence.

De-duplication and the split work on 64-bit hashes in numpy arrays (`first_occurrences`, `grouped_split_labels`),
so a corpus of tens of millions of pairs is split without holding its text; `deduplicate` and `split_grouped` are
the same rules for pairs in a list.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterable, Sequence

import numpy as np

from .errors import DataError
from .readers import Pair
from .text import count_words, source_key

#: Split labels of `grouped_split_labels`.
TRAIN, VALID, TEST = 0, 1, 2


def length_rule(src: str, tgt: str, min_words: int = 1, max_words: int | None = 50,
                max_ratio: float | None = 3.0) -> str | None:
    """The first length filter a pair fails ("too_short", "too_long", "length_ratio"), or None to keep it.

    Lengths come from `count_words` (words, or characters for Chinese/Japanese). A pair fails "too_short" when
    its shorter side has fewer than `min_words`, else "too_long" when its longer side has more than `max_words`,
    else "length_ratio" when longer/shorter exceeds `max_ratio`. `None` turns a limit off.
    """
    a, b = count_words(src), count_words(tgt)
    shorter, longer = min(a, b), max(a, b)
    if shorter < min_words:
        return "too_short"
    if max_words is not None and longer > max_words:
        return "too_long"
    if max_ratio is not None and (shorter == 0 or longer / shorter > max_ratio):
        return "length_ratio"
    return None


def filter_pairs(
    pairs: Iterable[Pair],
    min_words: int = 1,
    max_words: int | None = 50,
    max_ratio: float | None = 3.0,
) -> tuple[list[Pair], dict[str, int]]:
    """Drop pairs that fail `length_rule`; each removed pair is counted once, under the first rule it fails.

    Returns the kept pairs (in order) and ``{"too_short": n, "too_long": n, "length_ratio": n}``.
    """
    kept: list[Pair] = []
    removed = {"too_short": 0, "too_long": 0, "length_ratio": 0}
    for pair in pairs:
        rule = length_rule(pair[0], pair[1], min_words, max_words, max_ratio)
        if rule is None:
            kept.append(pair)
        else:
            removed[rule] += 1
    return kept, removed


def first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """Ascending positions of the first occurrence of each distinct value of ``hashes``."""
    _, first = np.unique(hashes, return_index=True)
    return np.sort(first)


def deduplicate(pairs: Sequence[Pair]) -> tuple[list[Pair], int]:
    """Drop exact duplicate (source, target) pairs, keeping the first; return (pairs, number removed)."""
    from .stream import hash64

    keep = first_occurrences(hash64([src + "\t" + tgt for src, tgt in pairs]))
    return [pairs[i] for i in keep], len(pairs) - len(keep)


def grouped_split_labels(key_hashes: np.ndarray, valid_size: int, test_size: int, seed: int) -> np.ndarray:
    """Split rows into train/valid/test (`TRAIN`, `VALID`, `TEST` per row) so that no valid or test source
    sentence occurs in train; ``key_hashes`` holds each row's hash of `source_key` of its source.

    Rows with the same key form a group, so all translations of one source sentence land in the same split.
    The groups, in order of first appearance, are shuffled with ``random.Random(seed)``; then whole groups go to
    test until it holds at least `test_size` rows, then to valid until it holds at least `valid_size`, and the
    rest to train. So test and valid may be a little larger than asked (by less than one group; Tatoeba groups
    are a handful of pairs), and the test split does not depend on `valid_size`. The result depends only on the
    input and `seed`, not on Python's hash seed.

    Raises DataError if a size is below 1 or if the groups run out before all three splits are non-empty.
    """
    if valid_size < 1 or test_size < 1:
        raise DataError(
            f"valid_size={valid_size} and test_size={test_size} must both be at least 1. "
            "Set data.valid_size and data.test_size to the number of pairs wanted in each split."
        )
    _, first, inverse = np.unique(key_hashes, return_index=True, return_inverse=True)
    appearance = np.empty(len(first), dtype=np.int64)
    appearance[np.argsort(first, kind="stable")] = np.arange(len(first))
    group = appearance[inverse.reshape(-1)]  # (rows,) group number in order of first appearance
    n_groups = len(first)
    order = array("q", range(n_groups))  # shuffled as a list of numbers would be, 8 bytes a group
    random.Random(seed).shuffle(order)
    order_np = np.frombuffer(order, dtype=np.int64)
    sizes = np.bincount(group, minlength=n_groups)[order_np]
    filled = np.cumsum(sizes)  # rows in the first k+1 shuffled groups
    n_test = min(int(np.searchsorted(filled, test_size)) + 1, n_groups)  # groups until test holds test_size
    before_valid = filled[n_test - 1]
    n_valid = min(int(np.searchsorted(filled, before_valid + valid_size)) + 1, n_groups) - n_test
    if n_test + n_valid >= n_groups or n_valid == 0:
        raise DataError(
            f"not enough data to split: {len(key_hashes):,} pairs with {n_groups:,} distinct source sentences "
            f"cannot fill test_size={test_size:,} and valid_size={valid_size:,} and leave training data. "
            "Lower data.valid_size and data.test_size, relax the length filters, or use a larger corpus."
        )
    label_of_group = np.full(n_groups, TRAIN, dtype=np.int8)
    label_of_group[order_np[:n_test]] = TEST
    label_of_group[order_np[n_test : n_test + n_valid]] = VALID
    return label_of_group[group]


def split_grouped(pairs: Sequence[Pair], valid_size: int, test_size: int, seed: int) -> dict[str, list[Pair]]:
    """`grouped_split_labels` for pairs in a list: {"train": pairs, "valid": ..., "test": ...}, each in input
    order."""
    from .stream import hash64

    labels = grouped_split_labels(hash64([source_key(src) for src, _ in pairs]), valid_size, test_size, seed)
    return {name: [pairs[i] for i in np.flatnonzero(labels == label)]
            for name, label in (("train", TRAIN), ("valid", VALID), ("test", TEST))}
