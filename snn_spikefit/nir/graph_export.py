"""Export a :class:`~snn_spikefit.nir.importer.NIRGraphModule` (an imported non-chain or recurrent graph).

Such a model cannot be traced module to module (a recurrent edge feeds the previous
step's spikes, which no module produced in the traced step), but it knows its graph:
each node's modules become NIR nodes again (a ``Gain`` in front of a neuron becomes a
``Scale`` node ``<node>_gain``), with the node's edges, recurrent ones included, and the
codebooks of wrapped or frozen weights in node metadata. Importing the result gives the
same model back: same spikes at every step.
"""

from __future__ import annotations

from typing import Any, Callable

import nir
import numpy as np
import torch
from torch import Tensor, nn

from ..adapter import get_adapter
from ..runtime import run
from .common import Gain, layer_for_module

__all__ = ["export_graph_module"]


def _shapes(model: nn.Module, sample: Tensor, adapter) -> dict[int, tuple[tuple, tuple]]:
    """Per-sample input and output shape of every module of the graph, from one step on ``sample``."""
    shapes: dict[int, tuple[tuple, tuple]] = {}

    def hook(module, args, output):
        out = adapter.spikes(module, output) if adapter.is_neuron(module) else output
        shapes.setdefault(id(module), (tuple(args[0].shape[1:]), tuple(out.shape[1:])))

    handles = [m.register_forward_hook(hook) for mods in model.layers.values() for m in mods]
    try:
        run(model, sample[:1], num_steps=1)
    finally:
        for h in handles:
            h.remove()
        adapter.reset(model)
    return shapes


def _node(key: str, module: nn.Module, shapes, adapter, dt: float, codebook_of: Callable) -> Any:
    in_shape, out_shape = shapes[id(module)]
    if adapter.is_neuron(module):
        return adapter.neuron_to_nir(module, dt=dt, shape=out_shape)
    node = layer_for_module(key, module).to_nir(module, in_shape, out_shape)
    node.metadata.update(codebook_of(key, module))
    return node


@torch.no_grad()
def export_graph_module(model: nn.Module, sample: Tensor, dt: float, codebook_of: Callable) -> tuple[dict, list]:
    """The NIR nodes and edges of ``model`` (a NIRGraphModule), Input ``"input"`` and Output ``"output"``.

    ``codebook_of(label, module)``: the ``spikefit.*`` metadata of a layer's codebook
    (the exporter's, so both paths write the same keys).
    """
    adapter = get_adapter(model)
    shapes = _shapes(model, sample, adapter)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(sample.shape[1:])})}
    edges: list[tuple[str, str]] = []
    first, last = {model.input_name: "input"}, {model.input_name: "input"}
    for name, key in model.keys.items():
        mods = list(model.layers[key])
        prev = None
        for i, module in enumerate(mods):
            k = key if i == len(mods) - 1 else (f"{key}_gain" if i == 0 and isinstance(module, Gain) else f"{key}_{i}")
            nodes[k] = _node(k, module, shapes, adapter, dt, codebook_of)
            if prev is not None:
                edges.append((prev, k))
            first.setdefault(name, k)
            prev = k
        last[name] = prev
    for name in list(model.keys) + [model.output]:
        target = "output" if name == model.output else first[name]
        edges.extend((last[p], target) for p in model.pred[name])
    out_pred = model.pred[model.output][0]
    out_module = list(model.layers[model.keys[out_pred]])[-1] if out_pred in model.keys else None
    out_shape = shapes[id(out_module)][1] if out_module is not None else tuple(sample.shape[1:])
    nodes["output"] = nir.Output(output_type={"output": np.array(out_shape)})
    return nodes, edges
