"""What a model uses of each budget, counted the way the check rules count it."""

from __future__ import annotations

from typing import Sequence

from ..deploy.check import layer_bits
from ..deploy.hardware import HardwareProfile
from ..deploy.rules import LayerFacts
from ..quantize.quantizer import distinct_per_row
from .budgets import Layout, profile_budgets

__all__ = ["rule_usage"]


def rule_usage(facts: Sequence[LayerFacts], profile: HardwareProfile) -> dict[str, int]:
    """``rule -> amount used`` (the worst layer for per-layer rules) for every budget the profile gives."""
    budgets = profile_budgets(profile)
    out = {r: used for r, (used, _) in Layout(facts, [], profile).usage({}).items()}
    layers = [f for f in facts if f.rows.numel()]
    if "distinct_weights_per_neuron" in budgets and layers:
        out["distinct_weights_per_neuron"] = max(int(distinct_per_row(f.rows, nonzero=True).max()) for f in layers)
    if "distinct_weights_per_layer" in budgets and layers:
        out["distinct_weights_per_layer"] = max(int(distinct_per_row(f.rows.reshape(1, -1), nonzero=True)[0])
                                                for f in layers)
    if "weight_bits" in budgets and layers:
        out["weight_bits"] = max(layer_bits(f.module, f.quantizer, f.weight, profile.weight_bits) for f in layers)
    if "kernel_size" in budgets:
        sizes = [max(f.module.kernel_size) for f in facts if f.is_conv]
        if sizes:
            out["kernel_size"] = max(sizes)
    return {r: out[r] for r in budgets if r in out}
