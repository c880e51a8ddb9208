"""The chip's budgets as the check rules read them, and what a channel allocation costs against them.

A :class:`Layout` is the model's connection layers as :func:`~snn_spikefit.deploy.rules.layer_facts`
sees them, each tied to the prunable channel groups (:class:`~snn_spikefit.pruning.surgery.PrunableLayer`)
its outputs and inputs belong to. :meth:`Layout.usage` says, for channels kept per group, what every
allocation budget then uses -- the same quantities the check rules count (``neurons``, ``cores``,
``neurons_per_core``, ``fan_in``, ``synapses``), from the layer sizes scaled by the kept fractions.
The count is exact for neurons and cores; fan-in and synapses assume the removed channels carried as
many non-zero weights as the kept ones (``check`` re-counts after the surgery).

Core packing (:func:`core_map`) follows the ``cores`` rule: ``ceil(neurons / neurons_per_core)`` cores
per layer, in model order, or one core per layer on chips that map a layer to one core.

>>> core_map([("a", 128), ("b", 130)], neurons_per_core=128)
[('a', 0, 0, 127), ('b', 1, 0, 127), ('b', 2, 128, 129)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..deploy.check import cores_needed
from ..deploy.hardware import HardwareProfile
from ..deploy.rules import LayerFacts

__all__ = ["ALLOCATION_RULES", "CODEBOOK_RULES", "UNFIXABLE_RULES", "Layout", "core_map", "cores_needed",
           "profile_budgets"]

#: Rules a per-layer channel allocation works on.
ALLOCATION_RULES = ("neurons_per_core", "cores", "neurons", "synapses", "fan_in")
#: Rules the codebook settings (``wrap(hardware=)``) satisfy.
CODEBOOK_RULES = ("distinct_weights_per_neuron", "distinct_weights_per_layer", "weight_bits")
#: Rules neither can fix, beyond check's structural ones: the data decide the inputs.
UNFIXABLE_RULES = ("inputs",)

# rule -> the profile field that gives its limit
_FIELD = {"neurons_per_core": "neurons_per_core", "cores": "cores", "neurons": "max_neurons",
          "synapses": "max_synapses", "fan_in": "fan_in", "distinct_weights_per_neuron": "distinct_weights_per_neuron",
          "distinct_weights_per_layer": "distinct_weights_per_layer", "weight_bits": "weight_bits",
          "inputs": "max_inputs", "kernel_size": "max_kernel_size"}


def profile_budgets(profile: HardwareProfile) -> dict[str, int]:
    """``rule -> limit`` for every budget the profile gives (the rules that then apply)."""
    out = {}
    for rule, name in _FIELD.items():
        value = getattr(profile, name)
        if value is None:
            continue
        if rule == "neurons_per_core" and not profile.layer_fits_one_core:
            continue  # the neurons of a layer spread over cores: the cores rule counts them
        if rule == "cores" and profile.neurons_per_core is None:
            continue  # check cannot count cores without the neurons per core
        out[rule] = value
    return out


def core_map(layers: Sequence[tuple[str, int]], *, neurons_per_core: int, one_core_per_layer: bool = False
             ) -> list[tuple[str, int, int, int]]:
    """``(layer, core, first neuron, last neuron)`` for ``(layer, neurons)`` packed in order.

    Each layer starts on a new core and fills ``neurons_per_core`` neurons per core
    (all of them on one core when ``one_core_per_layer``).
    """
    out, core = [], 0
    for name, n in layers:
        step = max(n, 1) if one_core_per_layer else neurons_per_core
        for first in range(0, n, step):
            out.append((name, core, first, min(first + step, n) - 1))
            core += 1
    return out


@dataclass(frozen=True)
class _Conn:
    """One connection layer: its sizes and the groups its outputs / inputs belong to."""

    name: str
    neurons: int
    out_channels: int
    in_channels: int
    fan_in: int
    synapses: int           # non-zero weights, unrolled on dense-only chips like the synapses rule
    out_group: str | None
    in_group: str | None


class Layout:
    """The model's connection layers tied to the prunable groups; :meth:`usage` per allocation."""

    def __init__(self, facts: Sequence[LayerFacts], groups: Sequence, profile: HardwareProfile) -> None:
        by_producer = {g.producer: g.neuron for g in groups}
        by_consumer = {g.consumer: g.neuron for g in groups}
        self.profile = profile
        self.channels = {g.neuron: g.channels for g in groups}
        self.conns: list[_Conn] = []
        dense_only = profile.conv is False
        for f in facts:
            if f.recurrent_of is not None or f.neurons is None:
                continue
            out_c = int(f.weight.shape[0])
            in_c = int(f.weight.shape[1]) if f.weight.ndim > 1 else 1
            unroll = f.neurons // out_c if f.is_conv and dense_only else 1
            fan = int(f.fan_in.max()) if f.rows.numel() else 0
            self.conns.append(_Conn(f.name, int(f.neurons), out_c, in_c, fan, int(f.nonzero_rows.sum()) * unroll,
                                    by_producer.get(f.name), by_consumer.get(f.name)))

    def _ratio(self, group: str | None, keep: dict[str, int]) -> float:
        return 1.0 if group is None else keep[group] / self.channels[group]

    def layer_neurons(self, keep: dict[str, int]) -> list[tuple[str, int]]:
        """``(layer, neurons)`` after keeping ``keep[group]`` channels per group."""
        return [(c.name, c.neurons // c.out_channels * (keep[c.out_group] if c.out_group else c.out_channels))
                for c in self.conns]

    def usage(self, keep: dict[str, int]) -> dict[str, tuple[int, str]]:
        """``rule -> (amount used, where)`` for every allocation rule the profile limits."""
        budgets = profile_budgets(self.profile)
        neurons = self.layer_neurons(keep)
        out: dict[str, tuple[int, str]] = {}
        if "neurons" in budgets:
            out["neurons"] = (sum(n for _, n in neurons), "(model)")
        if "cores" in budgets:
            out["cores"] = (cores_needed([n for _, n in neurons], self.profile), "(model)")
        if "neurons_per_core" in budgets and neurons:
            name, n = max(neurons, key=lambda t: t[1])
            out["neurons_per_core"] = (n, name)
        if "fan_in" in budgets and self.conns:
            fans = [(math.ceil(c.fan_in * self._ratio(c.in_group, keep) - 1e-9), c.name) for c in self.conns]
            out["fan_in"] = max(fans)
        if "synapses" in budgets:
            total = sum(c.synapses * self._ratio(c.out_group, keep) * self._ratio(c.in_group, keep)
                        for c in self.conns)
            out["synapses"] = (math.ceil(total - 1e-9), "(model)")
        return out

    def over(self, keep: dict[str, int], limits: dict[str, float]) -> dict[str, tuple[int, str]]:
        """The allocation rules ``keep`` breaks against ``limits``: ``rule -> (used, where)``."""
        return {r: u for r, u in self.usage(keep).items() if r in limits and u[0] > limits[r]}

    def helps(self, group: str, rule: str, where: str) -> bool:
        """Removing channels of ``group`` lowers what ``rule`` counts (at layer ``where``)."""
        if rule == "fan_in":
            return any(c.name == where and c.in_group == group for c in self.conns)
        if rule == "neurons_per_core":
            return any(c.name == where and c.out_group == group for c in self.conns)
        if rule == "synapses":
            return any(group in (c.out_group, c.in_group) for c in self.conns)
        return any(c.out_group == group for c in self.conns)  # neurons, cores
