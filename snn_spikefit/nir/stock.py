"""Files for the stock NIR importers: what ``snntorch.import_nir`` and ``norse.torch.from_nir`` can run.

``export_nir(..., for_importer=NAME)`` writes a graph that the named stock importer
runs with the same spikes as the model, or refuses by name (which importer, which
node, what would differ, the nearest exact alternative). Measured with snnTorch
1.0.0, Norse 1.1.0, nirtorch 2.6 (``tests/test_interop.py``):

* ``"snntorch"`` (``snntorch.import_nir.import_from_nir``): the step is fixed at
  ``dt = 1e-4``; ``LIF`` becomes ``Leaky(beta=1-dt/tau, reset_mechanism="zero")``
  and ``CubaLIF`` becomes ``Synaptic(..., reset_mechanism="zero")``, both with
  ``reset_delay=False``, one threshold per layer, ``v_leak = 0``. We write
  ``r = tau/dt`` (``w_in = tau_syn/dt``) so the importer's input scale is 1; any
  other input gain is folded into the weights of the layer that feeds the neuron.
  Refused: subtract/none resets, ``IF`` (it becomes ``Leaky(beta=0.9)`` with a subtract
  reset), ``LI``/``CubaLI``, ``SumPool2d``, ``Conv1d``, ``Scale``.
* ``"norse"`` (``norse.torch.from_nir``, default ``dt = 1e-3``): ``LIF`` becomes
  ``LIFBoxCell`` ignoring ``r`` and ``v_reset``; ``IF`` becomes ``IAFCell``
  (``v += x``); ``CubaLIF`` runs ``w_in``, a leaky synapse, ``r``, then
  ``LIFBoxCell``. We write ``r = 1`` (``r = 1/dt`` for IF) with the gain folded into
  the weights, and ``AvgPool2d`` (which it drops) as ``SumPool2d`` with ``1/area``
  folded into the next weight layer (exact for areas that are powers of two).
  Refused: resets other than to 0, ``v_leak != 0`` in ``CubaLIF``, ``LI``/``CubaLI``,
  ``Conv1d``, ``Scale``.

Recurrent neurons (a cycle ``neuron -> Linear/Affine -> neuron``: snnTorch ``RLeaky``/``RSynaptic``
with an all-to-all weight, Norse ``LIFRecurrentCell``): both importers leave the cycle to nirtorch,
which feeds the neuron the recurrent node's output of the previous step and 0 at the first step, so
an ``Affine``'s bias would be missing on that step; we move it into the bias of the neuron's input
weights. The input gain is folded into the input and the recurrent weights. For snnTorch the cycle
gets an identity ``Flatten(0, 0)`` node ``<weight>_delay``: its importer rewrites two-node cycles as
nested graphs, which nirtorch 2.6 cannot build (``'GraphModule' object has no attribute 'items'``).
Their models return ``(output, state)``; pass the state back each step (it carries the recurrent
edge). Refused: recurrence through a ``Conv2d`` or through more than one node, and a recurrent bias
with no ``Linear``/``Affine`` input weight to move to.

Both stock importers turn NIR's ``Flatten(start_dim=0)`` (NIR shapes have no batch)
into ``torch.nn.Flatten(0, ...)``: their models run one sample at a time (batch 1).
"""

from __future__ import annotations

from typing import Any

import nir
import numpy as np

from ..errors import SpikeFitValueError, UnsupportedLayerError
from .recurrence import _reach, recurrent_edges

__all__ = ["STOCK_IMPORTERS", "STOCK_DT", "stock_dt", "adapt_for_importer"]

#: The stock importers ``export_nir(for_importer=...)`` writes for, and the call each names.
STOCK_IMPORTERS = {"snntorch": "snntorch.import_nir.import_from_nir", "norse": "norse.torch.from_nir"}
#: The step each stock importer discretises with (snnTorch's is hard-coded; Norse's is its default).
STOCK_DT = {"snntorch": 1e-4, "norse": 1e-3}

_WEIGHTS = (nir.Affine, nir.Linear, nir.Conv2d)
_ALLOWED = {
    "snntorch": (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.AvgPool2d),
    "norse": (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.SumPool2d, nir.AvgPool2d),
}
_NEURONS = (nir.LIF, nir.CubaLIF, nir.IF, nir.LI, nir.CubaLI)


def stock_dt(importer: str, dt: float | None) -> float:
    """The graph step for ``importer``: its own, or ``dt`` where the importer takes one (Norse)."""
    if importer not in STOCK_IMPORTERS:
        raise SpikeFitValueError(f"for_importer={importer!r} is not allowed; use None (snn_spikefit.import_nir) "
                                 f"or one of {sorted(STOCK_IMPORTERS)}")
    if dt is None:
        return STOCK_DT[importer]
    if importer == "snntorch" and dt != STOCK_DT["snntorch"]:
        raise SpikeFitValueError(
            f"dt={dt} is not allowed with for_importer='snntorch': snntorch.import_nir fixes dt=1e-4 "
            f"(leave dt out, or use for_importer=None for snn_spikefit.import_nir)")
    return float(dt)


class _Refusal(UnsupportedLayerError):
    pass


def _refuse(importer: str, key: str, node: Any, differs: str, instead: str) -> _Refusal:
    return _Refusal(f"{STOCK_IMPORTERS[importer]} cannot run node {key!r} ({type(node).__name__}) exactly: "
                    f"{differs}; nearest exact alternative: {instead}")


def _a(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _uniform(value: Any) -> bool:
    arr = _a(value)
    return arr.size == 0 or bool(np.all(arr == arr.flat[0]))


def adapt_for_importer(nodes: dict[str, Any], edges: list[tuple[str, str]], importer: str,
                       dt: float) -> tuple[list[str], list[str]]:
    """Rewrite ``nodes`` in place for the stock ``importer``: ``(notes for the user, nodes rewritten)``.

    Raises :class:`~snn_spikefit.errors.UnsupportedLayerError` naming the importer,
    the node, what would differ and the nearest exact alternative.
    """
    changed: list[str] = _fold_scales(nodes, edges, importer)
    pred = {k: [a for a, b in edges if b == k] for k in nodes}
    succ = {k: [b for a, b in edges if a == k] for k in nodes}
    cycles, moved = _stock_recurrence(nodes, pred, succ, importer)
    changed += moved + ([k for pair in cycles.items() for k in pair] if importer == "snntorch" else [])
    notes: list[str] = []
    for key in list(nodes):
        node = nodes[key]
        if isinstance(node, _NEURONS):
            fold = (_snntorch_neuron if importer == "snntorch" else _norse_neuron)(key, node, dt)
            if fold is not None and not np.allclose(fold, 1.0, rtol=0.0, atol=1e-12):
                changed += [key, *_fold_into_predecessor(nodes, pred, succ, key, fold, importer)]
            if isinstance(node, nir.IF) and importer == "norse":
                notes.append(f"norse.torch.from_nir logs that r is expected to be 1 for IF node {key!r}: its IAFCell "
                             f"runs v += x, which is what r = 1/dt means here, so that warning can be ignored")
        elif not isinstance(node, _ALLOWED[importer]):
            raise _refuse(importer, key, node, f"it has no {type(node).__name__} node",
                          "a model made of Linear, Conv2d, AvgPool2d, Flatten and LIF/CubaLIF neurons, "
                          "or snn_spikefit.import_nir (for_importer=None)")
        elif isinstance(node, nir.AvgPool2d) and importer == "norse":
            changed += [key, _avgpool_as_sumpool(nodes, succ, pred, key, importer)]
        elif isinstance(node, nir.Flatten):
            notes.append(f"{STOCK_IMPORTERS[importer]} builds torch.nn.Flatten({int(node.start_dim)}, "
                         f"{int(node.end_dim)}) from NIR Flatten node {key!r} (NIR dims exclude the batch): "
                         f"run the model it returns on one sample at a time (batch size 1)")
    if importer == "snntorch":
        _break_two_cycles(nodes, edges, cycles)
    if importer == "norse" and dt != STOCK_DT["norse"]:
        notes.append(f"the graph is written for dt={dt}: call norse.torch.from_nir(graph, dt={dt})")
    return notes, changed


def _fold_scales(nodes: dict[str, Any], edges: list[tuple[str, str]], importer: str) -> list[str]:
    """Fold each ``Scale`` fed by a Linear/Conv2d layer of its own into that layer; rewire ``edges`` in place.

    (:func:`~snn_spikefit.import_nir` puts a Gain, exported as ``Scale``, before a neuron whose
    input gain its framework cannot hold; neither stock importer has a ``Scale`` node.)
    """
    folded = []
    for key in [k for k, n in nodes.items() if isinstance(n, nir.Scale)]:
        srcs = [a for a, b in edges if b == key]  # a recurrent neuron's Scale: its input and recurrent weights
        if not srcs or any(not isinstance(nodes[s], _WEIGHTS) or [b for a, b in edges if a == s] != [key]
                           for s in srcs):
            continue
        scale = _a(nodes[key].scale)
        nxt = [b for a, b in edges if a == key]
        for src in srcs:
            factor = _channel_factor(scale, np.asarray(nodes[src].weight), key, src, importer, nodes[key])
            _scale_weights(nodes, src, factor, bias=True, importer=importer, key=key)
        edges[:] = [e for e in edges if key not in e] + [(s, b) for s in srcs for b in nxt]
        del nodes[key]
        folded += [key, *srcs]
    return folded


def _check_reset(importer: str, key: str, node: Any, rest: str) -> None:
    from .common import RESET_KEY

    reset = node.metadata.get(RESET_KEY)
    if reset is not None:
        alt = {"snntorch": "snnTorch Leaky/Synaptic(reset_mechanism='zero', reset_delay=False) (a Leaky may "
                           "keep reset_delay=True)",
               "norse": "a neuron that resets to v_reset=0 (Norse reset_value, snnTorch reset_mechanism='zero')"}
        raise _refuse(importer, key, node, f"the neuron resets by {reset!r} and the importer builds neurons that "
                      f"reset to {rest}", f"{alt[importer]}, or snn_spikefit.import_nir (for_importer=None)")


def _snntorch_neuron(key: str, node: Any, dt: float) -> np.ndarray | None:
    imp = "snntorch"
    if isinstance(node, nir.IF):
        raise _refuse(imp, key, node, "it builds snn.Leaky(beta=0.9) with a subtract reset from NIR IF",
                      "a Leaky with beta < 1 (LIF), or snn_spikefit.import_nir (for_importer=None)")
    if not isinstance(node, (nir.LIF, nir.CubaLIF)):
        raise _refuse(imp, key, node, f"it has no snnTorch neuron for NIR {type(node).__name__}",
                      "Leaky (LIF) or Synaptic (CubaLIF) neurons, or snn_spikefit.import_nir (for_importer=None)")
    _check_reset(imp, key, node, "0 (reset_mechanism='zero', reset_delay=False)")
    if np.any(_a(node.v_leak) != 0) or np.any(_a(node.v_reset) != 0):
        raise _refuse(imp, key, node, "it assumes v_leak = v_reset = 0", "neurons at rest at 0")
    if not _uniform(node.v_threshold):
        raise _refuse(imp, key, node, "it takes one threshold per layer and this neuron has several",
                      "one threshold per layer, or snn_spikefit.import_nir (for_importer=None)")
    if isinstance(node, nir.LIF):
        tau = _a(node.tau)
        fold = _a(node.r) * dt / tau
        node.r = tau / dt
        return fold
    tau_mem, tau_syn = _a(node.tau_mem), _a(node.tau_syn)
    fold = (_a(node.r) * dt / tau_mem) * (_a(node.w_in) * dt / tau_syn)
    node.r, node.w_in = tau_mem / dt, tau_syn / dt
    return fold


def _norse_neuron(key: str, node: Any, dt: float) -> np.ndarray | None:
    imp = "norse"
    if isinstance(node, (nir.LI, nir.CubaLI)):
        raise _refuse(imp, key, node, f"it has no Norse cell for NIR {type(node).__name__}",
                      "snn_spikefit.import_nir(..., 'norse') (for_importer=None), which builds LIBoxCell/LICell")
    _check_reset(imp, key, node, "0 (reset_value with v_reset=0)")
    if np.any(_a(node.v_reset) != 0):
        raise _refuse(imp, key, node, "it ignores v_reset (its cells reset to 0)",
                      "v_reset = 0, or snn_spikefit.import_nir (for_importer=None)")
    if isinstance(node, nir.LIF):
        fold, node.r = _a(node.r), np.ones_like(_a(node.r))
        return fold
    if isinstance(node, nir.IF):
        fold = _a(node.r) * dt
        node.r = np.full_like(_a(node.r), 1.0 / dt)
        return fold
    if np.any(_a(node.v_leak) != 0):
        raise _refuse(imp, key, node, "it gives the synapse of a CubaLIF the membrane's v_leak",
                      "v_leak = 0, or snn_spikefit.import_nir (for_importer=None)")
    return None


def _channel_factor(factor: np.ndarray, weight: np.ndarray, key: str, src: str, importer: str, node: Any) -> np.ndarray:
    """The per-output-channel factor (or a scalar) of a per-neuron ``factor``, or a refusal."""
    out = weight.shape[0]
    flat = np.broadcast_to(factor, factor.shape or (1,)).reshape(factor.shape[0] if factor.ndim else 1, -1)
    if _uniform(factor):
        return np.asarray(factor.flat[0])
    if flat.shape[0] != out or not all(_uniform(row) for row in flat):
        raise _refuse(importer, key, node, f"its input gain varies within a channel of {src!r}",
                      "one time constant per channel, or snn_spikefit.import_nir (for_importer=None)")
    return flat[:, 0]


def _scale_weights(nodes: dict, src: str, factor: np.ndarray, *, bias: bool, importer: str, key: str) -> None:
    node = nodes[src]
    weight = _a(node.weight)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    if "spikefit.codes" in node.metadata:
        f = np.unique(factor)
        if f.size != 1 or np.frexp(f[0])[0] != 0.5:
            raise _refuse(importer, key, nodes[key], f"its input gain must be folded into the weights of {src!r}, "
                          f"which carry a codebook, and a factor that is not one power of two would change it",
                          "export without for_importer (snn_spikefit.import_nir reads it exactly)")
        for meta_key in ("spikefit.codebook", "spikefit.scale"):
            if meta_key in node.metadata:
                node.metadata[meta_key] = (np.asarray(node.metadata[meta_key]) * f[0]).astype(np.float32)
    dtype = np.asarray(node.weight).dtype
    node.weight = (weight * np.reshape(factor, shape)).astype(dtype)
    if bias and getattr(node, "bias", None) is not None:
        node.bias = (_a(node.bias) * factor).astype(np.asarray(node.bias).dtype)


def _fold_into_predecessor(nodes: dict, pred: dict, succ: dict, key: str, fold: np.ndarray,
                           importer: str) -> list[str]:
    """Fold ``fold`` into the weight layer(s) feeding neuron ``key`` (a recurrent neuron: both of them)."""
    node = nodes[key]
    srcs = pred[key]
    if not srcs or len(srcs) > 2 or any(not isinstance(nodes[s], _WEIGHTS) or len(succ[s]) != 1 for s in srcs):
        raise _refuse(importer, key, node, "its input gain differs from the importer's and is not fed by "
                      "Linear/Conv2d layers of its own (its input and recurrent weights) to fold the difference into",
                      "a Linear or Conv2d layer right before every neuron, or snn_spikefit.import_nir "
                      "(for_importer=None)")
    for src in srcs:
        factor = _channel_factor(_a(fold), np.asarray(nodes[src].weight), key, src, importer, node)
        _scale_weights(nodes, src, factor, bias=True, importer=importer, key=key)
    return list(srcs)


def _avgpool_as_sumpool(nodes: dict, succ: dict, pred: dict, key: str, importer: str) -> str:
    node = nodes[key]
    kernel = np.atleast_1d(np.asarray(node.kernel_size)).astype(int)
    area = int(np.prod(np.broadcast_to(kernel, (2,))))
    nxt = succ[key][0] if len(succ[key]) == 1 else None
    while nxt is not None and isinstance(nodes[nxt], nir.Flatten) and len(succ[nxt]) == 1:
        nxt = succ[nxt][0]
    if np.any(np.asarray(node.padding) != 0) or area & (area - 1):
        raise _refuse(importer, key, node, "it drops AvgPool2d, and rewriting it as SumPool2d is exact only without "
                      f"padding and for a kernel area that is a power of two (here {area})",
                      "AvgPool2d with kernel 2 or 4 and padding 0, or snn_spikefit.import_nir (for_importer=None)")
    if nxt is None or not isinstance(nodes[nxt], _WEIGHTS) or len(pred[nxt]) != 1:
        raise _refuse(importer, key, node, "it drops AvgPool2d, and the 1/area of a SumPool2d needs a Linear/Conv2d "
                      "layer after the pool to fold into", "a Linear or Conv2d layer after every AvgPool2d")
    nodes[key] = nir.SumPool2d(kernel_size=np.asarray(node.kernel_size), stride=np.asarray(node.stride),
                               padding=np.asarray(node.padding), metadata=dict(node.metadata))
    _scale_weights(nodes, nxt, np.asarray(1.0 / area), bias=False, importer=importer, key=key)
    return nxt


# -- recurrent neurons (a cycle neuron -> weight -> neuron) ---------------------------------------------
def _stock_recurrence(nodes: dict, pred: dict, succ: dict, importer: str) -> tuple[dict[str, str], list[str]]:
    """``({neuron: recurrent weight}, nodes rewritten)``: every cycle, rewritten so the stock importer runs it as we do.

    Both stock importers run a cycle through nirtorch, which feeds the neuron the recurrent node's
    *output* of the previous step, zeros at the first step; we (and snnTorch/Norse) feed the neuron's
    spikes of the previous step through the weight, so an ``Affine``'s bias already arrives at the first
    step. The recurrent bias moves into the bias of the neuron's input weights (same sum every step).
    """
    cycles: dict[str, str] = {}
    moved: list[str] = []
    for neuron, weight in sorted(recurrent_edges(nodes, succ)):
        node, w = nodes[neuron], nodes[weight]
        if not isinstance(w, (nir.Affine, nir.Linear)) or pred[weight] != [neuron] or succ[weight] != [neuron]:
            on_cycle = [k for k in nodes if k != neuron and k in _reach(succ, weight) and neuron in _reach(succ, k)]
            raise _refuse(importer, neuron, node, f"its recurrence runs through "
                          f"{', '.join(f'{k!r} ({type(nodes[k]).__name__})' for k in on_cycle)}; the importer runs a neuron "
                          f"with one recurrent Linear/Affine weight of its own (neuron -> weight -> neuron)",
                          "snnTorch RLeaky/RSynaptic(all_to_all=True) or Norse LIFRecurrentCell, or "
                          "snn_spikefit.import_nir (for_importer=None)")
        cycles[neuron] = weight
        bias = _a(w.bias) if isinstance(w, nir.Affine) else np.zeros(1)
        if not np.any(bias != 0):
            continue
        inputs = [p for p in pred[neuron] if p != weight]
        src = inputs[0] if len(inputs) == 1 else None
        if src is None or not isinstance(nodes[src], _WEIGHTS) or len(succ[src]) != 1 or \
                isinstance(nodes[src], nir.Conv2d):
            raise _refuse(importer, neuron, node, f"it starts the recurrent edge from {weight!r} at 0, not at "
                          f"that Affine's bias, on the first step, and the bias has no Linear input weight "
                          f"of the neuron's own to move to",
                          "a recurrent weight without bias (all_to_all Linear(bias=False)), or "
                          "snn_spikefit.import_nir (for_importer=None)")
        ff = nodes[src]
        total = (_a(getattr(ff, "bias", 0.0)) + bias).astype(np.asarray(ff.weight).dtype)
        nodes[src] = nir.Affine(weight=ff.weight, bias=total, metadata=dict(ff.metadata))
        nodes[weight] = nir.Linear(weight=w.weight, metadata=dict(w.metadata))
        moved += [weight, src]
    return cycles, moved


def _break_two_cycles(nodes: dict, edges: list, cycles: dict[str, str]) -> None:
    """Put an identity ``Flatten(0, 0)`` on each cycle (snnTorch's importer only).

    snnTorch's importer rewrites every two-node cycle ``LIF <-> Affine`` as a nested graph, which
    nirtorch 2.6 cannot build (``'GraphModule' object has no attribute 'items'``); a three-node cycle
    it leaves to nirtorch, which runs it with the one-step delay described in :func:`_stock_recurrence`.
    ``Flatten(0, 0)`` flattens one dimension into itself: the identity with or without a batch.
    """
    for neuron, weight in cycles.items():
        key = f"{weight}_delay"
        shape = np.asarray(nodes[weight].weight).shape[:1]
        nodes[key] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=0)
        edges[:] = [(a, key) if (a, b) == (weight, neuron) else (a, b) for a, b in edges] + [(key, neuron)]
