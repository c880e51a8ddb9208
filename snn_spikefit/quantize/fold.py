"""Fold BatchNorm into the layer before it, as a chip needs.

Neuromorphic chips have no BatchNorm: its inference-time affine map belongs in
the weights and bias of the Conv/Linear that feeds it,

.. math::

    W' = W \\cdot \\frac{\\gamma}{\\sqrt{\\sigma^2 + \\epsilon}}, \\qquad
    b' = (b - \\mu) \\frac{\\gamma}{\\sqrt{\\sigma^2 + \\epsilon}} + \\beta

(per output channel, running statistics). Fold after training and before
:func:`snn_spikefit.wrap`, so the codebooks are learned on the weights the chip
will hold. A layer is a Conv/Linear, or any module with a ``bias`` whose one
synaptic weight its adapter names (``Adapter.weight_names``). A quantized weight
folds only where its quantizer can scale its output channels exactly
(:meth:`~snn_spikefit.quantize.quantizer.Quantizer.scale_channels`: a frozen
codebook with ``granularity="channel"`` and ``bits``, whose per-channel scales
absorb the factor while the integers stay); any other quantizer is refused,
because folding would give it more than ``m`` values.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)).eval()
>>> _ = net[1].running_mean.uniform_(-1, 1)
>>> x = torch.rand(2, 1, 5, 5)
>>> before = net(x)
>>> _ = fold_batchnorm(net)
>>> type(net[1]).__name__, bool(torch.allclose(net(x), before, atol=1e-6))
('Identity', True)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..transaction import transactional
from ..adapter import Adapter, get_adapter
from ..errors import SpikeFitValueError, UnsupportedLayerError
from ..runtime import check_module
from .layers import quantizer_of, weight_names

__all__ = ["fold_batchnorm"]

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _pairs(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, str, nn.Module]]:
    """(container, layer name, layer, BN name, BN) for every Layer -> BN inside a Sequential."""
    out = []
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            layer, bn = parent._modules[a], parent._modules[b]
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                prefix = f"{parent_name}." if parent_name else ""
                out.append((parent, prefix + a, layer, prefix + b, bn))
    return out


def _weight_param(layer: nn.Module, adapter: Adapter) -> str | None:
    """The one synaptic weight a BatchNorm folds into, or None when ``layer`` cannot absorb one."""
    if isinstance(layer, _FOLDABLE):
        return "weight"
    names = weight_names(layer, adapter)
    return names[0] if len(names) == 1 and hasattr(layer, "bias") else None


def _check(name: str, layer: nn.Module, param: str | None, bn_name: str, bn: nn.Module) -> None:
    if param is None:
        raise UnsupportedLayerError(
            f"BatchNorm {bn_name!r} follows {name!r} ({type(layer).__name__}); only "
            f"{[t.__name__ for t in _FOLDABLE]} (or a layer with a bias and one weight its adapter names) "
            f"can absorb a BatchNorm")
    if not bn.track_running_stats or bn.running_mean is None:
        raise SpikeFitValueError(f"BatchNorm {bn_name!r} has no running statistics (track_running_stats=False); "
                                 f"it cannot be folded")
    out_channels = getattr(layer, param).shape[0]
    if bn.num_features != out_channels:
        raise SpikeFitValueError(f"BatchNorm {bn_name!r} has {bn.num_features} features but {name!r} has "
                                 f"{out_channels} output channels")
    if parametrize.is_parametrized(layer, param):
        plist, q = layer.parametrizations[param], quantizer_of(layer, param)
        if len(plist) != 1 or q is None or not q.scales_channels:
            kind = q.kind if q is not None else type(plist[0]).__name__
            raise UnsupportedLayerError(
                f"layer {name!r} has a {kind}; folding {bn_name!r} into it would give it more distinct "
                f"weights than its codebook allows. Fold before wrap(), or freeze with "
                f"granularity='channel' and bits set")


def _factors(name: str, layer: nn.Module, param: str, bn_name: str, bn: nn.Module):
    """The per-channel factor and the new bias of one fold; refused when either (or the weight) is not finite."""
    factor = bn.weight.detach() if bn.affine else torch.ones_like(bn.running_var)
    factor = factor / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * factor + shift
    weight = getattr(layer, param).detach()
    new_weight = weight * factor.reshape((-1,) + (1,) * (weight.dim() - 1))
    for what, value in (("scale gamma / sqrt(running_var + eps)", factor), ("folded bias", new_bias),
                        ("folded weight", new_weight)):
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise SpikeFitValueError(
                f"BatchNorm {bn_name!r} cannot be folded into {name!r}: its {what} has {bad} NaN/inf values "
                f"(running_var min {float(bn.running_var.min()):g}, eps {bn.eps:g}); fix its statistics "
                f"(running_var + eps must be > 0, all values finite)")
    return factor, new_bias


@transactional
@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a Conv/Linear in an ``nn.Sequential``; in place.

    The BatchNorm is replaced by ``nn.Identity`` and the layer gets a bias if it
    had none. Outputs in eval mode stay the same up to float rounding. Every
    pair is checked before anything changes, so a refusal leaves the model as
    it was. Returns ``model``.
    """
    check_module(model)
    adapter = get_adapter(model)
    pairs = [(parent, name, layer, _weight_param(layer, adapter), bn_name, bn)
             for parent, name, layer, bn_name, bn in _pairs(model)]
    for _, name, layer, param, bn_name, bn in pairs:
        _check(name, layer, param, bn_name, bn)
    folds = [(parent, layer, param, bn_name, bn, *_factors(name, layer, param, bn_name, bn))
             for parent, name, layer, param, bn_name, bn in pairs]
    for parent, layer, param, bn_name, bn, factor, new_bias in folds:
        weight = getattr(layer, param)
        q = quantizer_of(layer, param)
        if q is not None:
            q.scale_channels(factor)
        else:
            weight.mul_(factor.reshape((-1,) + (1,) * (weight.dim() - 1)))
        if layer.bias is not None:
            layer.bias.copy_(new_bias)
        else:
            layer.bias = nn.Parameter(new_bias.to(weight.dtype))
        parent._modules[bn_name.rsplit(".", 1)[-1]] = nn.Identity()  # the key within the Sequential
    return model
