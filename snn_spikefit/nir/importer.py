"""Import a NIR graph (object or ``.nir`` file) as a runnable model of any NIR-capable adapter.

Chain graphs (``Input -> node -> ... -> Output``) become the adapter's container
(:meth:`~snn_spikefit.adapter.Adapter.nir_container`: an ``nn.Sequential`` for
snnTorch, neurons with ``init_hidden=True``; a ``norse.torch.SequentialState``
for Norse); other acyclic graphs become a :class:`NIRGraphModule` (a node
receives the sum of its inputs). All run with :func:`snn_spikefit.run`. The
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
import os
import warnings
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from ..adapter import get_adapter, nir_frameworks
from ..quantize.codebook import FrozenCodebook
from ..quantize.layers import install_frozen, weight_names
from ..errors import SpikeFitError, SpikeFitTypeError, SpikeFitValueError, UnsupportedLayerError
from .common import DT_KEY, Gain, check_dt, layer_for_node, supported_layers
from .safety import DEFAULT_MAX_BYTES, check_declared_size, check_max_bytes, check_nir_file
from .validate import graph_dt, predicted_shape, validate_graph

__all__ = ["import_nir", "read_nir", "NIRGraphModule", "nir_frameworks"]


def read_nir(graph_or_path: Any, *, max_bytes: int = DEFAULT_MAX_BYTES) -> nir.NIRGraph:
    """A ``nir.NIRGraph`` from a graph or a file written by ``nir.write``, with clear errors.

    A file is first checked by :func:`~snn_spikefit.nir.safety.check_nir_file` (links, storage,
    dtypes, declared sizes against ``max_bytes``) before ``nir.read`` reads any of its data.
    """
    if isinstance(graph_or_path, nir.NIRGraph):
        return graph_or_path
    if not isinstance(graph_or_path, (str, os.PathLike)):
        raise SpikeFitTypeError(
            f"graph_or_path must be a nir.NIRGraph or a path to a .nir file, got {type(graph_or_path).__name__}")
    path = Path(graph_or_path)
    if not path.is_file():
        raise SpikeFitValueError(f"NIR file {str(path)!r} does not exist")
    check_nir_file(path, max_bytes=max_bytes)
    try:
        graph = nir.read(path, type_check=False)
    except Exception as exc:  # h5py / nir raise OSError, KeyError, ValueError, AssertionError ...
        raise SpikeFitValueError(
            f"{str(path)!r} is not a readable NIR file (an HDF5 file written by nir.write): "
            f"{type(exc).__name__}: {exc}") from None
    if not isinstance(graph, nir.NIRGraph):
        raise SpikeFitValueError(f"{str(path)!r} holds a single NIR {type(graph).__name__}, not a NIRGraph")
    return graph


def _structure(graph: nir.NIRGraph) -> tuple[list[str], dict[str, list[str]], str]:
    """Topological order of the inner nodes, their predecessors, and the Output's name.

    Checks that edges name existing nodes, that there is one Input and one
    Output, that every node lies on a path from Input to Output, and that the
    graph has no cycle (NIR recurrence is not supported).
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
    for a, b in graph.edges:
        succ[a].append(b)
        pred[b].append(a)
    for k in nodes:
        if k != outputs[0] and not succ[k]:
            raise SpikeFitValueError(
                f"node {k!r} has no outgoing edge: it does not lead to Output {outputs[0]!r} (missing node or edge)")
        if k != inputs[0] and not pred[k]:
            raise SpikeFitValueError(f"node {k!r} has no incoming edge: it is not fed from Input {inputs[0]!r}")
    order, ready, missing = [], [inputs[0]], {k: len(v) for k, v in pred.items()}
    while ready:
        k = ready.pop(0)
        order.append(k)
        for s in succ[k]:
            missing[s] -= 1
            if missing[s] == 0:
                ready.append(s)
    if len(order) != len(nodes):
        cyclic = sorted(k for k in nodes if k not in order)
        raise UnsupportedLayerError(
            f"the graph has a cycle through nodes {cyclic}; recurrent NIR graphs are not supported")
    return order[1:-1], pred, outputs[0]


class NIRGraphModule(nn.Module):
    """Runs a NIR DAG: each node gets the sum of its predecessors' outputs (NIR's edge semantics).

    Built by :func:`import_nir` for graphs that are not chains. With
    ``stateful=True`` (an adapter whose ``calls_with_state`` is set, e.g. Norse)
    ``forward(x, state) -> (output, state)`` carries the states of the modules
    that take a ``state`` argument in a dict, like ``norse.torch.SequentialState``.
    """

    def __init__(self, built: dict[str, list[nn.Module]], pred: dict[str, list[str]], output: str,
                 *, stateful: bool) -> None:
        super().__init__()
        self.keys = {name: name.replace(".", "_") for name in built}
        self.layers = nn.ModuleDict({self.keys[n]: nn.ModuleList(mods) for n, mods in built.items()})
        self.pred = {n: list(pred[n]) for n in list(built) + [output]}
        self.output, self.stateful = output, stateful
        self.takes_state = {(n, i) for n, mods in built.items() for i, m in enumerate(mods)
                            if stateful and "state" in inspect.signature(m.forward).parameters}

    def forward(self, x, state: dict | None = None):
        state = {} if state is None else state
        values = {}
        for name in list(self.keys) + [self.output]:
            ins = [x if p not in values else values[p] for p in self.pred[name]]
            h = ins[0] if len(ins) == 1 else torch.stack(torch.broadcast_tensors(*ins)).sum(0)
            if name == self.output:
                return (h, state) if self.stateful else h
            for i, module in enumerate(self.layers[self.keys[name]]):
                if (name, i) in self.takes_state:
                    h, state[(name, i)] = module(h, state.get((name, i)))
                else:
                    h = module(h)
            values[name] = h


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


def _node_types(adapter) -> str:
    return f"NIR nodes for layers {supported_layers()}; the neurons the {adapter.name!r} adapter runs (above)"


def _declared(shape_dict: Any) -> tuple[int, ...] | None:
    if not isinstance(shape_dict, dict):
        return None
    shape = next(iter(shape_dict.values()), None)
    return None if shape is None else tuple(int(s) for s in np.atleast_1d(shape))


@torch.no_grad()
def _check_shapes(graph: nir.NIRGraph, order: list[str], pred: dict[str, list[str]], output: str,
                  built: dict[str, list[nn.Module]], adapter, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Run one zero sample through the modules, comparing with the declared NIR shapes.

    Each module's output size is bounded (:func:`~snn_spikefit.nir.validate.predicted_shape`)
    against ``max_bytes`` before it runs, so no declared shape allocates more.
    """
    inp = next(k for k, n in graph.nodes.items() if isinstance(n, nir.Input))
    shape = _declared(graph.nodes[inp].input_type)
    if shape is None:
        return
    check_declared_size(f"NIR node {inp!r} (Input)", shape, max_bytes)
    values = {inp: torch.zeros(1, *shape)}
    for name in order + [output]:
        node = graph.nodes[name]
        shapes = {p: tuple(values[p].shape[1:]) for p in pred[name]}
        if len(set(shapes.values())) > 1:
            raise SpikeFitValueError(f"shape mismatch at node {name!r} ({type(node).__name__}): its inputs "
                                     f"have shapes {shapes}; summed inputs must have equal shapes")
        x = values[pred[name][0]]
        want = _declared(node.output_type if name == output else node.input_type)
        if want is not None and tuple(x.shape[1:]) != want:
            raise SpikeFitValueError(
                f"shape mismatch at node {name!r} ({type(node).__name__}): it declares input {want}, "
                f"its predecessors give {tuple(x.shape[1:])}")
        for module in built.get(name, []):
            check_declared_size(f"NIR node {name!r} ({type(node).__name__}): its output",
                                predicted_shape(module, tuple(x.shape[1:])), max_bytes)
            try:
                out = module(x)
            except RuntimeError as exc:
                raise SpikeFitValueError(
                    f"shape mismatch at node {name!r} ({type(node).__name__}): input {tuple(x.shape[1:])} "
                    f"does not fit: {str(exc).splitlines()[0]}") from None
            x = adapter.spikes(module, out) if adapter.is_neuron(module) else out
            if adapter.is_neuron(module):
                adapter.reset(module)
        values[name] = x


def import_nir(graph_or_path: Any, framework: str | None = None, *, dt: float | None = None,
               max_bytes: int = DEFAULT_MAX_BYTES) -> nn.Module:
    """A runnable ``framework`` model of a NIR graph (object or file path).

    Args:
        graph_or_path: a ``nir.NIRGraph`` or the path of a file written by ``nir.write``.
        framework: the adapter to build with, one of :func:`nir_frameworks` (e.g.
            ``"snntorch"``, returning ``nn.Sequential``, or ``"norse"``, returning
            ``norse.torch.SequentialState``); default: the first of them. A graph
            that is not a chain returns a :class:`NIRGraphModule` in any framework.
        dt: the step in seconds the neurons are discretised with. Default: the
            graph's ``spikefit.dt`` metadata, else the adapter's ``default_dt``
            (``1e-3``, with a warning).
        max_bytes: the most bytes the file's datasets may declare in all, and any one tensor
            of the shapes the graph declares (default
            :data:`~snn_spikefit.nir.safety.DEFAULT_MAX_BYTES`, 256 MiB). Nothing in a file is
            trusted: its HDF5 structure is checked first (no links out of the file, no external
            or virtual storage, numbers and strings only; :mod:`snn_spikefit.nir.safety`), then
            every field this function reads (:mod:`snn_spikefit.nir.validate`).

    Raises:
        SpikeFitValueError: an unknown framework, unreadable or non-NIR files, edges
            to missing nodes, shape mismatches, inconsistent codebook metadata.
        UnsupportedLayerError: node types or dynamics the framework cannot run
            exactly (named), graphs with cycles or several inputs/outputs.
    """
    frameworks = nir_frameworks()
    if framework is None and frameworks:
        framework = frameworks[0]
    if framework not in frameworks:
        raise SpikeFitValueError(f"framework={framework!r} is not allowed; use one of {frameworks} "
                                 f"(the installed adapters that import NIR)")
    adapter = get_adapter(nn.Module(), name=framework)
    max_bytes = check_max_bytes(max_bytes)
    graph = read_nir(graph_or_path, max_bytes=max_bytes)
    try:
        return _import(graph, adapter, dt, max_bytes)
    except SpikeFitError:
        raise
    except Exception as exc:  # anything a hostile graph still provokes: one named error, never a raw one
        raise SpikeFitValueError(f"the NIR graph cannot be imported: {type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:300]}") from None


def _import(graph: nir.NIRGraph, adapter, dt: float | None, max_bytes: int) -> nn.Module:
    validate_graph(graph, max_bytes=max_bytes)
    if dt is None:
        dt = graph_dt(graph)
        if dt is None:
            dt = adapter.default_dt
            warnings.warn(f"the NIR graph has no {DT_KEY!r} metadata; discretising its neurons with "
                          f"dt={dt} (pass dt=... to choose)", UserWarning, stacklevel=3)
    dt = check_dt(dt)
    order, pred, output = _structure(graph)
    built = {name: _modules_for(name, graph.nodes[name], adapter, dt) for name in order}
    _check_shapes(graph, order, pred, output, built, adapter, max_bytes)
    inp = next(k for k, n in graph.nodes.items() if isinstance(n, nir.Input))
    chain = all(pred[name] == [prev] for name, prev in zip(order + [output], [inp] + order))
    if not chain or not order:
        return NIRGraphModule(built, pred, output, stateful=adapter.calls_with_state)
    return adapter.nir_container([item for name in order for item in _named(name, built[name])])


def _named(name: str, modules: list[nn.Module]) -> list[tuple[str, nn.Module]]:
    """Names of one node's modules: the last (the node itself) is ``key``, a Gain before it ``key_gain``."""
    key = name.replace(".", "_")
    *before, last = modules
    return [(f"{key}_gain" if i == 0 and isinstance(m, Gain) else f"{key}_{i}", m)
            for i, m in enumerate(before)] + [(key, last)]
