"""Codebooks fitted in closed form: one-shot CAT and uniform ``b``-bit grids for one layer.

One-shot CAT alternates two steps that both lower the Hessian-weighted error
``E(C, k) = sum_r g_r^2 (w_r - C[k_r])^T H (w_r - C[k_r])``:

1. assignment: :func:`snn_spikefit.ptq.obs.gptq` (nearest codeword, error feedback);
2. refit: with the assignment ``k`` fixed, ``E`` is quadratic in the codebook ``C``;
   with the one-hot matrices ``O_r`` (``[n, m]``) its minimum solves
   ``(sum_r g_r^2 O_r^T H O_r) C = sum_r g_r^2 O_r^T H w_r`` (one ``m x m`` system per
   codebook; unused codewords keep their value through a tiny ridge; after pruning, the
   codeword 0 stays 0).

With ``bits`` the assignment uses the codebook rounded by
:func:`~snn_spikefit.quantize.codebook.quantize_codebook` (what ``CodebookWeight``
uses), so the result is a CAT codebook layer: :func:`fit_layer`'s float codebook and
latent weight rebuild exactly its :class:`~snn_spikefit.quantize.codebook.FrozenCodebook`.
The iteration with the lowest error is kept (codes that stop changing end it early).

A uniform ``b``-bit grid is ``s * (-q .. q)``, ``q = 2^(b-1) - 1`` (``m = 2^b - 1``
values), its scale ``s = r * max|w| / q`` with the clipping ratio ``r`` (of
:data:`CLIP_RATIOS`) whose round-to-nearest error ``E`` is lowest.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from ..quantize.codebook import quantize_codebook
from ..quantize.init import init_codebook
from ..quantize.quantizer import IntegerForm, code_dtype, int_dtype
from .obs import gptq, gptq_factor, hessian_error, nearest, row_errors

__all__ = ["LayerFit", "fit_layer", "uniform_codebook", "refit_codebook", "weighted_kmeans", "CLIP_RATIOS", "STARTS"]

#: Clipping ratios tried for a uniform grid's scale.
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)


@dataclass
class LayerFit:
    """A layer's codebook result: rows ``[R, n]``; ``codebook`` float ``[G, m]`` (before rounding)."""

    codebook: Tensor          # float codebook (a CodebookWeight's parameter)
    values: Tensor            # codebook as used ([G, m]; rounded when bits is set)
    ints: Tensor | None
    scale: Tensor | None
    codes: Tensor             # [R, n] long
    quantized: Tensor         # [R, n] float32 = values[codes]
    latent: Tensor            # [R, n] float32, nearest(latent) == codes
    error: float              # Hessian-weighted error of quantized vs the target
    iterations: int

    def form(self, shape: torch.Size, m: int, bits: int | None) -> IntegerForm:
        """The exact integer description (what ``FrozenCodebook`` stores)."""
        groups = self.values.shape[0]
        codes = self.codes.reshape(groups, -1).to(code_dtype(m))
        ints = self.ints.to(int_dtype(bits)) if self.ints is not None else None
        return IntegerForm(torch.Size(shape), codes, self.values.clone(), ints,
                           self.scale.clone() if self.scale is not None else None)


def _used(codebook: Tensor, bits: int | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    if bits is None:
        return codebook.clone(), None, None
    return quantize_codebook(codebook, bits)


def _zero_index(values: Tensor) -> Tensor:
    return values.abs().argmin(dim=1)


def uniform_codebook(w: Tensor, bits: int, h: Tensor, groups: int, gain2: Tensor | None = None) -> Tensor:
    """``[groups, 2^bits - 1]`` float grid ``s * (-q .. q)`` with the best clipping ratio per group."""
    q = 2 ** (bits - 1) - 1
    rows = w.shape[0]
    steps = torch.arange(-q, q + 1, dtype=torch.float32)
    amax = w.abs().reshape(groups, -1).amax(dim=1).clamp_min(1e-12)
    best, best_err = None, None
    for r in CLIP_RATIOS:
        book = (r * amax / q)[:, None] * steps[None, :]
        values, _, _ = quantize_codebook(book, bits)
        vals = values.expand(rows, -1) if groups == 1 else values
        err = row_errors(vals.gather(1, nearest(w, vals)) - w, h)
        if gain2 is not None:
            err = err * gain2.double()
        err = err.sum().reshape(1) if groups == 1 else err
        if best is None:
            best, best_err = book.clone(), err
        else:
            better = err < best_err
            best[better], best_err = book[better], torch.minimum(err, best_err)
    return best


def refit_codebook(codes: Tensor, target: Tensor, h: Tensor, old: Tensor, *, gain2: Tensor | None = None,
                   fixed_zero: Tensor | None = None) -> Tensor:
    """The codebook minimising the Hessian-weighted error for fixed ``codes`` (``[R, n]``).

    ``old`` (``[G, m]``; ``G`` is 1 or ``R``) gives the shape and the values of unused
    codewords; ``fixed_zero`` (``[G]``) the index of a codeword held at 0.
    """
    groups, m = old.shape
    rows = codes.shape[0]
    z = torch.nn.functional.one_hot(codes, m).double()            # [R, n, m]
    hz = torch.einsum("ij,rjm->rim", h, z)                        # H O_r
    g2 = gain2.double() if gain2 is not None else torch.ones(rows, dtype=torch.float64)
    a = torch.einsum("rin,rim,r->rnm", z, hz, g2)                 # O_r^T H O_r
    b = torch.einsum("rim,ri,r->rm", hz, target.double(), g2)     # O_r^T H w_r
    if groups == 1:
        a, b = a.sum(dim=0, keepdim=True), b.sum(dim=0, keepdim=True)
    scale = a.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-30)     # [G]
    ridge = (1e-9 * scale)[:, None, None] * torch.eye(m, dtype=torch.float64)
    rhs = b + (1e-9 * scale)[:, None] * old.double()
    if fixed_zero is not None:
        hot = torch.nn.functional.one_hot(fixed_zero, m).double()
        ridge = ridge + (1e9 * scale)[:, None, None] * hot[:, :, None] * hot[:, None, :]
    new = torch.linalg.solve(a + ridge, rhs).float()
    if fixed_zero is not None:
        new[torch.arange(groups), fixed_zero] = 0.0
    return new


def _nearest_assignment(w: Tensor, h: Tensor, values: Tensor, *, mask: Tensor | None = None,
                        zero: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Every weight to its nearest codeword (no error feedback), in :func:`gptq`'s return shape."""
    rows = w.shape[0]
    vals = values.expand(rows, -1) if values.shape[0] == 1 else values
    latent = w.clone() if mask is None else torch.where(mask, torch.zeros_like(w), w)
    codes = nearest(latent, vals)
    return codes, vals.gather(1, codes), latent


def weighted_kmeans(w: Tensor, omega: Tensor, start: Tensor, iterations: int = 30) -> Tensor:
    """1-D Lloyd's algorithm with importances: ``C_j = sum omega x / sum omega`` over cluster ``j``.

    ``w``, ``omega``: ``[G, N]``; ``start``: ``[G, m]``. Minimises ``sum omega (x - C[k(x)])^2``,
    the Hessian error with only ``H``'s diagonal (``omega = g_r^2 H_qq``) when ``w`` are a layer's
    weights. Empty clusters keep their value.
    """
    x, om = w.double(), omega.double()
    g, m = start.shape
    centers = start.double().sort(dim=1).values
    offsets = torch.arange(g)[:, None] * m
    for _ in range(iterations):
        bounds = ((centers[:, 1:] + centers[:, :-1]) * 0.5).contiguous()
        idx = (torch.searchsorted(bounds, x.contiguous()) + offsets).flatten()
        sums = torch.zeros(g * m, dtype=torch.float64).index_add_(0, idx, (om * x).flatten())
        mass = torch.zeros(g * m, dtype=torch.float64).index_add_(0, idx, om.flatten())
        new = torch.where(mass > 0, sums / mass.clamp_min(1e-300), centers.flatten()).reshape(g, m).sort(dim=1).values
        if torch.equal(new, centers):
            break
        centers = new
    return centers.float()


#: Codebook starts of one-shot CAT (each runs the whole alternation; the lowest error wins):
#: ``"kmeans"`` exact 1-D k-means of the weights, ``"hessian"`` that refined by
#: :func:`weighted_kmeans` with ``omega = g_r^2 H_qq``, ``"hessian-quantile"`` the same from quantiles.
STARTS = ("kmeans", "hessian", "hessian-quantile")


def _start(w: Tensor, h: Tensor, m: int, groups: int, sparse: bool, how: str, gain2: Tensor | None) -> Tensor:
    if how not in STARTS:
        raise ValueError(f"start {how!r} is not one of {STARTS}")
    flat = w.reshape(groups, -1)
    if how == "kmeans":
        book = init_codebook(flat, m, "kmeans").float()
    else:
        omega = h.diagonal().float()[None, :].expand(w.shape[0], -1)
        if gain2 is not None:
            omega = omega * gain2.float()[:, None]
        first = init_codebook(flat, m, "kmeans" if how == "hessian" else "quantile").float()
        book = weighted_kmeans(flat, omega.reshape(groups, -1), first)  # clusters stay disjoint: values distinct
    if sparse:  # pruned weights need the value 0: the codeword nearest 0 becomes 0
        book[torch.arange(groups), _zero_index(book)] = 0.0
    return book


def fit_layer(w: Tensor, h: Tensor, *, m: int | None, bits: int | None, groups: int, mask: Tensor | None = None,
              gain2: Tensor | None = None, iterations: int = 6, starts: tuple[str, ...] = ("kmeans",)) -> LayerFit:
    """Quantize rows ``w`` (``[R, n]``, float32) against the damped Hessian ``h``.

    ``m`` given: one-shot CAT with an ``m``-value codebook per group (``bits``: rounded
    to integers), alternated from every start of ``starts`` (:data:`STARTS`), the lowest
    error kept; ``m`` None: the uniform ``bits``-bit grid (one pass of GPTQ).
    ``mask``: pruned weights, held at 0.
    """
    sparse = mask is not None and bool(mask.any())
    factor = gptq_factor(h)  # the same for every gptq call below: h does not change
    if m is None:
        book = uniform_codebook(w, bits, h, groups, gain2)
        return _alternate(w, h, book, bits=bits, groups=groups, mask=mask, sparse=sparse, gain2=gain2, iterations=1,
                          factor=factor)
    best = None
    for how in starts:
        book = _start(w, h, m, groups, sparse, how, gain2 if groups == 1 else None)
        fit = _alternate(w, h, book, bits=bits, groups=groups, mask=mask, sparse=sparse, gain2=gain2,
                         iterations=iterations, factor=factor)
        if best is None or fit.error < best.error:
            best = fit
    return best


def _alternate(w, h, book, *, bits, groups, mask, sparse, gain2, iterations, factor) -> LayerFit:
    """Assignment (GPTQ or nearest, the lower error) and closed-form refit, ``iterations`` rounds at most."""
    best: LayerFit | None = None
    last_codes = None
    for it in range(1, iterations + 1):
        values, ints, scale = _used(book, bits)
        zero = _zero_index(values) if sparse else None
        step = None
        for assign in (partial(gptq, factor=factor), _nearest_assignment):  # error feedback can lose to plain rounding on coarse books
            codes, quantized, latent = assign(w, h, values, mask=mask if sparse else None, zero=zero)
            err = hessian_error(quantized - w, h, gain2)
            if step is None or err < step.error:
                step = LayerFit(book.clone(), values, ints, scale, codes, quantized, latent, err, it)
        if best is None or step.error < best.error:
            best = step
        codes = step.codes
        if iterations == 1 or (last_codes is not None and torch.equal(codes, last_codes)):
            break
        last_codes = codes
        book = refit_codebook(codes, w, h, book, gain2=gain2 if groups == 1 else None,
                              fixed_zero=_zero_index(book) if sparse else None)
    return best
