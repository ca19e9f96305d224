"""Several processes, one run: DistributedDataParallel under torchrun (gloo on CPUs, nccl on GPUs).

`torchrun --nproc_per_node=N -m spectro train CONFIG` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set; each trains on its share of every batch, gradients are averaged, validation
predictions are gathered so that every process takes the same decisions, and only rank 0 writes
checkpoints, TensorBoard logs and the summary.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn


@dataclasses.dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @classmethod
    def from_environment(cls, device: torch.device) -> Distributed:
        """The process group torchrun describes in the environment, joined; one process otherwise."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))

    def place(self, device: torch.device) -> torch.device:
        """This process's device: its own GPU (LOCAL_RANK) when the run uses CUDA."""
        if self.active and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def gather(self, value):
        """Every process's `value` (any picklable object), in rank order; [value] alone."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        gathered = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def any(self, flag: bool) -> bool:
        """True on every process if it is true on any (e.g. a stop request that reached one of them)."""
        return any(self.gather(bool(flag))) if self.active else bool(flag)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.destroy_process_group()

