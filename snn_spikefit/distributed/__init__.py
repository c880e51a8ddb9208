"""torch.distributed support: the steps of this library that are not per-sample, made rank-consistent.

Everything here is a no-op in a single process (``torch.distributed`` not initialised), so the verbs call
these helpers unconditionally. Under ``torchrun`` / DDP (gloo on CPU, NCCL on GPU: the same code):

* ``wrap`` **before** DDP (DDP broadcasts rank 0's parameters, codebooks included, when it is built);
  ``wrap`` and ``prune`` refuse a ``DistributedDataParallel`` model (they replace parameters that DDP's
  reducer holds): call them on ``ddp.module`` and build DDP again.
* Codebook re-seeding depends only on the weights and the codebook, which DDP keeps identical, so it is
  deterministic and the same on every rank; :func:`check_same_model` verifies that (a checksum per rank).
* ``prune`` all-reduces its importance scores and sample counts, and checks (checksum of the kept
  indices) that every rank removes the same channels.
* ``recalibrate_bn`` computes each BatchNorm call's statistics over the global batch (all-reduced sums).
* ``accuracy`` and ``fit``'s loss history are aggregated over ranks.

>>> import torch
>>> all_reduce_sum(torch.tensor([1.0, 2.0])).tolist()    # one process: unchanged
[1.0, 2.0]
>>> rank(), world_size()
(0, 1)
"""

from __future__ import annotations

import hashlib
import functools
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import SpikeFitError, SpikeFitTypeError

__all__ = ["is_distributed", "comm_device", "rank", "world_size", "all_reduce_sum", "all_gather_cat", "checksum", "check_same",
           "check_same_model", "refuse_ddp", "unwrap_ddp", "rank_zero_only", "DistributedMismatchError"]


class DistributedMismatchError(SpikeFitError, RuntimeError):
    """Ranks that must agree (same kept channels, same weights) do not."""


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def comm_device() -> torch.device:
    """Where collectives need their tensors: the current CUDA device under NCCL, the CPU otherwise."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over ranks (a new tensor on ``t``'s device and dtype); ``t`` itself in one process."""
    if not is_distributed():
        return t
    out = t.detach().to(comm_device(), copy=True).contiguous()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(t.device)


def all_gather_cat(t: Tensor) -> Tensor:
    """Every rank's 1-D ``t`` (lengths may differ) concatenated in rank order; ``t`` itself in one process."""
    if not is_distributed():
        return t
    dev = comm_device()
    n = torch.tensor([t.numel()], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, dtype=t.dtype, device=dev)
    padded[:t.numel()] = t.reshape(-1).to(dev)
    got = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(got, padded)
    return torch.cat([g[:int(s)] for g, s in zip(got, sizes)]).to(t.device)


def checksum(*tensors: Tensor) -> int:
    """A 63-bit hash of the bytes of ``tensors`` (moved to the CPU), equal iff they are equal bit for bit."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return int.from_bytes(h.digest()[:8], "little") >> 1


def check_same(value: int, what: str) -> None:
    """Raise :class:`DistributedMismatchError` unless every rank passes the same ``value`` (e.g. a checksum)."""
    if not is_distributed():
        return
    mine = torch.tensor([value], dtype=torch.int64, device=comm_device())
    got = [torch.zeros(1, dtype=torch.int64, device=comm_device()) for _ in range(world_size())]
    dist.all_gather(got, mine)
    values = [int(g) for g in got]
    if len(set(values)) > 1:
        raise DistributedMismatchError(
            f"{what} differs between ranks (checksums {values}); every rank must see the same model and the "
            f"same data order where it is not split (seed every rank alike, wrap before DDP)")


def check_same_model(model: nn.Module, what: str = "model parameters and buffers") -> int:
    """Verify that parameters and buffers are bit-identical on every rank; returns this rank's checksum."""
    model = unwrap_ddp(model)
    value = checksum(*[t for _, t in sorted(model.state_dict().items())])
    check_same(value, what)
    return value


def refuse_ddp(model: nn.Module, verb: str) -> None:
    """Raise if ``model`` is a DDP wrapper: ``verb`` replaces parameters that DDP's reducer holds."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise SpikeFitTypeError(
            f"{verb} got a DistributedDataParallel model; it replaces parameters that DDP holds, so call "
            f"{verb}(ddp.module, ...) and build DistributedDataParallel again afterwards (wrap before DDP)")


def unwrap_ddp(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``torch.compile``) wrapper; ``model`` otherwise."""
    while isinstance(model, nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model._orig_mod
    return model


def rank_zero_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``fn`` (e.g. ``sf.freeze`` then ``sf.export_nir`` to a file) to run on rank 0 only.

    Other ranks return ``None`` and then wait at a barrier, so no rank reads the file before it is written.
    """
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        out = fn(*args, **kwargs) if rank() == 0 else None
        if is_distributed():
            dist.barrier()
        return out
    return inner
