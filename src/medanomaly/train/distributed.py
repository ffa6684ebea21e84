"""Multi-process training under ``torchrun`` (PyTorch DDP): gloo on CPU, NCCL on GPU.

``torchrun --nproc_per_node N -m medanomaly train CONFIG`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment. The training loop
(:mod:`medanomaly.train.engine`) asks :func:`context` what it is: the process group is created
once per process (and destroyed at exit); a plain ``python`` run is world size 1 and touches no
``torch.distributed`` code at all.

What the loop does with it: every rank draws the same global batch of indices and takes its
share (:func:`shard`), the model is wrapped in ``DistributedDataParallel`` (gradients averaged),
validation runs on rank 0 and its metrics are broadcast (:func:`broadcast_object`), only rank 0
writes files, and the epoch loss is summed over ranks (:func:`all_sum`).

Example:
    >>> ctx = context("cpu")        # no torchrun here: world size 1
    >>> ctx.world_size, ctx.is_main
    (1, True)
    >>> [int(i) for i in shard(__import__("torch").arange(5), ctx)]
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import atexit
from dataclasses import dataclass
from typing import Any

from medanomaly.config import env_whole_number
from medanomaly.errors import InputError

__all__ = ["DistContext", "context", "shard", "broadcast_object", "all_sum", "gather_objects", "wrap",
           "module_device", "resolve_device"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, local rank (GPU index) and torch device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the only rank that writes files and prints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(choice: str, local_rank: int = 0) -> str:
    """The torch device for a ``device`` setting: ``cpu``; ``auto`` (a GPU when one is present, else the CPU) or
    ``cuda`` (the GPU of ``local_rank``; an InputError without one).

    Example:
        >>> resolve_device("cpu")
        'cpu'
    """
    import torch

    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise InputError("device is 'cuda' but no CUDA device is available")
    return f"cuda:{local_rank % torch.cuda.device_count()}"


def context(device: str = "auto") -> DistContext:
    """This process's :class:`DistContext`; under ``torchrun`` (``WORLD_SIZE`` > 1) the default
    process group is initialised on first use (NCCL for CUDA devices, else gloo).

    Args:
        device: ``auto``, ``cpu`` or ``cuda`` (the settings' ``device``).
    """
    world = env_whole_number("WORLD_SIZE", 1, low=1)
    rank, local = env_whole_number("RANK", 0), env_whole_number("LOCAL_RANK", 0)
    dev = resolve_device(device, local)
    if world > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if dev.startswith("cuda"):
                torch.cuda.set_device(dev)
            dist.init_process_group(backend="nccl" if dev.startswith("cuda") else "gloo")
            atexit.register(_destroy)
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev)


def _destroy() -> None:
    """At exit: on gloo, wait (up to 30 s) until every rank is here, then tear the process group down.
    Without the barrier the first rank to finish closed its sockets while another was still tearing down,
    and that one died of SIGABRT ("terminate called without an active exception") after its work was done:
    4 of 17 two-process runs of tests/integration/test_ddp.py, none of 28 with it."""
    from datetime import timedelta

    import torch.distributed as dist

    if not dist.is_initialized():
        return
    if dist.get_backend() == "gloo":
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=30))
        except RuntimeError:  # a peer is already gone (it failed): tear down anyway
            pass
    dist.destroy_process_group()


def shard(indices: Any, ctx: DistContext) -> Any:
    """This rank's contiguous share of a global batch of indices (shares differ by at most one)."""
    if not ctx.distributed:
        return indices
    import torch

    return torch.tensor_split(indices, ctx.world_size)[ctx.rank]


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable Python object: metric dicts, flags)."""
    if not ctx.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64)."""
    if not ctx.distributed:
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def wrap(module: Any, ctx: DistContext, find_unused_parameters: bool = False) -> Any:
    """``module`` wrapped in ``DistributedDataParallel`` (unchanged at world size 1). On CUDA,
    batch norm layers become ``SyncBatchNorm`` (PyTorch's SyncBatchNorm is GPU-only, so on CPU
    batch statistics stay per rank)."""
    if not ctx.distributed:
        return module
    import torch

    if ctx.device.startswith("cuda"):
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=[torch.device(ctx.device).index],
                                                         find_unused_parameters=find_unused_parameters)
    return torch.nn.parallel.DistributedDataParallel(module, find_unused_parameters=find_unused_parameters)


def module_device(module: Any) -> Any:
    """The torch device ``module``'s first parameter lives on (the CPU for a module without parameters or for a
    plain callable): where its inputs must go.

    Example:
        >>> import torch
        >>> module_device(torch.nn.Linear(2, 1)), module_device(torch.nn.ReLU()), module_device(abs)
        (device(type='cpu'), device(type='cpu'), device(type='cpu'))
    """
    import torch

    parameters = getattr(module, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")
