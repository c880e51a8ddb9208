"""Which layers post-training compression takes, the neuron each feeds, and the calibration batches.

For each compressible layer, :func:`layer_plans` follows the traced graph through BatchNorm, pooling,
Flatten and Dropout to the neuron it feeds: that neuron's membrane decays give the leak kernel of the
layer's Hessian (:mod:`~snn_spikefit.ptq.hessian`), and the BatchNorm gains on the way (squared) scale
its output rows. A layer that reaches no single neuron is a read-out (``K = I``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..adapter import Adapter, get_adapter
from ..errors import SpikeFitTypeError, SpikeFitValueError, UnsupportedLayerError
from ..quantize.wrap import as_patterns, select_layers
from ..trace import trace
from .hessian import SUPPORTED_TYPES, check_supported

__all__ = ["Plan", "calibration_batches", "layer_plans"]

_BATCH = 64
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: Modules between a layer and its neuron that keep the input linear enough for the kernel.
_PASS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)


@dataclass
class Plan:
    """One layer to compress: its name and module, the neuron it feeds, that neuron's decays, BN gain^2."""

    name: str
    module: nn.Module
    neuron: str
    decays: tuple
    gain2: Tensor | None


def calibration_batches(calib_data: Any, num_steps: int | None) -> list[Tensor]:
    """The calibration inputs as a list of batches (read once: later passes see the same samples)."""
    if calib_data is None:
        raise SpikeFitValueError("calib_data is None; pass calibration inputs (a tensor [N, ...] or (x, y) batches)")
    if isinstance(calib_data, Tensor):
        dim = 0 if num_steps is not None else 1
        batches = list(torch.split(calib_data, _BATCH, dim=dim)) if calib_data.ndim > dim else []
    elif isinstance(calib_data, (str, bytes)) or not isinstance(calib_data, Iterable):
        raise SpikeFitTypeError(f"calib_data must be a tensor or an iterable of batches, got {type(calib_data).__name__}")
    else:
        batches = []
        for i, item in enumerate(calib_data):
            x = item[0] if isinstance(item, (tuple, list)) and item else item
            if not isinstance(x, Tensor):
                raise SpikeFitTypeError(f"calib_data batch {i} holds {type(x).__name__}; use tensors or (x, y) pairs")
            batches.append(x)
    batches = [b for b in batches if b.numel() > 0]
    if not batches:
        raise SpikeFitValueError("calib_data has no samples; pass at least one calibration input")
    for i, b in enumerate(batches):
        if b.is_floating_point() and not bool(b.isfinite().all()):
            raise SpikeFitValueError(f"calib_data batch {i} contains NaN or inf values; inputs must be finite")
    return batches


def _follow(graph, name: str, adapter: Adapter) -> tuple[str, tuple, Tensor | None]:
    """The neuron fed by layer ``name`` (through BatchNorm, pooling, flatten), its decays, the BN gain^2."""
    gain2, cur = None, name
    for _ in range(16):
        consumers = graph.consumers(cur)
        if len(consumers) != 1:
            break
        node = consumers[0]
        if node.is_neuron:
            decays = []
            for d in adapter.membrane_decays(node.module):
                d = torch.as_tensor(d, dtype=torch.float64)
                decays.append(float(d.mean()))
            return node.name, tuple(decays), gain2
        if isinstance(node.module, _BATCHNORM):
            bn = node.module
            g = (bn.weight.detach() if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(
                bn.running_var + bn.eps) if bn.running_var is not None else None
            gain2 = None if g is None else (g.double() ** 2) * (gain2 if gain2 is not None else 1.0)
        elif not isinstance(node.module, _PASS) and type(node.module).__name__ != "Gain":
            break
        cur = node.name
    return "-", (), gain2  # a read-out (or a branch): the output error at every step, K = I


def layer_plans(model: nn.Module, batches: list[Tensor], num_steps, include, exclude) -> list[Plan]:
    adapter = get_adapter(model)
    layers = select_layers(model, as_patterns("include", include), as_patterns("exclude", exclude))
    if not layers:
        raise SpikeFitValueError(f"model has no compressible layer (after include={include!r}, exclude={exclude!r})")
    for name, module, param in layers:
        if param != "weight" or not isinstance(module, SUPPORTED_TYPES) or parametrize.is_parametrized(module):
            kind = type(module).__name__ + (f".{param}" if param != "weight" else "")
            raise UnsupportedLayerError(
                f"layer {name!r} ({kind}) cannot be compressed post-training (supported: "
                f"{[t.__name__ for t in SUPPORTED_TYPES]} weights without parametrizations); "
                f"pass exclude=[{name!r}] to leave it as it is")
        try:  # refuse before anything runs
            check_supported(module)
        except UnsupportedLayerError as exc:
            raise UnsupportedLayerError(f"layer {name!r}: {exc}; pass exclude=[{name!r}] to leave it as it is"
                                        ) from None
    sample = batches[0] if num_steps is not None else batches[0][0]
    graph = trace(model, sample)
    out = []
    for name, module, _ in layers:
        try:
            neuron, decays, gain2 = _follow(graph, name, adapter)
        except UnsupportedLayerError as exc:
            raise UnsupportedLayerError(f"layer {name!r} feeds a neuron post-training compression cannot model: "
                                        f"{exc}; pass exclude=[{name!r}] to leave it as it is") from None
        if gain2 is not None and gain2.numel() not in (1, module.weight.shape[0]):
            gain2 = None
        out.append(Plan(name, module, neuron, decays, gain2))
    return out
