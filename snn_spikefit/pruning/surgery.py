"""Channel surgery: physically remove channels from layers, keyed by module type.

:data:`SURGERY` maps a module type to a :class:`Surgery` saying what the module
does to channels:

* ``"layer"`` (``Conv1d``/``Conv2d``/``Linear``): has output channels
  (``out``: slice weight rows and bias) and input channels (``inp``: slice
  weight columns).
* ``"channelwise"`` (``BatchNorm1d``/``2d``, pooling, ``Dropout``, ``Identity``):
  keeps the channel layout; ``out`` slices its per-channel state (BN affine
  parameters and running statistics; nothing for pools).
* ``"flatten"`` (``Flatten``): ``map_keep`` turns kept channel indices into kept
  feature indices (channel ``c`` of ``[C, H, W]`` owns features
  ``c*H*W .. (c+1)*H*W - 1``).

Modules keep their identity: parameters are replaced in place by smaller ones,
and ``in_channels``/``out_channels``/``in_features``/``out_features``/
``num_features`` are updated. A weight carrying a quantizer (a CAT codebook,
trainable or frozen, or a baseline's) keeps it: :func:`slice_weight` asks the
quantizer to select the channels (:meth:`~snn_spikefit.quantize.quantizer.Quantizer.select_channels`:
per-channel codebooks lose the rows of removed channels, frozen layers slice
their integer codes), so every quantizer invariant (at most ``m`` values per
group) still holds after surgery.

Register your own module type with :func:`register_surgery`.

Recurrent neurons: the adapter's ``prune_neuron`` keeps the kept neurons' rows and
columns of the recurrent weight (snnTorch ``RLeaky.recurrent``, Norse
``LIFRecurrentCell.recurrent_weights``); a neuron that owns its input weights (Norse's
``input_weights``) is its own producer (``PrunableLayer.producer == neuron``).

:func:`prunable_layers` finds, in the traced data-flow graph, each spiking
layer's path producer -> (BatchNorm, pools) -> neuron -> (pools, Dropout,
Flatten) -> consumer, and refuses anything else on it (a functional op, an
unknown module) naming the layer; channels joined by an addition (a residual block) or read
by several modules form a :class:`~snn_spikefit.pruning.groups.ChannelGroup` pruned together
(:mod:`snn_spikefit.pruning.groups`). :func:`remove_channels` applies the surgery along one
path or group.

>>> import torch
>>> from torch import nn
>>> conv = nn.Conv2d(3, 4, 3)
>>> surgery_for(conv).out(conv, torch.tensor([0, 2]))
>>> conv.out_channels, tuple(conv.weight.shape), tuple(conv.bias.shape)
(2, (2, 3, 3, 3), (2,))
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..adapter import Adapter
from ..nir.importer import NIRGraphModule
from ..quantize.layers import select_channels
from ..quantize.quantizer import Quantizer
from ..errors import SpikeFitTypeError, SpikeFitValueError, UnsupportedLayerError, refuse_duplicate
from ..runtime import eval_mode
from ..trace import INPUT, UNKNOWN, Graph, trace

__all__ = [
    "Surgery", "SURGERY", "register_surgery", "surgery_for", "slice_weight", "count_parameters",
    "PrunableLayer", "prunable_layers", "remove_channels",
]

ROLES = ("layer", "channelwise", "flatten")


@dataclass(frozen=True)
class Surgery:
    """What channel removal does to one module type."""

    role: str  # "layer", "channelwise" or "flatten"
    out: Callable[[nn.Module, Tensor], None] | None = None  # keep these output (or, channelwise, all) channels
    inp: Callable[[nn.Module, Tensor], None] | None = None  # layer: keep these input channels
    map_keep: Callable[[nn.Module, Tensor, tuple], Tensor] | None = None  # flatten: channel -> feature indices
    check: Callable[[nn.Module], str | None] | None = None  # why this module cannot be pruned, or None
    weight: str = "weight"  # layer: the synaptic weight parameter, output channels first

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise SpikeFitValueError(f"Surgery role={self.role!r} is not allowed; use one of {ROLES}")

    def problem(self, module: nn.Module) -> str | None:
        return self.check(module) if self.check is not None else None


def _replace_param(module: nn.Module, name: str, dim: int, keep: Tensor) -> None:
    p = getattr(module, name, None)
    if p is None:
        return
    if name in module._buffers:
        module._buffers[name] = p.index_select(dim, keep.to(p.device)).clone()
        return
    new = nn.Parameter(p.detach().index_select(dim, keep.to(p.device)).clone(), requires_grad=p.requires_grad)
    setattr(module, name, new)


def slice_weight(module: nn.Module, dim: int, keep: Tensor, param: str = "weight") -> None:
    """Keep the indices ``keep`` of ``module.<param>`` along ``dim`` (plain, or carrying any quantizer)."""
    if not parametrize.is_parametrized(module, param):
        _replace_param(module, param, dim, keep)
        return
    select_channels(module, param, dim, keep)


def _conv_check(module: nn.Module) -> str | None:
    if module.groups != 1:
        return f"groups={module.groups} (grouped/depthwise convolutions are not supported; groups must be 1)"
    return None


def _conv_out(module: nn.Module, keep: Tensor) -> None:
    slice_weight(module, 0, keep)
    _replace_param(module, "bias", 0, keep)
    module.out_channels = int(keep.numel())


def _conv_in(module: nn.Module, keep: Tensor) -> None:
    slice_weight(module, 1, keep)
    module.in_channels = int(keep.numel())


def _linear_out(module: nn.Module, keep: Tensor) -> None:
    slice_weight(module, 0, keep)
    _replace_param(module, "bias", 0, keep)
    module.out_features = int(keep.numel())


def _linear_in(module: nn.Module, keep: Tensor) -> None:
    slice_weight(module, 1, keep)
    module.in_features = int(keep.numel())


def _batchnorm(module: nn.Module, keep: Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        _replace_param(module, name, 0, keep)
    module.num_features = int(keep.numel())


def _nothing(module: nn.Module, keep: Tensor) -> None:
    return None


def _flatten_check(module: nn.Module) -> str | None:
    if module.start_dim != 1 or module.end_dim != -1:
        return (f"Flatten(start_dim={module.start_dim}, end_dim={module.end_dim}); only "
                f"Flatten(start_dim=1, end_dim=-1) maps channels to features")
    return None


def _flatten_map(module: nn.Module, keep: Tensor, in_shape: tuple) -> Tensor:
    per_channel = 1
    for s in in_shape[2:]:
        per_channel *= int(s)
    offsets = torch.arange(per_channel, device=keep.device)
    return (keep[:, None] * per_channel + offsets).reshape(-1)


_LAYER_CONV = Surgery("layer", out=_conv_out, inp=_conv_in, check=_conv_check)
_CHANNELWISE = Surgery("channelwise", out=_nothing)

SURGERY: dict[type, Surgery] = {
    nn.Conv1d: _LAYER_CONV,
    nn.Conv2d: _LAYER_CONV,
    nn.Linear: Surgery("layer", out=_linear_out, inp=_linear_in),
    nn.BatchNorm1d: Surgery("channelwise", out=_batchnorm),
    nn.BatchNorm2d: Surgery("channelwise", out=_batchnorm),
    nn.Flatten: Surgery("flatten", map_keep=_flatten_map, check=_flatten_check),
    **{t: _CHANNELWISE for t in (
        nn.AvgPool1d, nn.AvgPool2d, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity,
    )},
}


def register_surgery(module_type: type, surgery: Surgery, *, replace: bool = False) -> Surgery:
    """Teach channel pruning a new module type (looked up through the type's MRO)."""
    if not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
        raise SpikeFitTypeError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    if not isinstance(surgery, Surgery):
        raise SpikeFitTypeError(f"surgery must be a snn_spikefit.surgery.Surgery, got {type(surgery).__name__}")
    refuse_duplicate("surgery for", module_type, SURGERY, replace=replace, label=module_type.__name__)
    SURGERY[module_type] = surgery
    return surgery


def surgery_for(module: nn.Module) -> Surgery | None:
    """The surgery registered for ``module``'s type (its class before parametrization), or None."""
    for cls in parametrize.type_before_parametrizations(module).__mro__:
        if cls in SURGERY:
            return SURGERY[cls]
        if cls is nn.Module:
            break
    return None


def count_parameters(model: nn.Module) -> int:
    """Number of effective parameter values: weights as the layer uses them, biases, BN, neuron parameters."""
    total = 0
    for module in model.modules():
        if isinstance(module, (parametrize.ParametrizationList, Quantizer)):
            continue
        for name, p in module.named_parameters(recurse=False):
            total += p.numel()
        if parametrize.is_parametrized(module):
            for name in module.parametrizations.keys():
                total += getattr(module, name).numel()
    return total


# -- which modules a spiking layer's channels run through ------------------------------------------

@dataclass(frozen=True)
class PrunableLayer:
    """A spiking layer whose channels can be removed, and the modules that change with it."""

    neuron: str                  # the spiking neuron
    producer: str                # Conv/Linear whose output channels are the neuron's channels
    between: tuple[str, ...]     # channel-wise modules from producer to neuron (BatchNorm, pools)
    after: tuple[str, ...]       # modules from neuron to consumer (pools, Dropout, Flatten)
    consumer: str                # Conv/Linear whose input channels follow
    channels: int
    channel_dim: int             # channel axis of one step's activation, from the end (negative)
    after_shapes: tuple[tuple[int, ...], ...] = ()  # per-step input shape of each module in ``after``
    producer_weight: str = "weight"  # the producer's weight (output channels first): a neuron's own input weight

    @property
    def neurons(self) -> tuple[str, ...]:
        return (self.neuron,)

    @property
    def members(self) -> tuple[tuple[str, str], ...]:
        """``(neuron, producer)`` pairs scored for this layer (one; a ChannelGroup has several)."""
        return ((self.neuron, self.producer),)

    weight_members = members

    @property
    def param_modules(self) -> tuple[str, ...]:
        return (self.producer, *self.between, self.neuron)


def _walk(graph: Graph, start: str, direction: str) -> tuple[list[str], str | None]:
    """From ``start`` follow single edges until a "layer" module; returns (path, layer or None at output)."""
    path: list[str] = []
    cur = start
    while True:
        if direction == "back":
            ins = graph.producers(cur)
            if len(ins) != 1 or ins[0] in (INPUT, UNKNOWN):
                what = "the model input" if ins == [INPUT] else f"inputs {ins}"
                raise _cannot(start, f"{cur!r} receives {what}, not the output of one Conv/Linear layer "
                              f"('?' = a functional op in forward)")
            nxt = graph.node(ins[0])
            if len(graph.consumers(nxt.name)) != 1:
                raise _cannot(start, f"the output of {nxt.name!r} also feeds {[c.name for c in graph.consumers(nxt.name)]}")
        else:
            outs = graph.consumers(cur)
            if not outs:
                if graph.output == cur:
                    return path, None
                raise _cannot(start, f"the output of {cur!r} is used by no module")
            if len(outs) != 1 or graph.output == cur:
                raise _cannot(start, f"the output of {cur!r} feeds {[o.name for o in outs]}"
                              + (" and the model output" if graph.output == cur else ""))
            nxt = outs[0]
            if nxt.inputs != [cur]:
                raise _cannot(start, f"{nxt.name!r} combines inputs {nxt.inputs} (a module of several inputs)")
        if nxt.is_neuron:
            raise _cannot(start, f"it connects directly to spiking layer {nxt.name!r}")
        s = surgery_for(nxt.module)
        kind = type(nxt.module).__name__
        if s is None or (s.role == "flatten" and direction == "back"):
            raise _cannot(start, f"{nxt.name!r} ({kind}) is not a module channel pruning can pass through "
                          f"(register one with snn_spikefit.surgery.register_surgery)")
        problem = s.problem(nxt.module)
        if problem:
            raise _cannot(start, f"{nxt.name!r} ({kind}) has {problem}")
        if s.role == "layer":
            return path, nxt.name
        path.append(nxt.name)
        cur = nxt.name


def _cannot(name: str, why: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"cannot prune spiking layer {name!r}: {why}; pass ignore=[{name!r}] to leave it unpruned"
    )


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def prunable_layers(model: nn.Module, sample: Tensor, *, ignore: Iterable[str] | None = None,
                    num_steps: int = 1) -> list:
    """The spiking layers (:class:`PrunableLayer`) and channel groups (:class:`~snn_spikefit.pruning.groups.ChannelGroup`,
    channels joined by an addition) of ``model`` that :func:`prune` can shrink (the output layer never is),
    in graph order.

    ``ignore``: neuron or layer names (or glob patterns) to leave alone; a layer
    that cannot be pruned and is not ignored raises ``UnsupportedLayerError``. ``num_steps``: steps
    ``sample`` is traced for (a model whose ``forward`` runs its own time loop needs its count).
    """
    patterns = _ignore_patterns(model, ignore)
    _refuse_recurrent_graphs(model)
    with eval_mode(model):  # tracing must not update BatchNorm statistics or codebooks
        graph = trace(model, sample, num_steps=num_steps)
    from .groups import select_groups

    out, grouped = select_groups(graph, lambda m: _owns_input_weights(graph.adapter, m),
                                 lambda n: _matches(n, patterns))
    for node in graph.nodes:
        if not node.is_neuron or node.name in grouped or _matches(node.name, patterns):
            continue
        after, consumer = _walk(graph, node.name, "forward")
        if consumer is None:  # its spikes are the model's output
            continue
        if _owns_input_weights(graph.adapter, node.module):  # e.g. Norse LIFRecurrentCell: its own producer
            between, producer = [], node.name
        else:
            between, producer = _walk(graph, node.name, "back")
        if _matches(producer, patterns):
            continue
        shape = node.out_shape
        if shape is None or len(shape) < 2:
            raise _cannot(node.name, f"its spikes have shape {shape}; expected [B, C, ...]")
        producer_module = graph.node(producer).module
        param = (_owned_input(graph.adapter, producer_module) if producer == node.name
                 else surgery_for(producer_module).weight)
        weight = getattr(producer_module, param)
        if weight.shape[0] != shape[1]:
            raise _cannot(node.name, f"it has {shape[1]} channels but {producer!r} has {weight.shape[0]} outputs")
        out.append(PrunableLayer(node.name, producer, tuple(between), tuple(after), consumer,
                                 int(shape[1]), 1 - len(shape), tuple(graph.node(n).in_shape for n in after), param))
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return sorted(out, key=lambda p: order[p.neuron])


def _owned_input(adapter: Adapter, module: nn.Module) -> str | None:
    """The weight a neuron owns that multiplies its input (not its own spikes), if any."""
    recurrent = set(adapter.recurrent_weight_names(module))
    return next((n for n in adapter.weight_names(module) if n not in recurrent), None)


def _owns_input_weights(adapter: Adapter, module: nn.Module) -> bool:
    return _owned_input(adapter, module) is not None


def _refuse_recurrent_graphs(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, NIRGraphModule) and m.recurrent:
            raise UnsupportedLayerError(
                f"cannot prune {name or type(m).__name__!r}: an imported NIR graph with recurrent edges "
                f"{m.recurrent} cannot be pruned (its recurrent inputs are not traced module to module); prune "
                f"the model in its framework (snnTorch RLeaky/RSynaptic, Norse LIFRecurrentCell) and export it")


def _ignore_patterns(model: nn.Module, ignore) -> list[str]:
    if ignore is None:
        return []
    pats = [ignore] if isinstance(ignore, str) else list(ignore)
    names = [n for n, _ in model.named_modules() if n]
    for p in pats:
        if not isinstance(p, str):
            raise SpikeFitTypeError(f"ignore must contain layer names (str), got {p!r}")
        if not any(fnmatch.fnmatchcase(n, p) for n in names):
            raise SpikeFitValueError(f"ignore={p!r} matches no module of the model; modules: {names}")
    return pats


def remove_channels(model: nn.Module, adapter: Adapter, layer, keep: Tensor) -> None:
    """Keep only channels ``keep`` (sorted indices) of ``layer``: producer, followers, neuron, consumer
    (of a :class:`~snn_spikefit.pruning.groups.ChannelGroup`: every member)."""
    from .groups import ChannelGroup, remove_group

    if isinstance(layer, ChannelGroup):
        return remove_group(model, adapter, layer, keep)
    modules = dict(model.named_modules())
    if layer.producer != layer.neuron:  # a neuron that owns its input weights slices them itself
        surgery_for(modules[layer.producer]).out(modules[layer.producer], keep)
    for name in layer.between:
        surgery_for(modules[name]).out(modules[name], keep)
    adapter.prune_neuron(modules[layer.neuron], keep, layer.channel_dim)
    index = keep
    for name, in_shape in zip(layer.after, layer.after_shapes):
        s = surgery_for(modules[name])
        if s.role == "flatten":
            index = s.map_keep(modules[name], index, in_shape)
        else:
            s.out(modules[name], index)
    surgery_for(modules[layer.consumer]).inp(modules[layer.consumer], index)
