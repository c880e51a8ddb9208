"""SparseGPT-style pruning of one layer: OBS masks chosen per column block, lazy updates.

Exact greedy OBS (:func:`snn_spikefit.ptq.obs.obs_order`) keeps one ``H^-1`` per row
and updates it after every removal: ``rows x n^3`` work. SparseGPT (Frantar & Alistarh,
ICML 2023) visits the columns once, left to right, and only lets a weight be
compensated by the columns to its right. With the upper Cholesky factor ``U`` of
``H^-1`` (``H^-1 = U^T U``), ``U_qq^2`` is ``[H_F^-1]_qq`` for ``F`` = the columns
``q..n-1``, so once the columns before ``q`` are fixed:

* the OBS cost of removing ``w_q`` is ``w_q^2 / U_qq^2`` (times ``gain_r^2`` of its row);
* removing it (or any error ``e_q = w_q - w'_q``) is compensated by
  ``w_{q:} -= (e_q / U_qq) U_{q, q:}``, the OBS update restricted to ``F``.

Columns are taken in blocks of ``block``: at the start of a block the mask of its
columns is chosen over the whole block (all rows) from the costs above, the block's
columns are pruned one by one with the update inside the block, and the accumulated
errors reach the later columns in one matrix product (lazy batched update):
``O(n^3 + rows n^2)`` in all. Each block removes as many weights as it holds among the
layer's ``k`` cheapest by their starting costs (columns differ: an input that never spikes
costs nothing), so the layer loses exactly ``k``.

For a fixed mask whose removed weights are, in every row, a prefix of the columns,
the result equals the closed-form OBS update ``w -= H^-1[:, J] ([H^-1]_JJ)^-1 w_J``
(sequential OBS removals compose to it); for any mask its error lies between that
optimum and plain zeroing.

>>> h = torch.eye(3, dtype=torch.float64)
>>> w = torch.tensor([[0.1, -2.0, 0.5]], dtype=torch.float64)
>>> pruned, mask = sparsegpt_prune(w, h, 2)
>>> pruned.tolist(), mask.tolist()
([[0.0, -2.0, 0.0]], [[True, False, True]])
"""

from __future__ import annotations

import torch
from torch import Tensor

from .obs import inverse_cholesky

__all__ = ["sparsegpt_prune", "BLOCK"]

#: Columns per block (SparseGPT's default).
BLOCK = 128


def _costs(w: Tensor, d: Tensor, gain2: Tensor | None) -> Tensor:
    """OBS costs ``gain_r^2 w_rq^2 / U_qq^2`` of the weights ``w`` (``d``: the diagonal of ``U``)."""
    score = w * w / (d * d)[None, :]
    return score * gain2.double()[:, None] if gain2 is not None else score


def _block_mask(w1: Tensor, d1: Tensor, count: int, gain2: Tensor | None) -> Tensor:
    """The ``count`` cheapest weights of a block by ``gain^2 w^2 / U_qq^2`` (ties: lower flat index)."""
    mask = torch.zeros_like(w1, dtype=torch.bool)
    if count <= 0:
        return mask
    idx = torch.sort(_costs(w1, d1, gain2).flatten(), stable=True).indices[:count]
    mask.view(-1)[idx] = True
    return mask


def _block_counts(w: Tensor, d: Tensor, k: int, gain2: Tensor | None, block: int) -> Tensor:
    """Weights each column block loses: where the layer's ``k`` cheapest weights lie by their starting costs.

    Columns differ in importance (an input that never spikes costs nothing to cut), so blocks do
    not all lose the same fraction; inside a block the mask is chosen again on the updated weights.
    """
    cols = torch.sort(_costs(w, d, gain2).flatten(), stable=True).indices[:k] % w.shape[1]
    return torch.bincount(cols // block, minlength=(w.shape[1] + block - 1) // block)


def _prune_block(w1: Tensor, u1: Tensor, m1: Tensor) -> Tensor:
    """Zero ``w1[m1]`` column by column, each error compensated inside the block; returns ``e / U_qq``."""
    err = torch.zeros_like(w1)
    for i in range(w1.shape[1]):
        if not bool(m1[:, i].any()):  # nothing removed in this column: its error stays 0
            continue
        col = w1[:, i]
        e = torch.where(m1[:, i], col, torch.zeros_like(col)) / u1[i, i]
        w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
        err[:, i] = e
    return err


def sparsegpt_prune(w: Tensor, h: Tensor, k: int, *, gain2: Tensor | None = None, block: int = BLOCK,
                    mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Remove ``k`` weights of rows ``w`` (``[R, n]``) against the damped Hessian ``h``.

    Args:
        w: ``[R, n]`` weights.
        h: ``[n, n]`` damped (positive definite) Hessian shared by the rows.
        k: weights the layer loses, ``0 <= k <= R * n``.
        gain2: ``[R]`` BatchNorm gains squared (how rows' errors compare), or None.
        block: columns per block (mask selection and lazy update).
        mask: a fixed ``[R, n]`` mask to prune (``k`` is then ignored): only the updates.

    Returns ``(pruned [R, n] float64, mask [R, n] bool)``, pruned weights exactly 0.
    """
    rows, n = w.shape
    if mask is None and not 0 <= k <= rows * n:
        raise ValueError(f"k={k} weights cannot be removed from a layer of {rows * n}")
    u = inverse_cholesky(h.double())
    d = u.diagonal()
    work = w.double().clone()
    out_mask = torch.zeros(rows, n, dtype=torch.bool) if mask is None else mask.clone()
    step = max(1, block)
    counts = _block_counts(work, d, k, gain2, step) if mask is None else None
    for b, i1 in enumerate(range(0, n, step)):
        i2 = min(n, i1 + step)
        if mask is None:
            out_mask[:, i1:i2] = _block_mask(work[:, i1:i2], d[i1:i2], int(counts[b]), gain2)
        w1 = work[:, i1:i2].clone()
        err = _prune_block(w1, u[i1:i2, i1:i2], out_mask[:, i1:i2])
        work[:, i1:i2] = w1
        if i2 < n:
            work[:, i2:] -= err @ u[i1:i2, i2:]
    work[out_mask] = 0.0
    return work, out_mask
