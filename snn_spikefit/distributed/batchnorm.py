"""BatchNorm statistics over the global batch while :func:`snn_spikefit.recalibrate_bn` runs on several ranks.

Each BatchNorm call (one per timestep) normalises with, and records, the mean and variance of its input over
every rank's samples (all-reduced sums, two passes for the variance), as one process on the whole batch
would; at the end the running statistics are the average over calls (what ``momentum=None`` gives).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import all_reduce_sum as _sum

__all__ = ["GlobalBatchStats"]


class GlobalBatchStats:
    """Forward hooks on ``bns`` that use global-batch statistics; :meth:`close` writes the running averages."""

    def __init__(self, bns: list[nn.modules.batchnorm._BatchNorm]) -> None:
        self.bns = bns
        self.acc: dict[int, list] = {id(bn): [None, None, 0] for bn in bns}
        self.handles = [bn.register_forward_hook(self._hook) for bn in bns]

    def _hook(self, bn: nn.modules.batchnorm._BatchNorm, inputs: tuple, output: Tensor) -> Tensor:
        x = inputs[0]
        dims = [d for d in range(x.ndim) if d != 1]
        shape = [1] * x.ndim
        shape[1] = x.shape[1]
        xd = x.detach().double()
        count_sum = _sum(torch.cat([torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device),
                                    xd.sum(dim=dims)]))
        n, mean = count_sum[0], count_sum[1:] / count_sum[0]
        var_b = _sum((xd - mean.reshape(shape)).pow(2).sum(dim=dims)) / n
        var_u = var_b * n / (n - 1) if n > 1 else var_b
        acc = self.acc[id(bn)]
        acc[0] = mean if acc[0] is None else acc[0] + mean
        acc[1] = var_u if acc[1] is None else acc[1] + var_u
        acc[2] += 1
        out = (xd - mean.reshape(shape)) / torch.sqrt(var_b.reshape(shape) + bn.eps)
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
