"""NIR's linear nodes as numpy maps on flat vectors: the dense matrix a chip's synapses hold.

A run of linear nodes between two neuron layers (Affine/Linear, Conv1d/Conv2d, AvgPool2d,
SumPool2d, Flatten, Scale) is one affine map ``y = W x + b`` on the C-order flattened input.
:func:`affine_block` composes it by applying the nodes to the unit vectors; with ``integer=True``
each weighted node uses its integer codebook values (``spikefit.codebook_int[spikefit.codes]``)
and no bias, average pooling becomes a sum, and the factors that were left out (the codebook
scale, ``1 / k**2``, a uniform ``Scale``) are returned as one number: ``W = factor * C`` exactly.
numpy and nir only (no torch): the target side runs it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

__all__ = ["AffineBlock", "affine_block", "LINEAR_NODES", "integer_weights"]

LINEAR_NODES = (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d, nir.AvgPool2d, nir.SumPool2d, nir.Flatten,
                nir.Scale)


@dataclass
class AffineBlock:
    """``y = weight @ x + bias`` for one run of linear nodes; ``codes`` (ints) and ``factor`` when
    every weighted node in it is a frozen codebook (then ``weight == factor * codes``)."""

    weight: np.ndarray           # [n_out, n_in] float64
    bias: np.ndarray             # [n_out] float64
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    codes: np.ndarray | None     # [n_out, n_in] int64
    factor: float | None
    why_not_integer: str | None  # the reason when codes is None


def _pair(v, n: int = 2) -> tuple[int, ...]:
    arr = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return tuple(arr * n if len(arr) == 1 else arr)


def integer_weights(node) -> np.ndarray | None:
    """The integer weight of a frozen codebook node (``codebook_int[codes]``), else None."""
    meta = node.metadata or {}
    if "spikefit.codes" not in meta or "spikefit.codebook_int" not in meta:
        return None
    ints = np.asarray(meta["spikefit.codebook_int"]).astype(np.int64)
    codes = np.asarray(meta["spikefit.codes"]).astype(np.int64)
    w = np.asarray(node.weight)
    if ints.ndim == 1:
        values = ints[codes]
    else:  # per-channel codebooks: one row of integers per output channel
        values = np.take_along_axis(ints.reshape(ints.shape[0], -1), codes.reshape(codes.shape[0], -1), 1)
    return values.reshape(w.shape)


def _conv(x: np.ndarray, w: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    """2-d convolution (cross-correlation, as torch) of ``x [B, C, H, W]``."""
    kh, kw = w.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        else:  # "same" with stride 1
            padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, (kh, kw)))
    ph, pw = padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    b, c, h, wd = x.shape
    ho = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    g = int(groups)
    wg = w.reshape(g, w.shape[0] // g, w.shape[1], kh, kw)
    out = np.zeros((b, g, w.shape[0] // g, ho, wo))
    for i in range(kh):
        for j in range(kw):
            i0, j0 = i * dilation[0], j * dilation[1]
            patch = x[:, :, i0:i0 + stride[0] * (ho - 1) + 1:stride[0], j0:j0 + stride[1] * (wo - 1) + 1:stride[1]]
            patch = patch.reshape(b, g, c // g, ho, wo)
            out += np.einsum("goc,bgchw->bgohw", wg[:, :, :, i, j], patch)
    return out.reshape(b, w.shape[0], ho, wo)


def _sum_pool(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    out = np.zeros(x.shape[:2] + (ho, wo))
    for i in range(kh):
        for j in range(kw):
            out += x[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
    return out


def _apply(node, x: np.ndarray, integer: bool) -> tuple[np.ndarray, float]:
    """One node on a batch ``x [B, *shape]``; returns the output and the factor left out."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = integer_weights(node) if integer else np.asarray(node.weight, np.float64)
        y = x.reshape(x.shape[0], -1) @ np.asarray(w, np.float64).T
        if isinstance(node, nir.Affine) and not integer:
            y = y + np.asarray(node.bias, np.float64)
        return y, (float(np.asarray(node.metadata["spikefit.scale"]).reshape(-1)[0]) if integer else 1.0)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        w = np.asarray(integer_weights(node) if integer else node.weight, np.float64)
        one = isinstance(node, nir.Conv1d)
        n = 1 if one else 2
        xx, ww = (x[:, :, None, :], w[:, :, None, :]) if one else (x, w)
        pad = node.padding if isinstance(node.padding, str) else _pair(node.padding, n)
        pad = pad if isinstance(pad, str) or not one else (0,) + tuple(pad)
        stride, dil = _pair(node.stride, n), _pair(node.dilation, n)
        stride, dil = ((1,) + stride, (1,) + dil) if one else (stride, dil)
        y = _conv(xx, ww, stride, pad, dil, int(node.groups))
        if node.bias is not None and not integer:
            y = y + np.asarray(node.bias, np.float64).reshape(1, -1, 1, 1)
        y = y[:, :, 0, :] if one else y
        return y, (float(np.asarray(node.metadata["spikefit.scale"]).reshape(-1)[0]) if integer else 1.0)
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        k = _pair(node.kernel_size)
        y = _sum_pool(x, k, _pair(node.stride), _pair(node.padding))
        if isinstance(node, nir.AvgPool2d):
            return (y, 1.0 / (k[0] * k[1])) if integer else (y / (k[0] * k[1]), 1.0)
        return y, 1.0
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        shape = x.shape[1:]
        end = end % len(shape) if end < 0 else end
        start = start % len(shape) if start < 0 else start
        new = shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]
        return x.reshape((x.shape[0],) + new), 1.0
    if isinstance(node, nir.Scale):
        g = np.asarray(node.scale, np.float64)
        if integer:
            return x, float(g.reshape(-1)[0])
        return x * g, 1.0
    raise TypeError(type(node).__name__)


def _integer_reason(nodes: list) -> str | None:
    weighted = [n for n in nodes if isinstance(n, (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d))]
    if len(weighted) != 1:
        return f"{len(weighted)} weighted layers between two neuron layers (one is programmable)"
    node = weighted[0]
    meta = node.metadata or {}
    if integer_weights(node) is None:
        return f"{type(node).__name__} has no frozen integer codebook (sf.freeze before export)"
    if np.asarray(meta["spikefit.scale"]).size != 1:
        return f"{type(node).__name__} has per-channel scales (one threshold per Lava LIF needs one scale)"
    for n in nodes:
        if isinstance(n, nir.Scale) and not np.all(np.asarray(n.scale) == np.asarray(n.scale).reshape(-1)[0]):
            return "a Scale with different gains per neuron"
    return None


def affine_block(nodes: list, in_shape: tuple[int, ...]) -> AffineBlock:
    """The affine map of ``nodes`` (applied in order) on inputs of shape ``in_shape``."""
    n_in = int(np.prod(in_shape))
    basis = np.concatenate([np.zeros((1, n_in)), np.eye(n_in)]).reshape((n_in + 1,) + tuple(in_shape))
    y = basis
    for node in nodes:
        y, _ = _apply(node, y, integer=False)
    out_shape = tuple(y.shape[1:])
    flat = y.reshape(n_in + 1, -1)
    bias, weight = flat[0], (flat[1:] - flat[0]).T
    why = _integer_reason(nodes)
    codes = factor = None
    if why is None:
        z, factor = np.eye(n_in).reshape((n_in,) + tuple(in_shape)), 1.0
        for node in nodes:
            z, f = _apply(node, z, integer=True)
            factor *= f
        ints = z.reshape(n_in, -1).T
        codes = np.rint(ints).astype(np.int64)
        if not np.array_equal(codes, ints):
            codes, factor, why = None, None, "the composed integer weights are not integers"
    return AffineBlock(weight, bias, tuple(in_shape), out_shape, codes, factor, why)
