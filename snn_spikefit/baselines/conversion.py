"""ANN -> SNN conversion, the last step of the paper's clustered baseline.

:func:`relu_twin` builds the ReLU network of the same topology as an SNN (every
spiking neuron replaced by ``nn.ReLU``); train, QAT and cluster it like any
torch model (:mod:`snn_spikefit.baselines.clustering`), then
:func:`convert_to_snn` turns it back into an SNN: each ReLU becomes a copy of
the SNN's own neuron (e.g. snnTorch ``Leaky``), with threshold balancing from
activation statistics (Rueckauer et al. 2017, "robust normalization"): for
each layer, ``lambda`` is the ``percentile`` of its ReLU activations on
calibration data, the neuron's input is divided by ``lambda * scale`` and its
spikes are multiplied by ``lambda * scale`` (equivalent to a threshold of
``lambda * scale`` with the scale folded into the next layer), so firing rates
approximate the ReLU activations. The (dequantized) weights are the ANN's own.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import Tensor, nn

from ..adapter import get_adapter
from ..errors import SpikeFitValueError
from ..nir.common import Gain
from ..runtime import check_module, eval_mode

__all__ = ["relu_twin", "convert_to_snn", "activation_scales"]


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _neuron_names(snn: nn.Module) -> list[str]:
    check_module(snn, "snn")
    names = [n for n, _ in get_adapter(snn).neurons(snn)]
    if not names:
        raise SpikeFitValueError(f"{type(snn).__name__} has no spiking neuron of an installed framework; "
                                 f"relu_twin/convert_to_snn need an SNN as template")
    return names


def relu_twin(snn: nn.Module) -> nn.Module:
    """A deep copy of ``snn`` with every spiking neuron replaced by ``nn.ReLU()`` (``snn`` is not changed)."""
    names = _neuron_names(snn)
    ann = copy.deepcopy(snn)
    for name in names:
        _set_module(ann, name, nn.ReLU())
    return ann


@torch.no_grad()
def activation_scales(ann: nn.Module, names: list[str], data: Iterable, *, percentile: float = 99.9,
                      num_batches: int = 8, channelwise: bool = False) -> dict[str, Tensor]:
    """The ``percentile`` of the outputs of the modules ``names`` of ``ann`` over ``num_batches`` batches.

    ``channelwise``: one value per channel (axis 1), shaped to broadcast against the output
    without its batch axis (``[C, 1, 1]`` for conv outputs, ``[C]`` for dense ones).
    """
    if not 0 < percentile <= 100:
        raise SpikeFitValueError(f"percentile={percentile!r} is not allowed; use a number in (0, 100]")
    modules = dict(ann.named_modules())
    seen: dict[str, list[Tensor]] = {n: [] for n in names}
    shapes: dict[str, tuple] = {}
    def keep(name: str, output: Tensor) -> None:
        shapes.setdefault(name, tuple(output.shape))
        seen[name].append(output.detach().transpose(0, 1).reshape(output.shape[1], -1))

    hooks = [modules[n].register_forward_hook(lambda mod, i, o, n=n: keep(n, o)) for n in names]
    try:
        with eval_mode(ann):
            for b, (x, _) in enumerate(data):
                if b >= num_batches:
                    break
                ann(x)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for n, parts in seen.items():
        if not parts:
            raise SpikeFitValueError("data yielded no batch; pass calibration batches of (x, y)")
        values = torch.cat(parts, dim=1)  # [C, samples]
        if not channelwise:
            values = values.reshape(1, -1)
        step = max(1, values.numel() // 4_000_000)  # torch.quantile's input limit
        lam = torch.quantile(values[:, ::step].float(), percentile / 100.0, dim=1)
        lam = torch.where(lam > 0, lam, values.amax(dim=1).clamp_min(1e-6))
        out[n] = lam.reshape(-1, *[1] * (len(shapes[n]) - 2)) if channelwise else lam.reshape(())
    return out


@torch.no_grad()
def convert_to_snn(ann: nn.Module, snn: nn.Module, data: Iterable, *, percentile: float = 99.9,
                   scale: float = 1.0, num_batches: int = 8, channelwise: bool = False) -> nn.Module:
    """The SNN that runs ``ann``'s weights with ``snn``'s neurons, threshold-balanced on ``data``.

    Args:
        ann: a ReLU network from :func:`relu_twin` of ``snn`` (trained, possibly QAT'd and clustered).
        snn: the SNN whose topology ``ann`` copies; its neurons (not its weights) are used.
        data: calibration batches ``(x, y)`` (static ``x``).
        percentile: activation percentile that sets each layer's ``lambda`` (99.9: robust normalization).
        scale: multiplies every ``lambda`` (below 1 compensates leaky neurons that fire less than
            ``input / threshold``).
        channelwise: one ``lambda`` per channel (Kim et al. 2020, "channel-wise normalization")
            instead of one per layer.

    Returns a new model (``ann`` and ``snn`` are not changed): ``ann``'s modules, with each ReLU at a
    neuron's place replaced by ``Sequential(Gain(1/l), neuron, Gain(l))``, ``l = lambda * scale``.
    """
    names = _neuron_names(snn)
    ann_modules = dict(ann.named_modules())
    wrong = [n for n in names if not isinstance(ann_modules.get(n), nn.ReLU)]
    if wrong:
        raise SpikeFitValueError(f"ann has no nn.ReLU at the neuron positions {wrong} of snn; build it with "
                                 f"relu_twin(snn)")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
        raise SpikeFitValueError(f"scale={scale!r} is not allowed; use a positive number")
    lams = activation_scales(ann, names, data, percentile=percentile, num_batches=num_batches,
                             channelwise=channelwise)
    out = copy.deepcopy(ann)
    snn_modules = dict(snn.named_modules())
    for n in names:
        lam = lams[n] * scale
        _set_module(out, n, nn.Sequential(Gain(1.0 / lam), copy.deepcopy(snn_modules[n]), Gain(lam)))
    get_adapter(out).reset(out)
    return out
