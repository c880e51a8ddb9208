"""The multi-level part of the Norse adapter: conversion to ``MultiLevelLIFCell`` and its NIR form.

A ``MultiLevelLIFCell`` exports as ``LIFCell``'s ``CubaLIF`` node plus metadata
``spikefit.spike_levels = L`` and, for its subtractive reset (in the step of the spike),
``spikefit.reset_mechanism = "subtract_immediate"``. Our importer reads both back into a
``MultiLevelLIFCell`` (same spikes at every step); other tools read a binary CubaLIF (export warns),
and snnTorch refuses the immediate subtraction by name.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .snntorch_levels import SnnTorchLevels

__all__ = ["NorseLevels"]


class NorseLevels:
    """Mixin of :class:`~snn_spikefit.adapters.norse.NorseAdapter` for multi-level neurons."""

    level_meta = SnnTorchLevels.level_meta  # the same metadata and warning

    def to_multilevel_neuron(self, module: nn.Module, levels: int) -> nn.Module:
        """``module`` (a ``LIFCell``) as a ``MultiLevelLIFCell`` (the paper's subtractive reset)."""
        from .norse_multilevel import from_lif_cell

        return from_lif_cell(module, levels)

    def cuba_meta(self, module: nn.Module) -> dict[str, Any]:
        """Metadata of a ``LIFCell``'s CubaLIF node: levels and reset of a ``MultiLevelLIFCell``."""
        from snn_spikefit.nir.common import RESET_KEY

        meta = self.level_meta(module)
        if meta and getattr(module, "reset", "value") == "subtract":
            meta[RESET_KEY] = "subtract_immediate"
        return meta

    def lif_cell_from_nir(self, node: Any, reset: str, p: Any, dt: float) -> nn.Module:
        """``LIFCell`` for a CubaLIF node, or ``MultiLevelLIFCell`` when it carries levels."""
        import norse.torch as norse

        from snn_spikefit.errors import UnsupportedLayerError
        from snn_spikefit.neurons.multilevel import LEVELS_KEY

        if LEVELS_KEY not in node.metadata:
            if reset != "value":
                raise UnsupportedLayerError(f"NIR CubaLIF with reset {reset!r} and no {LEVELS_KEY} has no Norse cell")
            return norse.LIFCell(p, dt=dt)
        from .norse_multilevel import MultiLevelLIFCell
        from .snntorch_levels import node_levels

        return MultiLevelLIFCell(p, levels=node_levels(node), reset="subtract" if reset != "value" else "value", dt=dt)
