"""The paper's clustered baseline: QAT -> cluster into M centroids -> INT8 -> brief fine-tune.

Steps (REFERENCE section 5), each a function that changes the model in place:

1. :func:`qat` puts an INT8 fake-quantizer on every compressible weight (one
   symmetric scale per layer, ``max|w| / 127``, straight-through gradient);
   fine-tune it with any loop.
2. :func:`cluster` replaces each weight by ``m`` centroids found by scikit-learn
   ``KMeans`` / ``MiniBatchKMeans`` (or ``"uniform"``: evenly spaced over the
   weight range) on that layer's (QAT-quantized) weights. The centroids are
   kept on the INT8 grid: every weight is ``scale * k`` with ``|k| <= 127``.
3. The brief fine-tune after clustering trains, as TF-MOT's clustering API
   does, the **centroids** (through the INT8 fake-quantizer, straight-through)
   with the weight-to-centroid **assignments fixed**; biases, BatchNorm and
   neuron parameters train as usual. The latent weights are not used any more.

The ANN -> SNN conversion path and the plain post-training variant live in
:mod:`snn_spikefit.baselines.conversion` and are also just :func:`cluster` on a
trained model.

>>> import torch
>>> from torch import nn
>>> net = cluster(nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 2)), m=3, seed=0)
>>> [int(l.weight.unique().numel()) <= 3 for l in net]
[True, True]
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import SpikeFitValueError
from ..runtime import check_module
from ..quantize.layers import candidates, compressed_layers, remove_parametrization
from ..quantize.quantizer import IntegerForm, Quantizer, code_dtype, int_dtype

__all__ = ["FakeQuantWeight", "ClusterWeight", "qat", "strip_qat", "cluster", "cluster_values",
           "CLUSTER_METHODS", "int8_grid"]

CLUSTER_METHODS = ("kmeans", "minibatch", "uniform")


def int8_grid(values: Tensor, bits: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    """``(values on the grid, ints, scale)``: symmetric ``bits``-bit grid, ``scale = max|v| / (2^(b-1)-1)``.

    >>> v, k, s = int8_grid(torch.tensor([-0.5, 0.25, 1.27]))
    >>> k.tolist(), round(float(s), 6), bool(torch.equal(v, k * s))
    ([-50.0, 25.0, 127.0], 0.01, True)
    """
    qmax = 2 ** (bits - 1) - 1
    with torch.no_grad():
        amax = values.detach().abs().amax()
        scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
        ints = torch.clamp(torch.round(values.detach() / scale), -qmax, qmax)
    return ints * scale, ints, scale


class FakeQuantWeight(Quantizer):
    """QAT parametrization: ``w -> scale * round(w / scale)`` on a ``bits``-bit grid, gradient straight through.

    A quantizer like any other (``m = 2^bits - 1`` levels, one scale per layer):
    measured, checked, frozen and exported as what it is, integers times a scale.
    """

    granularity = "layer"

    def __init__(self, bits: int = 8) -> None:
        super().__init__()
        self.bits = bits
        self.m = 2 ** bits - 1  # the grid's levels

    def extra_repr(self) -> str:
        return f"bits={self.bits}"

    def forward(self, weight: Tensor) -> Tensor:
        q, _, _ = int8_grid(weight, self.bits)
        return q + (weight - weight.detach())

    def right_inverse(self, weight: Tensor) -> Tensor:
        return weight

    @property
    def kind(self) -> str:  # type: ignore[override]
        return f"{self.bits}-bit fake-quantizer (qat)"

    @torch.no_grad()
    def integer_form(self, latent: Tensor) -> IntegerForm:
        """Codes ``k + q`` over the whole grid ``-q..q`` (``q = 2^(bits-1) - 1``), one scale."""
        qmax = 2 ** (self.bits - 1) - 1
        _, ints, scale = int8_grid(latent, self.bits)
        book = torch.arange(-qmax, qmax + 1, dtype=latent.dtype, device=latent.device).reshape(1, -1)
        codes = (ints + qmax).reshape(1, -1).to(code_dtype(self.m))
        return IntegerForm(latent.shape, codes, book * scale, book.to(int_dtype(self.bits)), scale.reshape(1))


def cluster_values(weight: Tensor, m: int, *, method: str = "kmeans", seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(centroids [m], labels [numel])`` of a weight tensor, clustered with scikit-learn or uniformly.

    With fewer distinct weights than ``m`` the spare centroids duplicate existing
    ones (k-means cannot make more clusters than points).
    """
    flat = weight.detach().reshape(-1).double().cpu().numpy()
    distinct = np.unique(flat)
    if method == "uniform" or len(distinct) <= m:
        if method == "uniform":
            centroids = np.linspace(flat.min(), flat.max(), m)
        else:
            centroids = np.concatenate([distinct, np.full(m - len(distinct), distinct[-1])])
        labels = np.abs(flat[:, None] - centroids[None, :]).argmin(axis=1)
    else:
        from sklearn.cluster import KMeans, MiniBatchKMeans

        if method == "kmeans":
            km = KMeans(n_clusters=m, n_init=4, random_state=seed)
        else:
            km = MiniBatchKMeans(n_clusters=m, n_init=4, batch_size=1024, random_state=seed)
        labels = km.fit_predict(flat[:, None])
        centroids = km.cluster_centers_[:, 0]
    return (torch.as_tensor(centroids, dtype=weight.dtype, device=weight.device),
            torch.as_tensor(labels, dtype=torch.long, device=weight.device))


class ClusterWeight(Quantizer):
    """Parametrization: weight = ``int8_grid(centroids)[labels]``; centroids learnable, labels fixed.

    Registered with ``unsafe=True``: the latent weight is released (an empty
    placeholder), the weight is decoded from ``centroids`` and the ``labels`` buffer.
    """

    granularity = "layer"
    kind = "clustered codebook"

    def __init__(self, shape: torch.Size, centroids: Tensor, labels: Tensor, *, bits: int = 8) -> None:
        super().__init__()
        self.shape = torch.Size(shape)
        self.bits = bits
        self.m = int(centroids.numel())
        self.centroids = nn.Parameter(centroids.detach().clone())
        self.register_buffer("labels", labels.detach().clone().reshape(-1))

    def extra_repr(self) -> str:
        return f"m={self.m}, bits={self.bits}, shape={tuple(self.shape)}"

    def values(self) -> Tensor:
        q, _, _ = int8_grid(self.centroids, self.bits)
        return q + (self.centroids - self.centroids.detach())

    def forward(self, _released: Tensor) -> Tensor:
        return self.values()[self.labels].reshape(self.shape)

    def right_inverse(self, weight: Tensor) -> Tensor:
        return weight.new_empty(0)

    @torch.no_grad()
    def integer_form(self, latent: Tensor | None = None) -> IntegerForm:
        """The labels as codes, the centroids on the grid (``latent`` is the released placeholder)."""
        values, ints, scale = int8_grid(self.centroids, self.bits)
        return IntegerForm(self.shape, self.labels.reshape(1, -1).to(code_dtype(self.m)), values.reshape(1, -1),
                           ints.reshape(1, -1).to(int_dtype(self.bits)), scale.reshape(1))

    @torch.no_grad()
    def select_channels(self, keep: Tensor, dim: int, latent: Tensor) -> Tensor:
        """Slice the fixed assignments; the centroids stay, the placeholder latent too."""
        labels = self.labels.reshape(self.shape).index_select(dim, keep.to(self.labels.device))
        self.shape = labels.shape
        self.labels = labels.reshape(-1).clone()
        return latent


def _layers(model: nn.Module, what: str) -> list[tuple[str, nn.Module, str]]:
    check_module(model)
    layers = candidates(model)
    if not layers:
        raise SpikeFitValueError(f"{what}: model has no Linear/Conv layer")
    return layers


def _check_bits(bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise SpikeFitValueError(f"bits={bits!r} is not allowed; use an int in 2..8")
    return bits


def _parametrized(module: nn.Module, param: str) -> list[nn.Module]:
    return list(module.parametrizations[param]) if parametrize.is_parametrized(module, param) else []


def qat(model: nn.Module, *, bits: int = 8) -> nn.Module:
    """Put a ``bits``-bit fake-quantizer (straight-through) on every compressible weight, in place.

    The weights are those :func:`snn_spikefit.wrap` compresses (adapters' weights included).
    """
    _check_bits(bits)
    layers = _layers(model, "qat")
    taken = [n for n, m, param in layers if _parametrized(m, param)]
    if taken:
        raise SpikeFitValueError(f"qat: layers {taken} already have parametrized weights; pass a plain model")
    for _, module, param in layers:
        parametrize.register_parametrization(module, param, FakeQuantWeight(bits))
    return model


@torch.no_grad()
def strip_qat(model: nn.Module) -> nn.Module:
    """Remove the fake-quantizers, leaving each layer's weight on its INT grid, in place."""
    for layer in compressed_layers(model):
        if isinstance(layer.quantizer, FakeQuantWeight):
            remove_parametrization(layer.module, layer.param, leave_parametrized=True)
    return model


def cluster(model: nn.Module, *, m: int, method: str = "kmeans", bits: int = 8, seed: int = 0) -> nn.Module:
    """Cluster every compressible layer's weight into ``m`` centroids on a ``bits``-bit grid, in place.

    A QAT model (:func:`qat`) is clustered on its fake-quantized weights (the
    quantizers are removed first). Every layer then holds a :class:`ClusterWeight`:
    ``m`` learnable centroids, fixed assignments. All the weights CAT's
    :func:`snn_spikefit.wrap` compresses by default are clustered.

    Args:
        m: centroids per layer, ``2 <= m <= 2**bits - 1``.
        method: ``"kmeans"`` (scikit-learn ``KMeans``), ``"minibatch"`` (``MiniBatchKMeans``)
            or ``"uniform"`` (evenly spaced between the smallest and largest weight).
        bits: the centroid grid (8: INT8, as in the paper).
        seed: ``random_state`` of the scikit-learn estimators.
    """
    _check_bits(bits)
    if isinstance(m, bool) or not isinstance(m, int) or not 2 <= m <= 2 ** bits - 1:
        raise SpikeFitValueError(f"m={m!r} is not allowed with bits={bits}; use an int in 2..{2 ** bits - 1}")
    if method not in CLUSTER_METHODS:
        raise SpikeFitValueError(f"method={method!r} is not allowed; use one of {CLUSTER_METHODS}")
    layers = _layers(model, "cluster")
    other = [n for n, mod, param in layers
             if not all(isinstance(p, FakeQuantWeight) for p in _parametrized(mod, param))]
    if other:
        raise SpikeFitValueError(f"cluster: layers {other} carry parametrizations other than qat's; pass a plain "
                                 f"or QAT model")
    plans = []
    for name, module, param in layers:  # cluster everything before changing anything
        weight = getattr(module, param).detach()
        if not bool(torch.isfinite(weight).all()):
            raise SpikeFitValueError(f"layer {name!r} has NaN/inf weights; cluster needs finite weights")
        plans.append((module, param, weight.shape, *cluster_values(weight, m, method=method, seed=seed)))
    strip_qat(model)
    for module, param, shape, centroids, labels in plans:
        parametrize.register_parametrization(module, param, ClusterWeight(shape, centroids, labels, bits=bits),
                                             unsafe=True)
        module.parametrizations[param].original.requires_grad_(False)
    return model
