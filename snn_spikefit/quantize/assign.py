"""Exact, fast ``searchsorted`` for the nearest-codeword search: a lookup table, then a check.

``bucket(x, bounds)`` returns, for every ``x[g, i]``, the number of ``bounds[g, :]`` strictly
below it, which is ``torch.searchsorted(bounds, x)`` exactly (ties go left). With ``m``
sorted codewords and their ``m - 1`` midpoints as bounds, that is the index of the nearest
codeword. ``torch.searchsorted`` bisects (``log m`` dependent loads per value) and is the
largest cost of a training step on dense layers; this does a fixed number of memory-bound
passes instead.

Method. Each row's bound range ``[lo, hi]`` is cut into ``L`` cells by the float function
``cell(v) = int(clamp(v * s - lo * s, 0, L - 1))``. Every step (multiply, subtract, clamp,
truncate) is monotone non-decreasing in ``v`` under IEEE rounding, and the same operations on
the same dtype give the same result for the same input, so ``cell`` is monotone. Hence a bound
in a lower cell than ``x`` is below ``x``, and a bound in a higher cell is not: the count is
``below[cell(x)]`` (bounds in lower cells, a table of ``L`` entries) plus the bounds of
``x``'s own cell that are below ``x``, found by comparing ``x`` with them one at a time (at
most ``crowd`` comparisons, the most bounds any cell holds). The result is therefore exactly
searchsorted's for every finite or infinite ``x``; when a codebook is so uneven that some cell holds more than ``MAX_CROWD``
bounds, ``torch.searchsorted`` itself is used.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bucket"]

#: Cells per bound in each row's lookup table, and a cap on the table (entries over all rows).
CELLS_PER_BOUND = 8
MAX_TABLE = 1 << 20
MIN_CELLS = 64
#: Below this many values, building the tables costs more than bisecting.
MIN_SIZE = 1 << 14
#: More bounds than this in one cell: fall back to ``torch.searchsorted``.
MAX_CROWD = 3


def _cells(v: Tensor, scale: Tensor, offset: Tensor, top: int) -> Tensor:
    """``int(clamp(v * scale - offset, 0, top))``, elementwise per row (monotone in ``v``)."""
    c = torch.mul(v, scale)
    return c.sub_(offset).clamp_(0, top).to(torch.int32)


def _searchsorted(x: Tensor, bounds: Tensor, order: Tensor | None) -> Tensor:
    pos = torch.searchsorted(bounds.contiguous(), x.contiguous())
    return pos if order is None else torch.gather(order, 1, pos)


@torch.no_grad()
def bucket(x: Tensor, bounds: Tensor, order: Tensor | None = None) -> Tensor:
    """``torch.searchsorted(bounds, x)`` for ``x`` ``[G, n]`` and sorted ``bounds`` ``[G, b]``.

    With ``order`` (``[G, b + 1]``, int64) the result is mapped through it:
    ``gather(order, 1, searchsorted(bounds, x))``, at no extra cost. Returns int64.
    """
    g, b = bounds.shape
    if (b == 0 or not (x.is_floating_point() and x.dtype == bounds.dtype) or x.shape[1] < 4 * b
            or x.numel() < MIN_SIZE):
        return _searchsorted(x, bounds, order)
    cells = max(2, min(max(MIN_CELLS, CELLS_PER_BOUND * b), MAX_TABLE // g))
    lo, hi = bounds[:, :1], bounds[:, -1:]
    span = hi - lo
    scale = (cells - 1) / span if b > 1 else torch.zeros_like(span)
    if b > 1 and not bool(((span > 0) & torch.isfinite(scale)).all()):
        return _searchsorted(x, bounds, order)
    offset = torch.mul(lo, scale)
    bound_cells = _cells(bounds, scale, offset, cells - 1).long()  # [G, b], sorted per row
    per_cell = torch.zeros(g, cells, dtype=torch.int64, device=x.device)
    per_cell.scatter_add_(1, bound_cells, torch.ones_like(bound_cells))
    crowd = int(per_cell.max())
    if crowd > MAX_CROWD:
        return _searchsorted(x, bounds, order)
    below = torch.cumsum(per_cell, dim=1) - per_cell  # [G, cells]: bounds in lower cells
    tables = _tables(bounds, bound_cells, below, crowd, order)
    c = _cells(x, scale, offset, cells - 1)  # int32
    if g > 1:
        c.add_(torch.arange(g, device=x.device, dtype=torch.int32)[:, None] * cells)
    c = c.reshape(-1)
    xf = x.reshape(-1)
    key = torch.mul(c, crowd + 1)
    try:
        for cell_bound in tables[1:]:  # the j-th bound of x's cell (+inf where the cell has fewer)
            key += torch.gt(xf, cell_bound.index_select(0, c))
    except IndexError:  # a NaN became a wild cell: let searchsorted decide
        return _searchsorted(x, bounds, order)
    return tables[0].index_select(0, key).reshape(x.shape)


def _tables(bounds: Tensor, bound_cells: Tensor, below: Tensor, crowd: int, order: Tensor | None) -> list[Tensor]:
    """``[result, bound_0, ..., bound_{crowd-1}]`` flat lookup tables for :func:`bucket`.

    ``result[(r * cells + c) * (crowd + 1) + t]`` is the answer for a value of row ``r`` in
    cell ``c`` above exactly ``t`` of the cell's bounds; ``bound_j[r * cells + c]`` is the
    ``j``-th bound in that cell, ``+inf`` where there is none.
    """
    g, b = bounds.shape
    cells = below.shape[1]
    t = torch.arange(crowd + 1, device=bounds.device)
    pos = (below[:, :, None] + t).clamp_(max=b)  # [G, cells, crowd + 1]
    result = pos if order is None else torch.gather(order, 1, pos.reshape(g, -1)).reshape(pos.shape)
    rank = torch.arange(b, device=bounds.device) - torch.gather(below, 1, bound_cells)  # rank in its cell
    flat_cell = (bound_cells + torch.arange(g, device=bounds.device)[:, None] * cells).flatten()
    out = [result.flatten()]
    for j in range(crowd):
        table = torch.full((g * cells,), float("inf"), dtype=bounds.dtype, device=bounds.device)
        hit = (rank == j).flatten()
        table[flat_cell[hit]] = bounds.flatten()[hit]
        out.append(table)
    return out
