"""Learnable codebook weights (Clusterization-Aware Training, CAT).

:class:`CodebookWeight` is a ``torch.nn.utils.parametrize`` parametrization:
the module keeps a full-precision latent weight ``W`` and a learnable codebook
``C`` of ``m`` values per group (one group per layer, or one per output
channel), and its effective weight is

.. math::

    k^*_i = \\arg\\min_k (w_i - c_k)^2, \\qquad
    \\hat w_i = c_{k^*_i} + (w_i - \\mathrm{sg}(w_i))

which equals ``c[k*]`` bit for bit while the gradient reaches ``W`` (straight
through) and ``C`` (through the gather). With ``bits`` set, the codebook is
replaced in the forward pass by ``s * round(C / s)`` with one scale per group,
``s = max|C| / (2^(bits-1) - 1)``, so every weight is ``s * k`` with an integer
``|k| <= 2^(bits-1) - 1``.

The nearest-codeword search sorts the ``m`` codewords and counts the midpoints
below each weight: ``torch.searchsorted``'s result, computed by a lookup table and
one or two exact comparisons per weight (:mod:`snn_spikefit.quantize.assign`). The result is cached until the latent
weight or the codebook changes (their version counters) or until gradient has
flowed back through it, so a model called once per timestep computes its
quantized weights once per forward pass, not ``T`` times. Every way of writing a
weight is seen (``.data`` writes too: :mod:`snn_spikefit.quantize.cache`).

:class:`FrozenCodebook` is the frozen form: integer codes, the codebook (and its
integers and scale when ``bits`` is set) stored as buffers; the weight is decoded
from them and nothing else.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .assign import MIN_SIZE as SMALL, bucket
from .cache import VersionCache
from .quantizer import IntegerForm, Quantizer, code_dtype, int_dtype

__all__ = ["CodebookWeight", "FrozenCodebook", "quantize_codebook"]


def quantize_codebook(codebook: Tensor, bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """Round a ``[G, m]`` codebook to ``bits``-bit signed integers, one scale per row.

    Returns ``(values, ints, scale)`` with ``values == ints * scale[:, None]``
    exactly (the same float product), ``|ints| <= 2^(bits-1) - 1``.

    >>> v, k, s = quantize_codebook(torch.tensor([[-0.5, 0.1, 0.7]]), bits=4)
    >>> k.tolist()
    [[-5.0, 1.0, 7.0]]
    >>> bool(torch.equal(v, k * s[:, None]))
    True
    """
    qmax = 2 ** (bits - 1) - 1
    with torch.no_grad():
        amax = codebook.detach().abs().amax(dim=1)
        scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
        ints = torch.clamp(torch.round(codebook.detach() / scale[:, None]), -qmax, qmax)
    return ints * scale[:, None], ints, scale


class _Lookup(torch.autograd.Function):
    """``values[idx]`` reshaped like ``weight``; backward: ``dL/dw = dL/dw_q`` (straight
    through) and ``dL/dvalues`` summed per codeword. Same values and gradients as
    ``gather(values, idx) + (w - sg(w))``, without the two extra passes over the weights."""

    @staticmethod
    def forward(ctx, weight: Tensor, values: Tensor, idx: Tensor) -> Tensor:
        ctx.save_for_backward(idx)
        ctx.m = values.shape[1]
        return torch.gather(values, 1, idx).reshape(weight.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (idx,) = ctx.saved_tensors
        grad_values = None
        if ctx.needs_input_grad[1]:
            grad_values = grad.new_zeros(idx.shape[0], ctx.m).scatter_add_(1, idx, grad.reshape(idx.shape))
        return (grad if ctx.needs_input_grad[0] else None), grad_values, None


class _Commitment(torch.autograd.Function):
    """``mean((w_q - w)^2)`` from an already gathered ``w_q = values[idx]``; gradient to
    ``values`` only: ``2 / N * sum_{i: idx_i = k} (w_q - w)_i`` (what autograd would give
    through the gather, without gathering again)."""

    @staticmethod
    def forward(ctx, values: Tensor, idx: Tensor, quantized: Tensor, weight: Tensor) -> Tensor:
        diff = quantized - weight
        ctx.save_for_backward(idx, diff)
        ctx.m = values.shape[1]
        flat = diff.reshape(-1)
        return torch.dot(flat, flat) / flat.numel()

    @staticmethod
    def backward(ctx, grad: Tensor):
        idx, diff = ctx.saved_tensors
        scaled = diff * (grad * (2.0 / diff.numel()))
        grad_values = scaled.new_zeros(idx.shape[0], ctx.m).scatter_add_(1, idx, scaled)
        return grad_values, None, None, None


class CodebookWeight(Quantizer):
    """Parametrization giving a weight at most ``m`` distinct values per group.

    Args:
        codebook: initial codebook, shape ``[groups, m]`` (one row per layer or per
            output channel); becomes the learnable parameter ``codebook``.
        bits: quantize the codebook to signed ``bits``-bit integers times one scale
            per group, or ``None`` to keep it in floating point.
        granularity: ``"layer"`` (one group) or ``"channel"`` (one per output channel).
        reseed: in training mode, move codewords that no weight uses onto the
            weight farthest from its codeword.

    Use :func:`snn_spikefit.wrap` rather than registering this by hand.
    """

    kind = "trainable codebook"

    def __init__(
        self,
        codebook: Tensor,
        *,
        bits: int | None = None,
        granularity: str = "layer",
        reseed: bool = True,
    ) -> None:
        super().__init__()
        self.codebook = nn.Parameter(codebook.detach().clone())
        self.m = int(codebook.shape[1])
        self.bits = bits
        self.granularity = granularity
        self.reseed = reseed
        self.reseeded = 0  # codewords re-seeded so far (a diagnostic)
        self._cache = VersionCache()

    @property
    def groups(self) -> int:
        return int(self.codebook.shape[0])

    def extra_repr(self) -> str:
        return f"m={self.m}, bits={self.bits}, granularity={self.granularity!r}, groups={self.groups}"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = VersionCache()
        return state

    # -- the quantizer -----------------------------------------------------------------
    def codebook_values(self) -> Tensor:
        """The codebook as used in the forward pass (rounded when ``bits`` is set).

        Equal in value to the quantized codebook; gradient passes straight to
        ``self.codebook``.
        """
        if self.bits is None:
            return self.codebook
        values, _, _ = quantize_codebook(self.codebook, self.bits)
        return values + (self.codebook - self.codebook.detach())

    def assign(self, weight: Tensor, values: Tensor | None = None) -> Tensor:
        """Index of the nearest codeword for every weight, shape ``[groups, n]``."""
        if values is None:
            values = self.codebook_values()
        flat = weight.detach().reshape(self.groups, -1)
        values = values.detach()
        # already sorted (the usual case) needs no sort; few weights skip the check (a sync),
        # and bucket bisects them itself
        if flat.numel() >= SMALL and bool((values[:, 1:] > values[:, :-1]).all()):
            return bucket(flat, (values[:, 1:] + values[:, :-1]) * 0.5)
        order_values, order = torch.sort(values, dim=1)
        # gather(order, 1, torch.searchsorted(bounds, flat)), faster
        return bucket(flat, (order_values[:, 1:] + order_values[:, :-1]) * 0.5, order)

    def forward(self, weight: Tensor) -> Tensor:
        if _is_compiling():  # one graph break instead of several and a recompile per layer
            return _eager_forward(self, weight)
        return self._forward(weight)

    def _forward(self, weight: Tensor) -> Tensor:
        key = VersionCache.make_key(weight, self.codebook) + (self.training,)
        cached = self._cache.get(key)
        if cached is not None:
            return cached[0]
        values = self.codebook_values()
        idx = self.assign(weight, values)
        if self.training and self.reseed and self._reseed_dead(weight, values, idx):
            key = VersionCache.make_key(weight, self.codebook) + (self.training,)
            values = self.codebook_values()
            idx = self.assign(weight, values)
        if weight.numel() < SMALL:  # plain ops: cheaper than a Python autograd Function here
            out = torch.gather(values, 1, idx).reshape(weight.shape) + (weight - weight.detach())
        else:
            out = _Lookup.apply(weight, values, idx)  # c[k*], gradient straight through to the weight
        self._cache.put(key, (out, idx), hook_on=out)
        return out

    def right_inverse(self, weight: Tensor) -> Tensor:
        # Assigning to module.weight sets the latent weight.
        return weight

    @torch.no_grad()
    def _reseed_dead(self, weight: Tensor, values: Tensor, idx: Tensor) -> bool:
        """Move unused codewords onto the worst-served weights; True if any moved."""
        g, m = self.groups, self.m
        ones = torch.ones((), dtype=torch.int64, device=idx.device).expand(idx.shape)
        counts = torch.zeros(g, m, dtype=torch.int64, device=idx.device).scatter_add_(1, idx, ones)
        if bool((counts > 0).all()):
            return False
        values = values.detach()
        flat = weight.detach().reshape(g, -1)
        error = (flat - torch.gather(values, 1, idx)).abs()
        for _ in range(m):
            dead = counts == 0
            rows = dead.any(dim=1)
            if not bool(rows.any()):
                break
            first_dead = dead.float().argmax(dim=1)
            worst, far = error.max(dim=1)
            rows &= worst > 0  # every weight already sits on a codeword: nothing to gain
            if not bool(rows.any()):
                break
            r = rows.nonzero().flatten()
            self.codebook[r, first_dead[r]] = flat[r, far[r]]
            counts[r, first_dead[r]] = 1
            error[r, far[r]] = -1.0
            self.reseeded += int(r.numel())
        return True

    # -- views used by commitment loss, freeze and summaries --------------------------
    def commitment(self, weight: Tensor) -> Tensor:
        """Eq. 7: ``mean((w_q - sg(w))^2)``, gradient to the codebook only.

        Reuses the assignment of this step's forward pass when the weight and
        codebook have not changed since (the usual case: forward, then the loss).
        """
        values = self.codebook_values()
        cached = self._cache.get(VersionCache.make_key(weight, self.codebook) + (self.training,))
        if weight.numel() < SMALL:
            idx = cached[1] if cached is not None else self.assign(weight, values)
            return (torch.gather(values, 1, idx) - weight.detach().reshape(self.groups, -1)).pow(2).mean()
        if cached is not None:  # the forward already gathered w_q: reuse it
            idx, quantized = cached[1], cached[0].detach().reshape(self.groups, -1)
        else:
            idx = self.assign(weight, values)
            quantized = torch.gather(values.detach(), 1, idx)
        return _Commitment.apply(values, idx, quantized, weight.detach().reshape(self.groups, -1))

    # -- the quantizer protocol --------------------------------------------------------
    @torch.no_grad()
    def integer_form(self, latent: Tensor) -> IntegerForm:
        """Codes of ``latent``, the codebook as used (and with ``bits`` its integers and scale)."""
        if self.bits is None:
            values, ints, scale = self.codebook.detach().clone(), None, None
        else:
            values, ints, scale = quantize_codebook(self.codebook, self.bits)
            ints = ints.to(int_dtype(self.bits))
        codes = self.assign(latent, values).to(code_dtype(self.m))
        return IntegerForm(latent.shape, codes, values, ints, scale)

    @torch.no_grad()
    def select_channels(self, keep: Tensor, dim: int, latent: Tensor) -> Tensor:
        """The latent weight sliced; a per-channel codebook loses the rows of removed output channels."""
        if dim == 0 and self.granularity == "channel":
            self.codebook = nn.Parameter(self.codebook.detach().index_select(0, keep.to(latent.device)).clone(),
                                         requires_grad=self.codebook.requires_grad)
        return super().select_channels(keep, dim, latent)

    def invalidate(self) -> None:
        self._cache.clear()


#: ``torch.compile`` runs the codebook forward eagerly (untraceable cache key, Python state, data-dependent
#: re-seeding: README "torch.compile")
_eager_forward = torch.compiler.disable(lambda quantizer, weight: quantizer._forward(weight))
_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)  # torch >= 2.3


class FrozenCodebook(Quantizer):
    """Frozen codebook layer: the weight is ``values[codes]`` and nothing else.

    Buffers: ``codes`` (``[groups, n]``, smallest unsigned dtype that fits ``m``),
    ``values`` (``[groups, m]`` float), and when ``bits`` is set ``codebook_int``
    (``[groups, m]``, ``int8``/``int16``) and ``scale`` (``[groups]``) with
    ``values == codebook_int * scale``. Registered with ``unsafe=True``; the
    latent weight is released. Build one from any quantizer with
    :meth:`Quantizer.freeze` (or :meth:`from_form`).
    """

    frozen = True

    def __init__(
        self,
        shape: torch.Size,
        codes: Tensor,
        values: Tensor,
        ints: Tensor | None,
        scale: Tensor | None,
        *,
        m: int,
        bits: int | None,
        granularity: str,
    ) -> None:
        super().__init__()
        self.shape = torch.Size(shape)
        self.m, self.bits, self.granularity = m, bits, granularity
        self.register_buffer("codes", codes)
        self.register_buffer("values", values)
        if ints is not None:
            self.register_buffer("codebook_int", ints.to(int_dtype(bits)))
            self.register_buffer("scale", scale)
        else:
            self.codebook_int = None
            self.scale = None
        self._cache = VersionCache()

    @classmethod
    def from_form(cls, form: IntegerForm, *, m: int, bits: int | None, granularity: str) -> "FrozenCodebook":
        """The frozen layer that stores ``form`` (its tensors are copied)."""
        ints = form.ints.clone() if form.ints is not None else None
        scale = form.scale.detach().clone() if form.scale is not None else None
        return cls(form.shape, form.codes.clone(), form.values.detach().clone(), ints, scale,
                   m=m, bits=bits, granularity=granularity)

    @property
    def groups(self) -> int:
        return int(self.values.shape[0])

    @property
    def kind(self) -> str:  # type: ignore[override]
        return f"frozen {self.granularity} codebook"

    def extra_repr(self) -> str:
        return (
            f"shape={tuple(self.shape)}, m={self.m}, bits={self.bits}, "
            f"granularity={self.granularity!r}"
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = VersionCache()
        return state

    def decode(self) -> Tensor:
        """``scale * codebook_int[codes]`` (or ``values[codes]``), reshaped."""
        return torch.gather(self.values, 1, self.codes.long()).reshape(self.shape)

    def forward(self, _released: Tensor) -> Tensor:
        key = VersionCache.make_key(self.codes, self.values)
        cached = self._cache.get(key)
        if cached is None:
            cached = self.decode()
            self._cache.put(key, cached)
        return cached

    def right_inverse(self, weight: Tensor) -> Tensor:
        # The frozen layer owns no latent weight: keep an empty placeholder.
        return weight.new_empty(0)

    # -- the quantizer protocol --------------------------------------------------------
    def integer_form(self, latent: Tensor | None = None) -> IntegerForm:
        """The stored buffers themselves (``latent`` is the released placeholder and is ignored)."""
        return IntegerForm(self.shape, self.codes, self.values, self.codebook_int, self.scale)

    @torch.no_grad()
    def select_channels(self, keep: Tensor, dim: int, latent: Tensor) -> Tensor:
        """Slice the codes (and a per-channel codebook's rows); the placeholder latent stays."""
        keep = keep.to(self.codes.device)
        codes = self.codes.reshape(self.shape).index_select(dim, keep)
        shape = codes.shape
        self.codes = codes.reshape(self.groups if self.granularity == "layer" else shape[0], -1).clone()
        if dim == 0 and self.granularity == "channel":
            self.values = self.values.index_select(0, keep).clone()
            if self.codebook_int is not None:
                self.codebook_int = self.codebook_int.index_select(0, keep).clone()
                self.scale = self.scale.index_select(0, keep).clone()
        self.shape = torch.Size(shape)
        self.invalidate()
        return latent

    @property
    def scales_channels(self) -> bool:
        return self.granularity == "channel" and self.codebook_int is not None

    @torch.no_grad()
    def scale_channels(self, factor: Tensor) -> None:
        """``scale *= factor`` per output channel; the integers do not change."""
        if not self.scales_channels:
            super().scale_channels(factor)
        self.scale.mul_(factor.to(self.scale.dtype))
        self.values.copy_(self.codebook_int.to(self.values.dtype) * self.scale[:, None])
        self.invalidate()

    def invalidate(self) -> None:
        self._cache.clear()

    def freeze(self, latent: Tensor | None = None) -> "FrozenCodebook":
        return self
