"""The Pareto front of fitting a model to a chip: accuracy against energy and size over m, bits and
how far below the budgets the allocation goes."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..deploy.hardware import HardwareProfile, as_profile
from ..errors import SpikeFitValueError
from ..pipeline.steps import as_data
from .allocate import allocate
from .budgets import profile_budgets
from .fit import _check_args, _distill_kwargs, _Job, check_margins
from .report import SweepReport, pareto_front

__all__ = ["chip_sweep"]


def _values(name: str, values: Sequence) -> list:
    values = list(values)
    if not values:
        raise SpikeFitValueError(f"{name}={values!r} is not allowed; give at least one value")
    return values


def chip_sweep(model: nn.Module, data: Any, *, hardware: str | HardwareProfile, ms: Sequence[int | None] = (None,),
               bits: Sequence[int | None] = (None,), margins: Sequence[float] = (1.0, 0.75, 0.5),
               objective: str = "accuracy", max_epochs: int = 2, lr: float = 1e-3, granularity: str | None = None,
               criterion: str | Callable = "fsc", num_batches: int = 8, distill: bool | dict = False,
               num_steps: int | None = None, seed: int | None = 0, progress: bool | None = None) -> SweepReport:
    """Fit a copy of ``model`` for every ``m`` x ``bits`` x ``margin``; the candidates and their Pareto front.

    ``margin`` scales the allocation budgets (0.5: use at most half of each), so smaller margins trade
    accuracy for energy and size. ``None`` in ``ms``/``bits`` means the chip's own setting (as
    :func:`~snn_spikefit.wrap` chooses). Other arguments as for :func:`~snn_spikefit.chipfit.fit_to_chip`
    (every candidate is kept, so there is no validation split to choose among them).
    """
    profile = as_profile(hardware)
    _check_args(objective, max_epochs, lr, profile)
    margins = check_margins(margins)
    _distill_kwargs(distill)
    loaded = as_data(data, num_steps, 0 if seed is None else seed)
    candidates = []
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for m in _values("ms", ms):
            for b in _values("bits", bits):
                job = _Job(model, loaded, profile, m=m, bits=b, granularity=granularity, criterion=criterion,
                           num_batches=num_batches, progress=progress, distill=distill)
                for mg in margins:
                    limits = {r: v * mg for r, v in job.limits.items()}
                    keep = allocate(job.layout, job.scores, limits, objective=objective, cost=job.cost).keep
                    name = f"m={job.settings['m']} bits={job.settings['bits']} x{mg:g}"
                    *_, cand = job.candidate(keep, epochs=max_epochs, lr=lr, name=name, margin=mg)
                    candidates.append(cand)
    limits = profile_budgets(profile)
    return SweepReport(profile.name, tuple(candidates), tuple(pareto_front(candidates)), limits)
