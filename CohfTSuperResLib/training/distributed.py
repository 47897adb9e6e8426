"""The process group of a training run: one process, or torchrun's ranks (NCCL on GPUs, gloo on CPUs)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from CohfTSuperResLib.inference.devices import resolve_device


class Distributed:
    """The rank, world size and device of this process; rank 0 validates and writes."""

    def __init__(self, device_arg: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(device_arg)  # under torchrun, the GPU of this process's LOCAL_RANK
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def agree(self, flags: list[int]) -> list[int]:
        """Rank 0's flags on every rank."""
        if not self.enabled:
            return flags
        tensor = torch.tensor(flags, dtype=torch.int64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(tensor, 0)
        return [int(x) for x in tensor.tolist()]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
