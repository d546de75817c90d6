"""torch.distributed for the trainer: started by ``torchrun`` (env ``RANK``/``WORLD_SIZE``), gloo on
CPU and nccl on CUDA, with a collective timeout so a crashed rank makes the others fail instead of
hanging forever."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..device import resolve_device

__all__ = ["DistInfo", "init_distributed", "cleanup", "all_reduce_sum", "barrier", "broadcast_flag", "max_over_ranks"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> tuple[DistInfo, torch.device]:
    """Join the process group described by torchrun's environment (a no-op for one process).

    Returns the rank info and this process's device (``cuda:LOCAL_RANK`` when CUDA is used).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local), dev


def cleanup(*, wait_for_all: bool = False, timeout_s: float = 60.0) -> None:
    """Leave the process group. With ``wait_for_all`` (a run that ended normally) every rank first
    checks in at the rendezvous store and waits for the others: a rank closing its gloo sockets
    while a peer still writes its last message makes that peer abort ("Connection reset by peer",
    more likely on a loaded machine). The store is torchrun's, not a peer's, so it stays up."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait_for_all:
        _store_barrier("globalctx/exit", timeout_s)
    dist.destroy_process_group()


def _store_barrier(key: str, timeout_s: float) -> None:
    """Every rank adds 1 to ``key`` and waits (at most ``timeout_s``) until all have."""
    import time

    try:
        store = dist.distributed_c10d._get_default_store()
    except Exception:  # no store to meet at: leave as before
        return
    world = dist.get_world_size()
    store.add(key, 1)
    deadline = time.monotonic() + timeout_s
    while store.add(key, 0) < world and time.monotonic() < deadline:
        time.sleep(0.02)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (identity for one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (used to stop all ranks together)."""
    return max_over_ranks(1 if flag else 0, device) > 0


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest ``value`` (a non-negative int) over all ranks, on every rank (e.g. the number of
    the signal one rank received, 0 for none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([float(value)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
