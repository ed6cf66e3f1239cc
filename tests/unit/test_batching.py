"""Length-bucketed batching."""

import numpy as np
import pytest

from s2s_attn.data.batching import BatchIterator, bucket_batches, make_batch
from s2s_attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


def lengths(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 40, n), rng.integers(1, 40, n)


def test_every_example_is_in_exactly_one_batch():
    src, tgt = lengths()
    batches = bucket_batches(src, tgt, batch_tokens=300, seed=3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))


def test_token_budget_is_respected_and_lengths_are_similar():
    src, tgt = lengths(5000)
    for batch in bucket_batches(src, tgt, batch_tokens=300, seed=3):
        longest = max(max(src[batch]), max(tgt[batch])) + 1
        assert len(batch) == 1 or len(batch) * longest <= 300
        padded = len(batch) * longest
        real = sum(max(s, t) + 1 for s, t in zip(src[batch], tgt[batch]))
        if longest >= 10:  # (the rare short sentences share a few batches)
            assert real / padded > 0.85  # buckets waste little on padding


def test_sentence_batches_hold_at_most_batch_size():
    src, tgt = lengths()
    assert max(len(b) for b in bucket_batches(src, tgt, batch_size=16, seed=1)) == 16


def test_shuffling_is_seeded():
    src, tgt = lengths()
    a = bucket_batches(src, tgt, batch_tokens=300, seed=7)
    b = bucket_batches(src, tgt, batch_tokens=300, seed=7)
    c = bucket_batches(src, tgt, batch_tokens=300, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("kwargs", [{}, {"batch_tokens": 0}, {"batch_size": -4}])
def test_missing_or_non_positive_batch_size_is_a_clear_error(kwargs):
    src, tgt = lengths(10)
    with pytest.raises(ValueError, match="batch"):
        bucket_batches(src, tgt, **kwargs)


def test_batch_tensors_have_bos_eos_and_padding():
    batch = make_batch([[5, 6, 7], [8]], [[9], [10, 11]], [0, 1])
    assert batch.src.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.src_len.tolist() == [4, 2]
    assert batch.tgt_in.tolist() == [[BOS_ID, 9, PAD_ID], [BOS_ID, 10, 11]]
    assert batch.tgt_out.tolist() == [[9, EOS_ID, PAD_ID], [10, 11, EOS_ID]]
    assert batch.num_tgt_tokens == 5


def test_iterator_resumes_at_the_same_batch():
    src = [[1] * n for n in range(1, 60)]
    it = BatchIterator(src, src, batch_tokens=40, batch_size=None, seed=5)
    for _ in range(len(it) + 3):  # into the second epoch
        next(it)
    state = it.state_dict()
    expected = [next(it)[2].indices for _ in range(4)]
    resumed = BatchIterator(src, src, batch_tokens=40, batch_size=None, seed=5)
    resumed.load_state_dict(state)
    assert [next(resumed)[2].indices for _ in range(4)] == expected
