"""Optimal-Brain-Surgeon pruning and GPTQ-style quantization of one layer, given its Hessian.

Every output row ``w`` of a layer (``[rows, n]``, conv kernels flattened) is changed so
that ``(w - w0)^T H (w - w0)`` (the membrane error, :mod:`snn_spikefit.ptq.hessian`)
stays small. Rows share ``H``; a BatchNorm after the layer multiplies row ``r``'s
error by ``gain_r^2``, which changes only how rows are compared, not the updates.

Pruning (OBS). Removing the weights ``J`` of a row at least cost
``w_J^T ([H^-1]_JJ)^-1 w_J`` moves the others by ``-H^-1[:, J] ([H^-1]_JJ)^-1 w_J``;
for one weight ``q`` the cost is ``w_q^2 / [H^-1]_qq``. :func:`obs_order` removes
weights greedily, ``block`` at a time per row (row batching), and records each one's
cost; the layer's ``k`` cheapest (times ``gain^2``) say how many each row loses;
:func:`obs_prune` then removes the first ones of each row's order in one closed-form
update (the greedy steps compose to exactly that).

Quantization (GPTQ). Columns are rounded one at a time (largest ``diag H`` first),
the rounding error fed to the columns not rounded yet through the Cholesky factor of
``H^-1``. :func:`gptq` takes any per-row set of allowed values (a codebook), keeps
pruned weights at 0, and returns the codes and the weight each column had when it was
rounded: the nearest-codeword assignment of that weight gives the same codes, so it
is the latent weight a trainable codebook starts from.

>>> h = torch.eye(3, dtype=torch.float64)
>>> w = torch.tensor([[0.1, -2.0, 0.5]], dtype=torch.float64)
>>> order, cost = obs_order(w, torch.linalg.inv(h))
>>> order.tolist(), cost[0, order[0, 0]].item()
([[0, 2, 1]], 0.010000000000000002)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["obs_order", "obs_prune", "row_counts", "gptq", "gptq_factor", "inverse_cholesky", "nearest",
           "hessian_error", "row_errors", "MEMORY_BUDGET"]

#: Bytes of per-row inverse-Hessian copies :func:`obs_order` holds at once.
MEMORY_BUDGET = 2**28


def obs_order(w: Tensor, hinv: Tensor, *, block: int | None = None) -> tuple[Tensor, Tensor]:
    """Greedy OBS elimination of every weight of every row: ``(order [R, n], cost [R, n])``.

    ``order[r]`` lists row ``r``'s weights in the order they are removed; ``cost[r, i]``
    is weight ``i``'s cost ``w_i^2 / [H^-1]_ii`` when it was removed (``H^-1`` and ``w``
    updated after every step). ``block`` weights per row per step (default
    ``ceil(n / 256)``: at most 256 steps).
    """
    rows, n = w.shape
    block = block or max(1, math.ceil(n / 256))
    chunk = max(1, min(rows, MEMORY_BUDGET // max(1, n * n * 8)))
    order = torch.empty(rows, n, dtype=torch.long)
    cost = torch.empty(rows, n, dtype=torch.float64)
    hinv = hinv.double()
    for start in range(0, rows, chunk):
        stop = min(rows, start + chunk)
        o, c = _order_chunk(w[start:stop].double().clone(), hinv, block)
        order[start:stop], cost[start:stop] = o, c
    return order, cost


def _order_chunk(w: Tensor, hinv: Tensor, block: int) -> tuple[Tensor, Tensor]:
    c, n = w.shape
    hi = hinv.unsqueeze(0).repeat(c, 1, 1)
    removed = torch.zeros(c, n, dtype=torch.bool)
    order = torch.empty(c, n, dtype=torch.long)
    cost = torch.empty(c, n, dtype=torch.float64)
    rng = torch.arange(c)[:, None]
    done = 0
    while done < n:
        b = min(block, n - done)
        diag = hi.diagonal(dim1=1, dim2=2).clamp_min(1e-300)
        loss = (w * w / diag).masked_fill(removed, math.inf)
        _, j = torch.topk(loss, b, dim=1, largest=False)           # [c, b]
        order[:, done:done + b] = j
        cost[rng, j] = loss[rng, j]
        removed[rng, j] = True
        if done + b < n:
            rows_j = hi.gather(1, j[:, :, None].expand(c, b, n))            # [c, b, n] = H^-1[J, :]
            hjj = rows_j.gather(2, j[:, None, :].expand(c, b, b))           # [c, b, b] = H^-1[J, J]
            u = rows_j.transpose(1, 2)                                       # H^-1[:, J] (H^-1 is symmetric)
            sol = torch.linalg.solve(hjj, torch.cat([w[rng, j].unsqueeze(-1), rows_j], dim=2))
            w -= (u @ sol[:, :, :1]).squeeze(-1)
            hi -= u @ sol[:, :, 1:]
            w[removed] = 0.0
        done += b
    return order, cost


def row_counts(cost: Tensor, k: int, gain2: Tensor | None = None) -> Tensor:
    """How many weights each row loses when the layer loses its ``k`` cheapest (cost times ``gain^2``)."""
    rows, n = cost.shape
    if k <= 0:
        return torch.zeros(rows, dtype=torch.long)
    scaled = cost * (gain2.double()[:, None] if gain2 is not None else 1.0)
    idx = torch.topk(scaled.flatten(), min(k, rows * n), largest=False).indices
    return torch.bincount(idx // n, minlength=rows)


def obs_prune(w: Tensor, hinv: Tensor, order: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Remove the first ``counts[r]`` weights of ``order[r]`` from each row, compensating the rest.

    Returns ``(pruned weight, mask)`` (``mask`` true where a weight was removed).
    Closed form per row: ``w -= H^-1[:, J] ([H^-1]_JJ)^-1 w_J``, then ``w_J = 0``.
    """
    out = w.double().clone()
    hinv = hinv.double()
    mask = torch.zeros_like(out, dtype=torch.bool)
    for r in range(out.shape[0]):
        k = int(counts[r])
        if k == 0:
            continue
        j = order[r, :k]
        if k < out.shape[1]:
            out[r] -= hinv[:, j] @ torch.linalg.solve(hinv[j][:, j], out[r, j])
        out[r, j] = 0.0
        mask[r, j] = True
    return out, mask


def nearest(w: Tensor, values: Tensor) -> Tensor:
    """Index of the nearest codeword of each ``w[g, i]`` in ``values[g]`` (as ``CodebookWeight.assign``)."""
    return _nearest_sorted(w, *_sorted_bounds(values))


def _sorted_bounds(values: Tensor) -> tuple[Tensor, Tensor]:
    """``(order, bounds)``: the sort of each row of ``values`` and the midpoints between its neighbours."""
    order_values, order = torch.sort(values, dim=1)
    return order, ((order_values[:, 1:] + order_values[:, :-1]) * 0.5).contiguous()


def _nearest_sorted(w: Tensor, order: Tensor, bounds: Tensor) -> Tensor:
    return torch.gather(order, 1, torch.searchsorted(bounds, w.contiguous()))


def inverse_cholesky(h: Tensor) -> Tensor:
    """Upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``), in ``h``'s dtype."""
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)


def gptq_factor(h: Tensor) -> tuple[Tensor, Tensor]:
    """``(perm, U)``: :func:`gptq`'s column order (largest ``diag H`` first) and the upper Cholesky
    factor of ``H^-1`` in that order (``H^-1 = U^T U``). It depends on ``h`` alone: compute it once
    for several :func:`gptq` calls on the same Hessian.
    """
    perm = torch.argsort(h.diagonal(), descending=True, stable=True)
    hp = h[perm][:, perm]
    return perm, inverse_cholesky(hp)


def gptq(w: Tensor, h: Tensor, values: Tensor, *, mask: Tensor | None = None, zero: Tensor | None = None,
         block: int = 128, factor: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Round every weight to a codeword with error feedback: ``(codes, quantized, latent)``.

    Args:
        w: ``[R, n]`` weights (float32; what is rounded).
        h: ``[n, n]`` damped Hessian.
        values: ``[R, m]`` (one codebook per row) or ``[1, m]`` (shared), float32.
        mask: removed weights, held at codeword ``zero`` (the index of the value 0).
        zero: ``[R]`` or ``[1]`` index of the codeword equal to 0 (needed with ``mask``).
        factor: :func:`gptq_factor` of ``h`` if already computed (None: computed here).

    Returns ``codes [R, n]``, ``quantized [R, n]`` (float32 values) and ``latent [R, n]``:
    the float32 weight each column had when it was rounded (0 at masked weights), whose
    nearest codewords are ``codes``.
    """
    rows, n = w.shape
    vals = values.expand(rows, -1) if values.shape[0] == 1 else values
    perm, u = factor if factor is not None else gptq_factor(h)
    work = w.double()[:, perm].clone()
    mk = mask[:, perm] if mask is not None else None
    codes = torch.empty(rows, n, dtype=torch.long)
    latent = torch.empty(rows, n, dtype=torch.float32)
    vals64 = vals.double()
    sorted_vals = _sorted_bounds(vals)  # once, not per column
    for i1 in range(0, n, block):
        i2 = min(n, i1 + block)
        err = torch.empty(rows, i2 - i1, dtype=torch.float64)
        for i in range(i1, i2):
            col = work[:, i].float()
            if mk is not None:
                col = torch.where(mk[:, i], torch.zeros_like(col), col)
            code = _nearest_sorted(col[:, None], *sorted_vals)[:, 0]
            if mk is not None:
                code = torch.where(mk[:, i], zero.expand(rows), code)
            codes[:, i], latent[:, i] = code, col
            q = vals64.gather(1, code[:, None])[:, 0]
            e = (work[:, i] - q) / u[i, i]
            work[:, i:i2] -= e[:, None] * u[i, i:i2][None, :]
            err[:, i - i1] = e
        work[:, i2:] -= err @ u[i1:i2, i2:]
    inv = torch.argsort(perm)
    codes, latent = codes[:, inv], latent[:, inv]
    return codes, vals.gather(1, codes), latent


def hessian_error(delta: Tensor, h: Tensor, gain2: Tensor | None = None) -> float:
    """``sum_r gain_r^2 delta_r^T H delta_r`` (the layer's membrane error of a weight change ``delta``)."""
    per_row = row_errors(delta, h)
    if gain2 is not None:
        per_row = per_row * gain2.double()
    return float(per_row.sum())


def row_errors(delta: Tensor, h: Tensor) -> Tensor:
    """``[R]`` float64: ``delta_r^T H delta_r`` of every row (no BatchNorm gain)."""
    d = delta.double()
    return ((d @ h) * d).sum(dim=1)
