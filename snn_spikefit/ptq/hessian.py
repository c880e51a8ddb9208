"""The spike-train Hessian of one layer (Spiking Brain Compression, arXiv 2506.03996).

A layer ``W`` feeding a neuron whose membrane, below threshold, filters its input
with per-step decay ``a`` sees, from input spike trains ``S`` (``[T, in]`` for one
sample at one position), the membrane ``V = K S W^T`` with the leak kernel

.. math::

    K_{ij} = a^{i-j} \\quad (j \\le i), \\qquad 0 \\text{ otherwise}

(``a = (tau - 1) / tau`` in the paper's notation; IF: ``a = 1``, no leak; a
current-based neuron: the product of its two kernels). The squared membrane error
of a weight change ``dW`` (one row ``dw``) is ``dw^T H dw`` with

.. math::

    H = \\frac{2}{m} \\sum_{\\text{samples, positions}} (K S)^T (K S)

``m`` = calibration samples times output positions (1 for a dense layer, ``H_out *
W_out`` for a convolution, whose ``S`` are the unfolded input patches). A layer
with no neuron after it (a read-out) uses ``K = I``: its output error at every
step. The damping ``damping * mean(diag H)`` is added by :func:`damped`.

>>> leak_kernel([0.5], 3).tolist()
[[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.25, 0.5, 1.0]]
>>> leak_kernel([], 2).tolist()          # read-out: identity
[[1.0, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UnsupportedLayerError

__all__ = ["leak_kernel", "patches", "check_supported", "HessianAccumulator", "damped", "SUPPORTED_TYPES"]

#: Layer types whose Hessian this module builds.
SUPPORTED_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)


def leak_kernel(decays: Sequence[float], num_steps: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """``[T, T]`` lower-triangular kernel of first-order filters ``y[t] = a y[t-1] + x[t]`` in series."""
    t = torch.arange(num_steps, dtype=dtype)
    lag = t[:, None] - t[None, :]
    kernel = torch.eye(num_steps, dtype=dtype)
    for a in decays:
        k = torch.where(lag >= 0, torch.as_tensor(float(a), dtype=dtype) ** lag.clamp_min(0), torch.zeros((), dtype=dtype))
        kernel = k @ kernel
    return kernel


def patches(module: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    """Inputs of ``module`` as rows of its weight's inputs: ``([N * L, in_features], L)``.

    ``x`` is one step's input ``[N, ...]``; ``L`` is the number of output positions
    (1 for ``Linear``). A convolution is unfolded with its own kernel, stride,
    padding and dilation (``Conv1d`` as a height-1 ``Conv2d``).
    """
    check_supported(module)
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
        return rows, rows.shape[0] // max(1, x.shape[0]) if x.ndim > 1 else 1
    one_d = isinstance(module, nn.Conv1d)
    pair = (lambda v: (1, v[0])) if one_d else (lambda v: tuple(v))
    img = x.unsqueeze(-2) if one_d else x
    cols = F.unfold(img, pair(module.kernel_size), dilation=pair(module.dilation),
                    padding=(0, module.padding[0]) if one_d else tuple(module.padding), stride=pair(module.stride))
    n, f, L = cols.shape
    return cols.transpose(1, 2).reshape(n * L, f), L


def check_supported(module: nn.Module) -> None:
    """Raise ``UnsupportedLayerError`` unless :func:`patches` can unfold ``module``'s inputs."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UnsupportedLayerError(
                f"{type(module).__name__} with groups={module.groups}, padding={module.padding!r}, "
                f"padding_mode={module.padding_mode!r}: post-training compression supports groups=1 and "
                f"numeric zero padding")
    elif not isinstance(module, nn.Linear):
        raise UnsupportedLayerError(
            f"{type(module).__name__} is not supported by post-training compression; supported: "
            f"{[t.__name__ for t in SUPPORTED_TYPES]}")


class HessianAccumulator:
    """Accumulates ``H`` of one layer over calibration batches of input spike trains.

    Args:
        module: the layer (``Linear``, ``Conv1d``, ``Conv2d``).
        decays: the decay factors of the neuron it feeds (:meth:`Adapter.membrane_decays`),
            ``()`` for a read-out.
    """

    def __init__(self, module: nn.Module, decays: Sequence[float]) -> None:
        self.module = module
        self.decays = tuple(float(a) for a in decays)
        n = module.weight[0].numel()
        self.sum = torch.zeros(n, n, dtype=torch.float64)
        self.m = 0           # samples x positions
        self.bias_cross = torch.zeros(n, dtype=torch.float64)  # sum (K 1)^T (K S)
        self.bias_sq = 0.0                                     # sum (K 1)^T (K 1)
        self.bias_ref = torch.zeros(n, dtype=torch.float64)    # sum (K 1)^T (K S_reference)
        self.cross: Tensor | None = None                       # sum (K S)^T (K S_reference)
        self.samples = 0
        self._kernels: dict[int, Tensor] = {}

    def _rows(self, steps: Tensor) -> tuple[Tensor, int, Tensor]:
        T = steps.shape[0]
        if T not in self._kernels:
            self._kernels[T] = leak_kernel(self.decays, T)
        k = self._kernels[T].to(steps.device)
        filtered = torch.einsum("ts,sb...->tb...", k, steps.double())  # V = K S, per sample and position
        rows, L = patches(self.module, filtered.reshape(-1, *steps.shape[2:]))
        return rows, L, k.sum(dim=1)

    def add(self, steps: Tensor, reference: Tensor | None = None) -> None:
        """Add one batch of inputs, time-major ``[T, B, ...]``.

        ``reference``: the inputs the uncompressed model gives this layer on the same samples
        (asymmetric calibration: the target is the original layer's output on the original inputs).
        """
        T = steps.shape[0]
        rows, L, k1 = self._rows(steps)
        # rows are [(t, b, position), in]; the sum over t, b, positions of row outer products is sum (KS)^T (KS)
        self.sum += (rows.T @ rows).cpu()
        # the bias enters every step as a constant input 1: its filtered trace is K 1
        cross = torch.einsum("t,tjn->n", k1, rows.reshape(T, -1, rows.shape[-1])).cpu()
        self.bias_cross += cross
        self.bias_sq += float(k1 @ k1) * steps.shape[1] * L
        self.samples += steps.shape[1]
        self.m += steps.shape[1] * L
        if reference is not None:
            ref, _, _ = self._rows(reference)
            if self.cross is None:
                self.cross = torch.zeros_like(self.sum)
            self.cross += (rows.T @ ref).cpu()
            self.bias_ref += torch.einsum("t,tjn->n", k1, ref.reshape(T, -1, ref.shape[-1])).cpu()
        else:
            self.bias_ref += cross

    def bias_shift(self, new: Tensor, old: Tensor) -> Tensor:
        """The bias change ``db`` that best restores the output after the weights go from ``old`` to ``new``.

        ``min_db sum |K S_q new_r + K 1 db_r - K S old_r|^2`` (``S_q``: the inputs the layer sees
        now, ``S``: the reference inputs, the same without :meth:`add`'s ``reference``) gives
        ``db_r = (s_ref . old_r - s . new_r) / c`` with ``s = sum (K S_q)^T (K 1)``, ``s_ref =
        sum (K S)^T (K 1)``, ``c = sum |K 1|^2``: the filtered mean shift removed (bias correction).
        """
        if self.bias_sq <= 0:
            return torch.zeros(new.shape[0], dtype=torch.float64)
        return (old.double() @ self.bias_ref - new.double() @ self.bias_cross) / self.bias_sq

    def target(self, w: Tensor, damped_h: Tensor, *, absorb_bias: bool = False) -> Tensor:
        """The weights the compressed layer should approach: ``w`` itself, or with a reference (asymmetric)

        ``w* = w + H_d^-1 (2 / m) (G - A) w`` per row, ``G = sum (K S_q)^T (K S)``, ``A = sum (K S_q)^T
        (K S_q)`` (bias-absorbed like :meth:`hessian`): the minimiser of ``|K S_q w' - K S w|^2``
        (damped), so that ``(w' - w*)^T H (w' - w*)`` is the output error up to a constant.
        """
        if self.cross is None:
            return w
        g, a = self.cross, self.sum
        if absorb_bias and self.bias_sq > 0:
            g = g - torch.outer(self.bias_cross, self.bias_ref) / self.bias_sq
            a = a - torch.outer(self.bias_cross, self.bias_cross) / self.bias_sq
        rhs = ((g - a) @ w.double().T) * (2.0 / max(self.m, 1))
        return w.double() + torch.cholesky_solve(rhs, torch.linalg.cholesky(damped_h)).T

    def hessian(self, *, absorb_bias: bool = False) -> Tensor:
        """``H = (2 / m) sum (K S)^T (K S)`` (float64, undamped).

        ``absorb_bias``: the Hessian of the weights when the bias is re-fitted to every weight
        change (:meth:`bias_shift`): the Schur complement ``(2 / m) (A - s s^T / c)`` of the bias in
        the Hessian of ``[w, b]`` (``A = sum (KS)^T (KS)``, ``s = sum (KS)^T (K1)``, ``c = sum |K1|^2``),
        so that ``dw^T H dw`` is the error left after the bias correction.
        """
        a = self.sum
        if absorb_bias and self.bias_sq > 0:
            a = a - torch.outer(self.bias_cross, self.bias_cross) / self.bias_sq
            a = (a + a.T) * 0.5
        return a * (2.0 / max(self.m, 1))


def damped(h: Tensor, damping: float) -> Tensor:
    """``H + damping * mean(diag H) * I``; an all-zero ``H`` (a layer that never saw input) becomes ``I``."""
    mean = float(h.diagonal().mean()) if h.numel() else 0.0
    if mean <= 0:
        return torch.eye(h.shape[0], dtype=h.dtype)
    out = h.clone()
    out.diagonal().add_(damping * mean)
    dead = out.diagonal() <= 0
    out.diagonal()[dead] = 1.0  # cannot happen with damping > 0; keeps damping=0 invertible on dead inputs
    return out
