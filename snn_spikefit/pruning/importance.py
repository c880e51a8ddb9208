"""Channel importance criteria for structured pruning: one score per output channel.

A criterion scores the output channels of each spiking layer (the channels of
the Conv/Linear layer that drives it). :func:`snn_spikefit.prune` runs a few
calibration batches, hands each criterion one :class:`LayerBatch` per spiking
layer and batch, sums what it returns over the batches and calls
:meth:`Criterion.finish` with the number of samples. Criteria that need no data
(``l1``, ``random``) are called once with ``spikes=None``.

Built in (``CRITERIA``, extend it with :func:`register_criterion`), with
``y[t, b, c, ...]`` the layer's spikes, ``delta = dL/dy`` and ``N`` the number
of calibration samples:

* ``fsc`` -- Fisher Spike Contribution (REFERENCE §3, Eq. 9):
  :math:`S_c = \\frac1N \\sum_{b,t,h,w} \\delta^2 y^2`.
* ``svs`` -- spike-map rank (QP-SNN): mean over samples of the numerical rank
  (singular values > ``tol``) of the time-averaged map :math:`\\bar y[b, c]`
  (``H x W``). Dense layers have a ``1 x 1`` map, so the rank is 1 where the
  neuron fired at all and 0 otherwise (the score is its firing probability);
  1-D maps are ``1 x L``; 3-D maps are flattened to ``(D*H) x W``.
* ``sca`` -- (Li et al.): :math:`\\frac{1}{N T} \\sum_{b,t} \\|U^{pre}[b,t,c]\\|_1`,
  the pre-reset membrane potential as the adapter reports it.
* ``taylor`` -- first order: :math:`\\frac1N |\\sum_{b,t,h,w} \\delta y|`.
* ``l1`` -- L1 norm of each output filter of the producing layer (its effective
  weight: quantized when the layer carries a codebook).
* ``random`` -- seeded uniform scores (the control).

Your own criterion: a :class:`Criterion` subclass, or a plain callable
``fn(batch: LayerBatch) -> Tensor[C]`` returning the per-channel sum over the
batch's samples (it receives spikes, gradients and pre-reset membranes).

>>> import torch
>>> y = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])        # [T=2, B=1, C=2]
>>> g = torch.tensor([[[0.5, 2.0]], [[1.0, 3.0]]])
>>> crit = CRITERIA["fsc"]
>>> crit.finish(crit(LayerBatch("lif", None, y, g, None)), 1).tolist()
[1.25, 9.0]
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch import Tensor, nn

from ..errors import SpikeFitTypeError, SpikeFitValueError, refuse_duplicate

__all__ = [
    "Criterion", "LayerBatch", "FSC", "SVS", "SCA", "Taylor", "L1", "Random", "FunctionCriterion",
    "CRITERIA", "register_criterion", "get_criterion",
]

CHANNEL_DIM = 2  # recorded tensors are [T, B, C, ...]


@dataclass(frozen=True)
class LayerBatch:
    """What a criterion sees of one spiking layer on one calibration batch."""

    name: str                 # the spiking neuron's qualified name
    producer: nn.Module | None  # the Conv/Linear whose output channels are scored
    spikes: Tensor | None     # [T, B, C, ...]; None for data-free criteria
    grad: Tensor | None       # dL/dspikes, same shape (None unless the criterion needs it)
    pre_reset: Tensor | None  # pre-reset membrane, same shape (None unless needed)
    weight: Tensor | None = None  # the producer's effective weight, output channels first (default producer.weight)

    @property
    def producer_weight(self) -> Tensor:
        """The scored weight: ``weight`` when given (a neuron that owns its input weights), else ``producer.weight``."""
        return self.weight if self.weight is not None else self.producer.weight


def _sum_but_channels(x: Tensor) -> Tensor:
    return x.sum(dim=[d for d in range(x.ndim) if d != CHANNEL_DIM])


class Criterion:
    """Protocol of an importance criterion (subclass it; instances are immutable).

    Class attributes say what the calibration run must record.
    """

    needs_data: bool = True
    needs_grad: bool = False
    needs_pre_reset: bool = False

    def __call__(self, batch: LayerBatch) -> Tensor:
        """Per-channel score summed over the batch's samples, shape ``[C]``."""
        raise NotImplementedError

    def finish(self, total: Tensor, num_samples: int) -> Tensor:
        """Final scores from the sum over batches (default: mean over samples)."""
        return total / num_samples


@dataclass(frozen=True)
class FSC(Criterion):
    """Fisher Spike Contribution, Eq. 9: ``(1/N) sum_{b,t,h,w} (dL/dy)^2 y^2``."""

    needs_grad = True

    def __call__(self, batch: LayerBatch) -> Tensor:
        return _sum_but_channels(batch.grad.square() * batch.spikes.square())


@dataclass(frozen=True)
class Taylor(Criterion):
    """First-order Taylor: ``(1/N) |sum_{b,t,h,w} (dL/dy) y|`` (absolute value of the total)."""

    needs_grad = True

    def __call__(self, batch: LayerBatch) -> Tensor:
        return _sum_but_channels(batch.grad * batch.spikes)

    def finish(self, total: Tensor, num_samples: int) -> Tensor:
        return total.abs() / num_samples


@dataclass(frozen=True)
class SVS(Criterion):
    """Spike-map rank (QP-SNN): mean numerical rank of the time-averaged spike map."""

    tol: float = 1e-6  # singular values above it count towards the rank

    def __call__(self, batch: LayerBatch) -> Tensor:
        maps = batch.spikes.float().mean(dim=0)  # [B, C, ...]
        b, c = maps.shape[:2]
        spatial = maps.shape[2:]
        if len(spatial) == 0:
            maps = maps.reshape(b, c, 1, 1)
        elif len(spatial) == 1:
            maps = maps.reshape(b, c, 1, spatial[0])
        else:
            maps = maps.reshape(b, c, -1, spatial[-1])
        rank = (torch.linalg.svdvals(maps) > self.tol).sum(dim=-1)  # [B, C]
        return rank.sum(dim=0).to(batch.spikes.dtype)


@dataclass(frozen=True)
class SCA(Criterion):
    """Mean L1 norm of the pre-reset membrane potential: ``(1/(N T)) sum_{b,t} ||U[b,t,c]||_1``."""

    needs_pre_reset = True

    def __call__(self, batch: LayerBatch) -> Tensor:
        if batch.pre_reset is None:
            raise SpikeFitValueError(
                f"criterion 'sca' needs the pre-reset membrane potential of {batch.name!r}, and the "
                f"adapter does not report it (Adapter.pre_reset_membrane returned None); use another criterion"
            )
        u = batch.pre_reset
        return _sum_but_channels(u.abs()) / u.shape[0]


@dataclass(frozen=True)
class L1(Criterion):
    """L1 norm of each output filter of the producing layer's effective weight."""

    needs_data = False

    def __call__(self, batch: LayerBatch) -> Tensor:
        w = batch.producer_weight.detach()
        return w.abs().reshape(w.shape[0], -1).sum(dim=1)


@dataclass(frozen=True)
class Random(Criterion):
    """Uniform random scores, reproducible: seeded by ``seed`` and the layer's name."""

    seed: int = 0
    needs_data = False

    def __call__(self, batch: LayerBatch) -> Tensor:
        w = batch.producer_weight
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(batch.name.encode()))
        return torch.rand(w.shape[0], generator=g).to(w.device)


@dataclass(frozen=True)
class FunctionCriterion(Criterion):
    """A user callable ``fn(LayerBatch) -> Tensor[C]`` (per-channel sum over the batch)."""

    fn: Callable[[LayerBatch], Tensor]
    needs_grad = True
    needs_pre_reset = True

    def __call__(self, batch: LayerBatch) -> Tensor:
        return self.fn(batch)


CRITERIA: dict[str, Criterion] = {
    "fsc": FSC(),
    "svs": SVS(),
    "sca": SCA(),
    "taylor": Taylor(),
    "l1": L1(),
    "random": Random(),
}


def register_criterion(name: str, criterion: Criterion, *, replace: bool = False) -> Criterion:
    """Make ``criterion`` available to ``prune(..., criterion=name)``."""
    if not isinstance(name, str) or not name:
        raise SpikeFitTypeError(f"criterion name must be a non-empty str, got {name!r}")
    if not isinstance(criterion, Criterion):
        raise SpikeFitTypeError(
            f"criterion must be an snn_spikefit.importance.Criterion instance, got {type(criterion).__name__}"
        )
    refuse_duplicate("a criterion named", name, CRITERIA, replace=replace)
    CRITERIA[name] = criterion
    return criterion


def get_criterion(criterion: Union[str, Criterion, Callable]) -> Criterion:
    """A criterion by name, an instance as it is, or a plain callable wrapped."""
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(criterion, str):
        if criterion not in CRITERIA:
            raise SpikeFitValueError(f"criterion={criterion!r} is not known; use one of {sorted(CRITERIA)} "
                                     f"or a callable")
        return CRITERIA[criterion]
    if callable(criterion):
        return FunctionCriterion(criterion)
    raise SpikeFitTypeError(
        f"criterion must be a name {sorted(CRITERIA)}, a Criterion or a callable, got {type(criterion).__name__}"
    )
