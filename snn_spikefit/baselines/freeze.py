"""Freeze a baseline-quantized model into the library's frozen codebook form.

Every baseline parametrization (:class:`~snn_spikefit.baselines.TernaryWeight`,
:class:`~snn_spikefit.baselines.ClusterWeight`,
:class:`~snn_spikefit.baselines.UniformWeight`,
:class:`~snn_spikefit.baselines.FakeQuantWeight`) is a
:class:`~snn_spikefit.quantize.quantizer.Quantizer`: it describes its layer
exactly by codes and a codebook (``integer_form``). :func:`freeze_baseline` is
:func:`snn_spikefit.freeze` (the one freeze path), which stores them as a
:class:`~snn_spikefit.quantize.codebook.FrozenCodebook`, so a baseline is
measured by the same code as CAT (``evaluate``'s size, ``codebook_summary``,
NIR metadata).

>>> import torch
>>> from torch import nn
>>> from snn_spikefit.baselines import qpsnn
>>> net = qpsnn(nn.Sequential(nn.Linear(8, 4)), bits=4)
>>> before = net[0].weight.detach().clone()
>>> _ = freeze_baseline(net)
>>> bool(torch.equal(net[0].weight, before))
True
"""

from __future__ import annotations

from torch import nn

from ..errors import NotWrappedError
from ..runtime import check_module
from ..quantize.layers import compressed_layers
from ..quantize.wrap import freeze
from .clustering import ClusterWeight, FakeQuantWeight
from .qpsnn import UniformWeight
from .ttq import TernaryWeight

__all__ = ["freeze_baseline", "BASELINE_PARAMETRIZATIONS"]

#: The baselines' quantizers (each a :class:`~snn_spikefit.quantize.quantizer.Quantizer`).
BASELINE_PARAMETRIZATIONS: tuple[type[nn.Module], ...] = (TernaryWeight, ClusterWeight, UniformWeight,
                                                         FakeQuantWeight)


def freeze_baseline(model: nn.Module) -> nn.Module:
    """:func:`snn_spikefit.freeze` for a model quantized by ``ttq``, ``qat``, ``cluster`` or ``qpsnn``; in place.

    Outputs do not change (the decoded weight equals the quantized one bit for bit).
    Raises ``NotWrappedError`` when no weight carries a baseline quantizer.
    """
    check_module(model)
    if not any(isinstance(c.quantizer, BASELINE_PARAMETRIZATIONS) for c in compressed_layers(model)):
        raise NotWrappedError(f"freeze_baseline: {type(model).__name__} has no layer quantized by ttq, qat, "
                              f"cluster or qpsnn")
    return freeze(model)
