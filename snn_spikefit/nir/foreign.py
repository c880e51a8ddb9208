"""Files other tools write: their time-step conventions and shape habits, read as NIR means them.

* ``spikefit.dt`` graph metadata (our files) says the step outright.
* snnTorch's exporter writes ``r = tau / 1e-4`` (``w_in = tau_syn / 1e-4``): a unit input
  gain per step, from which :func:`detect_dt` reads ``dt = 1e-4``.
* ``norse.torch.to_nir`` writes ``tau = dt / tau_inv`` (not ``1 / tau_inv``), ``r = 1`` and
  ``w_in = 1`` whatever the cell, and declares ``Input``/``Output`` shapes with the batch of its
  sample. Read as the NIR equations say, its neurons would decay ``1/dt`` times too fast;
  :func:`from_norse_convention` rewrites them into the NIR graph of the same Norse cells
  (``LIFBoxCell``: ``tau = 1/tau_inv``; ``LIFCell``: also ``r = tau_syn/dt``, since Norse adds the
  input to the current as a jump; ``IAFCell``: ``r = 1/dt``). It is applied when the graph
  looks written by Norse (:func:`looks_like_norse`) or with ``import_nir(..., convention="norse")``.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import nir
import numpy as np

from ..errors import SpikeFitValueError
from .common import DT_KEY
from .safety import UnsafeNIRFileError

__all__ = ["detect_dt", "graph_dt", "graph_input_shape", "none_node_hint", "looks_like_norse", "from_norse_convention",
           "CONVENTIONS"]

#: ``import_nir(convention=...)``: how the neurons' constants are read (``None``: detected).
CONVENTIONS = ("nir", "norse")
_NEURONS = (nir.LIF, nir.CubaLIF, nir.IF, nir.LI, nir.CubaLI)


def _declared(shape_dict: Any, batch: int = 0) -> tuple[int, ...] | None:
    """A declared shape; ``None`` when absent or ``()`` (a neuron with scalar parameters broadcasts).

    ``batch=1`` drops a leading batch dimension of 1 (``norse.to_nir`` declares ``Input``/``Output``
    shapes with the batch of its sample).
    """
    if not isinstance(shape_dict, dict):
        return None
    shape = next(iter(shape_dict.values()), None)
    if shape is None or np.asarray(shape).size == 0:
        return None
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    return shape[1:] if batch and len(shape) > 1 and shape[0] == 1 else shape


def graph_input_shape(graph: nir.NIRGraph) -> tuple[int, ...] | None:
    """One sample's input shape as the graph declares it, less a batch of 1 that stock exporters add.

    The batch is taken off when ``Input`` and ``Output`` both declare a leading 1 (``norse.to_nir``).
    """
    ends = [n for n in graph.nodes.values() if isinstance(n, (nir.Input, nir.Output))]
    inp = next((n for n in ends if isinstance(n, nir.Input)), None)
    if inp is None:
        return None
    out = next((n for n in ends if isinstance(n, nir.Output)), None)
    declared, out_shape = _declared(inp.input_type), _declared(out.output_type) if out is not None else None
    batched = bool(declared and out_shape and len(declared) > 1 and len(out_shape) > 1 and declared[0] == out_shape[0] == 1)
    return _declared(inp.input_type, int(batched))


def detect_dt(graph: nir.NIRGraph) -> float | None:
    """The step of a graph written in the unit-gain convention, else ``None``.

    Unit input gain per step: ``r = tau/dt`` (LIF), ``r = tau_mem/dt`` and ``w_in = tau_syn/dt``
    (CubaLIF), and for IF neurons only ``r = 1`` (``dt = 1``: sinabs and Norse write IF neurons that run
    ``v += x`` per step this way). snnTorch's exporter writes ``dt = 1e-4``. One ``dt`` must explain
    all, smaller than every time constant (``r = 1`` on a LIF would say ``dt = tau``: no convention).
    """
    ratios, taus = [], []
    for node in graph.nodes.values():
        pairs = {nir.LIF: [("tau", "r")], nir.CubaLIF: [("tau_mem", "r"), ("tau_syn", "w_in")],
                 nir.IF: [(None, "r")]}.get(type(node), [])
        for tau, gain in pairs:
            g = np.asarray(getattr(node, gain), np.float64)
            if tau is None and not np.all(g == 1):  # an IF's r alone does not tell a step (r = 1: sinabs, Norse)
                return None
            t = np.ones_like(g) if tau is None else np.asarray(getattr(node, tau), np.float64)
            if t.size == 0 or np.any(g <= 0) or not np.all(np.isfinite(t / g)):
                return None
            if tau is not None:
                taus.append(t.ravel())
            ratios.append((t / g).ravel())
    if not ratios:
        return None
    values = np.concatenate(ratios)
    dt = float(values[0])
    if dt <= 0 or not np.allclose(values, dt, rtol=1e-6, atol=0):
        return None
    if taus and not dt < np.concatenate(taus).min():  # r = 1 on a LIF would give dt = tau: no convention
        return None
    return float(f"{dt:.6g}")


def graph_dt(graph: nir.NIRGraph, default: float, convention: str | None = None) -> tuple[nir.NIRGraph, float]:
    """``(graph as NIR means it, dt)``: ``spikefit.dt`` metadata, else Norse's convention, else
    :func:`detect_dt`, else ``default`` (each but the first with a warning)."""
    if convention not in (None,) + CONVENTIONS:
        raise SpikeFitValueError(f"convention={convention!r} is not allowed; use None (detect) or one of "
                                 f"{list(CONVENTIONS)}")
    if DT_KEY in graph.metadata and convention is None:
        return graph, float(graph.metadata[DT_KEY])
    if convention == "norse" or (convention is None and looks_like_norse(graph)):
        if convention is None:
            warnings.warn(f"the NIR graph looks written by norse.torch.to_nir (no metadata, batch in the Input "
                          f"shape, r = 1): reading its neurons as Norse writes them (tau = dt/tau_inv) with "
                          f"dt={default} (pass convention='nir' to read it as the NIR equations say, dt=... "
                          f"for another step)", UserWarning, stacklevel=3)
        return from_norse_convention(graph, default), default
    found = detect_dt(graph)
    if found is not None:
        warnings.warn(f"the NIR graph has no {DT_KEY!r} metadata; its neurons have unit input gain per step at "
                      f"dt={found} (r = tau/dt, snnTorch's convention), so they are discretised with dt={found} "
                      f"(pass dt=... to choose)", UserWarning, stacklevel=3)
        return graph, found
    warnings.warn(f"the NIR graph has no {DT_KEY!r} metadata; discretising its neurons with "
                  f"dt={default} (pass dt=... to choose)", UserWarning, stacklevel=3)
    return graph, default


def numpy_params(graph: nir.NIRGraph) -> nir.NIRGraph:
    """``graph`` with torch tensors in node fields as numpy arrays (``norse.to_nir`` leaves tensors in)."""
    if not any(_tensor_fields(n) for n in graph.nodes.values()):
        return graph
    graph = copy.copy(graph)
    graph.nodes = dict(graph.nodes)
    for key, node in graph.nodes.items():
        fields = _tensor_fields(node)
        if fields:
            node = copy.copy(node)
            for name in fields:
                setattr(node, name, getattr(node, name).detach().cpu().numpy())
            graph.nodes[key] = node
    return graph


def _tensor_fields(node: Any) -> list[str]:
    import torch

    return [k for k, v in vars(node).items() if isinstance(v, torch.Tensor)] if node is not None else []


def looks_like_norse(graph: nir.NIRGraph) -> bool:
    """No metadata, ``Input`` and ``Output`` declared with a batch of 1, every neuron ``r = 1`` (``w_in = 1``)."""
    if graph.metadata or graph_input_shape(graph) == _declared(_input(graph).input_type):
        return False
    neurons = [n for n in graph.nodes.values() if isinstance(n, _NEURONS)]
    return bool(neurons) and all(np.all(np.asarray(n.r) == 1) and np.all(np.asarray(getattr(n, "w_in", 1)) == 1)
                                 for n in neurons)


def _input(graph: nir.NIRGraph):
    return next(n for n in graph.nodes.values() if isinstance(n, nir.Input))


def from_norse_convention(graph: nir.NIRGraph, dt: float) -> nir.NIRGraph:
    """A copy of a ``norse.torch.to_nir`` graph (written with step ``dt``) in NIR's own terms."""
    graph = copy.copy(graph)
    graph.nodes = dict(graph.nodes)
    a = lambda v: np.asarray(v, np.float64)  # noqa: E731
    for key, node in graph.nodes.items():
        if isinstance(node, (nir.LIF, nir.LI)):
            node = copy.copy(node)
            node.tau = a(node.tau) / dt
        elif isinstance(node, (nir.CubaLIF, nir.CubaLI)):
            node = copy.copy(node)
            node.tau_syn, node.tau_mem = a(node.tau_syn) / dt, a(node.tau_mem) / dt
            node.r = np.broadcast_to(node.tau_syn / dt, np.shape(node.r)).copy() if np.ndim(node.r) else node.tau_syn / dt
        elif isinstance(node, nir.IF):
            node = copy.copy(node)
            node.r = a(node.r) / dt
        graph.nodes[key] = node
    return graph


def none_node_hint(exc: SpikeFitValueError, graph: nir.NIRGraph) -> SpikeFitValueError:
    """``exc`` plus, when the graph has ``None`` nodes (``norse.to_nir``), the sentence that says so."""
    empty = sorted(k for k, n in graph.nodes.items() if n is None)
    if not empty or isinstance(exc, UnsafeNIRFileError):
        return exc
    return SpikeFitValueError(
        f"{exc}; nodes {empty} are empty (None): the exporter wrote no operation there (norse.to_nir does "
        f"this for AvgPool2d, Flatten and LIFRecurrentCell), so what they computed cannot be recovered from the file")
