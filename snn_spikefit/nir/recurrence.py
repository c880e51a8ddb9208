"""Which edges of a NIR graph are a neuron's recurrence (read with a one-step delay).

NIR describes continuous-time dynamics and leaves the discrete step of a cycle to the
simulator. snn_spikefit's convention, shared by export and import and proved by the
round-trip tests: a cycle passes through exactly one spiking neuron, and the edge that
leaves that neuron on the cycle carries its spikes of the previous step (zeros at the
first step). That is what snnTorch ``RLeaky``/``RSynaptic`` (``recurrent(spk[t-1])``)
and Norse ``LIFRecurrentCell`` (``recurrent_weights @ z[t-1]``) compute.

snnTorch's own exporter writes a recurrent neuron as a nested ``NIRGraph``
(``input -> lif <-> w_rec -> output``); :func:`flatten_subgraphs` inlines nested graphs
(node ``"k"``'s inner node ``"lif"`` becomes ``"k.lif"``) so they import like any other.

>>> import numpy as np, nir
>>> nodes = {"in": nir.Input(input_type={"input": np.array([2])}),
...          "lif": nir.LIF(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2)),
...          "rec": nir.Linear(weight=np.eye(2)), "out": nir.Output(output_type={"output": np.array([2])})}
>>> succ = {"in": ["lif"], "lif": ["rec", "out"], "rec": ["lif"], "out": []}
>>> sorted(recurrent_edges(nodes, succ))
[('lif', 'rec')]
"""

from __future__ import annotations

import nir

from ..errors import UnsupportedLayerError
from .common import layer_for_node

__all__ = ["recurrent_edges", "flatten_subgraphs"]


def flatten_subgraphs(graph: nir.NIRGraph) -> nir.NIRGraph:
    """``graph`` with every nested ``NIRGraph`` node inlined (recursively); the graph itself if it has none.

    An edge into a subgraph ``k`` goes to the nodes its ``Input`` feeds, an edge out of it leaves
    from the nodes that feed its ``Output``; inner nodes are named ``"k.<inner>"``.
    """
    subs = {k: flatten_subgraphs(n) for k, n in graph.nodes.items() if isinstance(n, nir.NIRGraph)}
    if not subs:
        return graph
    nodes = {k: n for k, n in graph.nodes.items() if k not in subs}
    entry, exit_, edges = {}, {}, []
    for k, sub in subs.items():
        ins = [i for i, n in sub.nodes.items() if isinstance(n, nir.Input)]
        outs = [o for o, n in sub.nodes.items() if isinstance(n, nir.Output)]
        if len(ins) != 1 or len(outs) != 1:
            raise UnsupportedLayerError(f"nested graph {k!r} has inputs {ins} and outputs {outs}; "
                                        f"import_nir inlines subgraphs with one Input and one Output")
        if (ins[0], outs[0]) in map(tuple, sub.edges):
            raise UnsupportedLayerError(f"nested graph {k!r} connects its Input straight to its Output; "
                                        f"remove the pass-through edge")
        nodes.update({f"{k}.{i}": n for i, n in sub.nodes.items() if i not in (ins[0], outs[0])})
        entry[k] = [f"{k}.{b}" for a, b in sub.edges if a == ins[0]]
        exit_[k] = [f"{k}.{a}" for a, b in sub.edges if b == outs[0]]
        edges += [(f"{k}.{a}", f"{k}.{b}") for a, b in sub.edges if a != ins[0] and b != outs[0]]
    for a, b in graph.edges:
        edges += [(s, t) for s in exit_.get(a, [a]) for t in entry.get(b, [b])]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(graph.metadata), type_check=False)


def _reach(succ: dict[str, list[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for s in succ[todo.pop()]:
            if s not in seen:
                seen.add(s)
                todo.append(s)
    return seen


def recurrent_edges(nodes: dict, succ: dict[str, list[str]]) -> set[tuple[str, str]]:
    """The edges that carry a spiking neuron's output of the previous step back into a cycle.

    An edge ``(n, m)`` out of a neuron ``n`` is recurrent when ``m`` leads back to ``n``. Every
    cycle must pass through exactly one neuron: a cycle with none has no step to delay (an
    algebraic loop), one through several is ambiguous (where would the one-step delays go?).
    """
    neurons = {k for k, n in nodes.items() if not isinstance(n, (nir.Input, nir.Output))
               and layer_for_node(k, n) is None}
    reach = {k: _reach(succ, k) for k in nodes}
    recurrent = {(a, b) for a, b in _edges(succ) if a in neurons and a in reach[b]}
    for a, b in sorted(recurrent):
        on_cycle = sorted(k for k in reach[b] if a in reach[k] and k in neurons and k != a)
        if on_cycle:
            raise UnsupportedLayerError(
                f"the recurrent edge ({a!r}, {b!r}) closes a cycle through several spiking neurons "
                f"({[a] + on_cycle}); import_nir runs recurrence that returns to the same neuron (a one-step "
                f"delay on the neuron's output), not cycles through several neurons")
    return recurrent


def _edges(succ: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(a, b) for a, bs in succ.items() for b in bs]
