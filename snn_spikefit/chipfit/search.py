"""The candidates :func:`~snn_spikefit.chipfit.fit_to_chip` tries, and the one it keeps.

For each margin ``mu`` (in the order given) the allocation budgets are ``mu * limit``; the
allocation (:func:`~snn_spikefit.chipfit.allocate.allocate`) is pruned, fine-tuned, frozen and
checked. When ``check`` still finds an allocation budget broken (the estimate assumed removed
channels carried as many synapses as kept ones), only those budgets are scaled by ``TIGHTEN`` and
the margin is tried again, at most ``max_tries`` times. An allocation already trained is not trained
twice.

The kept candidate is the one passing ``check`` with the highest validation accuracy (ties: the
earlier, i.e. larger, margin); without a validation split, the first passing one, and the margins
after it are not tried. When none passes, the last one tried is reported (``report.ok`` is False).
"""

from __future__ import annotations

from dataclasses import replace

from ..deploy.hardware import HardwareProfile
from ..errors import SpikeFitValueError
from .allocate import allocate
from .budgets import _FIELD, Layout, core_map, profile_budgets
from .report import FitToChipReport
from .usage import rule_usage

__all__ = ["search", "TIGHTEN"]

TIGHTEN = 0.85   # a budget still broken after the surgery is scaled by this for the next try


def _better(cand, best) -> bool:
    if best is None:
        return True
    if cand.ok != best.ok:
        return cand.ok
    if not cand.ok:  # none passes so far: the last one tried is reported
        return True
    return cand.val_accuracy is not None and cand.val_accuracy > best.val_accuracy


def _margin_tries(job, margin: float, *, objective: str, max_epochs: int, lr: float, max_tries: int, seen: dict,
                  skipped: list):
    """Yield ``(alloc, trained)`` for one margin: tighten the budgets check still finds broken.

    A margin (or a tightened try) no allocation meets -- the part of a budget no pruning lowers, such
    as the input layer's fan-in, is over it -- ends that margin's tries (said in ``skipped``).
    """
    limits = {r: v * margin for r, v in job.limits.items()}
    effective = margin
    for attempt in range(1, max_tries + 1):
        try:
            alloc = allocate(job.layout, job.scores, limits, objective=objective, cost=job.cost)
        except SpikeFitValueError as exc:
            skipped.append(f"margin {round(effective, 4):g} not tried: {exc}")
            return
        key = tuple(sorted(alloc.keep.items()))
        if key in seen:
            trained = seen[key]
        else:
            name = f"x{margin:g}" + (f" try {attempt}" if attempt > 1 else "")
            trained = job.candidate(alloc.keep, epochs=max_epochs, lr=lr, name=name, margin=round(effective, 4))
            seen[key] = trained
            yield alloc, trained
        report = trained[1]
        still = {v.rule for v in report.errors if v.rule in limits}
        if report.ok or not still:
            return
        for rule in still:  # tighten only what check still finds broken
            limits[rule] = limits[rule] * TIGHTEN
        effective *= TIGHTEN


def search(job, before, *, objective: str, max_epochs: int, lr: float, max_tries: int,
           margins: tuple[float, ...]) -> FitToChipReport:
    """Try every margin (see the module text); the report of the kept candidate."""
    candidates, best, best_i, seen, skipped = [], None, -1, {}, []
    for margin in margins:
        for alloc, trained in _margin_tries(job, margin, objective=objective, max_epochs=max_epochs, lr=lr,
                                            max_tries=max_tries, seen=seen, skipped=skipped):
            cand = trained[4]
            candidates.append(cand)
            if _better(cand, best):
                best, best_i, kept = cand, len(candidates) - 1, (alloc, trained)
        if job.val is None and best is not None and best.ok:
            break  # no validation data: the first passing margin is kept
    if best is None:  # every margin was refused: the first one names the budget
        raise SpikeFitValueError("; ".join(skipped))
    alloc, (model, report, after, facts, _) = kept
    return replace(_report(job, objective, max_epochs, before, after, report, model, facts, alloc, candidates,
                           best_i), notes=_notes(job, candidates, best_i) + tuple(skipped))


def _notes(job, candidates, chosen: int) -> tuple[str, ...]:
    notes = []
    if job.val is not None and candidates[chosen].ok:
        n = sum(len(y) for _, y in job.val)
        notes.append(f"chosen: {candidates[chosen].name}, the passing candidate with the highest accuracy on "
                     f"{n} validation samples held out of the training data; accuracy is on the test split")
    elif not candidates[chosen].ok:
        notes.append(f"no candidate passes check: reported is the last one tried ({candidates[chosen].name})")
    profile: HardwareProfile = job.profile
    soft = [r for r in profile_budgets(profile) if _FIELD[r] in profile.uncertain]
    if soft:
        notes.append(f"{', '.join(soft)}: marked uncertain in the {profile.name} profile (check warns, it does "
                     f"not fail); fit_to_chip keeps within {'it' if len(soft) == 1 else 'them'} all the same")
    if profile.cores is not None and profile.neurons_per_core is None:
        notes.append(f"cores: {profile.name} gives {profile.cores} cores but no neurons per core, so neither "
                     f"check nor fit_to_chip can count the cores a layer takes (not a budget here)")
    return tuple(notes)


def _report(job, objective, max_epochs, before, after, report, model, facts, alloc, candidates, chosen):
    used_before = rule_usage(job.facts_before, job.profile)
    used_after = rule_usage(facts, job.profile)
    budgets = tuple((r, lim, used_before.get(r), used_after.get(r)) for r, lim in profile_budgets(job.profile).items())
    allocation = tuple((g.neuron, g.producer, g.channels, alloc.keep[g.neuron]) for g in job.groups)
    after_layout = Layout(facts, [], job.profile)
    npc = job.profile.neurons_per_core
    cmap = () if npc is None else tuple(core_map(after_layout.layer_neurons({}), neurons_per_core=npc,
                                                 one_core_per_layer=job.profile.layer_fits_one_core))
    settings = dict(job.settings, max_epochs=max_epochs)
    return FitToChipReport(job.profile.name, objective, settings, budgets, allocation, tuple(alloc.packing), before,
                           after, job.check_before, report, cmap, tuple(candidates), model, chosen)
