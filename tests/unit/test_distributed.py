"""Data-parallel training, the parts one process can check: every rank's share of the bucketed batches
(disjoint, together all the data, reshuffled each epoch), the global token count each rank divides its
loss by, and the world of one that training uses without torchrun. The 2-process run through torchrun
is tests/integration/test_ddp.py."""

from pathlib import Path

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


def _two_ranks(rank: int, store: str, out: str) -> None:
    """One of two Gloo processes: exercise the helpers, write what each rank saw to ``out/rank``."""
    import json
    import time

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    ctx = Distributed(rank=rank, world_size=2)
    seen = {}
    try:
        ctx.on_main(lambda: (_ for _ in ()).throw(ValueError("rank 0 could not")))
    except ValueError as error:
        seen["error"] = str(error)
    seen["value"] = ctx.on_main(lambda: f"from rank {rank}")
    seen["agree"] = ctx.agree("max_steps" if rank == 0 else None, 10.0 + rank)
    seen["go_on"] = ctx.agree(None if rank == 0 else "stop", 5.0)
    seen["gathered"] = ctx.all_gather(rank * 10)
    order = Path(out) / "order"

    def note():
        time.sleep(0.3 if rank == 0 else 0.0)  # rank 1 is faster, yet must wait for rank 0
        with open(order, "a") as f:
            f.write(f"{rank}\n")
        return rank

    seen["first"] = ctx.first_on_main(note)
    (Path(out) / str(rank)).write_text(json.dumps(seen))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_share_rank_0s_decisions_and_errors(tmp_path):
    import json

    import torch.multiprocessing as mp

    mp.spawn(_two_ranks, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    seen = [json.loads((tmp_path / str(r)).read_text()) for r in range(2)]
    for rank, s in enumerate(seen):
        assert s["error"] == "rank 0 could not"  # raised on the rank that waited for it too
        assert s["value"] == "from rank 0"
        assert s["agree"] == ["max_steps", 10.0] and s["go_on"] == [None, 5.0]  # rank 0's stop and clock
        assert s["gathered"] == [0, 10]
        assert s["first"] == rank  # every rank ran it, for itself
    assert (tmp_path / "order").read_text().split() == ["0", "1"]  # rank 0 first
