"""What a :func:`~snn_spikefit.check` rule sees, and the table of rules check runs.

A rule is one function ``fn(ctx: CheckContext) -> None`` per chip constraint: it reads
the profile and the facts about each connection layer (:class:`LayerFacts`, collected
once per check) and reports with ``ctx.add(...)`` / ``ctx.skip(...)``. The built-in rules
live in :mod:`snn_spikefit.deploy.check`; a chip vendor adds one with
:func:`register_check_rule`, without editing ``check``.

>>> from torch import nn
>>> import snn_spikefit as sf
>>> def max_layers(ctx):
...     if len(ctx.layers) > 1:
...         ctx.add("max_layers", "max_layers", "(model)", 1, len(ctx.layers), "merge layers")
>>> _ = register_check_rule("max_layers", max_layers)
>>> report = sf.check(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), sf.HardwareProfile("tiny"))
>>> [(v.rule, v.layer, v.limit, v.actual) for v in report.violations]
[('max_layers', '(model)', 1, 2)]
>>> unregister_check_rule("max_layers")
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..adapter import Adapter, get_adapter
from ..errors import SpikeFitTypeError, SpikeFitValueError, refuse_duplicate
from ..nir.importer import NIRGraphModule
from ..quantize.layers import compressed_layers
from ..trace import trace
from .hardware import HardwareProfile
from .ops import connection_layers, neuron_weights

__all__ = ["CheckContext", "LayerFacts", "CheckRule", "register_check_rule", "unregister_check_rule",
           "check_rules", "layer_facts"]


# -- the facts every rule reads, collected once ----------------------------------------------------

@dataclass(frozen=True)
class LayerFacts:
    """What the rules know about one connection layer (``Linear``/``Conv*``)."""

    name: str
    module: nn.Module
    cls: type                 # the layer type before parametrizations
    is_conv: bool
    weight: Tensor            # the effective weight (codebook values for wrapped/frozen layers)
    rows: Tensor              # weight as [output channels, inputs]
    nonzero_rows: Tensor      # non-zero weights per output channel (synapses into one neuron)
    quantizer: Any            # the layer's codebook, or None
    neurons: int | None       # output elements per sample; None: a conv layer checked without sample
    recurrent_of: str | None = None       # the spiking neuron whose own spikes this weight feeds back to it
    recurrent_fan_in: Tensor | None = None  # recurrent synapses into each output neuron of this layer
    feeds: str | None = None  # the recurrent neuron this layer feeds, when the graph says so (imported NIR)

    @property
    def fan_in(self) -> Tensor:
        """Synapses (non-zero weights) into each output neuron, recurrent ones included."""
        return self.nonzero_rows if self.recurrent_fan_in is None else self.nonzero_rows + self.recurrent_fan_in


@dataclass
class CheckContext:
    """The model's facts for the rules, and what they report (:meth:`add`, :meth:`skip`)."""

    model: nn.Module
    profile: HardwareProfile
    sample: Tensor | None
    adapter: Adapter
    layers: list[LayerFacts]
    #: ``(rule, layer, limit, actual, severity, hint)`` as reported; check() makes Violations of them.
    violations: list[tuple[str, str, Any, Any, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)   # (rule, layer, why)
    num_steps: int = 1        # steps check(..., num_steps=) traces the sample for

    @property
    def chip(self) -> str:
        return self.profile.title or self.profile.name

    @property
    def rewrap(self) -> str:
        """The step a hint puts before ``wrap(...)``: a wrapped model must be stripped first."""
        return "strip(model), then " if any(f.quantizer is not None for f in self.layers) else ""

    def add(self, rule: str, field: str, layer: str, limit: Any, actual: Any, hint: str, *,
            severity: str | None = None) -> None:
        """Report a broken rule; a warning when the profile marks ``field`` uncertain (or ``severity`` says)."""
        if severity is None:
            severity = "warning" if field in self.profile.uncertain else "error"
            limit = f"{limit} (uncertain)" if severity == "warning" else limit
        self.violations.append((rule, layer, limit, actual, severity, hint))

    def skip(self, rule: str, layer: str, why: str) -> None:
        """Report a rule that could not be checked for ``layer``."""
        self.skipped.append((rule, layer, why))


def layer_facts(model: nn.Module, sample: Tensor | None, num_steps: int = 1) -> list[LayerFacts]:
    """The facts of every connection layer of ``model`` (``sample`` traced for ``num_steps`` to count
    conv neurons).

    Weights a neuron owns (:func:`~snn_spikefit.deploy.ops.neuron_weights`, e.g. a Norse
    ``LIFRecurrentCell``'s) are layers too. A recurrent weight (a connection layer inside a
    neuron, such as snnTorch ``RLeaky.recurrent``, or one the adapter names in
    ``recurrent_weight_names``) is marked ``recurrent_of`` and its synapses are added to the
    fan-in of the layer that feeds the neuron.
    """
    adapter = get_adapter(model)
    quantizers = {c.name: c.quantizer for c in compressed_layers(model)}
    traceable = sample is not None and adapter.step_problem(model) is None  # else: layer_type errors
    nodes = {n.name: n for n in trace(model, sample, num_steps=num_steps).nodes} if traceable else {}
    neurons = [n for n, _ in adapter.neurons(model)]
    found = [(name, module, "weight") for name, module in connection_layers(model)] + neuron_weights(model)
    out = []
    for name, module, param in found:
        cls = parametrize.type_before_parametrizations(module)
        owned = param != "weight"
        is_conv = not owned and not issubclass(cls, nn.Linear)
        weight = getattr(module, param).detach()
        rows = weight.reshape(weight.shape[0], -1)
        if name in nodes and nodes[name].out_shape is not None:
            neurons_out = math.prod(nodes[name].out_shape[1:])
        else:
            neurons_out = None if is_conv else int(weight.shape[0])
        owner = name.rsplit(".", 1)[0] if owned else next((n for n in neurons if name.startswith(n + ".")), None)
        recurrent_of = owner if (owner is not None and (not owned or param in adapter.recurrent_weight_names(module))) else None
        out.append(LayerFacts(name, module, cls, is_conv, weight, rows, (rows != 0).sum(dim=1),
                              quantizers.get(name), neurons_out, recurrent_of))
    return _add_recurrent_fan_in(_graph_recurrence(model, out), nodes, [n for n, _ in model.named_modules()])


def _graph_recurrence(model: nn.Module, facts: list[LayerFacts]) -> list[LayerFacts]:
    """Mark the recurrent weight layers of imported NIR graphs (``NIRGraphModule.recurrent_layers``)."""
    names = {id(m): n for n, m in model.named_modules()}
    by_module = {id(f.module): i for i, f in enumerate(facts) if f.name == names.get(id(f.module))}
    for graph in (m for m in model.modules() if isinstance(m, NIRGraphModule)):
        for rec, feeding, neuron in graph.recurrent_layers():
            if id(rec) in by_module:
                i = by_module[id(rec)]
                facts[i] = replace(facts[i], recurrent_of=names[id(neuron)])
                for f in feeding:  # the neuron's other input: found by _add_recurrent_fan_in as its "producer"
                    if id(f) in by_module:
                        facts[by_module[id(f)]] = replace(facts[by_module[id(f)]], feeds=names[id(neuron)])
    return facts


def _add_recurrent_fan_in(facts: list[LayerFacts], nodes: dict, order: list[str]) -> list[LayerFacts]:
    """Add each recurrent weight's synapses to the fan-in of the layer that feeds its neuron.

    That layer is the neuron's own input weight (``<neuron>.input_weights``) or the one an imported
    graph names (``feeds``), else its producer in the traced graph (with ``sample``), else the
    last connection layer defined before the neuron.
    """
    by_name = {f.name: i for i, f in enumerate(facts)}
    position = {n: i for i, n in enumerate(order)}
    for r in [f for f in facts if f.recurrent_of is not None]:
        neuron = r.recurrent_of
        feeding = next((f.name for f in facts if f.recurrent_of is None and (f.name.startswith(neuron + ".")
                                                                            or f.feeds == neuron)), None)
        if feeding is None and neuron in nodes and nodes[neuron].inputs[0] in by_name:
            feeding = nodes[neuron].inputs[0]
        if feeding is None:
            before = [f.name for f in facts if f.recurrent_of is None and f.name in position
                      and position[f.name] < position.get(neuron, -1)]
            feeding = before[-1] if before else None
        if feeding is None:
            continue
        i = by_name[feeding]
        if facts[i].nonzero_rows.shape == r.nonzero_rows.shape:
            facts[i] = replace(facts[i], recurrent_fan_in=r.nonzero_rows)
    return sorted(facts, key=lambda f: position.get(f.name, position.get(f.name.rsplit(".", 1)[0], 0)))


# -- the rules: one function per constraint -----------------------------------------------------------

CheckRule = Callable[[CheckContext], None]
_RULES: dict[str, CheckRule] = {}


def register_check_rule(name: str, fn: CheckRule, *, replace: bool = False) -> CheckRule:
    """Add the rule ``fn(ctx: CheckContext) -> None`` to every :func:`~snn_spikefit.check` (run last).

    A rule reads ``ctx.profile`` and ``ctx.layers`` (:class:`LayerFacts`) and reports with
    ``ctx.add(...)`` / ``ctx.skip(...)``. A name already registered is refused unless
    ``replace=True`` (which keeps the rule's place in the order). Returns ``fn``.
    """
    if not isinstance(name, str) or not name:
        raise SpikeFitValueError(f"name={name!r} is not allowed; use a non-empty string")
    if not callable(fn):
        raise SpikeFitTypeError(f"fn must be callable as fn(ctx: CheckContext), got {type(fn).__name__}")
    refuse_duplicate("a check rule named", name, _RULES, replace=replace)
    _RULES[name] = fn
    return fn


def unregister_check_rule(name: str) -> None:
    """Remove the rule ``name`` (a built-in one too)."""
    if name not in _RULES:
        raise SpikeFitValueError(f"name={name!r} is not a registered check rule; registered: {list(_RULES)}")
    del _RULES[name]


def check_rules() -> dict[str, CheckRule]:
    """The registered rules by name, in the order :func:`~snn_spikefit.check` runs them (a copy)."""
    return dict(_RULES)
