"""Check a model against a chip's limits: every violated rule, by layer, with a fix.

Rules (each applies only when the profile gives the limit):

============================  ==============================================================
``distinct_weights_per_neuron``  distinct non-zero weights of one output channel (neuron)
``distinct_weights_per_layer``   distinct non-zero weights of a layer (per core on chip)
``weight_bits``                  bits of the layer's integer weights (32 for float weights)
``fan_in``                       non-zero weights into one neuron (a zero weight is no synapse)
``kernel_size``                  largest conv kernel side
``layer_type``                   conv on a chip without convolution
``neurons_per_core``             neurons of a layer, on chips that map a layer to one core
``cores``                        cores needed, ``sum(ceil(neurons / neurons_per_core))``
``neurons``                      neurons of the model (output elements of every connection layer)
``synapses``                     non-zero weights (unrolled over positions on dense-only chips)
``inputs``                       input channels of the model
``neuron_model``                 the adapter's name of each spiking neuron's model
============================  ==============================================================

Weights are the effective ones (``module.weight``: codebook values for wrapped
or frozen layers). Counting conv neurons needs ``sample`` (one input batch,
traced with :func:`snn_spikefit.trace.trace`); without it those rules are
listed as skipped. A limit the profile marks uncertain gives a ``"warning"``,
anything else an ``"error"``; ``ok`` means no error.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(300, 10))
>>> report = check(net, "truenorth")
>>> report.ok, sorted({v.rule for v in report.violations})
(False, ['distinct_weights_per_neuron', 'fan_in', 'weight_bits'])
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..adapter import get_adapter
from ..errors import SpikeFitTypeError, SpikeFitValueError
from .hardware import WRAP_MAX_BITS, HardwareProfile, as_profile
from .ops import connection_layers
from ..table import Table
from ..quantize.layers import compressed_layers
from ..quantize.quantizer import distinct_per_row

__all__ = ["check", "CheckReport", "Violation", "ConstraintViolationError", "PASSIVE_TYPES"]

#: Layers that need no check: they reshape, or fold into neighbours before deployment.
PASSIVE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
)


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
class CheckReport:
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

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, default=str)
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        return self.table().to_csv(path)


def _distinct_nonzero(rows: Tensor) -> Tensor:
    """Distinct non-zero values per row of ``[G, N]``."""
    return distinct_per_row(rows, nonzero=True)


def _layer_bits(module: nn.Module, quantizer, weight: Tensor, chip_bits: int) -> int:
    if quantizer is not None:
        return quantizer.bits if quantizer.bits is not None else 32
    qmax = 2 ** (chip_bits - 1) - 1
    if bool((weight == weight.round()).all()) and float(weight.abs().max()) <= qmax:
        return chip_bits  # already integer weights that fit the chip
    return 32


@torch.no_grad()
def check(model: nn.Module, profile: str | HardwareProfile, sample: Tensor | None = None) -> CheckReport:
    """Every rule of ``profile`` that ``model`` breaks, by layer, with a fix hint.

    Args:
        model: an snnTorch, Norse or plain PyTorch model (not changed).
        profile: a profile name (:func:`snn_spikefit.list_profiles`) or a HardwareProfile.
        sample: one static input batch ``[B, ...]``; needed to count conv neurons.
    """
    if not isinstance(model, nn.Module):
        raise SpikeFitTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if sample is not None and not isinstance(sample, Tensor):
        raise SpikeFitTypeError(f"sample must be a torch.Tensor input batch [B, ...] or None, got {type(sample).__name__}")
    prof = as_profile(profile)
    out: list[Violation] = []
    skipped: list[tuple[str, str, str]] = []
    chip = prof.title or prof.name

    def add(rule: str, field: str, layer: str, limit: Any, actual: Any, hint: str) -> None:
        severity = "warning" if field in prof.uncertain else "error"
        out.append(Violation(rule, layer, f"{limit} (uncertain)" if severity == "warning" else limit,
                             actual, severity, hint))

    quantizers = {c.name: c.quantizer for c in compressed_layers(model)}
    rewrap = "strip(model), then " if quantizers else ""
    nodes = {}
    if sample is not None:
        from ..trace import trace

        nodes = {n.name: n for n in trace(model, sample).nodes}
    layers = connection_layers(model)
    neurons: dict[str, int] = {}
    synapses, synapses_known = 0, True
    for name, module in layers:
        cls = parametrize.type_before_parametrizations(module)
        is_conv = not issubclass(cls, nn.Linear)
        weight = module.weight.detach()
        rows = weight.reshape(weight.shape[0], -1)
        nonzero_rows = (rows != 0).sum(dim=1)
        if is_conv and prof.conv is False:
            add("layer_type", "conv", name, "dense layers only", cls.__name__,
                f"{chip} has no native convolution: replace {cls.__name__} by Linear layers, or use a conv-capable chip")
        elif is_conv and prof.conv is None:
            skipped.append(("layer_type", name, f"whether {chip} supports convolution is not published"))
        if is_conv and prof.max_kernel_size is not None and max(module.kernel_size) > prof.max_kernel_size:
            add("kernel_size", "max_kernel_size", name, prof.max_kernel_size, max(module.kernel_size),
                f"use kernels of at most {prof.max_kernel_size}x{prof.max_kernel_size}")
        if prof.distinct_weights_per_neuron is not None:
            per = _distinct_nonzero(rows)
            worst = int(per.argmax())
            if int(per[worst]) > prof.distinct_weights_per_neuron:
                lim = prof.distinct_weights_per_neuron
                add("distinct_weights_per_neuron", "distinct_weights_per_neuron", name, lim,
                    int(per[worst]), f"layer {name} has {int(per[worst])} distinct weights per neuron (neuron "
                    f"{worst}), {chip} allows {lim}: {rewrap}wrap(model, m={lim}, granularity='channel')")
        if prof.distinct_weights_per_layer is not None:
            d = int(_distinct_nonzero(rows.reshape(1, -1))[0])
            if d > prof.distinct_weights_per_layer:
                lim = prof.distinct_weights_per_layer
                add("distinct_weights_per_layer", "distinct_weights_per_layer", name, lim, d,
                    f"layer {name} has {d} distinct weights, {chip} allows {lim} per layer/core: "
                    f"{rewrap}wrap(model, m={lim}, granularity='layer')")
        if prof.weight_bits is not None:
            bits = _layer_bits(module, quantizers.get(name), weight, prof.weight_bits)
            if bits > prof.weight_bits:
                b = min(prof.weight_bits, WRAP_MAX_BITS)
                add("weight_bits", "weight_bits", name, prof.weight_bits, bits,
                    f"{chip} weights have {prof.weight_bits} bits: {rewrap}wrap(model, m=..., bits={b}) "
                    f"then freeze(model)")
        if prof.fan_in is not None:
            fan_in = int(nonzero_rows.max()) if rows.numel() else 0
            if fan_in > prof.fan_in:
                add("fan_in", "fan_in", name, prof.fan_in, fan_in,
                    f"a neuron of {name} has {fan_in} inputs, {chip} allows {prof.fan_in}: fewer input "
                    f"features/channels (prune the layer before), smaller kernels, or zero weights")
        if name in nodes and nodes[name].out_shape is not None:
            n = math.prod(nodes[name].out_shape[1:])
        elif not is_conv:
            n = int(weight.shape[0])
        else:
            n = None
            skipped.append(("neurons", name, "conv output size needs sample=<an input batch>"))
        if n is not None:
            neurons[name] = n
            positions = n // weight.shape[0] if is_conv and prof.conv is False else 1
            synapses += int(nonzero_rows.sum()) * positions
        else:
            synapses_known = False
        if n is not None and prof.layer_fits_one_core and prof.neurons_per_core is not None \
                and n > prof.neurons_per_core:
            add("neurons_per_core", "neurons_per_core", name, prof.neurons_per_core, n,
                f"{chip} maps each layer to one core: fewer channels in {name} (prune(...)) or smaller maps")
    total = sum(neurons.values())
    if prof.neurons_per_core is not None and prof.cores is not None and neurons:
        needed = (len(neurons) if prof.layer_fits_one_core
                  else sum(math.ceil(n / prof.neurons_per_core) for n in neurons.values()))
        if needed > prof.cores:
            add("cores", "cores", "(model)", prof.cores, needed,
                f"the layers need {needed} cores of {prof.neurons_per_core} neurons, {chip} has {prof.cores}: "
                f"fewer or smaller layers (prune channels)")
    if prof.max_neurons is not None and total > prof.max_neurons:
        add("neurons", "max_neurons", "(model)", prof.max_neurons, total,
            f"{total} neurons, {chip} holds {prof.max_neurons}: prune channels or use smaller layers")
    if prof.max_synapses is not None:
        if not synapses_known:
            skipped.append(("synapses", "(model)", "conv output size needs sample=<an input batch>"))
        elif synapses > prof.max_synapses:
            add("synapses", "max_synapses", "(model)", prof.max_synapses, synapses,
                f"{synapses} synapses, {chip} holds {prof.max_synapses}: prune channels or zero weights")
    if prof.max_inputs is not None:
        inputs = None
        if sample is not None:
            inputs = int(sample[0].numel())
        elif layers:
            first = layers[0][1]
            inputs = int(first.in_features if isinstance(first, nn.Linear) else first.in_channels)
        if inputs is not None and inputs > prof.max_inputs:
            add("inputs", "max_inputs", "(input)", prof.max_inputs, inputs,
                f"{chip} has {prof.max_inputs} input channels: reduce the input features")
    adapter = get_adapter(model)
    for name, module in adapter.neurons(model):
        if prof.neuron_models is None:
            break
        kind = adapter.neuron_model(module)
        if kind not in prof.neuron_models:
            severity_field = "neuron_models" if not kind.startswith("other:") else "__unknown__"
            hint = f"{chip} runs {list(prof.neuron_models)} neurons"
            if kind == "LIF" and "IF" in prof.neuron_models:
                hint += " (a Leaky neuron with beta=1 is IF)"
            if severity_field == "__unknown__":
                out.append(Violation("neuron_model", name, list(prof.neuron_models), kind, "warning", hint))
            else:
                add("neuron_model", "neuron_models", name, list(prof.neuron_models), kind, hint)
    connection_ids = {id(m) for _, m in layers}
    neuron_names = [n for n, _ in adapter.neurons(model)]
    for name, module in model.named_modules():
        if name == "" or ".parametrizations" in f".{name}" or id(module) in connection_ids:
            continue
        if adapter.is_neuron(module) or any(True for _ in module.children()) or isinstance(module, PASSIVE_TYPES):
            continue
        if any(name.startswith(n + ".") for n in neuron_names):
            continue
        skipped.append(("layer_type", name, f"{type(module).__name__} is not checked against {chip}"))
    return CheckReport(prof.name, tuple(out), tuple(skipped))
