"""Check a model against a chip's limits: every violated rule, by layer, with a fix.

Each rule is one function registered by name (:func:`register_check_rule`; what a rule
sees is in :mod:`snn_spikefit.deploy.rules`). The built-in rules, in the order they run
(each applies only when the profile gives the limit):

============================  ==============================================================
``layer_type``                   conv on a chip without convolution
``kernel_size``                  largest conv kernel side
``distinct_weights_per_neuron``  distinct non-zero weights of one output channel (neuron)
``distinct_weights_per_layer``   distinct non-zero weights of a layer (per core on chip)
``weight_bits``                  bits of the layer's integer weights (32 for float weights)
``fan_in``                       non-zero weights into one neuron, recurrent ones included (a zero weight is no synapse)
``neurons_per_core``             neurons of a layer, on chips that map a layer to one core
``cores``                        cores needed, ``sum(ceil(neurons / neurons_per_core))``
``neurons``                      neurons of the model (output elements of every connection layer)
``synapses``                     non-zero weights, or all on ``synapse_memory="dense"`` chips (unrolled
                                 over positions on chips without convolution)
``inputs``                       input channels of the model
``neuron_model``                 the adapter's name of each spiking neuron's model
``speck_memory``                 Speck: kernel / neuron / bias memory per core, one core per layer (:mod:`.chip_rules`)
``bias_bits``                    biases are integers of the weight LSB (Speck, <= 127) (:mod:`.chip_rules`)
``xylo_layers``                  Xylo: readout and hidden neurons, bit-shift decays, subtract reset, no bias
``neuron_state``                 decays, thresholds, membrane ranges (:mod:`snn_spikefit.neurons.check`)
``graded_spikes``                multi-level neurons on a chip without graded spikes (:mod:`snn_spikefit.neurons.multilevel`)
============================  ==============================================================

Weights are the effective ones (``module.weight``: codebook values for wrapped
or frozen layers). Counting conv neurons needs ``sample`` (one input batch,
traced with :func:`snn_spikefit.trace.trace`); without it those rules are
listed as skipped. A limit the profile marks uncertain gives a ``"warning"``,
anything else an ``"error"``; ``ok`` means no error. The report lists findings
layer by layer in model order (a layer's in rule order), then the model-wide ones.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(300, 10))
>>> report = check(net, "truenorth")
>>> report.ok, sorted({v.rule for v in report.violations})
(False, ['distinct_weights_per_neuron', 'fan_in', 'weight_bits'])
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..adapter import get_adapter
from ..errors import SpikeFitTypeError, SpikeFitValueError
from .hardware import WRAP_MAX_BITS, HardwareProfile, as_profile, list_profiles
from .rules import CheckContext, check_rules, layer_facts, register_check_rule, unregister_check_rule
from ..reports import Report
from ..runtime import check_module
from ..table import Table
from ..quantize.quantizer import distinct_per_row

__all__ = ["check", "CheckReport", "Violation", "ConstraintViolationError", "PASSIVE_TYPES", "STRUCTURAL_RULES",
           "register_check_rule", "unregister_check_rule", "check_rules"]

#: Layers that need no check: they reshape, or fold into neighbours before deployment.
PASSIVE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
)


#: Rules no training, codebook or pruning can satisfy: the model itself has to change (a layer type
#: the chip or NIR lacks, a kernel too large, a neuron model the chip does not run). ``compress``
#: refuses a model that breaks one of them before any training.
STRUCTURAL_RULES: tuple[str, ...] = ("layer_type", "kernel_size", "neuron_model")


class ConstraintViolationError(SpikeFitValueError):
    """A model breaks limits of a hardware profile (raised by :meth:`CheckReport.raise_if_failed`)."""


@dataclass(frozen=True)
class Violation:
    """One broken rule."""

    rule: str
    layer: str
    limit: Any
    actual: Any
    severity: str   # "error" or "warning" (the profile's limit is uncertain)
    hint: str

    def __str__(self) -> str:
        return f"[{self.severity}] {self.rule}: layer {self.layer} has {self.actual}, limit {self.limit}; fix: {self.hint}"


@dataclass(frozen=True)
class CheckReport(Report):
    """What :func:`check` found."""

    profile: str
    violations: tuple[Violation, ...]
    skipped: tuple[tuple[str, str, str], ...]   # (rule, layer, why it was not checked)

    @property
    def ok(self) -> bool:
        """No rule is broken with severity ``"error"``."""
        return not any(v.severity == "error" for v in self.violations)

    @property
    def errors(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "error"]

    @property
    def structural(self) -> list[Violation]:
        """The errors no training, codebook or pruning can fix (:data:`STRUCTURAL_RULES`)."""
        return [v for v in self.errors if v.rule in STRUCTURAL_RULES]

    def raise_if_failed(self) -> None:
        """Raise :class:`ConstraintViolationError` listing every error, if there is one."""
        if not self.ok:
            lines = "\n".join(f"  {v}" for v in self.errors)
            raise ConstraintViolationError(f"model does not fit {self.profile} ({len(self.errors)} violations):\n{lines}")

    def table(self) -> Table:
        t = Table(["rule", "layer", "limit", "actual", "severity", "hint"],
                  title=f"check against {self.profile}: {'OK' if self.ok else 'FAILED'}")
        for v in self.violations:
            t.add_row([v.rule, v.layer, v.limit, v.actual, v.severity, v.hint])
        return t

    def __str__(self) -> str:
        text = str(self.table())
        if self.skipped:
            text += "\nnot checked: " + "; ".join(f"{r} ({layer}): {why}" for r, layer, why in self.skipped)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "ok": self.ok, "violations": [asdict(v) for v in self.violations],
                "skipped": [list(s) for s in self.skipped]}


def _distinct_nonzero(rows: Tensor) -> Tensor:
    """Distinct non-zero values per row of ``[G, N]``."""
    return distinct_per_row(rows, nonzero=True)


def layer_bits(module: nn.Module, quantizer, weight: Tensor, chip_bits: int) -> int:
    if quantizer is not None:
        return quantizer.bits if quantizer.bits is not None else 32
    qmax = 2 ** (chip_bits - 1) - 1
    if bool((weight == weight.round()).all()) and float(weight.abs().max()) <= qmax:
        return chip_bits  # already integer weights that fit the chip
    return 32


def _layer_type(ctx: CheckContext) -> None:
    for f in ctx.layers:
        if f.is_conv and ctx.profile.conv is False:
            ctx.add("layer_type", "conv", f.name, "dense layers only", f.cls.__name__,
                    f"{ctx.chip} has no native convolution: replace {f.cls.__name__} by Linear layers, or use "
                    f"a conv-capable chip")
        elif f.is_conv and ctx.profile.conv is None:
            ctx.skip("layer_type", f.name, f"whether {ctx.chip} supports convolution is not published")


def _kernel_size(ctx: CheckContext) -> None:
    lim = ctx.profile.max_kernel_size
    for f in ctx.layers:
        if f.is_conv and lim is not None and max(f.module.kernel_size) > lim:
            ctx.add("kernel_size", "max_kernel_size", f.name, lim, max(f.module.kernel_size),
                    f"use kernels of at most {lim}x{lim}")


def _distinct_per_neuron(ctx: CheckContext) -> None:
    lim = ctx.profile.distinct_weights_per_neuron
    for f in ctx.layers if lim is not None else ():
        per = _distinct_nonzero(f.rows)
        worst = int(per.argmax())
        if int(per[worst]) > lim:
            ctx.add("distinct_weights_per_neuron", "distinct_weights_per_neuron", f.name, lim, int(per[worst]),
                    f"layer {f.name} has {int(per[worst])} distinct weights per neuron (neuron {worst}), "
                    f"{ctx.chip} allows {lim}: {ctx.rewrap}wrap(model, m={lim}, granularity='channel')")


def _distinct_per_layer(ctx: CheckContext) -> None:
    lim = ctx.profile.distinct_weights_per_layer
    for f in ctx.layers if lim is not None else ():
        d = int(_distinct_nonzero(f.rows.reshape(1, -1))[0])
        if d > lim:
            ctx.add("distinct_weights_per_layer", "distinct_weights_per_layer", f.name, lim, d,
                    f"layer {f.name} has {d} distinct weights, {ctx.chip} allows {lim} per layer/core: "
                    f"{ctx.rewrap}wrap(model, m={lim}, granularity='layer')")


def _weight_bits(ctx: CheckContext) -> None:
    lim = ctx.profile.weight_bits
    for f in ctx.layers if lim is not None else ():
        bits = layer_bits(f.module, f.quantizer, f.weight, lim)
        if bits > lim:
            ctx.add("weight_bits", "weight_bits", f.name, lim, bits,
                    f"{ctx.chip} weights have {lim} bits: {ctx.rewrap}wrap(model, m=..., "
                    f"bits={min(lim, WRAP_MAX_BITS)}) then freeze(model)")


def _fan_in(ctx: CheckContext) -> None:
    lim = ctx.profile.fan_in
    for f in ctx.layers if lim is not None else ():
        if f.recurrent_of is not None:
            continue  # counted in the fan-in of the layer that feeds the same neurons
        fan_in = int(f.fan_in.max()) if f.rows.numel() else 0
        if fan_in > lim:
            rec = (f" ({int(f.recurrent_fan_in[int(f.fan_in.argmax())])} of them recurrent)"
                   if f.recurrent_fan_in is not None else "")
            ctx.add("fan_in", "fan_in", f.name, lim, fan_in,
                    f"a neuron of {f.name} has {fan_in} inputs{rec}, {ctx.chip} allows {lim}: fewer input "
                    f"features/channels (prune the layer before), smaller kernels, or zero weights")


def _neurons_per_core(ctx: CheckContext) -> None:
    prof = ctx.profile
    if not prof.layer_fits_one_core or prof.neurons_per_core is None:
        return
    for f in ctx.layers:
        if f.recurrent_of is None and f.neurons is not None and f.neurons > prof.neurons_per_core:
            ctx.add("neurons_per_core", "neurons_per_core", f.name, prof.neurons_per_core, f.neurons,
                    f"{ctx.chip} maps each layer to one core: fewer channels in {f.name} (prune(...)) or "
                    f"smaller maps")


def cores_needed(neurons: Sequence[int], profile: HardwareProfile) -> int:
    """Cores that layers of ``neurons`` take: one each when a layer must fit one core, else
    ``sum(ceil(n / neurons_per_core))`` (what the ``cores`` rule and ``fit_to_chip``'s packing count)."""
    if profile.layer_fits_one_core:
        return len(neurons)
    return sum(math.ceil(n / profile.neurons_per_core) for n in neurons)


def _cores(ctx: CheckContext) -> None:
    prof = ctx.profile
    counts = [f.neurons for f in ctx.layers if f.neurons is not None and f.recurrent_of is None]
    if prof.neurons_per_core is None or prof.cores is None or not counts:
        return
    needed = cores_needed(counts, prof)
    if needed > prof.cores:
        ctx.add("cores", "cores", "(model)", prof.cores, needed,
                f"the layers need {needed} cores of {prof.neurons_per_core} neurons, {ctx.chip} has "
                f"{prof.cores}: fewer or smaller layers (prune channels)")


def _neurons(ctx: CheckContext) -> None:
    layers = [f for f in ctx.layers if f.recurrent_of is None]  # a recurrent weight feeds neurons counted already
    for f in layers:
        if f.neurons is None:
            ctx.skip("neurons", f.name, _NEEDS_SAMPLE)
    total = sum(f.neurons for f in layers if f.neurons is not None)
    lim = ctx.profile.max_neurons
    if lim is not None and total > lim:
        ctx.add("neurons", "max_neurons", "(model)", lim, total,
                f"{total} neurons, {ctx.chip} holds {lim}: prune channels or use smaller layers")


def _synapses(ctx: CheckContext) -> None:
    lim = ctx.profile.max_synapses
    if lim is None:
        return
    if any(f.neurons is None for f in ctx.layers):
        ctx.skip("synapses", "(model)", _NEEDS_SAMPLE)
        return
    dense_only = ctx.profile.conv is False  # a conv layer is unrolled over its output positions
    whole = ctx.profile.synapse_memory == "dense"  # crossbars / blocks allocated whole: a zero weight frees nothing
    synapses = sum(int(f.rows.numel() if whole else f.nonzero_rows.sum())
                   * (f.neurons // f.weight.shape[0] if f.is_conv and dense_only else 1) for f in ctx.layers)
    if synapses > lim:
        fix = "prune channels (zero weights free no synapse memory there)" if whole else "prune channels or zero weights"
        ctx.add("synapses", "max_synapses", "(model)", lim, synapses,
                f"{synapses} synapses, {ctx.chip} holds {lim}: {fix}")


def _inputs(ctx: CheckContext) -> None:
    lim = ctx.profile.max_inputs
    if lim is None:
        return
    inputs = None
    if ctx.sample is not None:
        inputs = int(ctx.sample[0].numel())
    elif ctx.layers:
        first = ctx.layers[0]
        inputs = int(getattr(first.module, "in_features", None) or getattr(first.module, "in_channels", None)
                     or first.weight.shape[1])
    if inputs is not None and inputs > lim:
        ctx.add("inputs", "max_inputs", "(input)", lim, inputs,
                f"{ctx.chip} has {lim} input channels: reduce the input features")


def _neuron_model(ctx: CheckContext) -> None:
    allowed = ctx.profile.neuron_models
    for name, module in ctx.adapter.neurons(ctx.model) if allowed is not None else ():
        kind = ctx.adapter.neuron_model(module)
        if kind in allowed:
            continue
        hint = f"{ctx.chip} runs {list(allowed)} neurons"
        extra = ctx.adapter.neuron_hint(module, allowed)
        if extra:
            hint += f" ({extra})"
        if kind.startswith("other:"):  # a model the adapter cannot name: maybe fine, say so
            ctx.add("neuron_model", "__unknown__", name, list(allowed), kind, hint, severity="warning")
        else:
            ctx.add("neuron_model", "neuron_models", name, list(allowed), kind, hint)


_NEEDS_SAMPLE = "conv output size needs sample=<an input batch>"

for _name, _fn in [
    ("layer_type", _layer_type), ("kernel_size", _kernel_size),
    ("distinct_weights_per_neuron", _distinct_per_neuron), ("distinct_weights_per_layer", _distinct_per_layer),
    ("weight_bits", _weight_bits), ("fan_in", _fan_in), ("neurons_per_core", _neurons_per_core),
    ("cores", _cores), ("neurons", _neurons), ("synapses", _synapses), ("inputs", _inputs),
    ("neuron_model", _neuron_model),
]:
    register_check_rule(_name, _fn)


# -- check ----------------------------------------------------------------------------------------------

def _unchecked(ctx: CheckContext) -> None:
    """Every leaf module that is no connection layer, neuron or passive layer: an error when NIR (the
    way to every chip toolchain) cannot hold it (MaxPool, ReLU, ...), else noted as not checked."""
    from ..nir.common import layer_for_module
    from ..errors import UnsupportedLayerError

    connection_ids = {id(f.module) for f in ctx.layers}
    neuron_names = [n for n, _ in ctx.adapter.neurons(ctx.model)]
    for name, module in ctx.model.named_modules():
        if name == "" or ".parametrizations" in f".{name}" or id(module) in connection_ids:
            continue
        if ctx.adapter.is_neuron(module) or any(True for _ in module.children()) or isinstance(module, PASSIVE_TYPES):
            continue
        if any(name.startswith(n + ".") for n in neuron_names):
            continue
        try:
            layer_for_module(name, module)
        except UnsupportedLayerError as exc:
            kind = type(module).__name__
            why = str(exc).split(": ", 1)[-1]
            ctx.add("layer_type", "__exportable__", name, "layers NIR can hold", kind,
                    f"{kind} cannot be exported to {ctx.chip} (no NIR node): {why}", severity="error")
        else:
            ctx.skip("layer_type", name, f"{type(module).__name__} is not checked against {ctx.chip}")


@torch.no_grad()
def check(model: nn.Module, hardware: str | HardwareProfile | None = None, *, sample: Tensor | None = None,
          num_steps: int = 1, profile: str | HardwareProfile | None = None) -> CheckReport:
    """Every rule of ``hardware`` that ``model`` breaks, by layer, with a fix hint.

    Args:
        model: a spiking model of any adapter, or plain PyTorch (not changed).
        hardware: a profile name (:func:`snn_spikefit.list_profiles`) or a
            :class:`~snn_spikefit.deploy.hardware.HardwareProfile` (the name ``wrap``,
            ``evaluate`` and the CLI's ``--hardware`` use).
        sample: one static input batch ``[B, ...]``; needed to count conv neurons.
        num_steps: steps ``sample`` is traced for (default 1). A model whose ``forward`` runs its
            own time loop (snnTorch tutorial nets) needs the count that loop runs.
        profile: the former name of ``hardware`` (warns ``FutureWarning``).

    The facts are collected once (:class:`CheckContext`), then every registered rule runs
    (:func:`check_rules`, :func:`register_check_rule`). Findings are listed layer by layer in
    model order (within a layer, in rule order), then those about the model as a whole.
    """
    check_module(model)
    if profile is not None:  # the name before 0.2
        warnings.warn("check(profile=...) is renamed check(hardware=...)", FutureWarning, stacklevel=2)
        hardware = profile if hardware is None else hardware
    if hardware is None:
        raise SpikeFitTypeError(f"check() needs the chip: hardware=NAME or a HardwareProfile; "
                                f"names: {list_profiles()}")
    if sample is not None and not isinstance(sample, Tensor):
        raise SpikeFitTypeError(f"sample must be a torch.Tensor input batch [B, ...] or None, got {type(sample).__name__}")
    ctx = CheckContext(model, as_profile(hardware), sample, get_adapter(model), layer_facts(model, sample, num_steps),
                       num_steps=num_steps)
    for rule in check_rules().values():
        rule(ctx)
    _unchecked(ctx)
    order = {f.name: i for i, f in enumerate(ctx.layers)}
    by_layer = lambda layer: order.get(layer, len(order))  # noqa: E731  (sorted() is stable)
    violations = [Violation(*v) for v in sorted(ctx.violations, key=lambda v: by_layer(v[1]))]
    skipped = sorted(ctx.skipped, key=lambda s: by_layer(s[1]))
    return CheckReport(ctx.profile.name, tuple(violations), tuple(skipped))


from . import chip_rules  # noqa: E402,F401  (Speck's and Xylo's own rules register themselves)
