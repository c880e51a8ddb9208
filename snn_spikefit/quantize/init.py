"""Codebook initialisation: where the ``m`` codewords of each group start.

>>> import torch
>>> w = torch.tensor([[-1.0, -0.9, 0.0, 0.1, 2.0]])
>>> init_codebook(w, 2, "linear").tolist()
[[-1.0, 2.0]]
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .kmeans1d import kmeans_1d_batched

__all__ = ["init_codebook", "INITS"]


def _linear(w: Tensor, m: int) -> Tensor:
    lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    steps = torch.linspace(0, 1, m, dtype=w.dtype, device=w.device)[None, :]
    return lo + (hi - lo) * steps


def _quantile(w: Tensor, m: int) -> Tensor:
    q = (torch.arange(m, dtype=torch.float64, device=w.device) + 0.5) / m
    return torch.quantile(w.double(), q, dim=1).T.contiguous().to(w.dtype)


#: Above this many value x codeword pairs, "kmeans" refines quantiles with Lloyd's
#: algorithm instead of the exact DP (exact k-means with m=256 on a 1M-weight layer
#: takes about a minute; Lloyd's takes well under a second).
EXACT_KMEANS_BUDGET = 2**25


def _lloyd(w: Tensor, m: int, iterations: int = 30) -> Tensor:
    """Batched 1-D Lloyd's algorithm from quantile centers (sorted centers, O(N log m) a step)."""
    centers = _quantile(w, m).double()
    x = w.double()
    g = x.shape[0]
    offsets = torch.arange(g, device=x.device)[:, None] * m
    for _ in range(iterations):
        centers = centers.sort(dim=1).values
        bounds = (centers[:, 1:] + centers[:, :-1]) * 0.5
        idx = torch.searchsorted(bounds.contiguous(), x.contiguous()) + offsets
        sums = torch.zeros(g * m, dtype=x.dtype, device=x.device).index_add_(0, idx.flatten(), x.flatten())
        counts = torch.bincount(idx.flatten(), minlength=g * m).to(x.dtype)
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centers.flatten()).reshape(g, m)
        if torch.equal(new, centers):
            break
        centers = new
    return centers.sort(dim=1).values.to(w.dtype)


def _kmeans(w: Tensor, m: int) -> Tensor:
    if w.numel() * m > EXACT_KMEANS_BUDGET:
        return _lloyd(w, m)
    return kmeans_1d_batched(w, m, exact=True).to(w.dtype)


#: ``"kmeans"``: exact 1-D k-means (sorting + dynamic programming) per group, or
#: Lloyd's refinement of quantiles beyond :data:`EXACT_KMEANS_BUDGET`.
INITS: dict[str, Callable[[Tensor, int], Tensor]] = {
    "kmeans": _kmeans,
    "linear": _linear,
    "quantile": _quantile,
}


def _spread_duplicates(book: Tensor, w: Tensor) -> Tensor:
    """Make the codewords of every row distinct (constant weights, ties)."""
    book, _ = book.sort(dim=1)
    m = book.shape[1]
    span = (w.amax(dim=1) - w.amin(dim=1)).clamp_min(0)
    eps = torch.maximum(span / (4 * m), w.abs().amax(dim=1).clamp_min(1.0) * 1e-3)[:, None]
    dup = torch.zeros_like(book, dtype=torch.bool)
    dup[:, 1:] = book[:, 1:] <= book[:, :-1]
    if not bool(dup.any()):
        return book
    for j in range(1, m):  # m is small; each column depends on the previous one
        bump = book[:, j] <= book[:, j - 1]
        book[:, j] = torch.where(bump, book[:, j - 1] + eps[:, 0], book[:, j])
    return book


@torch.no_grad()
def init_codebook(weight_groups: Tensor, m: int, method: str = "kmeans") -> Tensor:
    """Initial codebook ``[groups, m]`` (sorted, distinct) for ``[groups, n]`` weights."""
    w = weight_groups.detach().float()
    return _spread_duplicates(INITS[method](w, m).float(), w).to(weight_groups.dtype)
