"""BatchNorm that trains on the global batch under ``torch.distributed``, on the CPU (gloo) as on GPUs.

Under DDP each rank's BatchNorm normalises its own share of the batch, so N processes train a different
model than one process on the whole batch. ``nn.SyncBatchNorm`` fixes that on GPUs only (it refuses CPU
tensors), and it is a different class (``isinstance(m, nn.BatchNorm2d)`` is false), which ``prune``'s
surgery, ``check`` and NIR export do not know. :func:`sync_batchnorm` instead turns every ``BatchNorm1d/2d/3d``
into :class:`SyncBatchNorm1d/2d/3d` in place (a subclass: the same object, parameters and buffers, still
an ``nn.BatchNorm2d``), whose training forward in a process group of more than one process is

.. math::

    n = \\sum_r n_r, \\quad \\mu = \\frac{1}{n} \\sum_r \\sum_{i \\in r} x_i, \\quad
    \\sigma^2 = \\frac{1}{n} \\sum_r \\sum_{i \\in r} (x_i - \\mu)^2, \\quad
    y = \\gamma \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} + \\beta

per channel, with the two sums all-reduced by a differentiable all-reduce (its backward all-reduces the
gradients, so every rank's input gets the gradient of the sum of all ranks' losses, and DDP's average of
the parameter gradients is the gradient of the global mean loss). The running statistics take
``mu`` and the unbiased ``sigma^2 n / (n - 1)``, as one process on the whole batch. Outside training or in
one process it is plain BatchNorm. :func:`unsync_batchnorm` gives the plain classes back.

>>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
>>> sync_batchnorm(net), type(net[1]).__name__, isinstance(net[1], nn.BatchNorm2d)
(1, 'SyncBatchNorm2d', True)
>>> unsync_batchnorm(net), type(net[1]).__name__
(1, 'BatchNorm2d')
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import all_reduce_sum, is_distributed, unwrap_ddp
from .batchnorm import global_moments

__all__ = ["SyncBatchNorm1d", "SyncBatchNorm2d", "SyncBatchNorm3d", "sync_batchnorm", "unsync_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    """``sum_r t_r`` on every rank; backward: ``sum_r grad_r`` (each rank's loss depends on every ``t_r``)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        return all_reduce_sum(t)  # a new tensor (only called in a group of more than one process)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return _AllReduceSum.apply(grad)


def _all_reduce(t: Tensor) -> Tensor:
    return _AllReduceSum.apply(t)


class _GlobalBatchNorm:
    """The forward of :class:`SyncBatchNorm2d` and its siblings (mixed in before the BatchNorm class)."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)  # type: ignore[misc]
        self._check_input_dim(x)  # type: ignore[attr-defined]
        shape = [1] * x.ndim
        shape[1] = x.shape[1]
        # float16/bfloat16 statistics in float32 (as F.batch_norm computes them); the count exact
        n, mean, var, centred = global_moments(x, _all_reduce, torch.promote_types(x.dtype, torch.float32))
        out = centred * torch.rsqrt(var.reshape(shape) + self.eps)  # type: ignore[attr-defined]
        if self.affine:  # type: ignore[attr-defined]
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)  # type: ignore[attr-defined]
        if self.track_running_stats and self.running_mean is not None:  # type: ignore[attr-defined]
            self._update_running(mean.detach(), var.detach() * (n / (n - 1) if n > 1 else 1.0))
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor) -> None:
        self.num_batches_tracked.add_(1)  # type: ignore[attr-defined]
        f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum  # type: ignore[attr-defined]
        self.running_mean.mul_(1 - f).add_(mean.to(self.running_mean.dtype), alpha=f)  # type: ignore[attr-defined]
        self.running_var.mul_(1 - f).add_(var.to(self.running_var.dtype), alpha=f)  # type: ignore[attr-defined]


class SyncBatchNorm1d(_GlobalBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with global-batch statistics in distributed training (module docstring)."""


class SyncBatchNorm2d(_GlobalBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with global-batch statistics in distributed training (module docstring)."""


class SyncBatchNorm3d(_GlobalBatchNorm, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` with global-batch statistics in distributed training (module docstring)."""


_SYNC = {nn.BatchNorm1d: SyncBatchNorm1d, nn.BatchNorm2d: SyncBatchNorm2d, nn.BatchNorm3d: SyncBatchNorm3d}
_PLAIN = {v: k for k, v in _SYNC.items()}


def _swap(model: nn.Module, table: dict) -> int:
    swapped = 0
    for m in unwrap_ddp(model).modules():
        cls = table.get(type(m))
        if cls is not None:
            m.__class__ = cls  # same layout: a subclass that adds no state
            swapped += 1
    return swapped


def sync_batchnorm(model: nn.Module) -> int:
    """Make every ``nn.BatchNorm1d/2d/3d`` of ``model`` (or ``ddp.module``) a ``SyncBatchNorm*d``, in place.

    Call it before (or after) building DDP: no parameter changes. Returns how many were converted.
    """
    return _swap(model, _SYNC)


def unsync_batchnorm(model: nn.Module) -> int:
    """Undo :func:`sync_batchnorm` (plain BatchNorm classes again, e.g. before saving the whole module)."""
    return _swap(model, _PLAIN)
