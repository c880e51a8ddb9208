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
import inspect
import math
from collections.abc import Iterable
from dataclasses import replace
from numbers import Real
from typing import Any, Callable

import torch
from torch import nn

from ..distill.distiller import Distiller
from ..deploy.check import ConstraintViolationError, check
from ..deploy.hardware import HardwareProfile, as_profile
from ..deploy.metrics import evaluate
from ..deploy.rules import layer_facts
from ..errors import SpikeFitValueError
from ..pipeline.steps import as_data, prepare_model, steps_to_trace
from ..pruning.importance import get_criterion
from ..pruning.prune import default_loss, score_channels
from ..pruning.surgery import prunable_layers, remove_channels
from ..quantize.bias import round_biases_for
from ..quantize.wrap import freeze
from ..train import accuracy, fit
from ..adapter import get_adapter
from .allocate import lower_bound
from .budgets import ALLOCATION_RULES, CODEBOOK_RULES, UNFIXABLE_RULES, Layout, profile_budgets
from .report import Candidate, FitToChipReport
from .search import search
from .validation import check_fraction, split_validation
from .usage import rule_usage

__all__ = ["fit_to_chip", "OBJECTIVES"]

OBJECTIVES = ("accuracy", "deploy_ratio", "energy")
#: The Distiller's keywords ``distill={...}`` may give (the teacher is the original model).
DISTILL_KEYS = tuple(k for k in inspect.signature(Distiller.__init__).parameters
                     if k not in ("self", "teacher", "student", "prune_report"))


class _Job:
    """The prepared state shared by every candidate: data, original, wrapped copy, groups, scores.

    ``data.train`` is what fine-tunes and scores (the training data less the validation split);
    ``val``: the held-out batches candidates are chosen on (``None``: no selection). ``all_groups``:
    find and score the prunable groups even on a chip with no allocation budget (a uniform baseline).
    """

    def __init__(self, model, data, profile, *, m, bits, granularity, criterion, num_batches, progress,
                 val=None, distill=None, all_groups=False):
        self.profile, self.data, self.progress, self.val = profile, data, progress, val
        self.distill = _distill_kwargs(distill)
        m, bits, granularity = profile.wrap_arguments(m=m, bits=bits, granularity=granularity)
        self.settings = {"m": m, "bits": bits, "granularity": granularity,
                         "criterion": criterion if isinstance(criterion, str) else type(criterion).__name__,
                         "distill": self.distill}
        s = {"m": m, "bits": bits, "granularity": granularity, "init": "kmeans", "exclude": None}
        self.original, self.work, self.sample, self.check_before = prepare_model(model, data, s, lambda text: None,
                                                                                 profile)
        self.steps = steps_to_trace(data)
        _refuse_unfixable(self.check_before, profile)
        self.limits = {r: v for r, v in profile_budgets(profile).items() if r in ALLOCATION_RULES}
        scored = self.limits or all_groups  # all_groups: prunable even where no allocation budget applies
        self.groups = prunable_layers(self.work, self.sample, num_steps=self.steps) if scored else []
        self.facts_before = layer_facts(self.original, self.sample, self.steps)
        self.layout = Layout(self.facts_before, self.groups, profile)
        _refuse_impossible(self.layout, self.limits, profile)
        self.scores = {}
        if self.groups:  # core packing may cut a layer that breaks no budget
            self.scores, _ = score_channels(self.work, self.groups, get_criterion(criterion), data.train,
                                            num_batches=num_batches, num_steps=data.num_steps, loss_fn=default_loss,
                                            progress=progress, desc="scoring channels")
        self.cost = {c.out_group: c.synapses / max(c.out_channels, 1) for c in self.layout.conns if c.out_group}

    def _kept(self, keep: dict[str, int]) -> dict[str, torch.Tensor]:
        """The channels each pruned group keeps (the highest scores), in channel order."""
        out = {}
        for g in self.groups:
            if keep[g.neuron] < g.channels:
                order = torch.sort(self.scores[g.neuron], descending=True, stable=True).indices
                out[g.neuron] = order[:keep[g.neuron]].sort().values
        return out

    def _fine_tune(self, model: nn.Module, kept: dict, epochs: int, lr: float, name: str) -> None:
        extra = {}
        if self.distill is not None:  # teacher: the original, its membranes cut to the kept channels
            extra = {"teacher": self.original,
                     "distill": dict(self.distill, prune_report={n: k.tolist() for n, k in kept.items()})}
        fit(model, self.data.train, epochs=epochs, num_steps=self.data.num_steps, lr=lr,
            progress=self.progress, desc=f"fine-tune {name}", **extra)

    def candidate(self, keep: dict[str, int], *, epochs: int, lr: float, name: str, margin: float):
        """Prune a copy of the wrapped model to ``keep``, fine-tune, freeze, check, measure."""
        model = copy.deepcopy(self.work)
        adapter = get_adapter(model)
        kept = self._kept(keep)
        for g in self.groups:
            if g.neuron in kept:
                remove_channels(model, adapter, g, kept[g.neuron])
        adapter.reset(model)
        if epochs > 0:
            self._fine_tune(model, kept, epochs, lr, name)
        freeze(model)
        round_biases_for(model, self.profile)
        report = check(model, self.profile, sample=self.sample, num_steps=self.steps)
        measured = evaluate(model, self.data.test, hardware=self.profile, num_steps=self.data.num_steps,
                            progress=self.progress)
        val = None if self.val is None else accuracy(model, self.val, num_steps=self.data.num_steps)
        facts = layer_facts(model, self.sample, self.steps)
        usage = {r: v for r, v in rule_usage(facts, self.profile).items() if r in self.limits}
        cand = Candidate(name, self.settings["m"], self.settings["bits"], margin, dict(keep), usage,
                         report.ok, measured.accuracy, measured.energy_mj, measured.size_mb, measured.dr_acc, val)
        return model, report, measured, facts, cand


def _distill_kwargs(distill: Any) -> dict | None:
    """``distill=`` as the Distiller's keywords: ``False``/``None`` none, ``True`` the defaults, a dict as given."""
    if distill is None or distill is False:
        return None
    if distill is True:
        return {}
    if isinstance(distill, dict):
        bad = [k for k in distill if k not in DISTILL_KEYS]
        if bad:
            raise SpikeFitValueError(f"distill={distill!r} is not allowed: {bad} are no Distiller keywords; use "
                                     f"{list(DISTILL_KEYS)} (prune_report is set by fit_to_chip)")
        return dict(distill)
    raise SpikeFitValueError(f"distill={distill!r} is not allowed; use False, True or a dict of Distiller keywords "
                             f"{list(DISTILL_KEYS)}")


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


def check_margins(margins: Any) -> tuple[float, ...]:
    """``margins`` (a list, tuple or other iterable) as a non-empty tuple of numbers in (0, 1]; anything else is
    refused by name."""
    values = tuple(margins) if isinstance(margins, Iterable) and not isinstance(margins, (str, bytes)) else None
    if not values or any(isinstance(v, bool) or not isinstance(v, Real) or not 0 < v <= 1 for v in values):
        raise SpikeFitValueError(f"margins={margins!r} is not allowed; use a non-empty tuple of numbers in (0, 1] "
                                 f"(1.0: keep as many channels as fit; 0.9: use at most 90% of each budget)")
    return tuple(float(v) for v in values)


def fit_to_chip(model: nn.Module, data: Any, *, hardware: str | HardwareProfile, objective: str = "accuracy",
                max_epochs: int = 2, lr: float = 1e-3, m: int | None = None, bits: int | None = None,
                granularity: str | None = None, criterion: str | Callable = "fsc", num_batches: int = 8,
                margins: tuple[float, ...] = (1.0, 0.9, 0.8), validation: float | None = 0.2,
                distill: bool | dict = False, max_tries: int = 4, num_steps: int | None = None,
                seed: int | None = 0, progress: bool | None = None) -> FitToChipReport:
    """Make a copy of ``model`` fit ``hardware``: codebooks and per-layer channel counts from its budgets.

    Args:
        model: any model :func:`~snn_spikefit.run` can run (not changed; the fitted copy is ``report.model``).
        data: as for :func:`~snn_spikefit.compress` (``LoadedData``, a source name, or ``(train, test)``).
        hardware: a profile name or :class:`~snn_spikefit.HardwareProfile`.
        objective: what the cuts spare: ``"accuracy"`` (channels by importance alone), ``"energy"`` or
            ``"deploy_ratio"`` (importance per synapse, so expensive channels go first).
        max_epochs: fine-tune epochs per candidate (CAT with the commitment loss; 0: none).
        m, bits, granularity: codebook settings; what is not given comes from the chip (``wrap(hardware=)``).
        criterion, num_batches: channel importance (default FSC) and its calibration batches.
        margins: the allocation budgets are scaled by each margin in turn (1.0: keep as many channels as
            fit; 0.8: use at most 80% of each), one candidate each (an allocation already tried is not
            trained again).
        validation: the fraction of the training data held out (:func:`split_validation`, seeded by
            ``seed``); the candidate passing ``check`` with the highest accuracy on it is kept (ties: the
            larger margin), and its *test* accuracy is reported. ``None``: no split, the margins are tried
            in order and the first that passes is kept.
        distill: distil from the original model while fine-tuning (``True``: the
            :class:`~snn_spikefit.Distiller` defaults; a dict: any of its keywords but ``prune_report``,
            e.g. ``membrane_weight``, ``logit_weight``, ``temperature``, ``teacher_bn``); the pruned layers' teacher
            membranes are cut to the kept channels.
        max_tries: allocations tried per margin; after the first, only budgets ``check`` still finds
            broken are tightened (by 15% each time).
        seed: seeds torch for the run (the caller's generator state is restored); ``None``: as it is.

    Raises:
        SpikeFitValueError: a bad argument, or a profile with no budget to fit.
        ConstraintViolationError: what no allocation fixes (check's structural rules, the model's inputs,
            a budget broken even with one channel per layer: which rule, and by how much); nothing ran.
    """
    profile = as_profile(hardware)
    _check_args(objective, max_epochs, lr, profile)
    margins, fraction = check_margins(margins), check_fraction(validation)
    _distill_kwargs(distill)
    loaded = as_data(data, num_steps, 0 if seed is None else seed)
    val = None
    if fraction is not None:
        loaded, val = split_validation(loaded, fraction, seed=0 if seed is None else seed)
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        job = _Job(model, loaded, profile, m=m, bits=bits, granularity=granularity, criterion=criterion,
                   num_batches=num_batches, progress=progress, val=val, distill=distill)
        before = evaluate(job.original, loaded.test, hardware=profile, num_steps=loaded.num_steps,
                          progress=progress)
        report = search(job, before, objective=objective, max_epochs=max_epochs, lr=lr, max_tries=max_tries,
                        margins=margins)
        notes = []
        while not report.ok:  # a membrane beyond the chip's state bits: no channel count fixes it, coarser weights do
            coarser, why = _coarser_bits(report, user_bits=bits, user_m=m)
            notes += [why] if why else []
            if coarser is None:
                break
            job = _Job(model, loaded, profile, m=None, bits=coarser, granularity=granularity, criterion=criterion,
                       num_batches=num_batches, progress=progress, val=val, distill=distill)
            report = search(job, before, objective=objective, max_epochs=max_epochs, lr=lr, max_tries=max_tries,
                            margins=margins)
        return replace(report, notes=tuple(notes) + report.notes) if notes else report


def _coarser_bits(report: FitToChipReport, *, user_bits, user_m) -> tuple[int | None, str]:
    """``(bits to fit again with, why)`` when ``membrane_range`` is the only error left; else ``(None, why)``.

    The state LSB is the input layer's weight LSB ``s`` (:func:`~snn_spikefit.neurons.state.default_scales`);
    a membrane ``v`` needs ``|v| / s`` LSBs. One weight bit fewer doubles ``s`` and halves that count,
    so a peak ``p`` over a limit ``P`` needs ``k = ceil(log2(p / P))`` bits fewer.
    """
    errors = report.check_after.errors
    rules = {v.rule for v in errors}
    bits = report.settings["bits"]
    if rules != {"membrane_range"}:
        return None, ""
    worst = max(errors, key=lambda v: v.actual / v.limit)
    k = max(1, math.ceil(math.log2(worst.actual / worst.limit)))
    head = (f"membrane_range: the membrane of {worst.layer} reaches {worst.actual} state LSBs, the chip holds "
            f"+-{worst.limit}; no channel allocation changes that (the LSB is the input weights' LSB)")
    if user_bits is not None or user_m is not None or bits is None or bits - k < 2:
        why = ("bits/m were given" if user_bits is not None or user_m is not None
               else f"{bits} - {k} weight bits would leave fewer than 2")
        return None, f"{head}; not refitted with coarser weights ({why}): lower the input weights or the threshold"
    return bits - k, f"{head}: refitted with bits={bits - k} ({k} fewer: a {2 ** k}x coarser LSB)"
