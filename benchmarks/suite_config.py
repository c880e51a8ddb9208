"""What the benchmark suite runs: data budgets, the grid of methods, and the named modes (--quick, --full)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataBudget", "BenchConfig", "MODES"]


@dataclass(frozen=True)
class DataBudget:
    """Samples and epochs for one data set (``None``: the whole split)."""

    train: int | None
    test: int | None
    epochs: int                 # FP32 training
    finetune_epochs: int        # every compressed variant (and each QAT / centroid fine-tune)
    image_size: int | None = None  # resize (area average) to this side, None: as stored
    finetune: int | None = None    # training samples each fine-tune sees (first N, shuffled), None: all


@dataclass(frozen=True)
class BenchConfig:
    mode: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    budgets: dict[str, DataBudget]
    grid: tuple[tuple[int, int], ...]            # CAT (m, bits)
    cluster_ms: tuple[int, ...] = (2, 3, 4, 16)  # clustered baselines (INT8 grid)
    cluster_methods: tuple[str, ...] = ("kmeans", "minibatch", "uniform")  # non-kmeans only at m=4
    qp_bits: tuple[int, ...] = (2, 4, 8)
    prune_amount: float = 0.5
    num_steps: int = 4
    batch_size: int = 64
    lr: float = 5e-3            # FP32 (and the ReLU twin)
    finetune_lr: float = 1e-3   # every compressed variant
    finetune_schedule: str | None = "cosine"  # every fine-tune, every method alike
    recal_batches: int = 16     # BatchNorm re-estimation after every fine-tune
    channels: tuple[int, ...] = (16, 32)
    profile: str = "generic-45nm"
    trace_layer: int = 1        # which compressible layer the codebook plots show
    conversion_scales: tuple[float, ...] = (1.0, 0.5, 0.25)  # threshold scales tried (train batches)


_FULL_GRID = ((2, 2), (3, 2), (2, 4), (3, 4), (4, 4), (2, 8), (3, 8), (4, 8), (16, 8))
MODES = {
    "quick": BenchConfig("quick", ("digits",), (0,), {"digits": DataBudget(None, None, 8, 2)},
                         grid=((3, 2), (4, 4), (4, 8)), cluster_ms=(3, 4), qp_bits=(2, 4)),
    # sized for a shared 2-core machine (the whole suite under ~40 min there); see budget_text in the output
    "full": BenchConfig("full", ("fashion-mnist", "digits"), (0, 1, 2),
                        {"fashion-mnist": DataBudget(4000, 1000, 3, 1, finetune=2000),
                         "digits": DataBudget(None, None, 10, 2)}, grid=_FULL_GRID),
}
