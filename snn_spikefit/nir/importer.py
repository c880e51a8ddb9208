"""Import a NIR graph (object or ``.nir`` file) as a runnable model of any NIR-capable adapter.

Chain graphs (``Input -> node -> ... -> Output``) become the adapter's container
(:meth:`~snn_spikefit.adapter.Adapter.nir_container`: an ``nn.Sequential`` for
snnTorch, neurons with ``init_hidden=True``; a ``norse.torch.SequentialState``
for Norse); other graphs become a :class:`NIRGraphModule` (a node
receives the sum of its inputs). Recurrent graphs (a neuron's output fed back to it,
e.g. snnTorch ``RLeaky``'s or Norse ``LIFRecurrentCell``'s recurrent weight as an
``Affine``/``Linear`` node in a cycle) run with a one-step delay on that edge: the
neuron sees its own spikes of the previous step, as in both frameworks. All run with :func:`snn_spikefit.run`. The
frameworks one can import into are :func:`nir_frameworks` (the adapter registry). Layers that carry our
``spikefit.*`` codebook metadata come back frozen with exactly the stored
integers, as :func:`~snn_spikefit.freeze` leaves them.

>>> import torch, snn_spikefit as sf
>>> from torch import nn
>>> g = sf.export_nir(nn.Sequential(nn.Linear(4, 2)), torch.rand(1, 4), dt=1e-3)
>>> net = sf.import_nir(g, "snntorch")
>>> type(net[0]).__name__, tuple(net[0].weight.shape)
('Linear', (2, 4))
"""

from __future__ import annotations

import inspect
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from ..neurons.xylo_state import refuse_chip_state, restore_chip_state
from ..adapter import get_adapter, nir_frameworks
from ..quantize.codebook import FrozenCodebook
from ..quantize.layers import install_frozen, weight_names
from ..errors import SpikeFitError, SpikeFitValueError, UnsupportedLayerError
from .common import Gain, check_dt, layer_for_node, supported_layers
from .compat import require_nir
from .foreign import _declared, detect_dt, graph_dt, graph_input_shape, none_node_hint, numpy_params
from .recurrence import flatten_subgraphs, recurrent_edges
from .reader import named_errors, read_nir
from .safety import DEFAULT_MAX_BYTES, UnsafeNIRFileError, check_declared_size, check_max_bytes
from .validate import metadata_dt, predicted_shape, validate_graph

__all__ = ["import_nir", "read_nir", "NIRGraphModule", "nir_frameworks", "graph_input_shape", "detect_dt"]


def _structure(graph: nir.NIRGraph) -> tuple[list[str], dict[str, list[str]], str, set[tuple[str, str]]]:
    """Topological order of the inner nodes, their predecessors, the Output's name, the recurrent edges.

    Checks that edges name existing nodes, that there is one Input and one
    Output, that every node lies on a path from Input to Output, and that every
    cycle is a neuron's recurrence (:func:`~snn_spikefit.nir.recurrence.recurrent_edges`): those edges carry
    the neuron's spikes of the previous step; without them the graph is acyclic.
    """
    nodes = graph.nodes
    for a, b in graph.edges:
        for end in (a, b):
            if end not in nodes:
                raise SpikeFitValueError(
                    f"edge ({a!r}, {b!r}) refers to node {end!r}, which does not exist in the graph; "
                    f"nodes: {sorted(nodes)}")
    inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedLayerError(
            f"the graph has inputs {inputs} and outputs {outputs}; import_nir supports one Input and one Output")
    succ: dict[str, list[str]] = {k: [] for k in nodes}
    pred: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in dict.fromkeys(map(tuple, graph.edges)):  # a duplicated edge is one edge
        succ[a].append(b)
        pred[b].append(a)
    for k in nodes:
        if k != outputs[0] and not succ[k]:
            raise SpikeFitValueError(
                f"node {k!r} has no outgoing edge: it does not lead to Output {outputs[0]!r} (missing node or edge)")
        if k != inputs[0] and not pred[k]:
            raise SpikeFitValueError(f"node {k!r} has no incoming edge: it is not fed from Input {inputs[0]!r}")
    recurrent = recurrent_edges(nodes, succ)
    missing = {k: sum((p, k) not in recurrent for p in v) for k, v in pred.items()}
    order, ready = [], [inputs[0]] + [k for k in nodes if k != inputs[0] and missing[k] == 0]
    while ready:
        k = ready.pop(0)
        order.append(k)
        for s in succ[k]:
            if (k, s) in recurrent:
                continue
            missing[s] -= 1
            if missing[s] == 0:
                ready.append(s)
    if len(order) != len(nodes):
        cyclic = sorted(k for k in nodes if k not in order)
        raise UnsupportedLayerError(
            f"the graph has a cycle through nodes {cyclic} with no spiking neuron on it (an algebraic loop: no "
            f"step to delay); recurrent NIR graphs must feed a neuron's output back to that neuron")
    return order[1:-1], pred, outputs[0], recurrent


class NIRGraphModule(nn.Module):
    """Runs a NIR graph: each node gets the sum of its predecessors' outputs (NIR's edge semantics).

    Built by :func:`import_nir` for graphs that are not chains. With
    ``stateful=True`` (an adapter whose ``calls_with_state`` is set, e.g. Norse)
    ``forward(x, state) -> (output, state)`` carries the states of the modules
    that take a ``state`` argument in a dict, like ``norse.torch.SequentialState``.

    ``recurrent`` edges ``(neuron, node)`` carry the neuron's output of the previous step
    (zeros at the first step, of the per-sample shapes in ``shapes``). The values of the last
    step live in ``state`` (stateful) or in the module, cleared by :meth:`reset_state`
    (the adapters' ``reset`` calls it; :func:`snn_spikefit.run` resets before every run).
    """

    def __init__(self, built: dict[str, list[nn.Module]], pred: dict[str, list[str]], output: str,
                 *, stateful: bool, recurrent: set[tuple[str, str]] | None = None,
                 shapes: dict[str, tuple[int, ...]] | None = None, input_name: str = "input") -> None:
        super().__init__()
        self.keys = {name: name.replace(".", "_") for name in built}
        self.layers = nn.ModuleDict({self.keys[n]: nn.ModuleList(mods) for n, mods in built.items()})
        self.pred = {n: list(pred[n]) for n in list(built) + [output]}
        self.output, self.stateful, self.input_name = output, stateful, input_name
        self.recurrent = sorted(recurrent or ())
        self._recurrent_set = frozenset(self.recurrent)  # looked up per node per step in forward
        self.shapes = {a: tuple(shapes[a]) for a, _ in self.recurrent} if self.recurrent else {}
        self.takes_state = {(n, i) for n, mods in built.items() for i, m in enumerate(mods)
                            if stateful and "state" in inspect.signature(m.forward).parameters}
        self._previous: dict[str, torch.Tensor] = {}

    def recurrent_layers(self) -> list[tuple[nn.Module, list[nn.Module], nn.Module]]:
        """Per recurrent edge into a weight node: ``(its weight layer, the layers feeding the same neuron, the neuron)``.

        For chip checks: the recurrent layer's synapses add to the fan-in of the neuron, whose
        other inputs come from the feeding layers (the first module of each node).
        """
        out = []
        for neuron, w in self.recurrent:
            if w == self.output or neuron not in self.pred.get(w, []) or w not in self.keys:
                continue
            into = [n for n in self.keys if w in self.pred[n]]
            for target in into:
                feeding = [self.layers[self.keys[p]][-1] for p in self.pred[target] if p != w and p in self.keys]
                out.append((self.layers[self.keys[w]][0], feeding, self.layers[self.keys[neuron]][-1]))
        return out

    def reset_state(self) -> None:
        """Forget the last step's values of the recurrent edges (the next step starts from zeros)."""
        self._previous = {}

    def __getstate__(self):  # deep copies and pickles never carry a run's tensors (autograd graphs)
        state = dict(self.__dict__)
        state["_previous"] = {}
        return state

    def forward(self, x, state: dict | None = None):
        state = {} if state is None else state
        previous = state.get("recurrent", {}) if self.stateful else self._previous
        values = {}
        for name in list(self.keys) + [self.output]:
            ins = [self._delayed(p, previous, x) if (p, name) in self._recurrent_set else (x if p not in values else values[p])
                   for p in self.pred[name]]
            h = ins[0]
            for other in ins[1:]:  # an addition trace() sees: residual graphs prune and count like their source
                h = h + other
            if name == self.output:
                break
            for i, module in enumerate(self.layers[self.keys[name]]):
                if (name, i) in self.takes_state:
                    h, state[(name, i)] = module(h, state.get((name, i)))
                else:
                    h = module(h)
            values[name] = h
        if self.recurrent:
            now = {a: values[a] for a in self.shapes}
            if self.stateful:
                state["recurrent"] = now
            else:
                self._previous = now
        return (h, state) if self.stateful else h

    def _delayed(self, name: str, previous: dict, x: torch.Tensor) -> torch.Tensor:
        if name in previous:
            return previous[name]
        return x.new_zeros((x.shape[0], *self.shapes[name]))


def _restore_codebook(name: str, module: nn.Module, meta: dict, adapter) -> None:
    """Register a frozen codebook rebuilt from the node's ``spikefit.*`` metadata on the module's one weight."""
    params = weight_names(module, adapter)
    if len(params) != 1:
        raise SpikeFitValueError(
            f"node {name!r} carries spikefit.* codebook metadata, but its {type(module).__name__} has "
            f"{len(params)} compressible weights {params}; a codebook describes exactly one")
    param = params[0]
    try:
        codes = torch.from_numpy(np.array(meta["spikefit.codes"]))
        values = torch.from_numpy(np.array(meta["spikefit.codebook"], dtype=np.float32))
        m, granularity = int(meta["spikefit.m"]), str(meta["spikefit.granularity"])
        bits = int(meta["spikefit.bits"]) if "spikefit.bits" in meta else None
        ints = torch.from_numpy(np.array(meta["spikefit.codebook_int"])) if bits is not None else None
        scale = torch.from_numpy(np.array(meta["spikefit.scale"], dtype=np.float32)) if bits is not None else None
    except KeyError as exc:
        raise SpikeFitValueError(f"node {name!r}: codebook metadata lacks {exc.args[0]!r}") from None
    weight = getattr(module, param).detach()
    ok = (codes.ndim == 2 and values.ndim == 2 and codes.shape[0] == values.shape[0] == (1 if granularity == "layer"
          else weight.shape[0]) and codes.numel() == weight.numel() and int(codes.max()) < values.shape[1])
    frozen = FrozenCodebook(weight.shape, codes, values, ints, scale, m=m, bits=bits, granularity=granularity) if ok else None
    if frozen is None or not torch.equal(frozen.decode(), weight):
        raise SpikeFitValueError(
            f"node {name!r}: its spikefit.* codebook metadata (codes {tuple(codes.shape)}, codebook "
            f"{tuple(values.shape)}) does not reproduce its weight {tuple(weight.shape)} exactly; the file is "
            f"inconsistent (drop the spikefit.* keys to import the plain weights)")
    install_frozen(module, frozen, param)


def _modules_for(name: str, node: nir.NIRNode, adapter, dt: float) -> list[nn.Module]:
    if node is None:  # stock exporters (norse.to_nir, nirtorch) write None for what they cannot express
        return [nn.Identity()]
    if isinstance(node, nir.NIRGraph):
        raise UnsupportedLayerError(f"node {name!r} is a nested NIRGraph; flatten it before import")
    layer = layer_for_node(name, node)
    if layer is not None:
        try:
            module = layer.from_nir(node)
        except SpikeFitError:
            raise
        except Exception as exc:
            raise SpikeFitValueError(f"node {name!r} ({type(node).__name__}) is malformed: {exc}") from None
        if "spikefit.codes" in node.metadata:
            _restore_codebook(name, module, node.metadata, adapter)
        return [module]
    try:
        return adapter.neuron_from_nir(node, dt=dt)
    except UnsupportedLayerError as exc:
        if "has no" in str(exc):
            raise UnsupportedLayerError(
                f"node {name!r} ({type(node).__name__}) cannot be imported: {exc}; supported: "
                f"{_node_types(adapter)}") from None
        raise UnsupportedLayerError(f"node {name!r}: {exc}") from None
    except SpikeFitError:
        raise
    except Exception as exc:  # a malformed parameter (shape, dtype) must not surface as a raw Python error
        raise SpikeFitValueError(f"node {name!r} ({type(node).__name__}) is malformed: "
                                 f"{type(exc).__name__}: {exc}") from None


def _node_types(adapter) -> str:
    return f"NIR nodes for layers {supported_layers()}; the neurons the {adapter.name!r} adapter runs (above)"


def _check_shapes(graph: nir.NIRGraph, order: list[str], pred: dict[str, list[str]], output: str,
                  built: dict[str, list[nn.Module]], adapter,
                  recurrent: set[tuple[str, str]] = frozenset(),
                  max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, tuple[int, ...]]:
    """Run one zero sample through the modules, comparing with the declared NIR shapes.

    A graph whose ``Input``/``Output`` declare a leading batch of 1 passes when it fits without it.
    Returns the per-sample output shape of every node (``{}`` when the Input declares no
    shape; a recurrent graph needs one, for the zeros its recurrent edges start from). Each
    module's output size is bounded by ``max_bytes`` before it runs (``predicted_shape``).
    """
    try:
        return _run_shapes(graph, order, pred, output, built, adapter, recurrent, batch=0, max_bytes=max_bytes)
    except SpikeFitValueError as first:
        inp = next(n for n in graph.nodes.values() if isinstance(n, nir.Input))
        if isinstance(first, UnsafeNIRFileError) or _declared(inp.input_type, 1) == _declared(inp.input_type):
            raise none_node_hint(first, graph) from None  # a size over the limit: no second reading
        try:
            return _run_shapes(graph, order, pred, output, built, adapter, recurrent, batch=1, max_bytes=max_bytes)
        except SpikeFitValueError as second:  # the batch-less reading got further: report where it stopped
            raise none_node_hint(second, graph) from None


@torch.no_grad()
def _run_shapes(graph: nir.NIRGraph, order: list[str], pred: dict[str, list[str]], output: str,
                built: dict[str, list[nn.Module]], adapter, recurrent: set[tuple[str, str]], *,
                batch: int, max_bytes: int) -> dict[str, tuple[int, ...]]:
    inp = next(k for k, n in graph.nodes.items() if isinstance(n, nir.Input))
    shape = _declared(graph.nodes[inp].input_type, batch)
    if shape is None:
        if recurrent:
            raise SpikeFitValueError(f"the graph is recurrent (edges {sorted(recurrent)}) but its Input {inp!r} "
                                     f"declares no shape; the recurrent edges start from zeros of known shape")
        return {}
    check_declared_size(f"NIR node {inp!r} (Input)", shape, max_bytes)
    values = {inp: torch.zeros(1, *shape)}
    assumed = {}  # a recurrent edge's source, used before it runs: its declared output shape
    for a, _ in recurrent:
        declared = _declared(graph.nodes[a].output_type)
        if declared is None:
            raise SpikeFitValueError(f"node {a!r} feeds a recurrent edge but declares no output shape")
        check_declared_size(f"NIR node {a!r} ({type(graph.nodes[a]).__name__}): its output", declared, max_bytes)
        assumed[a] = torch.zeros(1, *declared)
    for name in order + [output]:
        node = graph.nodes[name]
        ins = {p: values[p] if p in values else assumed[p] for p in pred[name]}
        shapes = {p: tuple(v.shape[1:]) for p, v in ins.items()}
        if len(set(shapes.values())) > 1:
            raise SpikeFitValueError(f"shape mismatch at node {name!r} ({type(node).__name__}): its inputs "
                                     f"have shapes {shapes}; summed inputs must have equal shapes")
        x = ins[pred[name][0]]
        want = None if node is None else (
            _declared(node.output_type, batch) if name == output else _declared(getattr(node, "input_type", None)))
        if want is not None and tuple(x.shape[1:]) != want:
            raise SpikeFitValueError(
                f"shape mismatch at node {name!r} ({type(node).__name__}): it declares input {want}, "
                f"its predecessors give {tuple(x.shape[1:])}")
        for module in built.get(name, []):
            check_declared_size(f"NIR node {name!r} ({type(node).__name__}): its output",
                                predicted_shape(module, tuple(x.shape[1:])), max_bytes)
            try:
                out = module(x)
            except (RuntimeError, ValueError, IndexError) as exc:
                raise SpikeFitValueError(
                    f"shape mismatch at node {name!r} ({type(node).__name__}): input {tuple(x.shape[1:])} "
                    f"does not fit: {str(exc).splitlines()[0]}") from None
            x = adapter.spikes(module, out) if adapter.is_neuron(module) else out
            if adapter.is_neuron(module):
                adapter.reset(module)
        values[name] = x
    for a, b in recurrent:
        if values[a].shape != assumed[a].shape:
            raise SpikeFitValueError(f"shape mismatch on the recurrent edge ({a!r}, {b!r}): {a!r} declares "
                                     f"output {tuple(assumed[a].shape[1:])}, it gives {tuple(values[a].shape[1:])}")
    return {k: tuple(v.shape[1:]) for k, v in values.items()}


def import_nir(graph_or_path: Any, framework: str | None = None, *, dt: float | None = None,
               convention: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> nn.Module:
    """A runnable ``framework`` model of a NIR graph (object or file path).

    Args:
        graph_or_path: a ``nir.NIRGraph`` or the path of a file written by ``nir.write``.
        framework: the adapter to build with, one of :func:`nir_frameworks` (e.g.
            ``"snntorch"``, returning ``nn.Sequential``, or ``"norse"``, returning
            ``norse.torch.SequentialState``); default: the first of them. A graph
            that is not a chain returns a :class:`NIRGraphModule` in any framework.
        dt: the step in seconds the neurons are discretised with. Default: the
            graph's ``spikefit.dt`` metadata, else the step its neurons' gains imply
            (:func:`detect_dt`: snnTorch's exporter writes ``r = tau / 1e-4``), else the
            adapter's ``default_dt`` (``1e-3``, Norse's convention), with a warning.

        convention: how to read a graph without ``spikefit.dt``: ``None`` (detected; ``norse.to_nir``
            graphs read as Norse means them), ``"norse"`` or ``"nir"`` (by the NIR equations).
        max_bytes: most bytes a file's datasets may declare in all, and any tensor of its declared
            shapes (default 256 MiB). Nothing in a file is trusted: its HDF5 structure is checked
            first (:mod:`~snn_spikefit.nir.safety`), then every field read (:mod:`~snn_spikefit.nir.validate`).

    Raises:
        SpikeFitValueError: an unknown framework, unreadable or non-NIR files, edges
            to missing nodes, shape mismatches, inconsistent codebook metadata.
        UnsupportedLayerError: node types or dynamics the framework cannot run
            exactly (named), cycles that are not one neuron's recurrence, several inputs/outputs.
    """
    require_nir()
    frameworks = nir_frameworks()
    if framework is None and frameworks:
        framework = frameworks[0]
    if framework not in frameworks:
        raise SpikeFitValueError(f"framework={framework!r} is not allowed; use one of {frameworks} "
                                 f"(the installed adapters that import NIR)")
    adapter = get_adapter(nn.Module(), name=framework)
    max_bytes = check_max_bytes(max_bytes)
    graph = read_nir(graph_or_path, max_bytes=max_bytes)
    with named_errors():
        if dt is None:
            metadata_dt(graph)  # an array-valued or negative spikefit.dt: refused by name
        # snnTorch's exporter writes RLeaky as a nested graph: inline it before reading conventions
        graph = numpy_params(flatten_subgraphs(graph))
        validate_graph(graph, max_bytes=max_bytes)
        if dt is None:
            graph, dt = graph_dt(graph, adapter.default_dt, convention)
        return _build(graph, adapter, check_dt(dt), max_bytes)


def _build(graph: nir.NIRGraph, adapter, dt: float, max_bytes: int) -> nn.Module:
    order, pred, output, recurrent = _structure(graph)
    built = {name: _modules_for(name, graph.nodes[name], adapter, dt) for name in order}
    shapes = _check_shapes(graph, order, pred, output, built, adapter, recurrent, max_bytes)
    inp = next(k for k, n in graph.nodes.items() if isinstance(n, nir.Input))
    chain = all(pred[name] == [prev] for name, prev in zip(order + [output], [inp] + order))
    if not chain or not order:
        refuse_chip_state(graph, "the graph is not a chain of layers")
        return NIRGraphModule(built, pred, output, stateful=adapter.calls_with_state, recurrent=recurrent,
                              shapes=shapes, input_name=inp)
    container = adapter.nir_container([item for name in order for item in _named(name, built[name])])
    return restore_chip_state(graph, container)  # neurons trained in a chip's own order (Xylo) get it back


def _named(name: str, modules: list[nn.Module]) -> list[tuple[str, nn.Module]]:
    """Names of one node's modules: the last (the node itself) is ``key``, a Gain before it ``key_gain``."""
    key = name.replace(".", "_")
    *before, last = modules
    return [(f"{key}_gain" if i == 0 and isinstance(m, Gain) else f"{key}_{i}", m)
            for i, m in enumerate(before)] + [(key, last)]
