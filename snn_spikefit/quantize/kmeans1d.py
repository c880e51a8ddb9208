r"""Exact (globally optimal) one-dimensional k-means.

Given real values :math:`x_1, \dots, x_N` and a number of clusters :math:`k`,
:func:`kmeans_1d` returns centers :math:`c_1 < \dots < c_k` minimising the
within-cluster sum of squares

.. math::

    \mathrm{SSE}(c) = \sum_{n=1}^{N} \min_{1 \le m \le k} (x_n - c_m)^2 .

Unlike Lloyd's algorithm this is not a local search: the result is the global
optimum (up to floating-point rounding), found the way Ckmeans.1d.dp (Wang &
Song, 2011) does it. Inputs with many distinct values are solved approximately
unless ``exact=True`` (see "Large inputs").

Method
------
In one dimension every optimal cluster is a contiguous run of the sorted
values ``x_(1) <= ... <= x_(N)``, so the problem is a partition of the sorted
sequence into ``k`` contiguous, non-empty segments.  Equal values are merged
first into distinct values ``v_1 < ... < v_U`` with multiplicities
``w_1, ..., w_U`` (this never changes the optimum and makes heavy ties cheap).
With prefix sums ``S0(i) = sum_{t<=i} w_t``, ``S1(i) = sum_{t<=i} w_t v_t`` and
``S2(i) = sum_{t<=i} w_t v_t^2`` (float64, after subtracting the mean to limit
cancellation), the cost of the segment ``v_{j+1} .. v_i`` is

.. math::

    c(j, i) = S2(i) - S2(j) - \frac{(S1(i) - S1(j))^2}{S0(i) - S0(j)}

and the optimal cost of splitting the first ``i`` values into ``m`` segments
obeys

.. math::

    D_1(i) = c(0, i), \qquad
    D_m(i) = \min_{m - 1 \le j < i} \; D_{m-1}(j) + c(j, i) .

Because ``c`` satisfies the quadrangle (Monge) inequality, the smallest
optimal split ``opt_m(i)`` is non-decreasing in ``i``.  Each layer ``m`` is
therefore solved by divide and conquer, organised as a static binary tree:
first the last ``i``, then, for ``h = 2^s`` with ``s`` decreasing, every ``i``
whose offset from ``m - 1`` is an odd multiple of ``h``, searched only over
``opt(i - h) <= j <= min(opt(i + h), i - 1)`` (both neighbours are already
solved).  All points of one level are evaluated together: their candidate
ranges tile the ``j`` axis, so they are concatenated into one flat array
(``O(U)`` per level) and reduced per range with ``np.minimum.reduceat``; the
few ranges wider than 4096 are scanned as slices.  A layer thus costs
``O(U log U)`` arithmetic in ``O(log U)`` Python steps, the whole solve
``O(k U log U)`` time and ``O(k U)`` memory (4 bytes per value and layer
for the split points).  If those split points would exceed 1 GiB, only every
``~sqrt(k)``-th layer's costs are kept and the other layers are recomputed
while backtracking (about twice the time, far less memory).  Centers are
finally the means of the optimal segments, computed from the original values.

Rough cost of the exact DP on one core: ``N = 4,000, k = 4`` takes about 2 ms;
``N = 100,000`` distinct values about 0.02 s of CPU per cluster (~5 s for ``k = 256``).

Large inputs
------------
With more than ``exact_limit(k) = max(1024, 16 k)`` distinct values (and
``exact=False``, the default) the sorted values are cut into that many bins,
half at equal counts and half at equal widths (so sparse tails get bins of their
own). The DP above then solves the partition into ``k`` runs of whole bins,
exactly for that restricted problem (segment costs come from prefix sums of all
values, not of bin means), and Lloyd's algorithm on all values moves the
boundaries until nothing changes; each of its iterations costs ``O(k log N)`` on
the prefix sums. No step increases the sum of squares. The result is not
guaranteed optimal: on normal, Laplace, mixture and rounded data (``N = 20,000``,
``k = 8``) it is within 0.1 % of the exact optimum and not above scikit-learn's
``KMeans(n_init=1)`` inertia (asserted in ``tests/test_kmeans1d.py``); time and
inertia against scikit-learn at ``N = 10^6``: ``benchmarks/speed.py``,
``benchmarks/results/speed.md``. Pass ``exact=True`` for the exact DP at any size.

Fewer distinct values than ``k``
--------------------------------
A codebook needs ``k`` *distinct* centers, so duplicates are never returned.
If the input has ``U <= k`` distinct values, every distinct value is returned
as a center (cost 0) and ``k - U`` extra centers are added deterministically:

* ``U >= 2``: extra centers are spread evenly inside the gaps between
  neighbouring distinct values, always splitting the gap whose pieces are
  currently longest (leftmost gap first on ties);
* ``U == 1`` (all values equal to ``v``): the centers are ``v + s * t`` for
  ``t = -((k - 1) // 2), ..., k // 2`` with
  ``s = max(1e-3, 4 * eps) * max(|v|, 1)``, where ``eps`` is the machine
  epsilon of the output dtype (so ``s = 1e-3 * max(|v|, 1)`` for float32 and
  float64).

If rounding to the output dtype would still make two centers equal (values a
few ulps apart in float16, say), the missing centers are taken as the next
representable numbers above the largest (or below the smallest) value.

>>> import torch
>>> kmeans_1d(torch.tensor([0.0, 0.1, 5.0, 5.2]), 2)
tensor([0.0500, 5.1000])
>>> kmeans_1d(torch.tensor([1.0, 1.0, 3.0]), 3)       # 2 distinct values, k = 3
tensor([1., 2., 3.])
>>> kmeans_1d_batched(torch.tensor([[0.0, 1.0, 9.0, 10.0], [4.0, 4.0, 6.0, 6.0]]), 2)
tensor([[0.5000, 9.5000],
        [4.0000, 6.0000]])
"""

from __future__ import annotations

import heapq
import math
import operator

import numpy as np
import torch
from torch import Tensor

from ..errors import SpikeFitTypeError, SpikeFitValueError

__all__ = ["kmeans_1d", "kmeans_1d_batched", "exact_limit"]

# Split points of all layers are kept when they fit in this many bytes;
# otherwise costs are checkpointed every ~sqrt(k) layers and recomputed.
_OPT_MEMORY_BUDGET = 2**30
# Candidate ranges wider than this are scanned one by one as slices; the
# others are evaluated together as one flat list, _CHUNK candidates at a time.
_WIDE = 4096
_CHUNK = 1 << 15  # candidates per numpy call: keeps temporaries in cache
# Large inputs: more than max(_BINS_MIN, _BINS_PER_CENTER * k) distinct values are
# binned into about that many bins, half equal-count, half equal-width (see "Large inputs").
_BINS_MIN = 1024
_BINS_PER_CENTER = 16
_LLOYD_MAX_ITER = 10_000


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------


def kmeans_1d(values, k: int, *, exact: bool = False) -> Tensor:
    r"""1-D k-means of ``values``: exact (globally optimal) unless the input is large.

    Args:
        values: torch tensor (any shape, flattened), numpy array or sequence of
            finite real numbers.
        k: number of centers, ``k >= 1``.
        exact: always solve the exact DP. By default an input with more than
            :func:`exact_limit` ``(k)`` distinct values is solved approximately
            (DP over equal-count bins, then Lloyd's algorithm on all values; see
            "Large inputs" in the module docstring).

    Returns:
        A 1-D tensor of ``k`` strictly increasing centers minimising
        ``sum_n min_m (x_n - c_m)^2`` (see the module docstring for the DP).
        Computed in float64, then cast to the input tensor's dtype and moved
        to its device; numpy float16/32/64 arrays give the matching torch
        dtype, anything else (integers, lists) the default torch dtype.
        With fewer than ``k`` distinct values, all distinct values are
        centers and the rest are placed deterministically between (or, for a
        single value, around) them, as described in the module docstring.

    Raises:
        SpikeFitValueError (a ``ValueError``): ``k < 1``, empty ``values``, or
            NaN/inf among ``values``.
        SpikeFitTypeError (a ``TypeError``): ``k`` not an integer, or
            ``values`` not real-valued.

    >>> kmeans_1d(torch.tensor([0.0, 0.1, 5.0, 5.2]), 2)
    tensor([0.0500, 5.1000])
    """
    k = _check_k(k, "kmeans_1d")
    x, dtype, device = _to_numpy(values, "kmeans_1d", "values")
    if x.size == 0:
        raise SpikeFitValueError(
            f"kmeans_1d: values is empty (shape {tuple(x.shape)}); "
            "at least one value is required"
        )
    x = x.reshape(1, -1)
    _check_finite(x, "kmeans_1d", "values")
    return _solve_rows(x, k, dtype, exact)[0].to(device)


def kmeans_1d_batched(values_2d: Tensor, k: int, *, exact: bool = False) -> Tensor:
    r"""Exact 1-D k-means of every row of ``values_2d``: ``[G, N] -> [G, k]``.

    Row ``g`` of the result equals ``kmeans_1d(values_2d[g], k)``.  The rows
    are not solved one after the other: sorting, merging of equal values and
    every divide-and-conquer level of the DP run for all rows at once, so
    many small rows cost about as much as one row with ``G * N`` values
    (``O(k G N log N)`` arithmetic, ``O(k log N)`` Python steps), e.g. roughly
    0.1 s for ``G = 1024, N = 64, k = 16`` on one core.

    Args:
        values_2d: ``[G, N]`` tensor (or numpy array) of finite real numbers,
            ``N >= 1``.  ``G = 0`` gives an empty ``[0, k]`` result.
        k: number of centers per row, ``k >= 1``.
        exact: as in :func:`kmeans_1d` (rows above the limit are solved approximately).

    Returns:
        ``[G, k]`` tensor, each row strictly increasing, in the dtype/device of
        ``values_2d`` (same rules as :func:`kmeans_1d`).

    Raises:
        SpikeFitValueError: ``k < 1``, ``values_2d`` not 2-D, no columns, or
            NaN/inf entries.
        SpikeFitTypeError: ``k`` not an integer, values not real-valued.

    >>> kmeans_1d_batched(torch.tensor([[0.0, 1.0, 9.0, 10.0]]), 2)
    tensor([[0.5000, 9.5000]])
    """
    k = _check_k(k, "kmeans_1d_batched")
    x, dtype, device = _to_numpy(values_2d, "kmeans_1d_batched", "values_2d")
    if x.ndim != 2:
        raise SpikeFitValueError(
            f"kmeans_1d_batched: values_2d must be 2-D [G, N]; got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        return torch.empty((0, k), dtype=dtype, device=device)
    if x.shape[1] == 0:
        raise SpikeFitValueError(
            f"kmeans_1d_batched: values_2d has no columns (shape {tuple(x.shape)}); "
            "every row needs at least one value"
        )
    _check_finite(x, "kmeans_1d_batched", "values_2d")
    return _solve_rows(x, k, dtype, exact).to(device)


# ----------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------

_NP_TO_TORCH = {
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}


def _check_k(k, fn: str) -> int:
    if isinstance(k, (bool, np.bool_)):
        raise SpikeFitTypeError(f"{fn}: k must be an integer >= 1; got k={k!r} (bool)")
    try:
        k_int = operator.index(k)
    except TypeError:
        raise SpikeFitTypeError(
            f"{fn}: k must be an integer >= 1; got k={k!r} ({type(k).__name__})"
        ) from None
    if k_int < 1:
        raise SpikeFitValueError(f"{fn}: k must be an integer >= 1; got k={k_int}")
    return int(k_int)


def _to_numpy(values, fn: str, name: str):
    """(float64 numpy copy/view, output torch dtype, output device)."""
    if isinstance(values, Tensor):
        if values.is_complex():
            raise SpikeFitTypeError(
                f"{fn}: {name} must be real-valued; got a tensor of dtype {values.dtype}"
            )
        dtype = values.dtype if values.is_floating_point() else torch.get_default_dtype()
        x = values.detach().to(device="cpu", dtype=torch.float64).numpy()
        return x, dtype, values.device
    try:
        arr = np.asarray(values)
    except Exception as exc:  # ragged lists and the like
        raise SpikeFitTypeError(
            f"{fn}: {name} must be a tensor, numpy array or sequence of real numbers; "
            f"got {type(values).__name__} ({exc})"
        ) from None
    if arr.dtype.kind not in "fiub":
        raise SpikeFitTypeError(
            f"{fn}: {name} must hold real numbers; got numpy dtype {arr.dtype}"
        )
    if arr.dtype.kind == "f":
        dtype = _NP_TO_TORCH.get(arr.dtype, torch.float64)
    else:
        dtype = torch.get_default_dtype()
    return arr.astype(np.float64), dtype, torch.device("cpu")


def _check_finite(x: np.ndarray, fn: str, name: str) -> None:
    finite = np.isfinite(x)
    if not finite.all():
        bad = x.size - int(np.count_nonzero(finite))
        raise SpikeFitValueError(
            f"{fn}: {name} contains {bad} NaN/inf entries (of {x.size}); "
            "all values must be finite"
        )


# ----------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------


def exact_limit(k: int) -> int:
    """Distinct values above which :func:`kmeans_1d` bins the input (unless ``exact=True``)."""
    return max(_BINS_MIN, _BINS_PER_CENTER * k)


def _solve_rows(x: np.ndarray, k: int, dtype: torch.dtype, exact: bool = True) -> Tensor:
    """k-means of every row of the finite float64 matrix ``x`` ``[G, N]`` (exact, or binned when large)."""
    G, N = x.shape
    xs = np.sort(x, axis=1)

    # Scale each row by a power of two (exact) so that squares cannot overflow.
    amax = np.maximum(np.abs(xs[:, 0]), np.abs(xs[:, -1]))
    scale = np.frexp(amax)[1]  # exponent e with amax < 2**e
    y = np.ldexp(xs, -scale[:, None])  # |y| < 1

    # Distinct values of every row (on the original values) with multiplicities.
    first = np.ones((G, N), dtype=bool)
    first[:, 1:] = xs[:, 1:] != xs[:, :-1]
    pos = np.flatnonzero(first)  # flat positions of distinct values, row-major
    counts = np.diff(np.append(pos, G * N)).astype(np.float64)
    row_of = pos // N
    n_distinct = np.bincount(row_of, minlength=G)
    row_start = np.concatenate(([0], np.cumsum(n_distinct)[:-1]))
    yu = y.ravel()[pos]
    xu = xs.ravel()[pos]

    centers = np.empty((G, k), dtype=np.float64)
    large = np.zeros(G, dtype=bool) if exact else n_distinct > exact_limit(k)
    for g in np.flatnonzero(large):
        centers[g] = np.ldexp(_binned_row(y[g], k), scale[g])
    dp_rows = np.flatnonzero((n_distinct > k) & ~large)
    if dp_rows.size:
        centers[dp_rows] = _solve_distinct_rows(
            dp_rows, k, n_distinct, row_start, yu, counts, scale
        )
    out = torch.from_numpy(centers).to(dtype)
    for g in np.flatnonzero(n_distinct <= k):
        a, u = row_start[g], n_distinct[g]
        out[g] = _pad_centers(xu[a : a + u], k, dtype)
    return out


def _solve_distinct_rows(rows, k, n_distinct, row_start, yu, counts, scale):
    """Centers [len(rows), k] of the rows with more than k distinct values."""
    Gd = rows.size
    u = n_distinct[rows].astype(np.int64)
    width = int(u.max()) + 1
    # padded layout: row r occupies flat positions r*width + [0, u_r]
    sel = _ragged_indices(row_start[rows], u)
    r_of = np.repeat(np.arange(Gd), u)
    col = np.arange(sel.size) - np.repeat(np.cumsum(u) - u, u)
    Y = np.zeros((Gd, width))  # last column stays 0: same flat layout as P*
    Wt = np.zeros((Gd, width))
    Y[r_of, col] = yu[sel]
    Wt[r_of, col] = counts[sel]

    # centre (weighted mean) and normalise the spread by a power of two
    tot = Wt.sum(1)
    mean = (Y * Wt).sum(1) / tot
    Z = np.where(Wt > 0, Y - mean[:, None], 0.0)
    zmax = np.abs(Z).max(1)
    zscale = np.ldexp(1.0, np.frexp(zmax)[1])
    Z /= zscale[:, None]

    P0 = np.zeros((Gd, width))
    P1 = np.zeros((Gd, width))
    P2 = np.zeros((Gd, width))
    WZ = Wt[:, :-1] * Z[:, :-1]
    np.cumsum(Wt[:, :-1], axis=1, out=P0[:, 1:])
    np.cumsum(WZ, axis=1, out=P1[:, 1:])
    np.cumsum(WZ * Z[:, :-1], axis=1, out=P2[:, 1:])
    base = np.arange(Gd, dtype=np.int64) * width
    if k == 1:
        splits = np.zeros((Gd, 1), dtype=np.int64)
    else:
        splits = _dp_splits(P0.ravel(), P1.ravel(), P2.ravel(), base, u, k) - base[:, None]

    # centers = means of the optimal segments, from the (scaled) original
    # values; padding has weight 0, so each row's last segment may run on.
    seg_starts = (splits + base[:, None]).ravel()
    Yf, Wf = Y.ravel(), Wt.ravel()
    c = np.add.reduceat(Wf * Yf, seg_starts) / np.add.reduceat(Wf, seg_starts)
    ends = (np.concatenate([splits[:, 1:], u[:, None]], axis=1) + base[:, None]).ravel()
    c = np.clip(c, Yf[seg_starts], Yf[ends - 1]).reshape(Gd, k)
    return np.ldexp(c, scale[rows][:, None])


def _binned_row(y: np.ndarray, k: int) -> np.ndarray:
    """Approximate k-means of one sorted row ``y``: exact DP over bins, then Lloyd.

    The bins are contiguous runs of the sorted values (cut at equal counts and at equal
    widths); the DP finds the best partition
    into ``k`` runs of whole bins (segment costs from prefix sums of the values, so
    exact for that restricted problem), and Lloyd's iterations on all values, each
    ``O(k log N)`` on the prefix sums, move the boundaries until nothing changes. No
    step increases the sum of squares.
    """
    n = y.size
    bins = exact_limit(k)
    mean = y.mean()
    z = y - mean
    z *= np.ldexp(1.0, -np.frexp(np.abs(z).max())[1])  # |z| < 1, exact power-of-two scaling
    f1 = np.concatenate(([0.0], np.cumsum(z)))
    f2 = np.concatenate(([0.0], np.cumsum(z * z)))
    # half the bins hold equal counts, half span equal widths (so sparse tails are resolved too)
    by_count = np.linspace(0, n, bins // 2 + 1).round().astype(np.int64)
    by_width = np.searchsorted(z, np.linspace(z[0], z[-1], bins // 2 + 1)[1:-1])
    edges = np.unique(np.concatenate((by_count, by_width)))
    splits = _dp_splits(edges.astype(np.float64), f1[edges], f2[edges], np.zeros(1, dtype=np.int64),
                        np.array([edges.size - 1]), k)
    starts = edges[splits[0]]
    for _ in range(_LLOYD_MAX_ITER):
        ends = np.append(starts[1:], n)
        c = (f1[ends] - f1[starts]) / (ends - starts)
        new = np.concatenate(([0], np.searchsorted(z, (c[1:] + c[:-1]) * 0.5, side="right")))
        if np.array_equal(new, starts) or (np.diff(np.append(new, n)) == 0).any():
            break  # converged, or a cluster would empty: keep the last partition
        starts = new
    ends = np.append(starts[1:], n)
    centers = np.add.reduceat(y, starts) / (ends - starts)
    return np.clip(centers, y[starts], y[ends - 1])


def _ragged_indices(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for every (s, n)."""
    offs = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(int(lengths.sum())) + offs


# ----------------------------------------------------------------------------
# dynamic programme
# ----------------------------------------------------------------------------


@np.errstate(divide="ignore", invalid="ignore", over="ignore")
def _solve_points(A, P0, P1, ig, jlo, jhi):
    """For every i in ``ig`` minimise ``A[j] - (P1[i]-P1[j])^2/(P0[i]-P0[j])``
    over ``jlo <= j <= jhi`` (global flat positions, ``jlo <= jhi < i``).

    Returns (min, smallest argmin).  Ranges wider than ``_WIDE`` (few: at
    most ``U / _WIDE`` per level) are scanned as slices; all the others are
    concatenated into one flat candidate list and reduced per range with
    ``np.minimum.reduceat``, in chunks of about ``_CHUNK`` candidates so that
    the temporaries stay in cache.
    """
    n = ig.size
    L = jhi - jlo + 1
    best = np.empty(n)
    arg = np.empty(n, dtype=np.int64)
    wide = L > _WIDE
    if not wide.any():
        _solve_flat(A, P0, P1, ig, jlo, L, best, arg)
        return best, arg
    rows = np.flatnonzero(wide)
    if rows.size < n:
        rest = np.flatnonzero(~wide)
        b, a = np.empty(rest.size), np.empty(rest.size, dtype=np.int64)
        _solve_flat(A, P0, P1, ig[rest], jlo[rest], L[rest], b, a)
        best[rest] = b
        arg[rest] = a
    for r in rows.tolist():
        p1, p0 = P1[ig[r]], P0[ig[r]]
        j0, j1 = int(jlo[r]), int(jhi[r]) + 1
        bv, ba = np.inf, j0
        for c0 in range(j0, j1, _CHUNK):
            c1 = min(c0 + _CHUNK, j1)
            d = p1 - P1[c0:c1]
            d *= d
            d /= p0 - P0[c0:c1]
            val = A[c0:c1] - d
            t = int(val.argmin())
            if val[t] < bv:
                bv, ba = val[t], c0 + t
        best[r] = bv
        arg[r] = ba
    return best, arg


def _solve_flat(A, P0, P1, ig, jlo, L, best, arg):
    """Flat (ragged) evaluation for :func:`_solve_points`; fills best/arg."""
    n = ig.size
    ends = np.cumsum(L)
    starts = ends - L
    total = int(ends[-1])
    if total <= _CHUNK:
        cuts = [0, n]
    else:  # consecutive runs of points with about _CHUNK candidates each
        cuts = np.searchsorted(ends, np.arange(_CHUNK, total, _CHUNK))
        cuts = np.unique(np.concatenate(([0], cuts, [n]))).tolist()
    p1i = P1[ig]
    p0i = P0[ig]
    for a, b in zip(cuts[:-1], cuts[1:]):
        Lc = L[a:b]
        off = int(starts[a])
        st = starts[a:b] - off
        j = np.repeat(jlo[a:b] - st, Lc)
        j += np.arange(int(ends[b - 1]) - off)
        d = np.repeat(p1i[a:b], Lc)
        d -= P1.take(j)
        d *= d
        w = np.repeat(p0i[a:b], Lc)
        w -= P0.take(j)
        d /= w
        val = A.take(j)
        val -= d
        mins = np.minimum.reduceat(val, st)
        hit = np.flatnonzero(val == np.repeat(mins, Lc))
        if hit.size != b - a:  # ties: keep the first hit of every range
            seg = np.repeat(np.arange(b - a), Lc)[hit]
            first = np.empty(hit.size, dtype=bool)
            first[0] = True
            np.not_equal(seg[1:], seg[:-1], out=first[1:])
            hit = hit[first]
        best[a:b] = mins
        arg[a:b] = j[hit]


def _ragged_arange(starts: np.ndarray, counts: np.ndarray, step: int) -> np.ndarray:
    """Concatenation of ``starts[r] + step * arange(counts[r])`` over rows r."""
    if starts.size == 1:
        return starts[0] + step * np.arange(int(counts[0]), dtype=np.int64)
    offs = np.repeat(starts - step * (np.cumsum(counts) - counts), counts)
    return step * np.arange(int(counts.sum()), dtype=np.int64) + offs


def _layer(D_prev, P0, P1, P2, base, u, m, k, opt_dtype):
    """D_m and opt_m (global positions) from D_{m-1}, for i in [m, u-(k-m)].

    Divide and conquer on a static binary tree: first i = top (the last
    point), then, for strides h = 2^s from large to small, all points whose
    offset from ``m - 1`` is an odd multiple of h.  Their neighbours at offset
    -h and +h were solved before, and monotonicity of opt bounds the search to
    ``opt(i - h) <= j <= min(opt(i + h), i - 1)``; these ranges of one level
    tile the j axis, so every level costs O(U).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        A = D_prev - P2
        D = np.full(D_prev.shape, np.inf)
        opt = np.empty(D_prev.shape, dtype=opt_dtype)
        first = base + m  # global position of the first i of every row
        top = base + u - (k - m)  # ... and of the last one
        b, a = _solve_points(A, P0, P1, top, first - 1, top - 1)
        D[top] = b + P2[top]
        opt[top] = a
        opt[first - 1] = first - 1  # sentinel: lower bound of j for the first i
        n_in = top - first  # interior points first .. top-1, offsets 1 .. n_in
        for s in range(int(n_in.max()).bit_length() - 1, -1, -1):
            h = 1 << s
            cnt = (n_in + h) // (2 * h)  # odd multiples of h in [1, n_in]
            i = _ragged_arange(first - 1 + h, cnt, 2 * h)  # never empty
            top_i = np.repeat(top, cnt) if top.size > 1 else top[0]
            jlo = opt[i - h].astype(np.int64)
            jhi = np.minimum(opt[np.minimum(i + h, top_i)], i - 1)
            b, a = _solve_points(A, P0, P1, i, jlo, jhi)
            D[i] = b + P2[i]
            opt[i] = a
    return D, opt


def _dp_splits(P0, P1, P2, base, u, k):
    """Global start position of each of the k optimal segments of every row."""
    opt_dtype = np.int32 if P0.size < 2**31 else np.int64
    with np.errstate(divide="ignore", invalid="ignore"):
        D = P2 - P1 * P1 / P0
    D[base] = np.inf  # zero values in zero segments: not a valid state
    G = base.size
    splits = np.empty((G, k), dtype=np.int64)
    splits[:, 0] = base

    n_layers = k - 2  # layers 2..k-1 need their split points
    row_bytes = P0.size * np.dtype(opt_dtype).itemsize
    if n_layers * row_bytes <= _OPT_MEMORY_BUDGET:
        block = max(n_layers, 1)
    else:
        block = max(1, math.isqrt(n_layers - 1) + 1)
    starts = list(range(2, k, block))
    saved: dict[int, np.ndarray] = {}
    opts: dict[int, np.ndarray] = {}
    for m in range(2, k):
        if m in starts and m != starts[-1]:
            saved[m] = D
        D, opt = _layer(D, P0, P1, P2, base, u, m, k, opt_dtype)
        if starts and m >= starts[-1]:
            opts[m] = opt

    # last layer: only i = u matters
    i_cur = base + u
    _, j = _solve_points(D - P2, P0, P1, i_cur, base + (k - 2), i_cur - 1)
    splits[:, k - 1] = j
    i_cur = j
    for s in reversed(starts):
        stop = min(s + block, k)
        if s != starts[-1]:
            opts = {}
            D = saved.pop(s)
            for m in range(s, stop):
                D, opts[m] = _layer(D, P0, P1, P2, base, u, m, k, opt_dtype)
        for m in range(stop - 1, s - 1, -1):
            i_cur = opts[m][i_cur].astype(np.int64)
            splits[:, m - 1] = i_cur
        opts = {}
    return splits


# ----------------------------------------------------------------------------
# fewer distinct values than k
# ----------------------------------------------------------------------------


def _pad_centers(vals: np.ndarray, k: int, dtype: torch.dtype) -> Tensor:
    """k distinct sorted centers containing every value of ``vals`` (sorted,
    distinct, at most k of them); see the module docstring for the rule."""
    u = vals.size
    eps = torch.finfo(dtype).eps
    if u == k:
        cand = vals
    elif u == 1:
        v = float(vals[0])
        step = max(1e-3, 4 * eps) * max(abs(v), 1.0)
        cand = v + step * (np.arange(k) - (k - 1) // 2)
    else:
        gaps = np.diff(vals)
        extra = np.zeros(u - 1, dtype=np.int64)
        heap = [(-float(g), i) for i, g in enumerate(gaps)]
        heapq.heapify(heap)
        for _ in range(k - u):
            _, i = heapq.heappop(heap)
            extra[i] += 1
            heapq.heappush(heap, (-float(gaps[i]) / (extra[i] + 1), i))
        parts = [vals[:1]]
        for i in range(u - 1):
            if extra[i]:
                frac = np.arange(1, extra[i] + 1) / (extra[i] + 1)
                parts.append(vals[i] + gaps[i] * frac)
            parts.append(vals[i + 1 : i + 2])
        cand = np.concatenate(parts)
    out = torch.from_numpy(np.ascontiguousarray(cand, dtype=np.float64)).to(dtype)
    if bool(torch.isfinite(out).all()) and bool((out[1:] > out[:-1]).all()):
        return out
    # Rounding merged some centers: keep the distinct values, add neighbours.
    have = torch.unique(torch.from_numpy(np.asarray(vals, dtype=np.float64)).to(dtype))
    pts = have.tolist()
    lo_t, hi_t = have[:1].clone(), have[-1:].clone()
    inf = torch.tensor([math.inf], dtype=dtype)
    while len(pts) < k:
        up = torch.nextafter(hi_t, inf)
        if bool(torch.isfinite(up).all()):
            hi_t = up
            pts.append(float(up))
        else:
            lo_t = torch.nextafter(lo_t, -inf)
            pts.insert(0, float(lo_t))
    return torch.tensor(pts, dtype=torch.float64).to(dtype)
