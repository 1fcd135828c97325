"""Multi-process training through torchrun: who am I, and combining results across processes
(validation's scores are summed by `segcli.evaluation.scores.Scoring`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """This process's place in a `torchrun` job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start(device_name: str) -> Distributed:
    """Join the process group torchrun describes in the environment (no-op without it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    context = Distributed(
        int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0"))
    )
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(context.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return context


def stop(context: Distributed) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def mean_across(value: torch.Tensor) -> torch.Tensor:
    value = value.clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def min_across(count: int, device: torch.device) -> int:
    """The smallest of every process's `count` (on `device`: NCCL reduces GPU tensors only)."""
    value = torch.tensor(count, dtype=torch.int64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value)


def broadcast_text(text: str | None, context: Distributed) -> str:
    """Rank 0's string (e.g. the run folder it created), on every process."""
    holder = [text]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
