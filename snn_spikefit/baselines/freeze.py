"""Freeze a baseline-quantized model into the library's frozen codebook form.

Every baseline parametrization (:class:`~snn_spikefit.baselines.TernaryWeight`,
:class:`~snn_spikefit.baselines.ClusterWeight`,
:class:`~snn_spikefit.baselines.UniformWeight`) describes its layer exactly by
codes and a codebook (``frozen_state``). :func:`freeze_baseline` stores them as a
:class:`~snn_spikefit.codebook.FrozenCodebook`, so a baseline is measured by the
same code as CAT (``evaluate``'s size, ``codebook_summary``, NIR metadata).

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

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..quantize.codebook import FrozenCodebook
from ..quantize.wrap import install_frozen
from ..errors import NotWrappedError
from .clustering import ClusterWeight, FakeQuantWeight, remove_weight_parametrizations
from .qpsnn import UniformWeight
from .ttq import TernaryWeight

__all__ = ["freeze_baseline", "BASELINE_PARAMETRIZATIONS"]

#: Parametrizations :func:`freeze_baseline` knows; each has ``m``, ``bits``, ``granularity``, ``frozen_state``.
BASELINE_PARAMETRIZATIONS: tuple[type[nn.Module], ...] = (TernaryWeight, ClusterWeight, UniformWeight,
                                                         FakeQuantWeight)


@torch.no_grad()
def freeze_baseline(model: nn.Module) -> nn.Module:
    """Replace every baseline parametrization of ``model`` by a :class:`FrozenCodebook`, in place.

    Outputs do not change (the decoded weight equals the quantized one bit for bit).
    """
    found = 0
    for _, module in list(model.named_modules()):
        if not parametrize.is_parametrized(module, "weight"):
            continue
        plist = module.parametrizations.weight
        q = next((p for p in plist if isinstance(p, BASELINE_PARAMETRIZATIONS)), None)
        if q is None:
            continue
        found += 1
        latent = plist.original
        shape = module.weight.shape
        state = q.frozen_state(latent)
        frozen = FrozenCodebook(shape, state["codes"], state["values"], state["ints"], state["scale"],
                                m=q.m, bits=q.bits, granularity=q.granularity)
        remove_weight_parametrizations(module, leave_parametrized=False)
        install_frozen(module, frozen)
    if not found:
        raise NotWrappedError(f"freeze_baseline: {type(model).__name__} has no layer quantized by ttq, qat, "
                              f"cluster or qpsnn")
    return model
