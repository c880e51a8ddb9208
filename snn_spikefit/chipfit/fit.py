"""Fit a model to a chip: the chip's budgets choose the codebooks and the channels each layer keeps.

    read the budgets (through the check rules) -> refuse what no allocation fixes -> wrap with the
    chip's codebook settings -> score channels (FSC) -> per-layer allocation + core packing ->
    prune -> fine-tune (CAT + commitment) -> freeze -> check; tighten only the budgets still broken

>>> from torch import nn
>>> from snn_spikefit.data import load_data
>>> fit_to_chip(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), load_data("digits", limit=32),
...             hardware="generic-45nm")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
snn_spikefit.errors.SpikeFitValueError: generic-45nm gives no budget to fit: ...
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

from ..deploy.check import ConstraintViolationError, check
from ..deploy.hardware import HardwareProfile, as_profile
from ..deploy.metrics import evaluate
from ..deploy.rules import layer_facts
from ..errors import SpikeFitValueError
from ..pipeline.steps import _as_data, _prepare, _trace_steps
from ..pruning.importance import get_criterion
from ..pruning.prune import _default_loss, _score
from ..pruning.surgery import prunable_layers, remove_channels
from ..quantize.wrap import freeze
from ..train import fit
from ..adapter import get_adapter
from .allocate import allocate, lower_bound
from .budgets import ALLOCATION_RULES, CODEBOOK_RULES, UNFIXABLE_RULES, Layout, core_map, profile_budgets
from .report import Candidate, FitToChipReport
from .usage import rule_usage

__all__ = ["fit_to_chip", "OBJECTIVES"]

OBJECTIVES = ("accuracy", "deploy_ratio", "energy")
TIGHTEN = 0.85   # a budget still broken after the surgery is scaled by this for the next try


class _Job:
    """The prepared state shared by every candidate: data, original, wrapped copy, groups, scores."""

    def __init__(self, model, data, profile, *, m, bits, granularity, criterion, num_batches, progress):
        self.profile, self.data, self.progress = profile, data, progress
        m, bits, granularity = profile.wrap_arguments(m=m, bits=bits, granularity=granularity)
        self.settings = {"m": m, "bits": bits, "granularity": granularity,
                         "criterion": criterion if isinstance(criterion, str) else type(criterion).__name__}
        s = {"m": m, "bits": bits, "granularity": granularity, "init": "kmeans", "exclude": None}
        self.original, self.work, self.sample, self.check_before = _prepare(model, data, s, lambda text: None,
                                                                             profile)
        self.steps = _trace_steps(data)
        _refuse_unfixable(self.check_before, profile)
        self.limits = {r: v for r, v in profile_budgets(profile).items() if r in ALLOCATION_RULES}
        self.groups = prunable_layers(self.work, self.sample, num_steps=self.steps) if self.limits else []
        self.facts_before = layer_facts(self.original, self.sample, self.steps)
        self.layout = Layout(self.facts_before, self.groups, profile)
        _refuse_impossible(self.layout, self.limits, profile)
        self.scores = {}
        if self.groups:  # core packing may cut a layer that breaks no budget
            self.scores, _ = _score(self.work, self.groups, get_criterion(criterion), data.train,
                                    num_batches=num_batches, num_steps=data.num_steps, loss_fn=_default_loss,
                                    progress=progress, desc="scoring channels")
        self.cost = {c.out_group: c.synapses / max(c.out_channels, 1) for c in self.layout.conns if c.out_group}

    def candidate(self, keep: dict[str, int], *, epochs: int, lr: float, name: str, margin: float,
                  work: nn.Module | None = None, m=None, bits=None):
        """Prune a copy of the wrapped model to ``keep``, fine-tune, freeze, check, measure."""
        model = copy.deepcopy(self.work if work is None else work)
        adapter = get_adapter(model)
        for g in self.groups:
            if keep[g.neuron] < g.channels:
                order = torch.sort(self.scores[g.neuron], descending=True, stable=True).indices
                remove_channels(model, adapter, g, order[:keep[g.neuron]].sort().values)
        adapter.reset(model)
        if epochs > 0:
            fit(model, self.data.train, epochs=epochs, num_steps=self.data.num_steps, lr=lr,
                progress=self.progress, desc=f"fine-tune {name}")
        freeze(model)
        report = check(model, self.profile, sample=self.sample, num_steps=self.steps)
        measured = evaluate(model, self.data.test, hardware=self.profile, num_steps=self.data.num_steps,
                            progress=self.progress)
        facts = layer_facts(model, self.sample, self.steps)
        usage = {r: v for r, v in rule_usage(facts, self.profile).items() if r in self.limits}
        cand = Candidate(name, m if m is not None else self.settings["m"],
                         bits if bits is not None else self.settings["bits"], margin, dict(keep), usage,
                         report.ok, measured.accuracy, measured.energy_mj, measured.size_mb, measured.dr_acc)
        return model, report, measured, facts, cand


def _refuse_unfixable(report, profile: HardwareProfile) -> None:
    found = [v for v in report.errors if v.rule in UNFIXABLE_RULES]
    if found:
        lines = "; ".join(f"{v.rule} at {v.layer}: {v.actual}, limit {v.limit} ({v.hint})" for v in found)
        raise ConstraintViolationError(f"no allocation can fit the model to {profile.name}, so nothing was done: "
                                       f"{lines}")


def _refuse_impossible(layout: Layout, limits: dict[str, float], profile: HardwareProfile) -> None:
    bad = lower_bound(layout, limits)
    if bad:
        lines = "; ".join(f"{rule} at {where} needs {used} even with one channel kept per prunable layer, "
                          f"limit {limits[rule]} (over by {used - limits[rule]})" for rule, (used, where) in bad.items())
        raise ConstraintViolationError(f"no allocation can fit the model to {profile.name}: {lines}")


def _check_args(objective, max_epochs, lr, profile: HardwareProfile) -> None:
    if objective not in OBJECTIVES:
        raise SpikeFitValueError(f"objective={objective!r} is not allowed; use one of {OBJECTIVES}")
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 0:
        raise SpikeFitValueError(f"max_epochs={max_epochs!r} is not allowed; use an int >= 0")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise SpikeFitValueError(f"lr={lr!r} is not allowed; use a number > 0")
    budgets = [r for r in profile_budgets(profile) if r in ALLOCATION_RULES + CODEBOOK_RULES]
    if not budgets:
        raise SpikeFitValueError(
            f"{profile.name} gives no budget to fit: it has no neuron, core, synapse, fan-in, weight-bit or "
            f"distinct-weight limit (an energy model only); use sf.evaluate(model, data, hardware="
            f"{profile.name!r}), or a chip profile (sf.list_profiles())")


def fit_to_chip(model: nn.Module, data: Any, *, hardware: str | HardwareProfile, objective: str = "accuracy",
                max_epochs: int = 2, lr: float = 1e-3, m: int | None = None, bits: int | None = None,
                granularity: str | None = None, criterion: str | Callable = "fsc", num_batches: int = 8,
                max_tries: int = 4, num_steps: int | None = None, seed: int | None = 0,
                progress: bool | None = None) -> FitToChipReport:
    """Make a copy of ``model`` fit ``hardware``: codebooks and per-layer channel counts from its budgets.

    Args:
        model: any model :func:`~snn_spikefit.run` can run (not changed; the fitted copy is ``report.model``).
        data: as for :func:`~snn_spikefit.compress` (``LoadedData``, a source name, or ``(train, test)``).
        hardware: a profile name or :class:`~snn_spikefit.HardwareProfile`.
        objective: what the cuts spare: ``"accuracy"`` (channels by importance alone), ``"energy"`` or
            ``"deploy_ratio"`` (importance per synapse, so expensive channels go first).
        max_epochs: fine-tune epochs per try (CAT with the commitment loss; 0: none).
        m, bits, granularity: codebook settings; what is not given comes from the chip (``wrap(hardware=)``).
        criterion, num_batches: channel importance (default FSC) and its calibration batches.
        max_tries: allocations tried; after the first, only budgets ``check`` still finds broken are
            tightened (by 15% each time).
        seed: seeds torch for the run (the caller's generator state is restored); ``None``: as it is.

    Raises:
        SpikeFitValueError: a bad argument, or a profile with no budget to fit.
        ConstraintViolationError: what no allocation fixes (check's structural rules, the model's inputs,
            a budget broken even with one channel per layer: which rule, and by how much); nothing ran.
    """
    profile = as_profile(hardware)
    _check_args(objective, max_epochs, lr, profile)
    loaded = _as_data(data, num_steps, 0 if seed is None else seed)
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        job = _Job(model, loaded, profile, m=m, bits=bits, granularity=granularity, criterion=criterion,
                   num_batches=num_batches, progress=progress)
        before = evaluate(job.original, loaded.test, hardware=profile, num_steps=loaded.num_steps,
                          progress=progress)
        return _search(job, before, objective=objective, max_epochs=max_epochs, lr=lr, max_tries=max_tries)


def _search(job: _Job, before, *, objective: str, max_epochs: int, lr: float, max_tries: int) -> FitToChipReport:
    limits = dict(job.limits)
    candidates, packing, margin = [], (), 1.0
    for attempt in range(1, max_tries + 1):
        alloc = allocate(job.layout, job.scores, limits, objective=objective, cost=job.cost)
        packing = alloc.packing
        model, report, after, facts, cand = job.candidate(alloc.keep, epochs=max_epochs, lr=lr,
                                                          name=f"try {attempt}", margin=round(margin, 4))
        candidates.append(cand)
        still = {v.rule for v in report.errors if v.rule in limits}
        if report.ok or not still:
            break
        for rule in still:  # tighten only what check still finds broken
            limits[rule] = limits[rule] * TIGHTEN
        margin *= TIGHTEN
    return _report(job, objective, max_epochs, before, after, report, model, facts, alloc.keep, packing,
                   candidates)


def _report(job, objective, max_epochs, before, after, report, model, facts, keep, packing, candidates):
    used_before = rule_usage(job.facts_before, job.profile)
    used_after = rule_usage(facts, job.profile)
    budgets = tuple((r, lim, used_before.get(r), used_after.get(r)) for r, lim in profile_budgets(job.profile).items())
    allocation = tuple((g.neuron, g.producer, g.channels, keep[g.neuron]) for g in job.groups)
    after_layout = Layout(facts, [], job.profile)
    npc = job.profile.neurons_per_core
    cmap = () if npc is None else tuple(core_map(after_layout.layer_neurons({}), neurons_per_core=npc,
                                                 one_core_per_layer=job.profile.layer_fits_one_core))
    settings = dict(job.settings, max_epochs=max_epochs)
    return FitToChipReport(job.profile.name, objective, settings, budgets, allocation, tuple(packing), before,
                           after, job.check_before, report, cmap, tuple(candidates), model)
