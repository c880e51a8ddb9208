"""Which edges of a NIR graph are a neuron's recurrence (read with a one-step delay).

NIR describes continuous-time dynamics and leaves the discrete step of a cycle to the
simulator. snn_spikefit's convention, shared by export and import and proved by the
round-trip tests: a cycle passes through exactly one spiking neuron, and the edge that
leaves that neuron on the cycle carries its spikes of the previous step (zeros at the
first step). That is what snnTorch ``RLeaky``/``RSynaptic`` (``recurrent(spk[t-1])``)
and Norse ``LIFRecurrentCell`` (``recurrent_weights @ z[t-1]``) compute.

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

__all__ = ["recurrent_edges"]


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
