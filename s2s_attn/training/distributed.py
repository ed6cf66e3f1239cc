"""Data-parallel training on several processes: `torch.distributed` + DistributedDataParallel, started
by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT).

    torchrun --nproc_per_node=2 -m s2s_attn.cli.train trainer=ddp data=toy

Every process builds the same data order and the same model (same seed; DDP also broadcasts rank 0's
weights), takes its share of each global batch (`s2s_attn.data.batching.shard`), and DDP averages the gradients, so the
processes stay identical. Only rank 0 evaluates and writes (logs, TensorBoard, checkpoints); the
decisions that depend on it or on its clock (stop, time-based learning rate) are broadcast from it.
Backend: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), Gloo on the CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Long enough for rank 0 to prepare a large corpus while the others wait for it.
TIMEOUT = timedelta(minutes=60)


def launched_by_torchrun() -> bool:
    """True when the environment has torchrun's (or another launcher's) WORLD_SIZE and RANK."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


@dataclass
class Distributed:
    """Where this process stands in the job; a world of one when training is not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that evaluates and writes."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and give its result to every rank; an exception it raises is raised
        on every rank (so no rank waits forever for a rank that failed)."""
        if not self.enabled:
            return fn()
        outcome: tuple[bool, Any] = (True, None)
        if self.is_main:
            try:
                outcome = (True, fn())
            except Exception as error:  # re-raised below on every rank, rank 0 included
                outcome = (False, error)
        ok, value = self.broadcast(outcome)
        if not ok:
            raise value
        return value

    def first_on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every rank, rank 0 first, then the first process of each other node, then the rest:
        for work that fills a cache (data preparation, SentencePiece) that the later ones then read.
        An exception on rank 0 is raised on every rank."""
        if not self.enabled:
            return fn()
        result: Any = None
        error: Exception | None = None
        if self.is_main:
            try:
                result = fn()
            except Exception as caught:  # re-raised below on every rank
                error = caught
        error = self.broadcast(error)
        if error is not None:
            raise error
        if not self.is_main and self.local_rank == 0:  # another node: its own disk may not have the cache
            result = fn()
        self.barrier()
        if self.local_rank != 0:
            result = fn()
        return result

    def agree(self, reason: str | None, seconds: float) -> tuple[str | None, float]:
        """Rank 0's stop decision (None: go on) and its clock (seconds since the run started), on every
        rank: each step's learning rate and the last step must be the same everywhere."""
        if not self.enabled:
            return reason, seconds
        flags = torch.tensor([1.0 if reason else 0.0, seconds], dtype=torch.float64, device=self.device)
        dist.broadcast(flags, src=0)
        reason = self.broadcast(reason) if flags[0].item() else None  # never this rank's own opinion
        return reason, float(flags[1].item())

    @property
    def device(self) -> torch.device:
        """Where collectives of tensors run: this process's GPU with NCCL, the CPU with Gloo."""
        if self.enabled and dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over the ranks (in place, and returned)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, Gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def setup(ddp: bool, device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group when ``trainer.ddp`` is on and torchrun started this process; return where
    this process stands and its device (``cuda:LOCAL_RANK`` on CUDA).

    A single process (no torchrun, or ``--nproc_per_node=1``) trains as usual. Several processes without
    ``trainer.ddp`` would be independent runs writing into the same directory: a ValueError.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if launched_by_torchrun() else 1
    if not ddp:
        if world_size > 1:
            raise ValueError(f"started by torchrun with {world_size} processes but trainer.ddp is off: "
                             "add trainer=ddp (or run one process)")
        return Distributed(), device
    if world_size == 1:
        if not launched_by_torchrun():
            log.info("trainer.ddp: not started by torchrun, training in one process")
        return Distributed(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device), timeout=TIMEOUT)
    ctx = Distributed(rank=rank, world_size=dist.get_world_size(), local_rank=local_rank)
    log.info("DDP: rank %d of %d (local rank %d), backend %s, device %s", rank, ctx.world_size, local_rank,
             dist.get_backend(), device)
    return ctx, device


def cleanup() -> None:
    """Leave the process group (when one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()



class NullWriter:
    """Stands in for the TensorBoard SummaryWriter on ranks other than 0: every call does nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None
