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
* ``accuracy`` and ``fit``'s loss history are aggregated over ranks; ``accuracy`` and ``evaluate`` drop
  the samples a ``DistributedSampler`` repeats to pad the last ranks (:func:`real_samples`).

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
from torch.utils.data import DistributedSampler

from ..errors import SpikeFitError, SpikeFitTypeError

__all__ = ["is_distributed", "comm_device", "rank", "world_size", "all_reduce_sum", "all_gather_cat", "checksum", "check_same",
           "check_same_model", "real_samples", "local_neuron_state", "refuse_ddp", "unwrap_ddp", "rank_zero_only", "DistributedMismatchError"]


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


def real_samples(data: Any) -> int | None:
    """How many of the samples ``data`` yields on this rank are real, not a ``DistributedSampler``'s padding.

    Without ``drop_last``, ``DistributedSampler`` pads the index list of a dataset of ``N`` samples to
    ``total_size = W * ceil(N / W)`` by repeating its first indices, then gives rank ``r`` the positions
    ``r, r + W, r + 2W, ...``. Position ``r + iW`` is padding iff it is ``>= N``, so this rank's real samples
    are its first ``max(0, ceil((N - r) / W))``, and the padding is its tail. ``None`` when ``data`` is not a
    ``DataLoader`` over a padding ``DistributedSampler`` (every sample it yields is real).

    >>> from torch.utils.data import DataLoader
    >>> ds = list(range(5))
    >>> [real_samples(DataLoader(ds, sampler=DistributedSampler(ds, num_replicas=2, rank=r))) for r in (0, 1)]
    [3, 2]
    """
    sampler = getattr(data, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    n, w, r = len(sampler.dataset), sampler.num_replicas, sampler.rank  # type: ignore[arg-type]
    return max(0, -(-(n - r) // w))


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


def local_neuron_state(model: nn.Module, neurons: list[nn.Module]) -> None:
    """Stop a DDP ``model`` from broadcasting the buffers of ``neurons`` (their state) from rank 0.

    DDP copies rank 0's buffers into every rank at the start of each forward call (``broadcast_buffers``,
    on by default). A spiking model is called once per timestep, and snnTorch keeps the membrane as a buffer:
    the copy writes rank 0's membrane into the tensor rank 1's autograd graph saved at the last step, without
    a version bump, so rank 1's gradient is computed from rank 0's membranes (measured: 1.4e-3 off the mean of
    the two half-batch gradients after one step; 0.0 with this). Neuron state belongs to each rank's own
    samples, so its buffers are added to the names DDP leaves alone (``parameters_to_ignore``, the set
    ``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model`` fills); BatchNorm's running
    statistics and other buffers are still broadcast. A no-op for a model that is not DDP.
    """
    while hasattr(model, "_orig_mod"):  # torch.compile(ddp)
        model = model._orig_mod
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        return
    ids = {id(n) for n in neurons}
    names = {f"{name}.{b}" if name else b for name, mod in model.module.named_modules() if id(mod) in ids
             for b, _ in mod.named_buffers(recurse=False)}
    ignore = getattr(model, "parameters_to_ignore", None)
    if isinstance(ignore, set) and hasattr(model, "_assign_modules_buffers"):
        if names <= ignore:  # an earlier run of this DDP model did it (run calls this once per batch)
            return
        ignore.update(names)
        model._assign_modules_buffers()  # DDP tests this list before it refreshes it: none left, no broadcast
    elif names:  # a torch without that set: no buffer is broadcast (neuron state must not be)
        for flag in ("forward_sync_buffers", "broadcast_buffers"):
            if hasattr(model, flag):
                setattr(model, flag, False)


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


from .syncbn import SyncBatchNorm1d, SyncBatchNorm2d, SyncBatchNorm3d, sync_batchnorm, unsync_batchnorm  # noqa: E402

__all__ += ["SyncBatchNorm1d", "SyncBatchNorm2d", "SyncBatchNorm3d", "sync_batchnorm", "unsync_batchnorm"]
