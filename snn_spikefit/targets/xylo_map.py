"""rockpool's own Xylo mapper on our graph: does the vendor's mapping accept what ``check(model, "xylo")`` does?

:func:`rockpool_map` turns the NIR graph we wrote into the layers rockpool's mapper reads
(:mod:`.xylo_mapper_worker`, run in the Xylo environment, where rockpool 3.1.0 is installed) and
returns its verdict. When our compiler accepts the graph the mapper gets exactly our Xylo program:
the integer codes as weights, our integer thresholds and ``tau = dt * 2**dash`` (so its
``dash = log2(tau / dt)`` is ours). When ours refuses, the mapper gets the network as it is (integer
codes where frozen, else the float weights; a neuron without synaptic current as ``tau_syn = dt``,
which is what an snnTorch ``Leaky`` is: a current that forgets within the step), so both verdicts
can be compared on the same network. What the mapper does *not* check (found by this comparison):
more than 16 inputs and biases are warnings only (the bias is dropped), and a decay that is no bit
shift is silently truncated to the next lower ``dash`` by its ``uint8`` cast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np

from .env import run_worker
from .lava_program import graph_chain, graph_dt
from .linear_ops import LINEAR_NODES, affine_block
from .xylo_spec import XyloRefusal, compile_xylo

__all__ = ["XyloMapping", "rockpool_map", "mapper_layers", "MAPPER_WORKER"]

MAPPER_WORKER = Path(__file__).with_name("xylo_mapper_worker.py")


@dataclass(frozen=True)
class XyloMapping:
    """rockpool's verdict: ``ok`` (mapped), its ``error`` chain, its warnings, the mapped arrays."""

    ok: bool
    error: str
    warnings: list[str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    ours: str = ""   # our compiler's refusal on the same graph ("" when it compiled)


def _raw_layers(graph: nir.NIRGraph, dt: float) -> list[dict]:
    _, shape, chain = graph_chain(graph, XyloRefusal, "Xylo")
    layers, pending = [], []
    for _, node in chain:
        if isinstance(node, LINEAR_NODES):
            pending.append(node)
            continue
        block = affine_block(pending, shape)
        pending, shape = [], block.out_shape
        w = block.codes if block.codes is not None else block.weight
        n = w.shape[0]
        thr = np.broadcast_to(np.asarray(node.v_threshold, np.float64).reshape(-1), (n,))
        tau_mem = np.broadcast_to(np.asarray(getattr(node, "tau_mem", getattr(node, "tau", np.inf)),
                                             np.float64).reshape(-1), (n,))
        tau_syn = (np.broadcast_to(np.asarray(node.tau_syn, np.float64).reshape(-1), (n,))
                   if isinstance(node, nir.CubaLIF) else np.full(n, dt))  # no current memory: tau_syn = dt
        layer = dict(w=np.asarray(w, np.float64).T, tau_mem=tau_mem, tau_syn=tau_syn, threshold=thr)
        if np.any(block.bias != 0):
            layer["b"] = np.asarray(block.bias, np.float64).reshape(-1)
        layers.append(layer)
    return layers


def mapper_layers(graph: nir.NIRGraph) -> tuple[dict[str, np.ndarray], str]:
    """The arrays the mapper worker reads, and our compiler's refusal ("" when it compiled)."""
    dt = graph_dt(graph)
    try:
        spec = compile_xylo(graph)
    except XyloRefusal as exc:
        layers, ours = _raw_layers(graph, dt), str(exc)
    else:
        ours = ""
        layers = [dict(w=layer.codes.T.astype(np.int64), tau_mem=np.full(layer.n, dt * 2.0 ** layer.dash_mem),
                       tau_syn=np.full(layer.n, dt * 2.0 ** layer.dash_syn), threshold=layer.threshold)
                  for layer in spec.layers]
    arrays = {"dt": np.array(dt), "n_layers": np.array(len(layers))}
    for k, layer in enumerate(layers):
        arrays.update({f"{key}{k}": v for key, v in layer.items()})
    return arrays, ours


def rockpool_map(graph: nir.NIRGraph, target) -> XyloMapping:
    """Run rockpool 3.1.0's ``syns61201.mapper`` on ``graph`` in ``target``'s (Xylo) environment."""
    arrays, ours = mapper_layers(graph)
    got = run_worker([target.python(), "-I"], MAPPER_WORKER, arrays, what="rockpool mapper",
                     timeout_s=target.timeout_s)
    warns = [w for w in got["warnings"].tolist() if w]
    mapped = {k: v for k, v in got.items() if k not in ("ok", "error", "warnings")}
    return XyloMapping(bool(got["ok"]), str(got["error"]), warns, mapped, ours)
