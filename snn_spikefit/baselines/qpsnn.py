"""QP-SNN-style uniform ``b``-bit weight quantization with ReScaW (Wei et al., ICLR 2025).

Per output channel ``c`` the weights are rescaled by ``gamma_c = mean |W_c|``
(ReScaW), clipped to ``[-1, 1]`` and rounded to ``2^b - 1`` uniform levels:

.. math::

    \\hat w = \\frac{\\gamma_c}{q} \\, \\mathrm{round}\\big(q \\cdot \\mathrm{clip}(w / \\gamma_c, -1, 1)\\big),
    \\qquad q = 2^{b-1} - 1

so every weight of channel ``c`` is ``(gamma_c / q) * k`` with an integer
``|k| <= q``. ``gamma`` is recomputed from the latent weights at every forward
pass and treated as a constant (no gradient); the latent weights get the
straight-through gradient inside the clip range and none outside it. The
value is ``w_q`` bit-exactly (``w_q + (w - sg(w)) * inside``). Channel surgery
slices the latent weight; removing input channels changes ``gamma`` of every
row (it is their mean magnitude), never the number of levels.

>>> import torch
>>> from torch import nn
>>> net = qpsnn(nn.Sequential(nn.Linear(16, 4)), bits=2)
>>> int(net[0].weight[0].unique().numel()) <= 3
True
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import SpikeFitValueError
from ..runtime import check_module
from ..quantize.layers import candidates
from ..quantize.quantizer import IntegerForm, Quantizer, code_dtype, int_dtype

__all__ = ["UniformWeight", "qpsnn", "rescaw"]


def rescaw(weight: Tensor, bits: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(w_q, ints, step, inside)`` for a weight ``[C_out, ...]``: ``w_q = step[c] * ints``, ``|ints| <= q``.

    >>> w_q, k, step, _ = rescaw(torch.tensor([[0.1, -0.5, 0.3]]), bits=2)   # gamma = 0.3, q = 1
    >>> k.tolist(), bool(torch.allclose(step, torch.tensor([[0.3]])))
    ([[0.0, -1.0, 1.0]], True)
    """
    qmax = 2 ** (bits - 1) - 1
    flat = weight.reshape(weight.shape[0], -1)
    gamma = flat.detach().abs().mean(dim=1, keepdim=True)
    gamma = torch.where(gamma > 0, gamma, torch.ones_like(gamma))
    ratio = flat.detach() / gamma
    ints = torch.round(ratio.clamp(-1, 1) * qmax)
    step = gamma / qmax
    return (ints * step).reshape(weight.shape), ints, step, (ratio.abs() <= 1).reshape(weight.shape)


class UniformWeight(Quantizer):
    """Parametrization: per-channel uniform ``bits``-bit weights scaled by ``gamma = mean |W_c|``.

    Args:
        bits: width of the signed integer levels.
        channels: output channels of the weight (one scale each).
    """

    granularity = "channel"
    kind = "uniform (QP-SNN) weight"

    def __init__(self, bits: int, *, channels: int) -> None:
        super().__init__()
        self.bits = bits
        self.m = 2 ** bits - 1
        self.channels = int(channels)

    @property
    def groups(self) -> int:
        return self.channels

    def extra_repr(self) -> str:
        return f"bits={self.bits}, channels={self.channels}"

    def forward(self, weight: Tensor) -> Tensor:
        w_q, _, _, inside = rescaw(weight, self.bits)
        return w_q + (weight - weight.detach()) * inside

    def right_inverse(self, weight: Tensor) -> Tensor:
        return weight

    @torch.no_grad()
    def integer_form(self, latent: Tensor) -> IntegerForm:
        """Per channel: codes ``k + q`` (0..2q), integer codebook ``-q..q``, scale ``gamma_c / q``."""
        qmax = 2 ** (self.bits - 1) - 1
        _, ints, step, _ = rescaw(latent, self.bits)
        levels = torch.arange(-qmax, qmax + 1, dtype=latent.dtype, device=latent.device)
        book = levels.expand(ints.shape[0], -1).contiguous()
        return IntegerForm(latent.shape, (ints + qmax).to(code_dtype(self.m)), book * step,
                           book.to(int_dtype(self.bits)), step.flatten())

    def select_channels(self, keep: Tensor, dim: int, latent: Tensor) -> Tensor:
        if dim == 0:
            self.channels = int(keep.numel())
        return super().select_channels(keep, dim, latent)


def qpsnn(model: nn.Module, *, bits: int = 4) -> nn.Module:
    """Quantize every compressible layer's weight to ``bits``-bit uniform levels with ReScaW, in place.

    The weights quantized are those CAT's :func:`snn_spikefit.wrap` compresses by default
    (``Linear``/``Conv*`` and the adapters' weights). Fine-tune afterwards with any loop; re-estimate BatchNorm statistics after it.
    """
    check_module(model)
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise SpikeFitValueError(f"bits={bits!r} is not allowed; use an int in 2..8")
    layers = candidates(model)
    if not layers:
        raise SpikeFitValueError("qpsnn: model has no Linear/Conv layer")
    taken = [n for n, m in model.named_modules() if parametrize.is_parametrized(m)]
    if taken:
        raise SpikeFitValueError(f"qpsnn: layers {taken} already have parametrized weights; pass a plain model")
    for _, module, param in layers:
        channels = getattr(module, param).shape[0]
        parametrize.register_parametrization(module, param, UniformWeight(bits, channels=channels))
    return model
