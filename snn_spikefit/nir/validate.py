"""Every field :func:`~snn_spikefit.import_nir` reads from a NIR graph, checked before anything is built.

A graph from a file is data from elsewhere: each value is checked for the type, shape and
range the importer relies on, and a refusal names the node, the field, its value and what is
allowed. Checked here:

* every numeric array of every node (weights, biases, time constants, thresholds, scales):
  numbers (no object arrays), all finite;
* declared shapes (``input_type``/``output_type``, a convolution's ``input_shape``): 1-d arrays of
  positive integers whose tensor (one sample, float32) fits ``max_bytes``;
* convolution and pooling settings: integer ``stride >= 1``, ``dilation >= 1``, ``groups >= 1``,
  ``0 <= padding`` (a convolution's padding at most its effective kernel span), pooling kernels >= 1;
  ``Flatten`` dimensions are integers;
* our ``spikefit.*`` metadata: ``spikefit.dt`` a positive finite number (not an array); codebook
  keys: ``codes`` non-negative integers ``[groups, n]``, ``codebook`` finite floats ``[groups, m']``,
  ``m`` an int >= 2, ``granularity`` ``"layer"``/``"channel"``, ``bits`` an int in 2..8, the
  integer codebook integers with ``|k| <= 2**(bits-1) - 1``, ``scale`` finite and positive;
  ``spikefit.reset_mechanism`` a string.

>>> import nir, numpy as np
>>> g = nir.NIRGraph(nodes={"input": nir.Input(np.array([2])), "fc": nir.Linear(np.array([[np.nan, 1.0]])),
...                         "output": nir.Output(np.array([1]))},
...                  edges=[("input", "fc"), ("fc", "output")], type_check=False)
>>> validate_graph(g)
Traceback (most recent call last):
...
snn_spikefit.errors.SpikeFitValueError: NIR node 'fc' (Linear): field 'weight' has 1 NaN/inf values; weights and neuron parameters must be finite
"""

from __future__ import annotations

import dataclasses
from numbers import Real
from typing import Any

import nir
import numpy as np

from ..errors import SpikeFitValueError
from .safety import DEFAULT_MAX_BYTES, check_declared_size

__all__ = ["validate_graph", "validate_node", "metadata_dt", "predicted_shape"]

DT_KEY = "spikefit.dt"
#: Largest ``m`` a file may declare for a codebook (codes are stored in at most 16 bits).
MAX_M = 2**16


def _fail(where: str, text: str) -> SpikeFitValueError:
    return SpikeFitValueError(f"{where}: {text}")


def _int_scalar(where: str, key: str, value: Any, low: int, high: int | None = None) -> int:
    arr = np.asarray(value)
    if arr.ndim != 0 or arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.isfinite(arr)
                                                              and float(arr) == int(arr)):
        raise _fail(where, f"{key!r} is {_show(value)}; it must be one integer")
    v = int(arr)
    if v < low or (high is not None and v > high):
        allowed = f">= {low}" if high is None else f"in {low}..{high}"
        raise _fail(where, f"{key}={v} is not allowed ({key} must be an int {allowed})")
    return v


def _show(value: Any) -> str:
    arr = np.asarray(value) if not isinstance(value, (str, bytes)) else None
    if arr is not None and arr.dtype.kind != "O" and arr.ndim > 0:
        return f"an array of shape {arr.shape}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _ints(where: str, key: str, value: Any, low: int) -> np.ndarray:
    """A scalar or 1-d array of integers >= ``low`` (stride, padding ...)."""
    arr = np.atleast_1d(np.asarray(value))
    if arr.ndim != 1 or arr.dtype.kind not in "iuf" or arr.size == 0 or not np.all(np.isfinite(arr)) \
            or not np.all(arr == np.round(arr)):
        raise _fail(where, f"{key!r} is {_show(value)}; it must be integers")
    if np.any(arr < low) or np.any(arr > 2**31):
        raise _fail(where, f"{key}={arr.tolist()} is not allowed (each must be an int >= {low})")
    return arr.astype(np.int64)


def _numbers(where: str, key: str, value: Any) -> None:
    arr = np.asarray(value) if not isinstance(value, (str, bytes)) else None
    if arr is None:
        raise _fail(where, f"field {key!r} is the string {_show(value)}; it must be numbers")
    if arr.dtype.kind not in "biuf":
        raise _fail(where, f"field {key!r} holds {arr.dtype} values; it must be numbers")
    if arr.dtype.kind == "f":
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise _fail(where, f"field {key!r} has {bad} NaN/inf values; weights and neuron parameters must "
                               f"be finite")


def _shape(where: str, key: str, value: Any, max_bytes: int) -> None:
    if value is None:
        return
    arr = np.atleast_1d(np.asarray(value))
    if arr.ndim != 1 or arr.dtype.kind not in "iuf" or not np.all(np.isfinite(arr)) \
            or not np.all(arr == np.round(arr)) or np.any(arr < 1):
        raise _fail(where, f"declared shape {key!r} is {_show(value) if arr.ndim != 1 else arr.tolist()}; a shape "
                           f"is a list of positive integers")
    check_declared_size(f"{where}: {key!r}", [int(d) for d in arr], max_bytes)


def _check_conv(where: str, node: Any) -> None:
    w = np.asarray(node.weight)
    n = 1 if isinstance(node, nir.Conv1d) else 2
    if w.ndim != n + 2:
        raise _fail(where, f"'weight' has shape {w.shape}; a {type(node).__name__} weight is {n + 2}-d")
    stride = _ints(where, "stride", node.stride, 1)
    dilation = _ints(where, "dilation", node.dilation, 1)
    _int_scalar(where, "groups", node.groups, 1)
    if isinstance(node.padding, str):
        if node.padding not in ("same", "valid"):
            raise _fail(where, f"padding={node.padding!r} is not allowed (use integers, 'same' or 'valid')")
    else:
        padding = _ints(where, "padding", node.padding, 0)
        span = np.broadcast_to(dilation, (n,)) * (np.asarray(w.shape[2:]) - 1)
        if padding.size not in (1, n) or np.any(np.broadcast_to(padding, (n,)) > np.maximum(span, 0)):
            raise _fail(where, f"padding={padding.tolist()} is not allowed with kernel {tuple(w.shape[2:])} and "
                               f"dilation {dilation.tolist()} (at most dilation * (kernel - 1) per side)")
    del stride
    if getattr(node, "input_shape", None) is not None:
        _ints(where, "input_shape", node.input_shape, 1)


def _check_codebook(where: str, meta: dict) -> None:
    missing = [k for k in ("spikefit.codes", "spikefit.codebook", "spikefit.m", "spikefit.granularity")
               if k not in meta]
    if missing:
        raise _fail(where, f"codebook metadata lacks {missing[0]!r}")
    codes = np.asarray(meta["spikefit.codes"])
    if codes.dtype.kind not in "iu" or codes.ndim != 2:
        raise _fail(where, f"'spikefit.codes' is {codes.dtype} of shape {codes.shape}; it must be 2-d integers")
    if codes.size and int(codes.min()) < 0:
        raise _fail(where, f"'spikefit.codes' has negative entries (min {int(codes.min())}); codes index the "
                           f"codebook from 0")
    book = np.asarray(meta["spikefit.codebook"])
    if book.dtype.kind != "f" or book.ndim != 2:
        raise _fail(where, f"'spikefit.codebook' is {book.dtype} of shape {book.shape}; it must be 2-d floats")
    _numbers(where, "spikefit.codebook", book)
    _int_scalar(where, "spikefit.m", meta["spikefit.m"], 2, MAX_M)
    granularity = meta["spikefit.granularity"]
    if granularity not in ("layer", "channel"):
        raise _fail(where, f"'spikefit.granularity' is {_show(granularity)}; use 'layer' or 'channel'")
    if "spikefit.bits" not in meta:
        return
    bits = _int_scalar(where, "spikefit.bits", meta["spikefit.bits"], 2, 8)
    for key in ("spikefit.codebook_int", "spikefit.scale"):
        if key not in meta:
            raise _fail(where, f"codebook metadata has 'spikefit.bits' but lacks {key!r}")
    ints = np.asarray(meta["spikefit.codebook_int"])
    top = 2 ** (bits - 1) - 1
    if ints.dtype.kind not in "iu" or ints.shape != book.shape or (ints.size and int(np.abs(ints).max()) > top):
        raise _fail(where, f"'spikefit.codebook_int' ({ints.dtype}, shape {ints.shape}) must be integers "
                           f"|k| <= {top} (bits={bits}) shaped like the codebook {book.shape}")
    scale = np.asarray(meta["spikefit.scale"])
    _numbers(where, "spikefit.scale", scale)
    if scale.dtype.kind != "f" or scale.ndim != 1 or scale.shape[0] != book.shape[0] or np.any(scale <= 0):
        raise _fail(where, f"'spikefit.scale' must be positive floats, one per codebook ({book.shape[0]}); got "
                           f"{_show(scale)}")


def validate_node(name: str, node: Any, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Refuse, naming ``name`` and the field, a node whose fields the importer cannot trust."""
    where = f"NIR node {name!r} ({type(node).__name__})"
    if not dataclasses.is_dataclass(node) or isinstance(node, nir.NIRGraph):
        return
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if f.name == "metadata" or value is None or isinstance(value, (str, bytes)) and f.name == "padding":
            continue
        if isinstance(value, dict):
            for key, shape in value.items():
                _shape(where, f"{f.name}.{key}", shape, max_bytes)
            continue
        if isinstance(value, (np.ndarray, Real, np.generic, list, tuple)):
            _numbers(where, f.name, value)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        _check_conv(where, node)
    elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        _ints(where, "kernel_size", node.kernel_size, 1)
        _ints(where, "stride", node.stride, 1)
        _ints(where, "padding", node.padding, 0)
    elif isinstance(node, nir.Flatten):
        _int_scalar(where, "start_dim", node.start_dim, -64, 64)
        _int_scalar(where, "end_dim", node.end_dim, -64, 64)
    meta = getattr(node, "metadata", None) or {}
    if not isinstance(meta, dict):
        raise _fail(where, f"metadata is {type(meta).__name__}, not a dict")
    if "spikefit.codes" in meta or any(k in meta for k in ("spikefit.codebook", "spikefit.bits")):
        _check_codebook(where, meta)
    reset = meta.get("spikefit.reset_mechanism")
    if reset is not None and not isinstance(reset, str):
        raise _fail(where, f"'spikefit.reset_mechanism' is {_show(reset)}; it must be a string")


def metadata_dt(graph: nir.NIRGraph) -> float | None:
    """The graph's ``spikefit.dt`` metadata, checked (``None`` when absent)."""
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    if DT_KEY not in meta:
        return None
    value = meta[DT_KEY]
    arr = np.asarray(value) if not isinstance(value, (str, bytes)) else np.asarray(0.0)
    if isinstance(value, (str, bytes, bool, np.bool_)) or arr.ndim != 0 or arr.dtype.kind not in "iuf" \
            or not np.isfinite(arr) or float(arr) <= 0:
        raise SpikeFitValueError(f"NIR graph metadata {DT_KEY!r} is {_show(value)}; it must be one positive "
                                 f"finite number of seconds (or pass dt=... / --dt to override)")
    return float(arr)


def validate_graph(graph: nir.NIRGraph, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Check every node's fields (see the module docstring); ``spikefit.dt`` is :func:`metadata_dt`'s."""
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):  # a nested graph (the importer inlines them): its nodes too
            for inner, sub in node.nodes.items():
                if sub is not None:
                    validate_node(f"{name}.{inner}", sub, max_bytes=max_bytes)
        elif node is not None:
            validate_node(str(name), node, max_bytes=max_bytes)


def predicted_shape(module: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """An upper bound on the per-sample output shape of an imported ``module`` on ``shape`` input.

    Used to refuse a graph before a tensor of that size is allocated: exact for ``Linear`` and
    convolutions, the input's size for pooling and ``Flatten``, and the broadcast of the input with
    every parameter and buffer for element-wise modules (neurons, ``Gain``).
    """
    from torch import nn

    if isinstance(module, nn.Linear):
        return tuple(shape[:-1]) + (module.out_features,)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and len(shape) >= 1 + len(module.kernel_size) - 1:
        spatial = shape[-len(module.kernel_size):]
        pad = module.padding if not isinstance(module.padding, str) else tuple(k - 1 for k in module.kernel_size)
        out = [max((s + 2 * p - d * (k - 1) - 1) // st + 1, 1) for s, p, d, k, st
               in zip(spatial, pad, module.dilation, module.kernel_size, module.stride)]
        return (module.out_channels, *out)
    if isinstance(module, (nn.AvgPool2d, nn.LPPool2d, nn.Flatten)):
        return tuple(shape)
    shapes = [tuple(shape)] + [tuple(t.shape) for t in list(module.parameters()) + list(module.buffers())]
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        return tuple(shape)
