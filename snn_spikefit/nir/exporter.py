"""Export a spiking model (any adapter's) to NIR, compression facts included.

>>> import torch, snn_spikefit as sf
>>> from torch import nn
>>> g = sf.export_nir(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.rand(1, 2, 2), dt=1e-3)
>>> sorted(g.nodes), g.edges
(['0', '1', 'input', 'output'], [('input', '0'), ('0', '1'), ('1', 'output')])
>>> g.metadata["producer"], g.metadata["spikefit.dt"]
('snn_spikefit', 0.001)
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Any

import nir
import numpy as np
import torch
from torch import Tensor, nn

from .._version import __version__
from ..errors import SpikeFitValueError, UnsupportedLayerError
from ..adapter import Adapter, get_adapter
from .common import DT_KEY, PRODUCER, RESET_KEY, RecurrentNIR, check_dt, layer_for_module
from .compat import require_nir, write_nir
from .stock import STOCK_DT, STOCK_IMPORTERS, adapt_for_importer, stock_dt
from .graph_export import export_graph_module
from .importer import NIRGraphModule
from ..runtime import check_module, eval_mode
from ..trace import INPUT, UNKNOWN, trace
from ..quantize.layers import compressed_layers

__all__ = ["export_nir", "codebook_metadata", "DEFAULT_DT"]

#: The step used when neither the caller nor the neurons give one (:attr:`Adapter.default_dt`).
DEFAULT_DT = Adapter.default_dt


def codebook_metadata(layer) -> dict[str, Any]:
    """``spikefit.*`` node metadata of one :class:`~snn_spikefit.quantize.layers.CompressedLayer`.

    The quantizer's exact integer form (what :func:`~snn_spikefit.freeze` stores),
    for CAT codebooks and baselines alike, whatever the weight parameter is called.
    """
    q = layer.quantizer
    form = layer.integer_form()
    meta: dict[str, Any] = {
        "spikefit.codes": form.codes.cpu().numpy().copy(),
        "spikefit.codebook": form.values.detach().cpu().numpy().astype(np.float32),
        "spikefit.m": int(q.m),
        "spikefit.granularity": str(q.granularity),
    }
    if form.ints is not None:  # NIR metadata has no "None": absent keys mean a float codebook
        ints = form.ints.cpu().numpy()
        meta["spikefit.codebook_int"] = ints.astype(np.int16 if np.abs(ints).max() > 127 else np.int8)
        meta["spikefit.scale"] = form.scale.detach().cpu().numpy().astype(np.float32)
        meta["spikefit.bits"] = int(q.bits)
    return meta


def _codebook_of(label: str, module: nn.Module, codebooks: dict[int, list]) -> dict[str, Any]:
    """Metadata of the one compressed weight of a layer node (none: ``{}``)."""
    layers = codebooks.get(id(module), [])
    if len(layers) > 1:
        raise UnsupportedLayerError(
            f"layer {label!r} ({type(module).__name__}) carries {len(layers)} compressed weights "
            f"{[c.param for c in layers]}; a NIR node's metadata describes one weight")
    return codebook_metadata(layers[0]) if layers else {}


def _codebook_for(source: tuple[nn.Module, str], codebooks: dict[int, list]) -> dict[str, Any]:
    """Metadata of the compressed weight ``module.<param>`` (none: ``{}``)."""
    module, param = source
    return next((codebook_metadata(c) for c in codebooks.get(id(module), []) if c.param == param), {})


def _add_neuron(key: str, node: Any, sources: list[str], nodes: dict, edges: list, codebooks: dict) -> None:
    """Add a neuron's node(s) fed the sum of ``sources``: one node, or a RecurrentNIR's weights and its cycle."""
    if not isinstance(node, RecurrentNIR):
        nodes[key] = node
        edges.extend((source, key) for source in sources)
        return
    if node.input is not None:
        nodes[f"{key}_in"] = node.input
        node.input.metadata.update(_codebook_for(node.input_source, codebooks))
        edges.extend((source, f"{key}_in") for source in sources)
        sources = [f"{key}_in"]
    nodes[key], nodes[f"{key}_rec"] = node.neuron, node.recurrent
    node.recurrent.metadata.update(_codebook_for(node.recurrent_source, codebooks))
    edges.extend([*((source, key) for source in sources), (key, f"{key}_rec"), (f"{key}_rec", key)])


def _warn_reset(label: str, module: nn.Module, node: Any) -> None:
    reset = node.metadata.get(RESET_KEY)
    if reset is not None:
        warnings.warn(
            f"layer {label!r} ({type(module).__name__}) resets by {reset!r}, which NIR's "
            f"{type(node).__name__} cannot express (it resets to v_reset); kept in node metadata "
            f"{RESET_KEY!r}: snn_spikefit.import_nir honours it, other NIR tools will not",
            UserWarning, stacklevel=4)  # the caller of export_nir


def _model_dt(model: nn.Module) -> float:
    """The neurons' own step when they all give the same one (:meth:`Adapter.neuron_dt`), else the default."""
    adapter = get_adapter(model)
    dts = {adapter.neuron_dt(m) for _, m in adapter.neurons(model)} - {None}
    return dts.pop() if len(dts) == 1 else adapter.default_dt


@torch.no_grad()
def export_nir(
    model: nn.Module,
    sample: Tensor,
    path: str | os.PathLike | None = None,
    *,
    dt: float | None = None,
    for_importer: str | None = None,
    nir_version: str | None = None,
    num_steps: int = 1,
) -> nir.NIRGraph:
    """The NIR graph of ``model`` (its real data flow on ``sample``), written to ``path`` if given.

    Args:
        model: a spiking model of any adapter (or plain torch) made of ``Linear``,
            ``Conv1d``/``Conv2d``, ``AvgPool2d``, ``LPPool2d(1)`` (sum pool),
            ``Flatten`` and the adapters' neurons; wrapped (codebook) layers export
            their quantized weight plus ``spikefit.*`` node metadata (integer codes,
            codebook, integer codebook, scale, bits, m, granularity). A recurrent
            neuron (snnTorch ``RLeaky``/``RSynaptic``, Norse ``LIFRecurrentCell``)
            becomes its neuron node ``<name>`` in a cycle with its recurrent weight
            node ``<name>_rec`` (and ``<name>_in`` for weights the cell owns on its
            input); a model :func:`~snn_spikefit.import_nir` built from a graph
            (:class:`~snn_spikefit.nir.importer.NIRGraphModule`) exports its own graph.
        sample: one input batch ``[B, ...]`` (only its first sample is used).
        path: write the graph with ``nir.write`` here.
        dt: the step in seconds that neuron time constants refer to. Default:
            the neurons' own step when they agree (:meth:`Adapter.neuron_dt`: a Norse
            cell's ``dt``, snnTorch's ``1e-4`` convention), else the adapter's ``default_dt``
            (``1e-3``); with ``for_importer``, that importer's step.
        for_importer: ``None`` (default): a file :func:`~snn_spikefit.import_nir` reads
            exactly, every ``spikefit.*`` fact included; a warning names what the stock
            importer of the model's own framework would run differently. ``"snntorch"``
            (``snntorch.import_nir.import_from_nir``, ``dt = 1e-4``) or ``"norse"``
            (``norse.torch.from_nir``, ``dt = 1e-3`` unless given): a file that stock
            importer runs with the same spikes (input gains folded into the weights,
            ``AvgPool2d`` as ``SumPool2d`` for Norse; for a recurrent neuron, the recurrent
            bias moved to the input bias and, for snnTorch, an identity node on the cycle),
            or a refusal; see :mod:`snn_spikefit.nir.stock`. Our own import reads these files
            exactly too.
        nir_version: the file layout, one of :data:`~snn_spikefit.nir.compat.NIR_WRITE_VERSIONS`
            (default: the installed nir's); ``"1.0.4"`` for readers pinned to nir 1.0.4
            (sinabs), see :mod:`snn_spikefit.nir.compat`.
        num_steps: steps ``sample`` is traced for (default 1). A model whose ``forward`` runs its
            own time loop (snnTorch tutorial nets) needs the count that loop runs.

    Raises:
        UnsupportedLayerError: a layer with no NIR form (named, with the
            alternative), an input computed by a functional op in ``forward``, or
            (with ``for_importer``) a node the stock importer cannot run exactly.

    Warns when a neuron's reset cannot be expressed in NIR itself (it is kept
    in ``spikefit.reset_mechanism`` and honoured by :func:`~snn_spikefit.import_nir`).
    """
    require_nir()
    check_module(model)
    if not isinstance(sample, Tensor) or sample.ndim < 2:
        raise SpikeFitValueError(
            f"sample must be a batch tensor [B, ...], got "
            f"{tuple(sample.shape) if isinstance(sample, Tensor) else type(sample).__name__}")
    if for_importer is not None:
        dt = stock_dt(for_importer, dt)
    dt = check_dt(_model_dt(model) if dt is None else dt)
    with eval_mode(model):  # a codebook in training mode may re-seed codewords on a forward pass
        graph = _export(model, sample, dt, for_importer, num_steps)
    if path is not None:
        write_nir(path, graph, nir_version)
    return graph


def _check_finite(nodes: dict[str, nir.NIRNode]) -> None:
    """Refuse to write a node whose weights or parameters hold NaN/inf, naming the layer and the field."""
    for label, node in nodes.items():
        if isinstance(node, nir.NIRGraph):  # a registered layer's to_nir may return a subgraph
            _check_finite({f"{label}.{k}": v for k, v in node.nodes.items()})
            continue
        for key, value in vars(node).items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
                bad = int((~np.isfinite(value)).sum())
                raise SpikeFitValueError(
                    f"layer {label!r} (NIR {type(node).__name__}) has {bad} NaN/inf values in its {key!r}; a NIR "
                    f"file must hold finite numbers (fix or retrain the layer before export)")


#: Modules that are the identity in eval mode; export skips them.
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _export(model: nn.Module, sample: Tensor, dt: float, for_importer: str | None,
            num_steps: int) -> nir.NIRGraph:
    codebooks: dict[int, list] = {}
    for layer in compressed_layers(model):
        codebooks.setdefault(id(layer.module), []).append(layer)
    if isinstance(model, NIRGraphModule):  # an imported graph (recurrent ones cannot be traced)
        nodes, edges = export_graph_module(
            model, sample, dt, lambda label, module: _codebook_of(label, module, codebooks))
        return _finish(nodes, edges, get_adapter(model), dt, for_importer)
    graph = trace(model, sample, num_steps=num_steps)
    adapter = graph.adapter
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array(sample.shape[1:])})}
    edges: list[tuple[str, str]] = []
    names: dict[str, list[str]] = {INPUT: ["input"]}  # traced node -> the NIR nodes whose sum it is
    for n in graph.nodes:
        label = n.name or type(n.module).__name__
        if UNKNOWN in n.inputs or (len(n.inputs) != 1 and not n.is_add):
            what = f"addition {label!r}" if n.is_add else f"layer {label!r} ({type(n.module).__name__})"
            raise UnsupportedLayerError(
                f"{what} gets its input from a functional op in forward (e.g. torch.flatten, x * 2; additions "
                f"of two module outputs are followed); NIR export needs module-to-module data flow: use modules "
                f"(nn.Flatten, ...) in an nn.Sequential or the framework's sequential container")
        if n.is_add:  # NIR sums a node's inputs: the addition becomes edges from every operand's sources
            names[n.name] = _summands(label, [s for i in n.inputs for s in names[i]])
            continue
        if isinstance(n.module, _PASS_THROUGH):  # no-ops at inference (a folded BatchNorm, dropout)
            names[n.name] = names[n.inputs[0]]
            continue
        key = n.name.replace(".", "_") or "layer"
        in_shape, out_shape = tuple(n.in_shape[1:]), tuple(n.out_shape[1:])
        if n.is_neuron:
            node = adapter.neuron_to_nir(n.module, dt=dt, shape=out_shape)
            if for_importer is None:
                _warn_reset(label, n.module, node.neuron if isinstance(node, RecurrentNIR) else node)
            _add_neuron(key, node, names[n.inputs[0]], nodes, edges, codebooks)
        else:
            node = layer_for_module(label, n.module).to_nir(n.module, in_shape, out_shape)
            node.metadata.update(_codebook_of(label, n.module, codebooks))
            nodes[key] = node
            edges.extend((src, key) for src in names[n.inputs[0]])
        names[n.name] = [key]
    if graph.output is None:
        raise SpikeFitValueError(f"{type(model).__name__} has no layer to export")
    out_shape = graph.node(graph.output).out_shape[1:]
    nodes["output"] = nir.Output(output_type={"output": np.array(out_shape)})
    edges.extend((src, "output") for src in names[graph.output])
    return _finish(nodes, edges, adapter, dt, for_importer)


def _summands(label: str, sources: list[str]) -> list[str]:
    """The NIR nodes an addition sums; one node twice (``x + x``) has no NIR form: edges are a set."""
    twice = sorted({s for s in sources if sources.count(s) > 1})
    if twice:
        raise UnsupportedLayerError(
            f"addition {label!r} adds the output of NIR node(s) {twice} more than once (e.g. x + x); NIR sums "
            f"a node's inputs over its edges, and an edge cannot be doubled: scale the weights instead")
    return sources


def _finish(nodes: dict, edges: list, adapter: Adapter, dt: float, for_importer: str | None) -> nir.NIRGraph:
    _check_finite(nodes)
    meta = {"producer": PRODUCER, "version": __version__, DT_KEY: dt, "spikefit.framework": adapter.name}
    if for_importer is not None:
        notes, _ = adapt_for_importer(nodes, edges, for_importer, dt)
        meta["spikefit.for_importer"] = for_importer
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=4)
    elif adapter.name in STOCK_IMPORTERS:
        _warn_stock(nodes, edges, adapter.name, dt)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def _warn_stock(nodes: dict, edges: list, importer: str, dt: float) -> None:
    """Say when the model's own framework's stock importer would not run the default file exactly."""
    alternative = (f"export_nir(..., for_importer={importer!r}) writes a file it runs, or refuses by name; "
                   f"snn_spikefit.import_nir reads this one exactly")
    if dt != STOCK_DT[importer] and importer == "snntorch":
        text = f"{STOCK_IMPORTERS[importer]} will not run this file exactly: it is written for dt={dt} and " \
               f"that importer fixes dt=1e-4"
    else:
        try:
            _, changed = adapt_for_importer(copy.deepcopy(nodes), list(edges), importer, dt)
        except UnsupportedLayerError as exc:
            text = str(exc)
        else:
            if not changed:
                return
            text = (f"{STOCK_IMPORTERS[importer]} will not run this file exactly: nodes {sorted(set(changed))} "
                    f"need rewriting for it (input gains folded into weights, AvgPool2d as SumPool2d, a "
                    f"recurrent bias moved to the input bias, snnTorch cycles given a third node)")
    warnings.warn(f"{text}. {alternative}", UserWarning, stacklevel=5)  # _finish, _export, export_nir
