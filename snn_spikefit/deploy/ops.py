"""Counting synaptic operations, neuron updates and firing rates the way NeuroBench does.

Effective synaptic operations of a connection layer at one step: binarise its
input (``x != 0``) and its weight (``w != 0``), drop the bias, re-run the layer
on them and sum the output. Each term is one input that is active times one
synapse that exists, so silent inputs, zero weights and pruned channels cost
nothing. If every input value lies in ``{-1, 0, 1}`` (spikes) the operations are
accumulates (ACs), otherwise multiply-accumulates (MACs, e.g. the layer that
receives real-valued pixels). Dense operations: the same with all-ones input
and weight. Counts are summed over steps and divided by the number of samples
(NeuroBench ``SynapticOperations``: ``Effective_ACs``, ``Effective_MACs``, ``Dense``).
Recurrent synapses count the same way: snnTorch ``RLeaky.recurrent`` is a Linear fed
the previous step's spikes; weights a neuron owns (Norse ``LIFRecurrentCell``'s
``input_weights`` and ``recurrent_weights``) are counted on the operands the adapter
names (:meth:`~snn_spikefit.adapter.Adapter.weight_inputs`), as ``"<neuron>.<parameter>"``.

Neuron updates: every spiking neuron updates its state once per step
(clock-driven), so ``updates = neurons x steps`` per sample. Firing rate of a
neuron layer: non-zero outputs / outputs; activation sparsity is
``1 - sum(non-zero) / sum(outputs)`` over all neuron layers (NeuroBench's).

Graded (multi-level) spikes (:mod:`snn_spikefit.neurons.multilevel`): a layer fed the output of a
spiking neuron (the very tensor it emitted, or a view of it such as ``Flatten``) whose values are
levels ``0 .. L-1`` counts its ACs on the level, ``k`` ACs per synapse for a level-``k`` spike: the
cost on a chip whose spikes are binary events, where level ``k`` travels as ``k`` events. Its
``graded`` count is one event per non-zero level and synapse: the cost on a chip with graded spikes
(one payload-carrying event; :attr:`HardwareProfile.graded_spikes`). For binary spikes the two are
equal. A level map that went through a layer that changes values (pooling) is no longer
the neuron's output: its operations are MACs. Firing rates count non-zero levels.

Added spike maps (SEW residual ``out = n2(...) + x``; ``a + b``, ``a += b``, ``torch.add`` of neuron outputs
or their sums, watched by a ``TorchFunctionMode`` while counting) hold ``k`` where ``k`` spikes meet: counted
like a level-``k`` spike, ``k`` ACs per synapse in ``acs`` (``sum_i x_i [w_ji != 0]``: ``k`` binary events,
one per source neuron) and one event per non-zero position in ``graded`` (the count as a graded payload).
A spike map added to anything else (a membrane or current shortcut) is a real value: MACs.

>>> import torch
>>> from torch import nn
>>> fc = nn.Linear(3, 2, bias=False)
>>> with torch.no_grad(): _ = fc.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.5, 0.0]]))
>>> x = torch.tensor([[[1.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]]])    # [T=2, B=1, 3] spikes
>>> ops = count_ops(fc, x)
>>> ops.acs, ops.macs, ops.dense      # step 1: 1 + 2, step 2: 1 + 0; dense 2 x 6
(4.0, 0.0, 12.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import SpikeFitTypeError, SpikeFitValueError, refuse_duplicate
from ..reports import Report
from ..runtime import check_input, check_module, run
from ..table import Table
from ..adapter import get_adapter
from ..quantize.layers import layer_name
from ..trace import Recorder
from .spike_sums import SpikeSums, may_add, storage

__all__ = ["count_ops", "OpCounter", "OpCounts", "LayerOps", "NeuronActivity", "OP_RULES",
           "register_op_rule", "connection_layers", "neuron_weights"]


def _linear(module: nn.Module, x: Tensor, w: Tensor) -> Tensor:
    return F.linear(x, w)


def _conv(module: nn.Module, x: Tensor, w: Tensor) -> Tensor:
    return module._conv_forward(x, w, None)


#: How to re-run a connection layer on a binarised input and weight, keyed by layer type.
#: ``fn(module, x, w) -> output`` without bias. Extend with :func:`register_op_rule`.
OP_RULES: dict[type[nn.Module], Callable[[nn.Module, Tensor, Tensor], Tensor]] = {
    nn.Linear: _linear,
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Conv3d: _conv,
}


def register_op_rule(layer_type: type[nn.Module], fn: Callable[[nn.Module, Tensor, Tensor], Tensor], *,
                     replace: bool = False) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """Count operations of ``layer_type`` by ``fn(module, x, w)`` (the layer re-run with no bias).

    A type that already has a rule is refused unless ``replace=True``.
    """
    if not isinstance(layer_type, type) or not issubclass(layer_type, nn.Module):
        raise SpikeFitTypeError(f"layer_type must be an nn.Module subclass, got {layer_type!r}")
    if not callable(fn):
        raise SpikeFitTypeError(f"fn must be callable (module, x, w) -> Tensor, got {fn!r}")
    refuse_duplicate("an operation rule for", layer_type, OP_RULES, replace=replace, label=layer_type.__name__)
    OP_RULES[layer_type] = fn
    return fn


def _rule(module: nn.Module):
    cls = parametrize.type_before_parametrizations(module)
    for t in cls.__mro__:
        if t in OP_RULES:
            return OP_RULES[t]
    return None


def neuron_weights(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(layer name, neuron, parameter)`` of every synaptic weight a spiking neuron owns.

    E.g. a Norse ``LIFRecurrentCell``'s ``input_weights`` and ``recurrent_weights``
    (:meth:`~snn_spikefit.adapter.Adapter.weight_names`); named like compressed layers,
    ``"<neuron>.<parameter>"``. snnTorch ``RLeaky.recurrent`` is an ``nn.Linear``: a connection layer.
    """
    adapter = get_adapter(model)
    return [(layer_name(n, p), m, p) for n, m in adapter.neurons(model) for p in adapter.weight_names(m)]


def connection_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every layer whose operations are counted (types in :data:`OP_RULES`)."""
    return [(n, m) for n, m in model.named_modules()
            if _rule(m) is not None and ".parametrizations" not in f".{n}"]


@dataclass(frozen=True)
class LayerOps:
    """Operations of one connection layer, per sample (summed over steps)."""

    name: str
    type: str
    acs: float     # effective accumulates
    macs: float    # effective multiply-accumulates
    dense: float   # dense operations (all inputs and weights counted)
    graded: float = 0.0  # effective ACs when a graded spike is one event (binary spikes: == acs)


@dataclass(frozen=True)
class NeuronActivity:
    """Activity of one spiking-neuron layer."""

    name: str
    neurons: int          # neurons of the layer (per sample)
    updates: float        # neuron updates per sample (neurons x steps)
    firing_rate: float    # non-zero outputs / outputs


@dataclass(frozen=True)
class OpCounts(Report):
    """What :func:`count_ops` / :class:`OpCounter` measured, per sample."""

    samples: int
    layers: tuple[LayerOps, ...]
    neurons: tuple[NeuronActivity, ...]
    activation_sparsity: float | None   # None when the model has no spiking neuron

    @property
    def acs(self) -> float:
        return float(sum(layer.acs for layer in self.layers))

    @property
    def macs(self) -> float:
        return float(sum(layer.macs for layer in self.layers))

    @property
    def graded_acs(self) -> float:
        """ACs on a chip with graded spikes (one event per non-zero level; :attr:`LayerOps.graded`)."""
        return float(sum(layer.graded for layer in self.layers))

    @property
    def effective(self) -> float:
        return self.acs + self.macs

    @property
    def dense(self) -> float:
        return float(sum(layer.dense for layer in self.layers))

    @property
    def neuron_updates(self) -> float:
        return float(sum(n.updates for n in self.neurons))

    @property
    def firing_rates(self) -> dict[str, float]:
        return {n.name: n.firing_rate for n in self.neurons}

    def table(self) -> Table:
        """Per layer: ACs, MACs, dense ops, and per neuron layer: updates and firing rate."""
        t = Table(["layer", "type", "acs", "macs", "dense_ops", "neurons", "neuron_updates", "firing_rate"],
                  title=f"operations per sample ({self.samples} samples)")
        for layer in self.layers:
            t.add_row([layer.name, layer.type, layer.acs, layer.macs, layer.dense, None, None, None])
        for n in self.neurons:
            t.add_row([n.name, "neuron", None, None, None, n.neurons, n.updates, n.firing_rate])
        return t

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "acs": self.acs, "macs": self.macs, "dense": self.dense,
                "graded_acs": self.graded_acs,
                "neuron_updates": self.neuron_updates, "activation_sparsity": self.activation_sparsity,
                "layers": [asdict(layer) for layer in self.layers], "neurons": [asdict(n) for n in self.neurons]}


class OpCounter:
    """Count operations while a model runs: a context manager with hooks on connection layers and neurons.

    >>> # with OpCounter(model) as counter:
    >>> #     for x, y in data: sf.run(model, x, num_steps=4); counter.add_samples(len(y))
    >>> # counter.result()  -> OpCounts

    Weights are read once, at ``__enter__`` (the effective weight: the codebook
    value of a wrapped or frozen layer). Do not change them while counting.
    """

    def __init__(self, model: nn.Module) -> None:
        check_module(model)
        self.model = model
        self.layers = connection_layers(model)
        self.owned = neuron_weights(model)
        self.recorder = Recorder(model)
        self.samples = 0
        self._ops: dict[str, list[float]] = {n: [0.0] * 4 for n, _ in self.layers}  # acs, macs, dense, graded
        self._ops.update({n: [0.0] * 4 for n, _, _ in self.owned})
        self._emitted: dict[int, Tensor] = {}  # storage pointer -> a neuron's output (or a sum of them) this batch
        self._sums = SpikeSums(self._emitted) if may_add(model) else None
        self._spikes: dict[str, list[float]] = {n: [0.0, 0.0] for n in self.recorder.neurons}  # nonzero, total
        self._neurons: dict[str, int] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "OpCounter":
        with torch.no_grad():
            inside = self._inside_neurons()
            for name, module in self.layers:
                weight = module.weight.detach()
                w_bin = (weight != 0).to(weight.dtype)
                hook = self._hook(name, _rule(module), w_bin, torch.ones_like(weight))
                if name in inside:  # e.g. RLeaky.recurrent: snnTorch's zero reset calls it twice per step
                    hook = self._once_per_step(name, inside[name], hook)
                self._handles.append(module.register_forward_hook(hook))
            by_neuron: dict[int, tuple[nn.Module, list]] = {}
            for name, module, param in self.owned:
                weight = getattr(module, param).detach()
                by_neuron.setdefault(id(module), (module, []))[1].append((name, param, (weight != 0).to(weight.dtype)))
            for module, weights in by_neuron.values():
                self._handles.append(module.register_forward_hook(self._owned_hook(weights)))
            for module in self.recorder.neurons.values():
                self._handles.append(module.register_forward_hook(self._emit_hook()))
        self.recorder.__enter__()
        if self._sums is not None:
            self._sums.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._sums is not None:
            self._sums.__exit__(*exc)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.recorder.__exit__(*exc)

    def _emit_hook(self):
        adapter = self.recorder.adapter

        def fn(module, args, output):
            spk = adapter.spikes(module, output)
            key = storage(spk) if isinstance(spk, Tensor) else None
            if key is not None:
                self._emitted[key] = spk
        return fn

    def _levels(self, x: Tensor) -> bool:
        """``x`` is (a view of) a neuron's output this batch, or a sum of them, holding levels 0, 1, 2, ..."""
        if self._emitted.get(storage(x)) is None:
            return False
        return bool(((x >= 0) & (x == torch.floor(x))).all())

    def _hook(self, name: str, rule, w_bin: Tensor, w_ones: Tensor):
        acc = self._ops[name]
        dense_of: dict[tuple[int, ...], float] = {}  # input shape -> dense count (same at every step)

        def fn(module, args, output):
            x = args[0].detach()
            with torch.no_grad():
                x_bin = (x != 0).to(w_bin.dtype)
                spiking = not bool(((x != 0) & (x != 1) & (x != -1)).any())
                effective = float(rule(module, x_bin, w_bin).sum(dtype=torch.float64))
                dense = dense_of.get(tuple(x.shape))
                if dense is None:
                    dense = dense_of[tuple(x.shape)] = float(
                        rule(module, torch.ones_like(x_bin), w_ones).sum(dtype=torch.float64))
                if not spiking and self._levels(x):  # level k = k binary events per synapse
                    acc[0] += float(rule(module, x.to(w_bin.dtype), w_bin).sum(dtype=torch.float64))
                    acc[3] += effective
                    spiking = None
            if spiking is not None:
                acc[0 if spiking else 1] += effective
                acc[3] += effective if spiking else 0.0
            acc[2] += dense
        return fn

    def _inside_neurons(self) -> dict[str, nn.Module]:
        """Connection layers that live inside a spiking neuron (a recurrent weight), with the neuron."""
        neurons = self.recorder.neurons
        return {name: neurons[n] for name, _ in self.layers for n in neurons if name.startswith(n + ".")}

    def _once_per_step(self, name: str, neuron: nn.Module, hook):
        """Count a layer inside ``neuron`` once per call of the neuron (one step), however often it runs."""
        counted: list[bool] = [False]

        def fresh(module, args):
            counted[0] = False

        def once(module, args, output):
            if not counted[0]:
                counted[0] = True
                hook(module, args, output)

        self._handles.append(neuron.register_forward_pre_hook(fresh))
        return once

    def _owned_hook(self, weights: list):
        adapter = self.recorder.adapter
        hooks = {param: self._hook(name, _linear, w_bin, torch.ones_like(w_bin)) for name, param, w_bin in weights}

        def fn(module, args, output):
            for param, x in adapter.weight_inputs(module, args).items():
                hooks[param](module, (x,), None)
        return fn

    def add_samples(self, n: int) -> None:
        """Count ``n`` more samples (call once per batch, after running it); folds in the batch's spikes."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise SpikeFitValueError(f"n={n!r} is not allowed; use the batch size (an int >= 0)")
        self.samples += n
        for name, spk in self.recorder.spikes.items():
            acc = self._spikes[name]
            acc[0] += float(torch.count_nonzero(spk))
            acc[1] += float(spk.numel())
            if n and name not in self._neurons:
                self._neurons[name] = int(spk[0].numel()) // n
        self.recorder.clear()
        self._emitted.clear()

    def result(self) -> OpCounts:
        """Operations per sample so far."""
        if self.samples == 0:
            raise SpikeFitValueError("no samples counted; run the model and call add_samples(batch_size) first")
        per = 1.0 / self.samples
        layers = tuple(
            LayerOps(n, parametrize.type_before_parametrizations(m).__name__, *(v * per for v in self._ops[n]))
            for n, m in self.layers) + tuple(
            LayerOps(n, type(m).__name__, *(v * per for v in self._ops[n])) for n, m, _ in self.owned)
        neurons = tuple(
            NeuronActivity(n, self._neurons.get(n, 0), total * per, nonzero / total if total else 0.0)
            for n, (nonzero, total) in self._spikes.items())
        spikes = sum(v[0] for v in self._spikes.values())
        total = sum(v[1] for v in self._spikes.values())
        return OpCounts(self.samples, layers, neurons, 1.0 - spikes / total if total else None)


@torch.no_grad()
def count_ops(model: nn.Module, x: Tensor, *, num_steps: int | None = None) -> OpCounts:
    """Operations per sample of ``model`` on one batch ``x`` (run through :func:`snn_spikefit.run`).

    Args:
        model: an snnTorch, Norse or plain PyTorch model.
        x: static ``[B, ...]`` input with ``num_steps``, or time-major ``[T, B, ...]``.
        num_steps: steps for a static input.
    """
    check_input(x, num_steps)
    batch = int(x.shape[0] if num_steps is not None else x.shape[1])
    with OpCounter(model) as counter:
        run(model, x, num_steps=num_steps)
        counter.add_samples(batch)
    return counter.result()
