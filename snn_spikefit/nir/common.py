"""What NIR export and import share: metadata keys, parameter helpers, the layer registry.

The registry maps a torch layer type to a NIR node type and back (``Linear``
<-> ``Affine``/``Linear``, ``Conv1d``/``Conv2d``, ``AvgPool2d``, ``SumPool2d``
<-> ``LPPool2d(1)``, ``Flatten``, :class:`Gain` <-> ``Scale``). Spiking neurons are
not here: they belong to the framework adapters
(:meth:`~snn_spikefit.adapter.Adapter.neuron_to_nir`). Add a layer type with
:func:`register_nir_layer`.

Conventions (shared by every adapter, proved by the round-trip tests):

* one NIR step is one forward-Euler step of length ``dt`` (graph metadata
  ``spikefit.dt``); CubaLIF integrates its synapse first and the membrane
  from the updated current;
* a neuron's state starts at rest: ``v = v_leak`` (``v_reset`` for IF), ``I = 0``;
* spikes are ``v > v_threshold``, computed after integration, then the reset.

>>> import torch
>>> g = Gain(torch.tensor([2.0, 3.0]))
>>> g(torch.ones(1, 2)).tolist()
[[2.0, 3.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import nir
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import SpikeFitTypeError, SpikeFitValueError, UnsupportedLayerError, refuse_duplicate

__all__ = [
    "Gain", "RecurrentNIR", "NirLayer", "register_nir_layer", "layer_for_module", "layer_for_node",
    "broadcast_param", "compact_param", "check_dt", "PRODUCER", "DT_KEY", "RESET_KEY", "CODEBOOK_KEYS",
]

PRODUCER = "snn_spikefit"
DT_KEY = "spikefit.dt"
RESET_KEY = "spikefit.reset_mechanism"  # only present when NIR's own reset (to v_reset) is not what runs
#: Node metadata of a compressed layer: integer codes, codebook, integers, scale, and the settings.
CODEBOOK_KEYS = ("spikefit.codes", "spikefit.codebook", "spikefit.codebook_int", "spikefit.scale",
                 "spikefit.bits", "spikefit.m", "spikefit.granularity")


class Gain(nn.Module):
    """Element-wise input gain ``y = x * gain`` (NIR ``Scale``).

    The importers put one in front of a neuron whose NIR resistance ``r`` (or
    synaptic ``w_in``) the framework's neuron cannot hold itself.
    """

    def __init__(self, gain: Tensor) -> None:
        super().__init__()
        self.register_buffer("gain", torch.as_tensor(gain, dtype=torch.float32).clone())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gain

    def extra_repr(self) -> str:
        return f"shape={tuple(self.gain.shape)}"


@dataclass(frozen=True)
class RecurrentNIR:
    """What an adapter returns from ``neuron_to_nir`` for a neuron that owns synaptic weights.

    ``neuron``: its NIR neuron node. ``recurrent``: the weight node (``Linear``/``Affine``)
    from the neuron's spikes back to its own input (a cycle in the graph, read with a
    one-step delay). ``input``: a weight node in front of the neuron when the neuron also
    owns its input weights (Norse ``LIFRecurrentCell.input_weights``), else ``None``.
    ``*_source``: the ``(module, parameter)`` each weight came from, so a codebook on it is
    written to that node's metadata.
    """

    neuron: nir.NIRNode
    recurrent: nir.NIRNode
    recurrent_source: tuple[nn.Module, str]
    input: nir.NIRNode | None = None
    input_source: tuple[nn.Module, str] | None = None


def broadcast_param(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A neuron parameter (scalar, per-channel or full) as a float64 array of the neuron's ``shape``."""
    arr = value.detach().cpu().double().numpy() if isinstance(value, Tensor) else np.asarray(value, np.float64)
    try:
        return np.ascontiguousarray(np.broadcast_to(arr, shape), dtype=np.float64)
    except ValueError:
        raise SpikeFitValueError(
            f"{what} has shape {arr.shape}, which does not broadcast to the neuron shape {shape}"
        ) from None


def check_dt(dt: Any) -> float:
    """``dt`` as a float, refused unless it is a positive finite number of seconds.

    >>> check_dt(1e-3)
    0.001
    """
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not np.isfinite(dt) or dt <= 0:
        raise SpikeFitValueError(f"dt={dt!r} is not allowed; use a positive finite number of seconds")
    return float(dt)


def compact_param(value: Any) -> Tensor:
    """A NIR parameter array as a float32 tensor: a 0-d tensor when all entries are equal."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.size and np.all(arr == arr.flat[0]):
        return torch.tensor(float(arr.flat[0]), dtype=torch.float32)
    return torch.from_numpy(arr.astype(np.float32))


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _bias(module: nn.Module, out: int) -> np.ndarray:
    b = getattr(module, "bias", None)
    return _np(b) if b is not None else np.zeros(out, dtype=np.float32)


def _set_params(module: nn.Module, weight: np.ndarray, bias: np.ndarray | None) -> nn.Module:
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.array(weight, dtype=np.float32)))
        if bias is not None:
            module.bias.copy_(torch.from_numpy(np.array(bias, dtype=np.float32)))
    return module


def _pair(v: Any, n: int) -> tuple[int, ...]:
    arr = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return tuple(arr * n if len(arr) == 1 else arr)


# -- exporters: (module, in_shape, out_shape) -> NIR node, shapes without the batch dim ---------
def _linear_to_nir(m: nn.Linear, in_shape, out_shape) -> nir.NIRNode:
    if m.bias is None:
        return nir.Linear(weight=_np(m.weight))
    return nir.Affine(weight=_np(m.weight), bias=_np(m.bias))


def _check_conv(m: nn.Module) -> None:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise UnsupportedLayerError(
            f"{type(m).__name__} with padding={m.padding!r}, padding_mode={m.padding_mode!r} cannot be "
            f"exported to NIR; use integer padding with padding_mode='zeros'"
        )


def _conv1d_to_nir(m: nn.Conv1d, in_shape, out_shape) -> nir.NIRNode:
    _check_conv(m)
    return nir.Conv1d(input_shape=int(in_shape[-1]), weight=_np(m.weight), stride=m.stride[0],
                      padding=m.padding[0], dilation=m.dilation[0], groups=m.groups,
                      bias=_bias(m, m.out_channels))


def _conv2d_to_nir(m: nn.Conv2d, in_shape, out_shape) -> nir.NIRNode:
    _check_conv(m)
    return nir.Conv2d(input_shape=tuple(int(s) for s in in_shape[-2:]), weight=_np(m.weight),
                      stride=np.array(m.stride), padding=np.array(m.padding), dilation=np.array(m.dilation),
                      groups=m.groups, bias=_bias(m, m.out_channels))


def _avgpool_to_nir(m: nn.AvgPool2d, in_shape, out_shape) -> nir.NIRNode:
    if m.ceil_mode or m.divisor_override is not None or (not m.count_include_pad and _pair(m.padding, 2) != (0, 0)):
        raise UnsupportedLayerError(
            f"AvgPool2d(ceil_mode={m.ceil_mode}, divisor_override={m.divisor_override}, "
            f"count_include_pad={m.count_include_pad}) cannot be exported to NIR; NIR's AvgPool2d has "
            f"kernel_size, stride and padding only"
        )
    return nir.AvgPool2d(kernel_size=np.array(_pair(m.kernel_size, 2)), stride=np.array(_pair(m.stride, 2)),
                         padding=np.array(_pair(m.padding, 2)))


def _sumpool_to_nir(m: nn.LPPool2d, in_shape, out_shape) -> nir.NIRNode:
    if float(m.norm_type) != 1.0 or m.ceil_mode:
        raise UnsupportedLayerError(
            f"LPPool2d(norm_type={m.norm_type}, ceil_mode={m.ceil_mode}) cannot be exported to NIR; only "
            f"norm_type=1 (a sum pool, NIR SumPool2d) without ceil_mode is supported"
        )
    stride = m.stride if m.stride is not None else m.kernel_size
    return nir.SumPool2d(kernel_size=np.array(_pair(m.kernel_size, 2)), stride=np.array(_pair(stride, 2)),
                         padding=np.array([0, 0]))


def _flatten_to_nir(m: nn.Flatten, in_shape, out_shape) -> nir.NIRNode:
    if m.start_dim == 0 or m.end_dim == 0:
        raise UnsupportedLayerError(
            f"Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) flattens the batch dimension; "
            f"NIR shapes have no batch dimension (use start_dim >= 1)"
        )
    end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
    return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=m.start_dim - 1, end_dim=end)


def _gain_to_nir(m: Gain, in_shape, out_shape) -> nir.NIRNode:
    return nir.Scale(scale=broadcast_param(m.gain, tuple(in_shape), "Gain.gain").astype(np.float32))


# -- importers: NIR node -> torch module ----------------------------------------------------------
def _affine_from_nir(node: nir.NIRNode) -> nn.Module:
    w = np.asarray(node.weight)
    if w.ndim != 2:
        raise UnsupportedLayerError(f"NIR {type(node).__name__} with a {w.ndim}-d weight is not supported (2-d only)")
    bias = getattr(node, "bias", None)
    m = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    return _set_params(m, w, None if bias is None else np.broadcast_to(bias, (w.shape[0],)))


def _conv_from_nir(node: nir.NIRNode) -> nn.Module:
    w = np.asarray(node.weight)
    n = w.ndim - 2
    cls = {1: nn.Conv1d, 2: nn.Conv2d}[n]
    padding = node.padding if isinstance(node.padding, str) else _pair(node.padding, n)
    bias = np.asarray(node.bias) if node.bias is not None else None
    m = cls(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]), stride=_pair(node.stride, n),
            padding=padding, dilation=_pair(node.dilation, n), groups=int(node.groups),
            bias=bias is not None)
    return _set_params(m, w, None if bias is None else np.broadcast_to(bias, (w.shape[0],)))


def _avgpool_from_nir(node: nir.AvgPool2d) -> nn.Module:
    return nn.AvgPool2d(_pair(node.kernel_size, 2), _pair(node.stride, 2), _pair(node.padding, 2))


def _sumpool_from_nir(node: nir.SumPool2d) -> nn.Module:
    if any(_pair(node.padding, 2)):
        raise UnsupportedLayerError(f"NIR SumPool2d with padding={_pair(node.padding, 2)} is not supported (padding 0 only)")
    return nn.LPPool2d(1, _pair(node.kernel_size, 2), _pair(node.stride, 2))


def _flatten_from_nir(node: nir.Flatten) -> nn.Module:
    start, end = int(node.start_dim), int(node.end_dim)
    return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)


def _scale_from_nir(node: nir.Scale) -> nn.Module:
    return Gain(compact_param(node.scale))


@dataclass(frozen=True)
class NirLayer:
    """How one torch layer type maps to one or more NIR node types."""

    torch_type: type
    nir_types: tuple[type, ...]
    to_nir: Callable[[nn.Module, tuple, tuple], nir.NIRNode]
    from_nir: Callable[[nir.NIRNode], nn.Module]


_LAYERS: list[NirLayer] = []


def register_nir_layer(torch_type: type, nir_types: type | tuple[type, ...],
                       to_nir: Callable, from_nir: Callable, *, replace: bool = False) -> NirLayer:
    """Teach export and import a layer type (``nir_types=()``: export only).

    A ``torch_type`` that is already registered is refused unless ``replace=True``
    (which drops the old entry). Lookups try the newest registration first, so a
    subclass registered after its base wins for the subclass.
    """
    if not isinstance(torch_type, type):
        raise SpikeFitTypeError(f"torch_type must be a class, got {torch_type!r}")
    nir_types = nir_types if isinstance(nir_types, tuple) else (nir_types,)
    if not all(isinstance(t, type) for t in nir_types):
        raise SpikeFitTypeError(f"nir_types must be NIR node classes, got {nir_types!r}")
    if not callable(to_nir) or (nir_types and not callable(from_nir)):
        raise SpikeFitTypeError("to_nir must be callable, and from_nir too unless nir_types is () (export only)")
    existing = [entry for entry in _LAYERS if entry.torch_type is torch_type]
    refuse_duplicate("a NIR layer for", torch_type, [entry.torch_type for entry in _LAYERS], replace=replace,
                     label=torch_type.__name__)
    for entry in existing:
        _LAYERS.remove(entry)
    layer = NirLayer(torch_type, nir_types, to_nir, from_nir)
    _LAYERS.insert(0, layer)
    return layer


for _args in [
    (nn.Linear, (nir.Affine, nir.Linear), _linear_to_nir, _affine_from_nir),
    (nn.Conv1d, nir.Conv1d, _conv1d_to_nir, _conv_from_nir),
    (nn.Conv2d, nir.Conv2d, _conv2d_to_nir, _conv_from_nir),
    (nn.AvgPool2d, nir.AvgPool2d, _avgpool_to_nir, _avgpool_from_nir),
    (nn.LPPool2d, nir.SumPool2d, _sumpool_to_nir, _sumpool_from_nir),
    (nn.Flatten, nir.Flatten, _flatten_to_nir, _flatten_from_nir),
    (Gain, nir.Scale, _gain_to_nir, _scale_from_nir),
]:
    register_nir_layer(*_args)

_HINTS = {
    "MaxPool1d": "NIR has no max-pooling node; use nn.AvgPool2d (or LPPool2d(1, ...) for a sum pool)",
    "MaxPool2d": "NIR has no max-pooling node; use nn.AvgPool2d (or LPPool2d(1, ...) for a sum pool)",
    "BatchNorm1d": "fold it into the preceding Linear/Conv first: snn_spikefit.fold_batchnorm(model)",
    "BatchNorm2d": "fold it into the preceding Linear/Conv first: snn_spikefit.fold_batchnorm(model)",
}


def supported_layers() -> list[str]:
    return [layer.torch_type.__name__ for layer in reversed(_LAYERS)]


def layer_for_module(name: str, module: nn.Module) -> NirLayer:
    """The registry entry for ``module`` (its class before parametrizations), or a clear error."""
    cls = parametrize.type_before_parametrizations(module)
    for layer in _LAYERS:
        if issubclass(cls, layer.torch_type):
            return layer
    hint = _HINTS.get(cls.__name__, f"supported layers: {supported_layers()} and the adapters' neurons")
    raise UnsupportedLayerError(f"layer {name!r} ({cls.__name__}) cannot be exported to NIR: {hint}")


def layer_for_node(name: str, node: nir.NIRNode) -> NirLayer | None:
    """The registry entry that imports ``node``, or ``None`` (neurons are the adapters' job)."""
    for layer in _LAYERS:
        if isinstance(node, layer.nir_types):
            return layer
    return None
