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
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..adapter import Adapter, get_adapter
from ..errors import SpikeFitTypeError, SpikeFitValueError
from ..quantize.layers import compressed_layers
from ..trace import trace
from .hardware import HardwareProfile
from .ops import connection_layers

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
    conv neurons)."""
    quantizers = {c.name: c.quantizer for c in compressed_layers(model)}
    traceable = sample is not None and get_adapter(model).step_problem(model) is None  # else: layer_type errors
    nodes = {n.name: n for n in trace(model, sample, num_steps=num_steps).nodes} if traceable else {}
    out = []
    for name, module in connection_layers(model):
        cls = parametrize.type_before_parametrizations(module)
        is_conv = not issubclass(cls, nn.Linear)
        weight = module.weight.detach()
        rows = weight.reshape(weight.shape[0], -1)
        if name in nodes and nodes[name].out_shape is not None:
            neurons = math.prod(nodes[name].out_shape[1:])
        else:
            neurons = None if is_conv else int(weight.shape[0])
        out.append(LayerFacts(name, module, cls, is_conv, weight, rows, (rows != 0).sum(dim=1),
                              quantizers.get(name), neurons))
    return out


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
    if name in _RULES and not replace:
        raise SpikeFitValueError(f"a check rule named {name!r} is already registered; pass replace=True "
                                 f"to replace it (registered: {list(_RULES)})")
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
