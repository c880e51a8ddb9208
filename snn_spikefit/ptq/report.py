"""What :func:`snn_spikefit.compress_posttraining` did, per layer."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..reports import Report
from ..table import Table

__all__ = ["LayerPostTraining", "PostTrainingReport"]


@dataclass(frozen=True)
class LayerPostTraining:
    """One compressed layer."""

    layer: str
    type: str
    neuron: str            # the neuron fed by the layer ("-" for a read-out: K = I)
    decays: tuple          # per-step decay factors of the leak kernel (mean when they differ per neuron)
    bn_gain: bool          # a BatchNorm after the layer scaled the rows' errors
    inputs: int            # columns of H (in_features, or in_channels x kernel)
    weights: int
    pruned: int            # weights set to 0 by OBS
    zeros: int             # zero weights after compression (pruned, and rounded to 0)
    m_effective: int | None  # distinct values of the largest codebook (None: not quantized)
    error: float           # Hessian-weighted error / that of the weight itself (0 = exact)
    seconds: float


@dataclass(frozen=True)
class PostTrainingReport(Report):
    """Result of one-shot post-training compression (SBC pruning, GPTQ rounding, one-shot CAT)."""

    sparsity: float
    bits: int | None
    m: int | None
    granularity: str
    num_steps: int | None
    damping: float
    samples: int
    layers: tuple[LayerPostTraining, ...]
    seconds: float

    @property
    def achieved_sparsity(self) -> float:
        """Zero weights over all compressed weights."""
        total = sum(r.weights for r in self.layers)
        return sum(r.pruned for r in self.layers) / total if total else 0.0

    @property
    def method(self) -> str:
        parts = [f"OBS {self.sparsity:.0%} sparse"] if self.sparsity > 0 else []
        if self.m is not None:
            parts.append(f"one-shot CAT m={self.m}" + (f" b={self.bits}" if self.bits else ""))
        elif self.bits is not None:
            parts.append(f"GPTQ {self.bits}-bit uniform")
        return " + ".join(parts) or "unchanged"

    def table(self) -> Table:
        t = Table(["layer", "type", "neuron", "decays", "bn_gain", "inputs", "weights", "pruned", "zeros",
                   "m_effective",
                   "error", "seconds"],
                  title=(f"compress_posttraining: {self.method}, granularity={self.granularity}, "
                         f"{self.samples} calibration samples, T={self.num_steps}, damping={self.damping}; "
                         f"sparsity {self.achieved_sparsity:.4f}, {self.seconds:.2f} s"))
        for r in self.layers:
            t.add_row([r.layer, r.type, r.neuron, list(r.decays), r.bn_gain, r.inputs, r.weights, r.pruned,
                       r.zeros, r.m_effective, r.error, r.seconds])
        return t

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "layers"}
        out["method"], out["achieved_sparsity"] = self.method, self.achieved_sparsity
        out["layers"] = [dict(asdict(r), decays=list(r.decays)) for r in self.layers]
        return out
