"""The multi-level part of the snnTorch adapter: conversion to ``MultiLevelLeaky`` and its NIR form.

A ``MultiLevelLeaky`` exports as the ``LIF`` (or ``IF``) node of its ``Leaky`` plus node metadata
``spikefit.spike_levels = L`` (:data:`~snn_spikefit.neurons.multilevel.LEVELS_KEY`) and
``spikefit.reset_mechanism = "subtract"``: NIR has no graded-spike neuron, so that key is the only
place the levels live. Our importer reads it back into a ``MultiLevelLeaky`` (same spikes at every
step); any other tool reads a binary LIF neuron, and export warns so.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

__all__ = ["SnnTorchLevels", "node_levels"]


def node_levels(node: Any) -> int:
    """The level count in a NIR node's metadata, checked (an int >= 2)."""
    import numpy as np

    from snn_spikefit.neurons.multilevel import LEVELS_KEY, check_levels

    raw = node.metadata[LEVELS_KEY]
    arr = np.asarray(raw)
    return check_levels(int(arr.item()) if arr.ndim == 0 and arr.dtype.kind in "iu" else raw,
                        f"NIR {type(node).__name__} metadata {LEVELS_KEY}")


class SnnTorchLevels:
    """Mixin of :class:`~snn_spikefit.adapters.snntorch.SnnTorchAdapter` for multi-level neurons."""

    def to_multilevel_neuron(self, module: nn.Module, levels: int) -> nn.Module:
        """``module`` (a ``Leaky``) as a ``MultiLevelLeaky`` with the same parameters."""
        from .snntorch_multilevel import from_leaky

        return from_leaky(module, levels)

    def level_meta(self, module: nn.Module) -> dict[str, Any]:
        """NIR metadata of ``module``'s levels (empty for a binary neuron); warns when ``L > 2``."""
        from snn_spikefit.neurons.multilevel import LEVELS_KEY, MultiLevelNeuron, spike_levels

        if not isinstance(module, MultiLevelNeuron):
            return {}
        levels = spike_levels(module)
        if levels > 2:
            warnings.warn(
                f"{type(module).__name__} emits {levels} spike levels; NIR has no graded-spike neuron, so the node "
                f"is its binary neuron's (LIF or CubaLIF) with metadata {LEVELS_KEY}={levels}: "
                f"snn_spikefit.import_nir reads it back "
                f"exactly, other tools (stock snnTorch/Norse importers, Lava, ...) will run binary spikes",
                UserWarning, stacklevel=6)
        return {LEVELS_KEY: levels}

    def leaky_from_nir(self, node: Any, **kwargs: Any) -> nn.Module:
        """The ``Leaky`` (or ``MultiLevelLeaky`` when the node carries levels) that runs ``node``."""
        import snntorch as snn

        from snn_spikefit.errors import UnsupportedLayerError
        from snn_spikefit.neurons.multilevel import LEVELS_KEY

        if LEVELS_KEY not in node.metadata:
            return snn.Leaky(**kwargs)
        from .snntorch_multilevel import MultiLevelLeaky

        levels = node_levels(node)
        if kwargs.get("reset_mechanism") != "subtract":
            raise UnsupportedLayerError(
                f"NIR {type(node).__name__} has {LEVELS_KEY}={levels} but reset "
                f"{kwargs.get('reset_mechanism')!r}; a multi-level neuron subtracts (spikefit.reset_mechanism="
                f"'subtract')")
        return MultiLevelLeaky(levels=levels, **kwargs)
