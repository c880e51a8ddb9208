"""Fit a model to a chip automatically: :func:`fit_to_chip` and its sweep, :func:`chip_sweep`."""

from .budgets import core_map, cores_needed, profile_budgets
from .fit import OBJECTIVES, fit_to_chip
from .sweep import chip_sweep
from .report import Candidate, FitToChipReport, SweepReport, pareto_front

__all__ = ["fit_to_chip", "chip_sweep", "FitToChipReport", "SweepReport", "Candidate", "pareto_front", "core_map",
           "cores_needed", "profile_budgets", "OBJECTIVES"]
