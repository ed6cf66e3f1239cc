"""Data-parallel training, the parts one process can check: every rank's share of the bucketed batches
(disjoint, together all the data, reshuffled each epoch), the global token count each rank divides its
loss by, and the world of one that training uses without torchrun. The 2-process run through torchrun
is tests/integration/test_ddp.py."""

import numpy as np
import pytest

from s2s_attn.data.batching import BatchIterator, shard
from s2s_attn.training import distributed
from s2s_attn.training.distributed import Distributed


def toy_pairs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    src = [list(rng.integers(4, 30, rng.integers(1, 20))) for _ in range(n)]
    tgt = [list(rng.integers(4, 30, rng.integers(1, 20))) for _ in range(n)]
    return src, tgt


def iterators(world_size, batch_tokens=120, seed=5, n=300):
    src, tgt = toy_pairs(n)
    return [BatchIterator(src, tgt, batch_tokens, None, seed=seed, rank=r, world_size=world_size)
            for r in range(world_size)]


def one_epoch(iterator):
    """The batches up to the end of an epoch (the next epoch's, when the current one is done)."""
    out = [next(iterator)[2]]
    while iterator.position < len(iterator):
        out.append(next(iterator)[2])
    return out


def test_shard_is_strided_disjoint_and_covering():
    indices = np.array([7, 3, 9, 1, 4])
    parts = [shard(indices, r, 2) for r in range(2)]
    assert [p.tolist() for p in parts] == [[7, 9, 4], [3, 1]]
    assert sorted(np.concatenate(parts).tolist()) == sorted(indices.tolist())


@pytest.mark.parametrize("world_size", [2, 3])
def test_the_ranks_shares_of_each_global_batch_are_disjoint_and_make_up_the_batch(world_size):
    ranks = iterators(world_size)
    single = iterators(1)[0]
    epochs = [one_epoch(it) for it in ranks]
    whole = one_epoch(single)
    assert len({len(e) for e in epochs}) == 1  # every rank takes the same number of steps
    assert len(epochs[0]) == len(whole)  # no global batch here has fewer sentences than ranks
    for step, global_batch in enumerate(whole):
        shares = [e[step].indices for e in epochs]
        flat = [i for s in shares for i in s]
        assert len(flat) == len(set(flat)), "two ranks got the same sentence"
        assert sorted(flat) == sorted(global_batch.indices)
        assert all(e[step].total_tgt_tokens == global_batch.num_tgt_tokens for e in epochs)
        assert sum(e[step].num_tgt_tokens for e in epochs) == global_batch.num_tgt_tokens
        assert global_batch.loss_tokens == global_batch.num_tgt_tokens  # one process: its own tokens


def test_an_epoch_of_all_ranks_covers_every_example_once_and_the_next_epoch_is_reshuffled():
    ranks = iterators(2)
    first = [one_epoch(it) for it in ranks]
    second = [one_epoch(it) for it in ranks]
    assert all(it.epoch == 1 for it in ranks)
    seen = [i for epoch in first for batch in epoch for i in batch.indices]
    assert sorted(seen) == list(range(300))
    again = [i for epoch in second for batch in epoch for i in batch.indices]
    assert sorted(again) == list(range(300))
    assert [b.indices for b in first[0]] != [b.indices for b in second[0]]  # another order in epoch 1


def test_the_shares_follow_a_restored_data_position():
    ranks = iterators(2)
    for _ in range(5):
        for it in ranks:
            next(it)
    restored = iterators(2)
    for it, new in zip(ranks, restored):
        new.load_state_dict(it.state_dict())
        assert next(new)[2].indices == next(it)[2].indices


def test_a_global_batch_smaller_than_the_world_is_passed_over_by_every_rank():
    src, tgt = [[5], [6, 7], [8]], [[9], [10], [11, 12]]
    ranks = [BatchIterator(src, tgt, None, 2, seed=0, rank=r, world_size=2) for r in range(2)]
    batches = [[next(it)[2] for _ in range(3)] for it in ranks]  # each epoch: a batch of 2 and one of 1
    assert all(len(b.indices) == 1 for rank in batches for b in rank)
    assert ranks[0].skipped_small == ranks[1].skipped_small >= 1
    assert [b.total_tgt_tokens for b in batches[0]] == [b.total_tgt_tokens for b in batches[1]]


def test_a_rank_outside_the_world_is_refused():
    src, tgt = toy_pairs(10)
    with pytest.raises(ValueError, match="rank 2"):
        BatchIterator(src, tgt, 100, None, seed=0, rank=2, world_size=2)


def test_without_torchrun_training_is_one_process(monkeypatch):
    import torch

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx, device = distributed.setup(True, torch.device("cpu"))
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    assert device == torch.device("cpu")
    assert ctx.on_main(lambda: 42) == 42 and ctx.first_on_main(lambda: "x") == "x"
    assert ctx.agree("max_steps", 3.5) == ("max_steps", 3.5) and ctx.all_gather(1) == [1]


def test_several_processes_without_trainer_ddp_is_an_error(monkeypatch):
    import torch

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="trainer=ddp"):
        distributed.setup(False, torch.device("cpu"))


def test_backend_follows_the_device():
    import torch

    assert distributed.backend_for(torch.device("cuda", 1)) == "nccl"
    assert distributed.backend_for(torch.device("cpu")) == "gloo"


def test_only_rank_0_is_main():
    assert Distributed(rank=0, world_size=2).is_main and not Distributed(rank=1, world_size=2).is_main
