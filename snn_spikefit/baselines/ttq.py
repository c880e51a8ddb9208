"""Trained Ternary Quantization (Zhu, Han, Mao & Dally, ICLR 2017) as a parametrization.

Each quantized layer keeps its full-precision latent weight ``w`` and learns two
positive scales ``W_p`` and ``W_n``:

.. math::

    \\tilde w = w / \\max|w|, \\qquad \\Delta = t \\cdot \\max|\\tilde w| = t, \\qquad
    w^t = \\begin{cases} W_p & \\tilde w > \\Delta \\\\ 0 & |\\tilde w| \\le \\Delta \\\\
    -W_n & \\tilde w < -\\Delta \\end{cases}

Gradients (the paper's Eqs. 6-7), with ``g = dL/dw^t``, ``I_p``, ``I_z``, ``I_n`` the
positive, zero and negative sets:

.. math::

    \\frac{\\partial L}{\\partial W_p} = \\sum_{i \\in I_p} g_i, \\qquad
    \\frac{\\partial L}{\\partial W_n} = -\\sum_{i \\in I_n} g_i, \\qquad
    \\frac{\\partial L}{\\partial w_i} = g_i \\cdot \\{W_p, 1, W_n\\}_{i \\in I_p, I_z, I_n}

(the latent gradient is passed to ``w`` as the reference code does, ignoring
the derivative of the normalisation). ``W_p``/``W_n`` start at the mean
magnitude of the weights above/below the threshold (the least-squares fit, as
in TWN) rather than at 1, so the quantized layer starts where the FP32 one was.
The first and last compressible layers stay full precision by default, as in the paper.
Channel surgery slices the latent weight; the learned scales stay, so a pruned
layer keeps its three values (``max|w|``, and so ``Delta``, is that of the weights left).

>>> import torch
>>> from torch import nn
>>> net = ttq(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)))
>>> sorted(n for n, _ in ternary_layers(net))
['1']
>>> net[1].weight.unique().numel() <= 3
True
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import SpikeFitValueError
from ..runtime import check_module
from ..quantize.layers import candidates, compressed_layers
from ..quantize.quantizer import IntegerForm, Quantizer, code_dtype

__all__ = ["TernaryWeight", "TernaryFunction", "ttq", "ternary_layers"]


def _signs(weight: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """``(positive, negative)`` masks: ``w / max|w|`` above ``threshold`` / below ``-threshold``."""
    normed = weight / weight.abs().amax().clamp_min(torch.finfo(weight.dtype).tiny)
    return normed > threshold, normed < -threshold


class TernaryFunction(torch.autograd.Function):
    """``(w, W_p, W_n, t) -> w^t`` with TTQ's gradient rules (see the module docstring)."""

    @staticmethod
    def forward(ctx, weight: Tensor, w_p: Tensor, w_n: Tensor, threshold: float) -> Tensor:
        pos, neg = _signs(weight, threshold)
        ctx.save_for_backward(pos, neg, w_p, w_n)
        zero = torch.zeros((), dtype=weight.dtype, device=weight.device)
        return torch.where(pos, w_p, torch.where(neg, -w_n, zero))

    @staticmethod
    def backward(ctx, grad: Tensor):
        pos, neg, w_p, w_n = ctx.saved_tensors
        grad_w_p = grad[pos].sum().reshape(w_p.shape)
        grad_w_n = -grad[neg].sum().reshape(w_n.shape)
        factor = torch.where(pos, w_p, torch.where(neg, w_n, torch.ones_like(w_p)))
        return grad * factor, grad_w_p, grad_w_n, None


class TernaryWeight(Quantizer):
    """Parametrization giving a weight the three values ``{-W_n, 0, +W_p}``.

    Args:
        weight: the layer's current weight (for the initial scales).
        threshold: ``t`` in ``Delta = t * max|w~|``, in ``(0, 1)``.
    """

    m = 3
    bits = None
    granularity = "layer"
    kind = "ternary (TTQ) weight"

    def __init__(self, weight: Tensor, *, threshold: float = 0.05) -> None:
        super().__init__()
        self.threshold = float(threshold)
        with torch.no_grad():
            w = weight.detach()
            pos, neg = _signs(w, threshold)
            w_p = w[pos].mean() if bool(pos.any()) else w.abs().amax()
            w_n = (-w[neg]).mean() if bool(neg.any()) else w.abs().amax()
        self.w_p = nn.Parameter(w_p.reshape(()).clone())
        self.w_n = nn.Parameter(w_n.reshape(()).clone())

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"

    def forward(self, weight: Tensor) -> Tensor:
        return TernaryFunction.apply(weight, self.w_p, self.w_n, self.threshold)

    def right_inverse(self, weight: Tensor) -> Tensor:
        return weight

    @torch.no_grad()
    def integer_form(self, latent: Tensor) -> IntegerForm:
        """Codes 0/1/2 for ``-W_n``/``0``/``+W_p`` and the float codebook."""
        values = torch.stack([-self.w_n, torch.zeros_like(self.w_p), self.w_p]).reshape(1, 3).detach().clone()
        pos, neg = _signs(latent, self.threshold)
        codes = torch.where(pos, 2, torch.where(neg, 0, 1)).reshape(1, -1).to(code_dtype(self.m))
        return IntegerForm(latent.shape, codes, values, None, None)


def ternary_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every weight of ``model`` that carries a :class:`TernaryWeight`."""
    return [(c.name, c.module) for c in compressed_layers(model) if isinstance(c.quantizer, TernaryWeight)]


def ttq(model: nn.Module, *, threshold: float = 0.05, exclude_first_last: bool = True) -> nn.Module:
    """Give the compressible layers of ``model`` trained ternary weights, in place; returns ``model``.

    Args:
        model: any ``nn.Module`` with ``Linear``/``Conv*`` layers (snnTorch, Norse, torch); the
            weights quantized are those :func:`snn_spikefit.wrap` compresses (adapters' weights included).
        threshold: TTQ's ``t`` (0.05 in the paper), in ``(0, 1)``.
        exclude_first_last: leave the first and the last compressible layer (in
            ``named_modules`` order) in full precision, as the paper does.

    Train afterwards with any loop (``snn_spikefit.fit``): the latent weights and
    the per-layer ``w_p``/``w_n`` are ordinary parameters. Re-estimate BatchNorm
    statistics after training (:func:`snn_spikefit.recalibrate_bn`).
    """
    check_module(model)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise SpikeFitValueError(f"threshold={threshold!r} is not allowed; use a number in (0, 1) (TTQ uses 0.05)")
    taken = [n for n, m in model.named_modules() if parametrize.is_parametrized(m)]
    if taken:
        raise SpikeFitValueError(f"model already has parametrized weights in layers {taken}; ttq needs plain layers")
    layers = candidates(model)
    chosen = layers[1:-1] if exclude_first_last else layers
    if not chosen:
        raise SpikeFitValueError(
            f"model has {len(layers)} compressible layers {[n for n, _, _ in layers]}; with "
            f"exclude_first_last={exclude_first_last} none is left to quantize")
    for name, module, param in chosen:
        if not bool(torch.isfinite(getattr(module, param)).all()):
            raise SpikeFitValueError(f"layer {name!r} has NaN/inf weights; ttq needs finite weights")
    for _, module, param in chosen:
        quantizer = TernaryWeight(getattr(module, param), threshold=threshold)
        parametrize.register_parametrization(module, param, quantizer)
    return model
