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


def _kmeans(w: Tensor, m: int) -> Tensor:
    return kmeans_1d_batched(w, m).to(w.dtype)


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
