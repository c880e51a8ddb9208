"""What :func:`~snn_spikefit.chipfit.fit_to_chip` and :func:`~snn_spikefit.chipfit.chip_sweep` return.

:class:`FitToChipReport`: the budget table (limit, before, after per rule), the per-layer
allocation, accuracy / energy / DeployRatio before and after, the core map, every candidate
tried, and :meth:`FitToChipReport.save_plot` (PNG of accuracy against budget use; needs the
``plots`` extra). :class:`SweepReport`: the candidates of a sweep and their Pareto front.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..deploy.check import CheckReport
from ..deploy.metrics import DeployReport
from ..pipeline.report import PLOTS_EXTRA, _figure, have_matplotlib
from ..reports import Report
from ..table import Table

__all__ = ["FitToChipReport", "SweepReport", "Candidate", "pareto_front"]


@dataclass(frozen=True)
class Candidate:
    """One allocation tried: its settings, what it uses of each budget, and how it did."""

    name: str
    m: int | None
    bits: int | None
    margin: float                       # the allocation budgets were scaled by this
    keep: dict[str, int]
    usage: dict[str, int]               # rule -> amount used after the surgery (check's count)
    ok: bool                            # check passed
    accuracy: float
    energy_mj: float | None
    size_mb: float
    dr_acc: float | None
    val_accuracy: float | None = None   # on the validation split held out of the training data

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self), keep=dict(self.keep), usage=dict(self.usage))


def _fmt(v: Any) -> Any:
    return "-" if v is None else v


@dataclass(frozen=True)
class FitToChipReport(Report):
    """Everything :func:`~snn_spikefit.chipfit.fit_to_chip` did; ``model`` is the fitted (frozen) copy."""

    profile: str
    objective: str
    settings: dict[str, Any]                       # m, bits, granularity, max_epochs, criterion
    budgets: tuple[tuple[str, Any, Any, Any], ...]  # (rule, limit, before, after)
    allocation: tuple[tuple[str, str, int, int], ...]  # (group neuron, producer layer, before, after)
    packing: tuple[str, ...]
    before: DeployReport
    after: DeployReport
    check_before: CheckReport
    check_after: CheckReport
    core_map: tuple[tuple[str, int, int, int], ...]  # (layer, core, first neuron, last neuron)
    candidates: tuple[Candidate, ...]
    model: nn.Module = field(repr=False, compare=False, default=None)
    chosen: int = -1                                 # index of the kept candidate in ``candidates``
    notes: tuple[str, ...] = ()                      # how it was chosen, uncertain limits used as budgets

    @property
    def ok(self) -> bool:
        """The fitted model passes ``check``."""
        return self.check_after.ok

    @property
    def cores(self) -> int:
        """Cores the core map uses."""
        return len(self.core_map)

    def table(self) -> Table:
        t = Table(["rule", "limit", "before", "after", "ok"],
                  title=f"fit to {self.profile} ({self.objective}): {'OK' if self.ok else 'FAILED'}")
        failed = {v.rule for v in self.check_after.errors}
        for rule, limit, before, after in self.budgets:
            t.add_row([rule, limit, _fmt(before), _fmt(after), "no" if rule in failed else "yes"])
        return t

    def allocation_table(self) -> Table:
        t = Table(["neuron", "layer", "channels_before", "channels_after"], title="per-layer allocation")
        for row in self.allocation:
            t.add_row(list(row))
        return t

    def metrics_table(self) -> Table:
        t = Table(["", "accuracy", "energy_mj", "dr_acc", "size_mb"], title="before / after")
        for name, r in (("before", self.before), ("after", self.after)):
            t.add_row([name, r.accuracy, _fmt(r.energy_mj), _fmt(r.dr_acc), r.size_mb])
        return t

    def candidate_table(self) -> Table:
        t = Table(["candidate", "margin", "ok", "val_accuracy", "accuracy", "chosen"], title="candidates tried")
        for i, c in enumerate(self.candidates):
            t.add_row([c.name, c.margin, "yes" if c.ok else "no", _fmt(c.val_accuracy), c.accuracy,
                       "yes" if i == self.chosen % max(len(self.candidates), 1) else ""])
        return t

    def core_table(self) -> Table:
        t = Table(["core", "layer", "first_neuron", "last_neuron"], title=f"core map ({self.cores} cores)")
        for layer, core, first, last in self.core_map:
            t.add_row([core, layer, first, last])
        return t

    def __str__(self) -> str:
        parts = [str(self.table()), str(self.allocation_table())]
        if self.packing:
            parts.append("packing: " + "; ".join(self.packing))
        if len(self.candidates) > 1:
            parts.append(str(self.candidate_table()))
        parts += list(self.notes)
        parts.append(str(self.metrics_table()))
        if len(self.core_map) <= 64:
            parts.append(str(self.core_table()))
        else:
            parts.append(f"core map: {self.cores} cores (see to_dict()['core_map'])")
        return "\n\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile, "objective": self.objective, "ok": self.ok, "settings": dict(self.settings),
            "budgets": [dict(zip(("rule", "limit", "before", "after"), b)) for b in self.budgets],
            "allocation": [dict(zip(("neuron", "layer", "channels_before", "channels_after"), a))
                           for a in self.allocation],
            "packing": list(self.packing), "before": self.before.to_dict(), "after": self.after.to_dict(),
            "check_before": self.check_before.to_dict(), "check_after": self.check_after.to_dict(),
            "core_map": [list(c) for c in self.core_map], "candidates": [c.to_dict() for c in self.candidates],
            "chosen": self.chosen % max(len(self.candidates), 1), "notes": list(self.notes),
        }

    def save_plot(self, path: str | os.PathLike) -> Path | None:
        """PNG of accuracy against budget use (the tightest budget, used / limit) of every candidate.

        Without matplotlib: one warning naming the ``plots`` extra, and ``None``.
        """
        return trade_off_plot(path, self.candidates, dict((b[0], b[1]) for b in self.budgets),
                              title=f"fit to {self.profile}: candidates tried")


def _use(c: Candidate, limits: dict[str, Any]) -> float:
    shares = [c.usage[r] / limits[r] for r in c.usage if isinstance(limits.get(r), (int, float)) and limits[r]]
    return max(shares, default=0.0)


def trade_off_plot(path: str | os.PathLike, candidates, limits: dict[str, Any], *, title: str) -> Path | None:
    if not have_matplotlib():
        warnings.warn(f"matplotlib is not installed: PNG plot skipped (pip install "
                      f"\"snn-spikefit[{PLOTS_EXTRA}]\")", UserWarning, stacklevel=3)
        return None
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for c in candidates:
        ax.scatter([_use(c, limits)], [c.accuracy], color="#1f77b4" if c.ok else "#d62728", marker="o")
        ax.annotate(c.name, (_use(c, limits), c.accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(1.0, color="#d62728", linestyle="--", label="budget limit")
    ax.set_xlabel("tightest budget: used / limit")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(path))
    return Path(path)


def pareto_front(candidates) -> list[int]:
    """Indices of the candidates that pass check and no other passing one beats on accuracy, energy and
    size at once (higher accuracy, lower energy and size; an unknown energy compares as equal)."""
    ok = [i for i, c in enumerate(candidates) if c.ok]

    def key(c):
        return (-c.accuracy, c.energy_mj if c.energy_mj is not None else 0.0, c.size_mb)

    front = []
    for i in ok:
        a = key(candidates[i])
        dominated = any(all(x <= y for x, y in zip(key(candidates[j]), a)) and key(candidates[j]) != a
                        for j in ok if j != i)
        if not dominated:
            front.append(i)
    return front


@dataclass(frozen=True)
class SweepReport(Report):
    """Every candidate of :func:`~snn_spikefit.chipfit.chip_sweep`; ``front`` indexes the Pareto front."""

    profile: str
    candidates: tuple[Candidate, ...]
    front: tuple[int, ...]
    limits: dict[str, Any]

    def table(self) -> Table:
        t = Table(["candidate", "m", "bits", "margin", "ok", "accuracy", "energy_mj", "size_mb", "pareto"],
                  title=f"sweep on {self.profile}: {len(self.front)} candidates on the Pareto front")
        for i, c in enumerate(self.candidates):
            t.add_row([c.name, _fmt(c.m), _fmt(c.bits), c.margin, "yes" if c.ok else "no", c.accuracy,
                       _fmt(c.energy_mj), c.size_mb, "yes" if i in self.front else ""])
        return t

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "limits": dict(self.limits), "front": list(self.front),
                "candidates": [c.to_dict() for c in self.candidates]}

    def save_plot(self, path: str | os.PathLike) -> Path | None:
        """PNG of accuracy against budget use of every candidate (None, one warning, without matplotlib)."""
        return trade_off_plot(path, self.candidates, self.limits, title=f"sweep on {self.profile}")
