"""What :func:`snn_spikefit.compress` returns: the compressed model, every measurement, the machine record.

The record (:meth:`CompressResult.to_dict`) is the JSON that ``spikefit compress`` writes next to its
NIR file; :meth:`CompressResult.save` writes the same four kinds of file the command writes (NIR,
JSON record, Markdown or HTML report, PNG plots).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nir
from torch import Tensor, nn

from ..deploy.check import CheckReport
from ..deploy.hardware import HardwareProfile
from ..deploy.metrics import DeployReport
from ..errors import SpikeFitValueError
from ..pruning.prune import PruneReport
from ..reports import Report
from ..table import Table
from .report import DR_COMPONENTS, write_report

__all__ = ["CompressResult"]


@dataclass
class CompressResult(Report):
    """The outcome of :func:`~snn_spikefit.compress` (the caller's model is left as it was)."""

    model: nn.Module                          # the compressed copy: frozen integer codes, codebooks, scales
    profile: HardwareProfile                  # the chip it was compressed for
    before: DeployReport                      # evaluate() of the original (after BatchNorm folding)
    after: DeployReport                       # evaluate() of the compressed model
    check_before: CheckReport
    check_after: CheckReport
    codebooks: Table                          # codebook_summary() of the compressed model
    layers: list[dict[str, Any]]              # per Linear/Conv layer: channels and distinct weights, before/after
    prune_report: PruneReport | None          # None without pruning
    losses: dict[str, list[float]]            # mean loss per epoch of each fine-tune
    timings: dict[str, float]                 # seconds per stage
    graph: nir.NIRGraph                       # the compressed model as NIR (in memory until saved)
    sample: Tensor                            # the one-sample input check() and export used
    record: dict[str, Any]                    # the machine record: JSON types only

    @property
    def ok(self) -> bool:
        """The compressed model breaks no rule of the chip (``check_after.ok``)."""
        return self.check_after.ok

    def to_dict(self) -> dict[str, Any]:
        """The machine record (a copy), as ``spikefit compress`` writes it to ``OUT.json``."""
        return copy.deepcopy(self.record)

    def comparison(self) -> Table:
        """DeployRatio and its components, before and after (the CSV form)."""
        t = Table(["metric", "before", "after", "unit"], title="DeployRatio components, before and after")
        before, after = self.record["before"], self.record["after"]
        for key, label, unit, _ in DR_COMPONENTS:
            t.add_row([key, before.get(key), after.get(key), unit])
        return t

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """:meth:`comparison` as CSV: ``metric,before,after,unit``."""
        return self.comparison().to_csv(path)

    def table(self, title: str | None = None) -> Table:
        """Original vs compressed: accuracy, size, energy, DR and the chip check (what the CLI prints)."""
        r = self.record
        name = self.profile.name
        t = Table(["model", "accuracy %", "parameters", "bits/weight", "size MB", "energy mJ", "DR_acc",
                   f"check {name}"],
                  title=title or f"{r['model']} compressed for {self.profile.title or name} (data {r['data']}, "
                                 f"T={r['num_steps']})")
        for label, rep, chk in (("original", self.before, self.check_before),
                                ("compressed", self.after, self.check_after)):
            t.add_row([label, rep.accuracy, rep.parameters, rep.bits_per_weight, rep.size_mb, rep.energy_mj,
                       rep.dr_acc, "OK" if chk.ok else f"{len(chk.errors)} violations"])
        return t

    def __str__(self) -> str:
        return f"{self.table()}\n\n{self.check_after}"

    def export_nir(self, path: str | os.PathLike) -> Path:
        """Write the compressed model's NIR graph (``spikefit.*`` metadata included) to ``path``."""
        nir.write(path, self.graph)
        return Path(path)

    def write_report(self, path: str | os.PathLike, *, format: str | None = None, plots: bool = True
                     ) -> list[Path]:
        """The human report (Markdown or HTML, PNG plots next to it); see :func:`~.report.write_report`."""
        return write_report(self.record, path, format=format, plots=plots)

    def save(self, out: str | os.PathLike, *, html: bool = False) -> list[Path]:
        """Write ``out`` (.nir), ``out``.json, ``out``.md (``.html``) and the PNG plots; return the files.

        The record's ``output`` and ``files`` are set to what was written (as ``spikefit compress`` does).
        """
        out = Path(out)
        if out.suffix != ".nir":
            raise SpikeFitValueError(f"out={str(out)!r} is not allowed; give a path ending in .nir")
        if not out.absolute().parent.is_dir():
            raise SpikeFitValueError(f"out={str(out)!r}: folder {str(out.parent)!r} does not exist")
        json_path, report_path = out.with_suffix(".json"), out.with_suffix(".html" if html else ".md")
        self.export_nir(out)
        self.record["output"] = str(out)
        self.record["files"] = [str(out), str(json_path)]
        self.record["files"] += [str(p) for p in self.write_report(report_path)]
        self.to_json(json_path)
        return [Path(p) for p in self.record["files"]]
