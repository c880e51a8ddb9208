"""One-shot post-training compression (SBC, one-shot CAT) against the post-training baselines.

    python benchmarks/ptq.py --quick                    # digits, 1 seed (30 s wall: ptq_quick.md)
    python benchmarks/ptq.py --full --out benchmarks/results   # Fashion-MNIST, 3 seeds

Per data set and seed the FP32 conv SNN of the benchmark suite (``benchmarks/suite.py``: same
budget, same seed, so the same model) is trained once; every variant starts from a copy of it,
with no fine-tuning, and is measured by :func:`snn_spikefit.evaluate` on the test split:

* uniform 4-bit and 2-bit: SBC (``compress_posttraining(bits=b)``: spike-train Hessian, GPTQ
  rounding, clipping searched on the Hessian error) vs round-to-nearest (min-max scale per layer);
* codebooks m = 2, 3, 4, 16 on the INT8 grid, and m = 4 with 4-bit integers: one-shot CAT vs
  the suite's clustered post-training baseline (scikit-learn k-means on the INT8 grid), each
  with BatchNorm re-estimated on 16 training batches (the suite's treatment of k-means) and on
  the calibration samples only (what one-shot CAT is given), so both are compared on equal data;
  one-shot CAT also with last session's settings (``PREVIOUS``), measured in the same run (for
  uniform SBC those settings are the defaults again, so it has no such row; ``ptq_full_targets.md``
  was run while its default still had the asymmetric target and bias correction on: its header says
  how its two 4-bit rows were relabelled);
  SBC uniform also with BatchNorm re-estimated on the calibration samples (``recalibrate=True``);
* 50 / 80 / 90 % unstructured sparsity: SBC (OBS masks: exact greedy OBS on rows of at most 256
  inputs, SparseGPT's blockwise masks and lazy updates above; at 90 % also exact OBS everywhere)
  vs magnitude pruning, both with the same LAMP
  allocation over layers, and the synapse memory (8-bit weights) each chip really frees: all of it
  on chips that store non-zero synapses (``synapse_memory="nonzero"``: Loihi), none on chips that
  allocate whole crossbars (TrueNorth); next to FSC channel pruning (50 %, no fine-tune), which
  frees neurons and synapses on every chip;
* calibration size: 0.5, 1, 4, 16 samples per class (SBC 4-bit and one-shot CAT m=4 b=4);
* cost: CPU seconds of each compression vs one training epoch, one thread, same run.

Calibration: ``--per-class`` samples of each class from the training split (default 16). Results:
``ptq_<mode>.md`` (mean +- std over seeds), ``.csv``, ``_runs.csv`` and ``.json`` in ``--out``
(``ptq_<mode>_targets.*`` with ``--targets``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.suite import _Run, _seed_all  # noqa: E402
from benchmarks.suite_config import MODES  # noqa: E402
from snn_spikefit.baselines import cluster, freeze_baseline  # noqa: E402
from snn_spikefit.deploy.metrics import evaluate, model_size_bits  # noqa: E402
from snn_spikefit.ptq import compress_posttraining, lamp_counts  # noqa: E402
from snn_spikefit.pruning.prune import prune  # noqa: E402
from snn_spikefit.quantize.layers import COMPRESSIBLE_TYPES  # noqa: E402
from snn_spikefit.table import Table  # noqa: E402
from snn_spikefit.train import fit, recalibrate_bn  # noqa: E402

SPARSITIES = (0.5, 0.8, 0.9)
#: The sparsity at which SBC is also run with exact OBS on every layer (``pruner="obs"``: rows x n^3).
EXACT_OBS_AT = 0.9
CALIB_PER_CLASS = (0.5, 1, 4, 16)
CODEBOOKS = ((2, 8), (3, 8), (4, 8), (16, 8), (4, 4))
CHIPS = ("loihi", "truenorth")
#: compress_posttraining's settings before asymmetric calibration, bias correction and the codebook damping.
PREVIOUS = {"asymmetric": False, "bias_correction": False, "damping": 0.01}
PREVIOUS_LABEL = "no asymmetric target, no bias correction, 1 % damping"


def _layers(model):
    return [mod for mod in model.modules() if isinstance(mod, COMPRESSIBLE_TYPES)]


def calibration(train, per_class: float, seed: int) -> torch.Tensor:
    """``per_class`` training samples of each class (0.5: one sample of every other class)."""
    x, y = train.tensors
    g = torch.Generator().manual_seed(seed)
    classes = sorted(int(c) for c in y.unique())
    if per_class < 1:
        classes = classes[::round(1 / per_class)]
    picks = []
    for c in classes:
        idx = (y == c).nonzero().flatten()
        picks.append(idx[torch.randperm(idx.numel(), generator=g)[:max(1, int(per_class))]])
    return x[torch.cat(picks)]


@torch.no_grad()
def round_to_nearest(model, bits: int):
    """Symmetric per-layer grid ``s * k``, ``s = max|w| / (2^(b-1) - 1)``, each weight to its nearest point."""
    qmax = 2 ** (bits - 1) - 1
    for mod in _layers(model):
        s = mod.weight.abs().max() / qmax
        mod.weight.copy_(torch.clamp(torch.round(mod.weight / s), -qmax, qmax) * s)
    return model


@torch.no_grad()
def magnitude_prune(model, sparsity: float):
    """Remove the smallest-magnitude weights of each layer, as many as LAMP allocates to it."""
    layers = _layers(model)
    for mod, k in zip(layers, lamp_counts([m.weight for m in layers], sparsity)):
        if k:
            idx = mod.weight.abs().flatten().argsort()[:k]
            mod.weight.view(-1)[idx] = 0.0
    return model


def synapse_bits(model, chip: str) -> int:
    """Bits of the connection weights at 8 bits each, as ``chip`` stores them (see ``model_size_bits``)."""
    from snn_spikefit.deploy.hardware import get_profile

    weights = [m.weight.detach() for m in _layers(model)]
    probe = torch.nn.Sequential(*[torch.nn.Linear(1, 1, bias=False) for _ in weights])
    for lin, w in zip(probe, weights):  # 8-bit values: an int8 tensor of the same zeros
        lin.weight = torch.nn.Parameter((w != 0).to(torch.int8).reshape(w.shape[0], -1), requires_grad=False)
    return model_size_bits(probe, sparse=get_profile(chip).synapse_memory == "nonzero")[1]


class _Bench:
    def __init__(self, run: _Run, per_class: float) -> None:
        self.run, self.rows = run, []
        self.calib = calibration(run.train, per_class, run.seed)
        self.per_class = per_class

    def add(self, section: str, method: str, setting: str, build, *, memory: bool = False, **extra) -> Any:
        """One row: ``build`` applied to a copy of the FP32 model, its test accuracy and CPU seconds;
        ``memory``: also the synapse kbit each chip of :data:`CHIPS` stores for it."""
        _seed_all(self.run.seed)
        model = copy.deepcopy(self.run.fp32)
        t0 = time.process_time()
        built = build(model)
        model = built if isinstance(built, torch.nn.Module) else model  # verbs that change in place return a report
        cpu = time.process_time() - t0
        r = self.run.loader(shuffle=False)
        rep = evaluate(model, r, hardware=self.run.cfg.profile, num_steps=self.run.cfg.num_steps, progress=False)
        self.rows.append({"dataset": self.run.name, "seed": self.run.seed, "section": section, "method": method,
                          "setting": setting, "accuracy": rep.accuracy, "cpu_s": cpu, **extra})
        if memory:
            self.rows[-1].update({f"synapse_kbit_{c}": synapse_bits(model, c) / 1e3 for c in CHIPS})
        return model

    def ptq(self, model, calib=None, **kw):
        return compress_posttraining(model, self.calib if calib is None else calib, progress=False,
                                     num_steps=self.run.cfg.num_steps, **kw)


def _epoch_seconds(run: _Run) -> float:
    model = copy.deepcopy(run.fp32)
    t0 = time.process_time()
    fit(model, run.loader(), epochs=1, num_steps=run.cfg.num_steps, lr=run.cfg.lr, progress=False, recalibrate=False)
    return time.process_time() - t0


def _codebook_rows(b: _Bench, m_: int, bits: int) -> None:
    """k-means and one-shot CAT, each with BatchNorm re-estimated on 16 training batches and on the calibration set.

    The suite's k-means baseline re-estimates BN on 16 training batches (1024 images); one-shot CAT sees only
    the calibration samples. Both get both treatments, so the comparison at equal data is in the table.
    """
    run, setting = b.run, f"m={m_} b={bits}"

    def kmeans(model, recal):
        model = cluster(model, m=m_, method="kmeans", bits=bits, seed=run.seed)
        recal(model)
        return freeze_baseline(model)

    def calib_recal(model):
        recalibrate_bn(model, [(b.calib, None)], num_steps=run.cfg.num_steps, progress=False)

    def cat(model, recal=None):
        b.ptq(model, m=m_, bits=bits)
        if recal is not None:
            recal(model)
        return model

    b.add("codebook", "clustered post-training (k-means) + BN on 16 training batches", setting,
          lambda m: kmeans(m, run.recal))
    b.add("codebook", "clustered post-training (k-means) + BN on the calibration set", setting,
          lambda m: kmeans(m, calib_recal))
    b.add("codebook", "one-shot CAT", setting, cat)
    b.add("codebook", "one-shot CAT + BN on 16 training batches", setting, lambda m: cat(m, run.recal))
    b.add("codebook", "one-shot CAT, last session's settings (" + PREVIOUS_LABEL + ")", setting,
          lambda m: b.ptq(m, m=m_, bits=bits, **PREVIOUS))


def run_one(cfg, name: str, seed: int, per_class: float, progress: bool, targets: bool = False) -> list[dict]:
    """Every row for one seed; ``targets``: only the rows of the issue's targets (4-bit SBC, m = 2, 3, 4
    codebooks, the sparsity rows and their cost), for a machine too busy for the whole table."""
    run = _Run(cfg, name, seed, progress)
    b = _Bench(run, per_class)
    b.add("fp32", "FP32", "-", lambda m: m)
    for bits in (4,) if targets else (4, 2):
        if not targets:
            b.add("uniform", "round-to-nearest", f"{bits}-bit", lambda m, bits=bits: round_to_nearest(m, bits))
        b.add("uniform", "SBC (GPTQ, spike Hessian)", f"{bits}-bit", lambda m, bits=bits: b.ptq(m, bits=bits))
        if not targets:
            b.add("uniform", "SBC + BN re-estimated on the calibration set", f"{bits}-bit",
                  lambda m, bits=bits: b.ptq(m, bits=bits, recalibrate=True))
    for m_, bits in CODEBOOKS[:3] if targets else CODEBOOKS:
        _codebook_rows(b, m_, bits)
    for s in SPARSITIES:
        variants = [("magnitude (LAMP)", lambda m, s=s: magnitude_prune(m, s)),
                    ("SBC (LAMP; exact OBS up to 256 inputs, SparseGPT above)", lambda m, s=s: b.ptq(m, sparsity=s))]
        if s == EXACT_OBS_AT:
            variants.append(("SBC (LAMP; exact OBS everywhere)", lambda m, s=s: b.ptq(m, sparsity=s, pruner="obs")))
        for method, fn in variants:
            b.add("sparsity", method, f"{s:.0%}", fn, memory=True)
    if not targets:
        b.add("sparsity", "FSC channels (no fine-tune)", "50% channels", lambda m: prune(
            m, run.loader(), amount=0.5, criterion="fsc", num_steps=cfg.num_steps, progress=False), memory=True)
    for k in () if targets else CALIB_PER_CLASS:
        calib = calibration(run.train, k, seed)
        b.add("calibration", "SBC 4-bit", f"{k:g}/class ({calib.shape[0]})", lambda m, c=calib: b.ptq(m, c, bits=4))
        b.add("calibration", "one-shot CAT m=4 b=4", f"{k:g}/class ({calib.shape[0]})",
              lambda m, c=calib: b.ptq(m, c, m=4, bits=4))
    epoch = _epoch_seconds(run)
    for row in b.rows:
        row["epoch_cpu_s"] = epoch
    return b.rows


def _columns(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def summarize(rows: list[dict]) -> Table:
    """Mean and std of the accuracy over seeds, median CPU seconds (and per training epoch), synapse memory."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["section"], r["method"], r["setting"]), []).append(r)
    memory = [k for k in _columns(rows) if k.startswith("synapse_kbit_")]
    t = Table(["dataset", "section", "method", "setting", "seeds", "accuracy", "std", "cpu_s", "cpu/epoch"] + memory)
    for (ds, sec, meth, setting), rs in groups.items():
        acc = [r["accuracy"] for r in rs]
        cpu = statistics.median(r["cpu_s"] for r in rs)
        epoch = statistics.median(r["epoch_cpu_s"] for r in rs)
        mem = [statistics.mean(r[k] for r in rs) if rs[0].get(k) is not None else None for k in memory]
        t.add_row([ds, sec, meth, setting, len(rs), statistics.mean(acc),
                   statistics.stdev(acc) if len(acc) > 1 else 0.0, cpu, cpu / epoch, *mem])
    return t


def main(argv: list[str] | None = None) -> Table:
    ap = argparse.ArgumentParser(prog="python benchmarks/ptq.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", const="quick", dest="mode")
    group.add_argument("--full", action="store_const", const="full", dest="mode")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--seeds", type=int, help="number of seeds (first-seed .. first-seed + N - 1); 0: only --merge")
    ap.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--merge", metavar="JSON", action="append", default=[],
                    help="add the runs of an earlier ptq_<mode>.json (other seeds) to the summary; repeatable")
    ap.add_argument("--per-class", type=float, default=16, help="calibration samples per class (default 16)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--targets", action="store_true", help="only the rows of the issue's targets (see run_one)")
    args = ap.parse_args(argv)
    mode = args.mode or "quick"
    cfg = MODES[mode]
    datasets = ("fashion-mnist",) if mode == "full" else ("digits",)
    seeds = tuple(range(args.first_seed, args.first_seed + args.seeds)) if args.seeds is not None else cfg.seeds
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    start, rows = time.perf_counter(), []
    for name in datasets:
        for seed in seeds:
            rows += run_one(cfg, name, seed, args.per_class, not args.no_progress, args.targets)
    for path in args.merge:
        earlier = json.loads(Path(path).read_text())
        rows = [r for r in earlier["rows"] if r["seed"] not in seeds] + rows
        seeds = tuple(sorted(set(seeds) | set(earlier["seeds"])))
    table = summarize(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/ptq.py " + " ".join(argv if argv is not None else sys.argv[1:])
    budget = {n: vars(cfg.budgets[n]) for n in datasets}
    head = (f"# One-shot post-training compression ({mode})\n\ncommand: `{command}`\n\nseeds {list(seeds)}, "
            f"T={cfg.num_steps}, calibration {args.per_class:g} samples per class, budgets {budget}, "
            f"{time.perf_counter() - start:.0f} s wall\n\n")
    stem = f"ptq_{mode}" + ("_targets" if args.targets else "")
    (out / f"{stem}.md").write_text(head + table.to_markdown() + "\n")
    table.to_csv(out / f"{stem}.csv")
    cols = _columns(rows)
    Table(cols, rows=[[r.get(c) for c in cols] for r in rows]).to_csv(out / f"{stem}_runs.csv")
    (out / f"{stem}.json").write_text(json.dumps({"command": command, "seeds": list(seeds), "rows": rows},
                                                     indent=1, default=str))
    print(table)
    return table


if __name__ == "__main__":
    main()
