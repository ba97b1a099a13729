"""The few ``torch.distributed`` calls of the training loop, as no-ops on one process.

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`init_distributed`
reads them and starts a process group (NCCL on GPUs, gloo on CPUs).  Without them
everything here runs on one process and the collectives return their input.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

__all__ = [
    "DistInfo",
    "init_distributed",
    "all_reduce_sum",
    "all_gather_objects",
    "barrier",
    "wrap_ddp",
    "no_sync",
    "shutdown",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the run.

    Attributes
    ----------
    rank, world, local_rank : int
        Global rank, number of processes and rank on this machine.
    enabled : bool
        Whether a process group is running (``world > 1``).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the process that writes files and reports)."""
        return self.rank == 0


def _default_device(device_arg: str | None) -> str:
    return device_arg or ("cuda" if torch.cuda.is_available() else "cpu")


def init_distributed(device_arg: str | None) -> tuple[DistInfo, torch.device]:
    """This process's :class:`DistInfo` and device; starts the process group under torchrun.

    Parameters
    ----------
    device_arg : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``... (default: CUDA if available).  Under
        torchrun a CUDA request means the GPU ``LOCAL_RANK``.

    Raises
    ------
    ValueError
        If CUDA is requested but not available.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        want_cuda = _default_device(device_arg).startswith("cuda")
        if want_cuda:
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if want_cuda else "gloo")
        return DistInfo(rank, world, local, True), device
    device = torch.device(_default_device(device_arg))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device_arg!r} requested but CUDA is not available")
    return DistInfo(), device


def all_reduce_sum(values: list[float], info: DistInfo, device) -> list[float]:
    """``values`` summed over the processes (in float64); ``values`` itself on one process."""
    if not info.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every process's ``obj`` (picklable), by rank; ``[obj]`` on one process."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    """Wait for every process (nothing on one process)."""
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def wrap_ddp(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel`, or as is on one process."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(model: torch.nn.Module, info: DistInfo, sync: bool):
    """A context that skips DDP's gradient all-reduce unless ``sync`` (gradient accumulation)."""
    if info.enabled and not sync:
        return model.no_sync()
    return contextlib.nullcontext()


def shutdown(info: DistInfo) -> None:
    """End the process group (nothing on one process)."""
    if info.enabled:
        import torch.distributed as dist

        dist.destroy_process_group()
