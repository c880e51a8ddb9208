"""Biases on the weight grid: what a chip that holds integer biases in the weight scale (Speck) runs.

For a frozen layer with integer weights ``W = s * C`` (``s`` its codebook scale, one per layer or per
output channel), :func:`round_biases` sets

.. math::

    b_c \\leftarrow s_c \\cdot \\mathrm{clip}(\\mathrm{round}(b_c / s_c), -L, L), \\qquad L = 2^{bits-1} - 1

so the layer's whole affine map is integers times ``s``: the device's membrane (ours divided by ``s``)
gets integer weights *and* an integer bias. The outputs change by at most ``s / 2`` per channel (more
where a bias is clipped); the report says by how much.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import NotWrappedError, SpikeFitValueError
from ..reports import Report
from ..runtime import check_module
from ..table import Table
from ..transaction import transactional
from .codebook import FrozenCodebook
from .layers import compressed_layers

__all__ = ["round_biases", "round_biases_for", "bias_lsb", "BiasReport"]


@dataclass(frozen=True)
class BiasReport(Report):
    """Per layer with a bias: its largest change in weight LSBs and how many biases were clipped."""

    rows: list[tuple[str, float, int, int]]   # layer, max |change| (LSBs), clipped, biases

    def to_dict(self) -> dict:
        return {"layers": [dict(layer=n, max_change_lsb=c, clipped=k, biases=b) for n, c, k, b in self.rows]}

    def table(self) -> Table:
        t = Table(["layer", "max_change_lsb", "clipped", "biases"], title="biases on the weight grid")
        for row in self.rows:
            t.add_row([row[0], f"{row[1]:.4g}", row[2], row[3]])
        return t

    def __str__(self) -> str:
        return str(self.table())


def bias_lsb(bias: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``[C]`` float64: the weight LSB of each bias, ``s_c`` (``scale``: one per layer or per output channel)."""
    s = scale.detach().double().reshape(-1)
    return s if s.numel() == bias.numel() else s[0].expand(bias.numel())


def _integer_layers(model: nn.Module) -> list:
    """The frozen layers whose weights are integers times a scale: the ones a bias grid exists for."""
    return [c for c in compressed_layers(model)
            if isinstance(c.quantizer, FrozenCodebook) and c.quantizer.scale is not None and c.param == "weight"]


@transactional
@torch.no_grad()
def round_biases(model: nn.Module, *, bits: int | None = None) -> BiasReport:
    """Round every frozen integer layer's bias to its weight grid, in place (clipped to ``bits`` signed bits).

    Raises ``NotWrappedError`` for a model with no frozen integer layer and ``SpikeFitValueError``
    for bad ``bits``; on any error the model is left as it was.
    """
    check_module(model)
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32):
        raise SpikeFitValueError(f"bits={bits!r} is not allowed; use an int in 2..32 or None (no clip)")
    layers = _integer_layers(model)
    if not layers:
        raise NotWrappedError(f"round_biases needs a model frozen with integer codebooks (sf.wrap(..., bits=8), "
                              f"sf.freeze); {type(model).__name__} has none")
    lim = None if bits is None else 2 ** (bits - 1) - 1
    rows = []
    for c in layers:
        bias = getattr(c.module, "bias", None)
        if not isinstance(bias, torch.Tensor):
            continue
        s = bias_lsb(bias, c.quantizer.scale)
        exact = bias.double() / s
        k = torch.round(exact)
        clipped = 0 if lim is None else int((k.abs() > lim).sum())
        if lim is not None:
            k = k.clamp(-lim, lim)
        change = float((k - exact).abs().max()) if bias.numel() else 0.0
        bias.copy_((k * s).to(bias.dtype))
        rows.append((c.name, change, clipped, int(bias.numel())))
    return BiasReport(rows)


def round_biases_for(model: nn.Module, profile) -> BiasReport | None:
    """:func:`round_biases` with the profile's ``bias_bits`` when it has one and ``model`` has frozen integer
    layers (what ``sf.compress`` and ``fit_to_chip`` do after freezing); ``None`` when there is nothing to do."""
    bits = getattr(profile, "bias_bits", None)
    if bits is None or not _integer_layers(model):
        return None
    return round_biases(model, bits=bits)
