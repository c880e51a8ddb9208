"""The benchmark suite: CAT against the paper's baselines on real data, one command.

    python benchmarks/suite.py --quick                 # digits, 1 seed, a reduced grid (< 3 min)
    python benchmarks/suite.py --full --out benchmarks/results
    python benchmarks/suite.py --datasets digits --seeds 2

Per data set and seed, a conv SNN (snnTorch ``conv_snn``, BatchNorm, Leaky beta=0.5,
direct encoding over T steps) is trained FP32 once; every compressed variant starts
from it and gets the same fine-tune budget (samples, epochs, learning rate, BatchNorm
re-estimation on the same batches afterwards):

* CAT (``wrap`` + ``fit``) for every ``(m, bits)`` of the grid, then ``freeze``;
* the clustered baseline: INT8 QAT, scikit-learn k-means (and mini-batch k-means,
  uniform) into ``m`` centroids on the INT8 grid, centroid fine-tune; its ANN -> SNN
  conversion path (ReLU twin trained with the same budget at T=1, QAT, clustered,
  converted with threshold balancing); the plain post-training variant;
* TTQ (three values, first/last layer FP32) and QP-SNN (uniform ``b`` bits, ReScaW);
* FSC pruning (``prune``, 50 % of the channels) of FP32 and of CAT m=4, then fine-tune.

Everything is measured by :func:`snn_spikefit.evaluate` (generic-45nm profile) after
freezing to integer codes. Results: ``bench_<mode>.md`` (Table-2 style, mean +- std
over seeds), ``.csv``, ``_runs.csv``, ``.json`` and PNG plots, in ``--out``. The modes and budgets
live in ``suite_config.py``, the writing of results in ``suite_report.py``.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset, TensorDataset

from snn_spikefit.baselines import cluster, convert_to_snn, freeze_baseline, qat, qpsnn, relu_twin, ttq
from snn_spikefit.data.datasets import digits, fashion_mnist, make_loader
from snn_spikefit.deploy.metrics import evaluate
from snn_spikefit.pruning.prune import prune
from snn_spikefit.table import Table
from snn_spikefit.train import accuracy, fit, recalibrate_bn
from snn_spikefit.quantize.layers import compressed_layers
from snn_spikefit.quantize.wrap import freeze, wrap

if __package__ in (None, ""):  # run as a script (python benchmarks/suite.py): make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.suite_config import MODES, BenchConfig, DataBudget  # noqa: E402
from benchmarks.suite_report import budget_text, summarize, verdicts, write_results  # noqa: E402

__all__ = ["BenchConfig", "DataBudget", "MODES", "run_suite", "summarize", "write_results", "main"]


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _data(name: str, budget: DataBudget) -> tuple[TensorDataset, TensorDataset]:
    if name == "fashion-mnist":
        train, test = fashion_mnist(limit_train=budget.train, limit_test=budget.test)
    else:
        train, test = digits()
    out = []
    for ds, limit in ((train, budget.train), (test, budget.test)):
        x, y = ds.tensors
        x, y = x[:limit], y[:limit]
        if budget.image_size is not None and budget.image_size != x.shape[-1]:
            x = F.adaptive_avg_pool2d(x, budget.image_size)
        out.append(TensorDataset(x.contiguous(), y))
    return out[0], out[1]


class _Snapshots:
    """Iterate ``loader`` and call ``fn`` before each batch (i.e. after each optimizer step) and at the end."""

    def __init__(self, loader, fn) -> None:
        self.loader, self.fn, self.values = loader, fn, []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.values.append(self.fn())
            yield batch
        self.values.append(self.fn())


class _Run:
    """One data set and seed: the FP32 model, its loaders and every variant's row."""

    def __init__(self, cfg: BenchConfig, name: str, seed: int, progress: bool) -> None:
        from snn_spikefit.zoo.snntorch import conv_snn

        self.cfg, self.name, self.seed, self.progress = cfg, name, seed, progress
        self.clock = time.perf_counter()
        self.verbose = False
        self.budget = cfg.budgets[name]
        self.train, self.test = _data(name, self.budget)
        x0 = self.train.tensors[0]
        self.rows: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        _seed_all(seed)
        self.fp32 = conv_snn(in_channels=x0.shape[1], num_classes=10, image_size=x0.shape[-1],
                             channels=cfg.channels, batch_norm=True)
        fit(self.fp32, self.loader(), epochs=self.budget.epochs, num_steps=cfg.num_steps, lr=cfg.lr,
            progress=progress, desc=f"{name} s{seed} FP32", recalibrate=False)

    def loader(self, shuffle: bool = True, finetune: bool = False):
        if not shuffle:
            return make_loader(self.test, 256)
        data = self.train
        if finetune and self.budget.finetune is not None:
            data = Subset(self.train, range(min(self.budget.finetune, len(self.train))))
        return make_loader(data, self.cfg.batch_size, shuffle=True, seed=self.seed, drop_last=True)

    @property
    def matched_epochs(self) -> int:
        """Epochs for a one-stage method: the clustered pipeline's QAT + centroid fine-tunes together."""
        return 2 * self.budget.finetune_epochs

    def finetune(self, model, desc: str, *, epochs: int | None = None, num_steps: int | None = None,
                 data=None) -> None:
        cfg = self.cfg
        steps = cfg.num_steps if num_steps is None else num_steps
        fit(model, data or self.loader(finetune=True), epochs=self.budget.finetune_epochs if epochs is None else epochs,
            num_steps=steps, lr=cfg.finetune_lr, progress=self.progress, desc=f"{self.name} s{self.seed} {desc}",
            recalibrate=False, schedule=cfg.finetune_schedule)
        self.recal(model, num_steps=steps)

    def recal(self, model, num_steps: int | None = None) -> None:
        recalibrate_bn(model, self.loader(), num_steps=self.cfg.num_steps if num_steps is None else num_steps,
                       num_batches=self.cfg.recal_batches, progress=False)

    def record(self, model, method: str, m: int | None, bits: int | None, note: str = "") -> None:
        r = evaluate(model, self.loader(shuffle=False), hardware=self.cfg.profile, num_steps=self.cfg.num_steps,
                     progress=False)
        if self.verbose:
            print(f"{self.name} s{self.seed} {method} m={m} bits={bits}: {r.accuracy:.2f}% "
                  f"({time.perf_counter() - self.clock:.0f}s)", flush=True)
            self.clock = time.perf_counter()
        self.rows.append({"dataset": self.name, "seed": self.seed, "method": method, "m": m, "bits": bits,
                          "accuracy": r.accuracy, "f1": r.f1, "size_mb": r.size_mb, "sops": r.acs,
                          "macs": r.macs, "energy_mj": r.energy_mj, "dr_acc": r.dr_acc, "dr_f1": r.dr_f1,
                          "latency_s": r.latency_s, "note": note})

    def variant(self, method: str, m, bits, build, note: str = "") -> Any:
        _seed_all(self.seed)  # each variant starts from the same random state, whatever ran before
        model = build()
        self.record(model, method, m, bits, note)
        return model


def _run_one(cfg: BenchConfig, name: str, seed: int, progress: bool, verbose: bool = False) -> _Run:
    run = _Run(cfg, name, seed, progress)
    run.verbose = verbose
    fp32 = run.fp32
    run.record(fp32, "FP32", None, 32)

    def build_fp32_ft():  # control: what the fine-tune budget alone gives, with no compression
        model = copy.deepcopy(fp32)
        run.finetune(model, "FP32 fine-tune", epochs=run.matched_epochs)
        return model
    run.variant("FP32 + fine-tune", None, 32, build_fp32_ft, "control: FP32 trained on with the same fine-tune budget")
    layer_name = [n for n, _ in _compressible(fp32)][cfg.trace_layer]
    run.extra["fp32_weights"] = dict(fp32.named_modules())[layer_name].weight.detach().flatten().tolist()
    run.extra["trace_layer"] = layer_name
    cat_models = _cat_grid(run, layer_name)
    _clustered(run)
    _conversion(run, layer_name)
    _few_values(run)
    _pruned(run, cat_models)
    return run


def _cat_grid(run: _Run, layer_name: str) -> dict[tuple[int, int], Any]:
    """CAT for every (m, bits) of the grid; the trained (unfrozen) models, for pruning."""
    fp32, cat_models = run.fp32, {}
    for m, bits in run.cfg.grid:
        def build_cat(m=m, bits=bits):
            model = wrap(copy.deepcopy(fp32), m=m, bits=bits)
            q = dict(model.named_modules())[layer_name].parametrizations.weight[0]
            snaps = _Snapshots(run.loader(finetune=True), lambda: q.codebook_values().detach().flatten().tolist())
            run.finetune(model, f"CAT m={m} b={bits}", data=snaps, epochs=run.matched_epochs)
            if (m, bits) == (4, 4) or (m == 4 and "cat_trace" not in run.extra):
                run.extra["cat_trace"] = {"m": m, "bits": bits, "values": snaps.values}
            cat_models[(m, bits)] = copy.deepcopy(model)
            return freeze(model)
        run.variant("CAT", m, bits, build_cat)
    return cat_models


def _clustered(run: _Run) -> None:
    """INT8 QAT, then clustering into m centroids on the INT8 grid (+ fine-tune), and the post-training variant."""
    cfg, fp32, seed = run.cfg, run.fp32, run.seed
    qat_model = None

    def build_qat():
        nonlocal qat_model
        qat_model = qat(copy.deepcopy(fp32), bits=8)
        run.finetune(qat_model, "QAT int8")
        return freeze_baseline(copy.deepcopy(qat_model))
    run.variant("QAT INT8", 255, 8, build_qat, "per-layer INT8 grid")
    for method in cfg.cluster_methods:
        for m in (cfg.cluster_ms if method == "kmeans" else [m for m in cfg.cluster_ms if m == 4]):
            def build_cl(m=m, method=method):
                model = cluster(copy.deepcopy(qat_model), m=m, method=method, bits=8, seed=seed)
                run.recal(model)
                run.finetune(model, f"cluster {method} m={m}")
                return freeze_baseline(model)
            run.variant(f"Clustered QAT ({method})", m, 8, build_cl)
    for m in cfg.cluster_ms:
        def build_ptq(m=m):
            model = cluster(copy.deepcopy(fp32), m=m, method="kmeans", bits=8, seed=seed)
            run.recal(model)
            return freeze_baseline(model)
        run.variant("Clustered post-training (kmeans)", m, 8, build_ptq, "no QAT, no fine-tune")


def _few_values(run: _Run) -> None:
    """TTQ, CAT under TTQ's rules, and QP-SNN for every ``qp_bits``."""
    fp32 = run.fp32

    def build_cat_ttq_layers():  # CAT under TTQ's own rules: 3 float values, first/last layer FP32
        names = [n for n, _ in _compressible(fp32)]
        model = wrap(copy.deepcopy(fp32), m=3, bits=None, exclude=[names[0], names[-1]])
        run.finetune(model, "CAT m=3 first/last FP32", epochs=run.matched_epochs)
        return freeze(model)
    run.variant("CAT (first/last FP32)", 3, None, build_cat_ttq_layers, "as TTQ: first/last layer FP32")

    def build_ttq():
        model = ttq(copy.deepcopy(fp32), threshold=0.05)
        run.finetune(model, "TTQ", epochs=run.matched_epochs)
        return freeze_baseline(model)
    run.variant("TTQ", 3, None, build_ttq, "first/last layer FP32")
    for bits in run.cfg.qp_bits:
        def build_qp(bits=bits):
            model = qpsnn(copy.deepcopy(fp32), bits=bits)
            run.finetune(model, f"QP-SNN b={bits}", epochs=run.matched_epochs)
            return freeze_baseline(model)
        run.variant("QP-SNN (ReScaW)", 2 ** bits - 1, bits, build_qp, "levels per channel")


def _pruned(run: _Run, cat_models: dict[tuple[int, int], Any]) -> None:
    """FSC pruning of FP32 and of CAT m=4 (b=4 if in the grid), then fine-tune."""
    cfg, fp32, amount = run.cfg, run.fp32, run.cfg.prune_amount
    pruned = [("FP32", None, 32, lambda: copy.deepcopy(fp32))]
    key = (4, 4) if (4, 4) in cat_models else next((k for k in cat_models if k[0] == 4), None)
    if key is not None:
        pruned.append(("CAT", key[0], key[1], lambda: cat_models[key]))
    for base, m, bits, source in pruned:
        def build_pruned(source=source, base=base):
            model = source()
            prune(model, run.loader(), amount=amount, criterion="fsc", num_steps=cfg.num_steps, progress=False)
            run.finetune(model, f"{base}+FSC")
            return freeze(model) if compressed_layers(model) else model
        run.variant(f"{base} + FSC {int(amount * 100)}%", m, bits, build_pruned, "channels of every spiking layer")


def _compressible(model):
    from snn_spikefit.quantize.layers import COMPRESSIBLE_TYPES
    return [(n, mod) for n, mod in model.named_modules() if isinstance(mod, COMPRESSIBLE_TYPES)]


def _conversion(run: _Run, layer_name: str) -> None:
    """The paper's path: ReLU twin (T=1) trained like FP32, QAT, k-means, centroid fine-tune, -> SNN."""
    cfg = run.cfg
    _seed_all(run.seed)
    ann = relu_twin(run.fp32)
    for mod in ann.modules():  # same initialisation scheme as the SNN, fresh weights
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    fit(ann, run.loader(), epochs=run.budget.epochs, num_steps=1, lr=cfg.lr, progress=run.progress,
        desc=f"{run.name} s{run.seed} ANN", recalibrate=False)
    run.extra.setdefault("ann_accuracy", accuracy(ann, run.loader(shuffle=False), num_steps=1))
    qat(ann, bits=8)
    run.finetune(ann, "ANN QAT", num_steps=1)
    calib = [b for b, _ in zip(run.loader(), range(8))]
    from snn_spikefit.zoo.snntorch import conv_snn

    x0 = run.train.tensors[0]
    # the model's own Leaky(beta=0.5) neurons, and IF neurons (beta=1), the usual conversion target:
    # with beta=0.5 a neuron never fires below half its threshold, which erases small activations at T=4
    templates = [("LIF beta=0.5", run.fp32),
                 ("IF", conv_snn(x0.shape[1], 10, x0.shape[-1], cfg.channels, batch_norm=True, beta=1.0))]
    for m in cfg.cluster_ms:
        _seed_all(run.seed)
        clustered = cluster(copy.deepcopy(ann), m=m, method="kmeans", bits=8, seed=run.seed)
        run.recal(clustered, num_steps=1)
        run.finetune(clustered, f"ANN cluster m={m}", num_steps=1)
        freeze_baseline(clustered)
        ann_acc = accuracy(clustered, calib, num_steps=1)
        for label, template in templates:
            best = max(cfg.conversion_scales, key=lambda s: accuracy(
                convert_to_snn(clustered, template, calib, scale=s), calib, num_steps=cfg.num_steps))
            snn = convert_to_snn(clustered, template, calib, scale=best)
            run.record(snn, f"Clustered QAT -> SNN conversion ({label})", m, 8,
                       f"threshold scale {best} (chosen on 8 train batches); ANN train-batch acc {ann_acc:.1f}%")


def run_suite(cfg: BenchConfig, *, progress: bool = True, verbose: bool = False, on_run=None
              ) -> tuple[list[dict], dict[str, Any]]:
    """Run every data set and seed of ``cfg``; returns (per-run rows, plot data per data set).

    ``progress``: tqdm bars; ``verbose``: one line per measured variant (accuracy, seconds).
    """
    torch.use_deterministic_algorithms(True, warn_only=True)
    rows, extra = [], {}
    for name in cfg.datasets:
        for seed in cfg.seeds:
            run = _run_one(cfg, name, seed, progress, verbose)
            rows += run.rows
            if seed == cfg.seeds[0]:
                extra[name] = run.extra
            if on_run is not None:  # e.g. write partial results
                on_run(rows, extra)
    return rows, extra


def main(argv: list[str] | None = None) -> Table:
    ap = argparse.ArgumentParser(prog="python benchmarks/suite.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", const="quick", dest="mode")
    group.add_argument("--full", action="store_const", const="full", dest="mode")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--datasets", nargs="+", choices=["fashion-mnist", "digits"])
    ap.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    cfg = MODES[args.mode or "quick"]
    if args.datasets:
        budgets = {**MODES["full"].budgets, **cfg.budgets}
        cfg = replace(cfg, datasets=tuple(args.datasets), budgets={d: budgets[d] for d in args.datasets})
    if args.seeds:
        cfg = replace(cfg, seeds=tuple(range(args.seeds)))
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # decaying membranes reach denormals, which are slow on CPUs
    print(budget_text(cfg), flush=True)
    start = time.perf_counter()
    command = "python benchmarks/suite.py " + " ".join(argv if argv is not None else sys.argv[1:])
    partial = lambda rows, extra: write_results(cfg, rows, extra, Path(args.out), time.perf_counter() - start,  # noqa
                                                command.strip() + "  (partial: runs so far)")
    rows, extra = run_suite(cfg, progress=not args.no_progress, verbose=True, on_run=partial)
    seconds = time.perf_counter() - start
    summary = write_results(cfg, rows, extra, Path(args.out), seconds, command.strip())
    print(summary)
    print("\n".join(verdicts(summary)))
    print(f"\n{seconds / 60:.1f} min; results in {args.out}/bench_{cfg.mode}.*")
    return summary


if __name__ == "__main__":
    main()
