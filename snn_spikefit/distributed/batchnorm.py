"""BatchNorm statistics over the global batch while :func:`snn_spikefit.recalibrate_bn` runs on several ranks.

Each BatchNorm call (one per timestep) normalises with, and records, the mean and variance of its input over
every rank's samples (all-reduced sums, two passes for the variance), as one process on the whole batch
would; at the end the running statistics are the average over calls (what ``momentum=None`` gives).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import all_reduce_sum as _sum

__all__ = ["GlobalBatchStats", "global_moments"]


def global_moments(x: Tensor, reduce, dtype: torch.dtype) -> tuple[int, Tensor, Tensor, Tensor]:
    """``(n, mean, biased var, x - mean)`` per channel (axis 1) of ``x`` over every rank, in two all-reduces.

    ``reduce`` sums a tensor over ranks (differentiable or not); the count travels with the first
    sums, in float64 (exact to 2**53); ``x`` is computed on in ``dtype``. Two passes: the variance is
    of ``x - mean``, never ``E[x^2] - mean^2``.
    """
    dims = [d for d in range(x.ndim) if d != 1]
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    xs = x.to(dtype)
    count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
    head = reduce(torch.cat([count, xs.sum(dims).double()]))
    n = int(head[0].item())
    mean = (head[1:] / n).to(dtype).reshape(shape)
    centred = xs - mean
    var = reduce(centred.pow(2).sum(dims)) / n
    return n, mean.reshape(-1), var, centred


class GlobalBatchStats:
    """Forward hooks on ``bns`` that use global-batch statistics; :meth:`close` writes the running averages."""

    def __init__(self, bns: list[nn.modules.batchnorm._BatchNorm]) -> None:
        self.bns = bns
        self.acc: dict[int, list] = {id(bn): [None, None, 0] for bn in bns}
        self.handles = [bn.register_forward_hook(self._hook) for bn in bns]

    def _hook(self, bn: nn.modules.batchnorm._BatchNorm, inputs: tuple, output: Tensor) -> Tensor:
        x = inputs[0]
        shape = [1] * x.ndim
        shape[1] = x.shape[1]
        n, mean, var_b, centred = global_moments(x.detach(), _sum, torch.float64)
        var_u = var_b * n / (n - 1) if n > 1 else var_b
        acc = self.acc[id(bn)]
        acc[0] = mean if acc[0] is None else acc[0] + mean
        acc[1] = var_u if acc[1] is None else acc[1] + var_u
        acc[2] += 1
        out = centred / torch.sqrt(var_b.reshape(shape) + bn.eps)
        if bn.affine:
            out = out * bn.weight.detach().double().reshape(shape) + bn.bias.detach().double().reshape(shape)
        return out.to(output.dtype)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        with torch.no_grad():
            for bn in self.bns:
                mean, var, calls = self.acc[id(bn)]
                if calls and bn.running_mean is not None:
                    bn.running_mean.copy_((mean / calls).to(bn.running_mean.dtype))
                    bn.running_var.copy_((var / calls).to(bn.running_var.dtype))
                    bn.num_batches_tracked.fill_(calls)
