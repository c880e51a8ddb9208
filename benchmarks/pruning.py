"""Benchmark: channel-pruning criteria (FSC vs SVS, SCA, L1, Taylor, random) on Fashion-MNIST.

A conv SNN (snnTorch ``conv_snn``: Conv-BN-Leaky-AvgPool x2, Flatten, Linear;
Leaky(beta=0.5, threshold=1), direct encoding over T steps) is trained FP32 on a
Fashion-MNIST subset, once per seed. For every criterion and amount (25/50/75 %
of the channels of each spiking layer) a copy is pruned with
``snn_spikefit.prune`` on the same calibration batches and fine-tuned with the
same budget (same samples, epochs and learning rate), then evaluated on the
test subset. Accuracy mean +- std over seeds per criterion and amount goes to
``benchmarks/results/pruning_<mode>.md`` and ``.csv`` (per-run rows in
``pruning_<mode>_runs.csv``).

Scoring cost: the time ``prune(..., amount=0)`` takes (tracing + scoring on the
calibration batches) divided by the time of one training epoch (forward,
backward, Adam step) over the same calibration batches, measured in the same
run, best of 3 each. Target for FSC: <= 1.5.

Data: Debian package ``dataset-fashion-mnist`` (no download). Run:

    python benchmarks/pruning.py --quick     # a few minutes on 2 CPU cores
    python benchmarks/pruning.py             # full (under ~25 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import Subset

import snn_spikefit as sf
from snn_spikefit.zoo.snntorch import conv_snn
from snn_spikefit.data.datasets import fashion_mnist, make_loader
from snn_spikefit.pruning.importance import Random

CRITERIA = ("fsc", "svs", "sca", "taylor", "l1", "random")
AMOUNTS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Config:
    mode: str
    channels: tuple[int, int] = (16, 32)  # (32, 64) runs at ~15 samples/s on a loaded 2-core machine: too slow
    num_steps: int = 4
    train_samples: int = 4000
    train_epochs: int = 2
    test_samples: int = 1000
    finetune_samples: int = 1000
    finetune_epochs: int = 1
    calib_batches: int = 4
    batch_size: int = 64
    lr: float = 2e-3
    finetune_lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2)


QUICK = Config("quick", train_samples=1500, train_epochs=2, test_samples=500,
               finetune_samples=300, calib_batches=2, seeds=(0, 1))
FULL = Config("full")


def criterion_for(name: str, seed: int):
    return Random(seed=seed) if name == "random" else name


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def scoring_cost(model, calib, cfg: Config) -> dict[str, float]:
    """Seconds of scoring per criterion and of one training epoch over the same batches."""
    def train_epoch():
        sf.fit(copy.deepcopy(model), calib, epochs=1, num_steps=cfg.num_steps, lr=cfg.finetune_lr, progress=False)

    out = {"train_epoch": best_of(train_epoch)}
    for name in CRITERIA:
        work = copy.deepcopy(model)
        out[name] = best_of(lambda: sf.prune(work, calib, amount=0.0, criterion=criterion_for(name, 0),
                                             num_steps=cfg.num_steps, num_batches=len(calib), progress=False))
    return out


def run(cfg: Config, out_dir: Path) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train_all, test_all = fashion_mnist(limit_train=cfg.train_samples, limit_test=cfg.test_samples)
    test = make_loader(test_all, 256)
    print(f"config: {asdict(cfg)}")
    print(f"data: Fashion-MNIST, first {len(train_all)} train / {len(test_all)} test images; "
          f"threads={torch.get_num_threads()}")
    runs = sf.Table(["seed", "criterion", "amount", "channels", "params", "score_s", "accuracy", "base_accuracy"],
                    title="pruning runs")
    costs = sf.Table(["seed", "criterion", "score_s", "train_epoch_s", "ratio"], title="scoring cost vs one "
                     "training epoch over the same calibration batches (best of 3)")
    t_start = time.perf_counter()
    for seed in cfg.seeds:
        torch.manual_seed(seed)
        base = conv_snn(1, 10, 28, cfg.channels, batch_norm=True)
        sf.fit(base, make_loader(train_all, cfg.batch_size, shuffle=True, seed=seed), epochs=cfg.train_epochs,
               num_steps=cfg.num_steps, lr=cfg.lr, desc=f"train seed {seed}")
        base_acc = sf.accuracy(base, test, num_steps=cfg.num_steps)
        print(f"seed {seed}: FP32 base accuracy {base_acc:.2f} % ({time.perf_counter() - t_start:.0f} s)")
        g = torch.Generator().manual_seed(1000 + seed)
        order = torch.randperm(len(train_all), generator=g)
        calib_set = Subset(train_all, order[:cfg.calib_batches * cfg.batch_size].tolist())
        calib = list(make_loader(calib_set, cfg.batch_size))
        tune_set = Subset(train_all, order[:cfg.finetune_samples].tolist())
        cost = scoring_cost(base, calib, cfg)
        for name in CRITERIA:
            costs.add_row([seed, name, cost[name], cost["train_epoch"], cost[name] / cost["train_epoch"]])
        for amount in AMOUNTS:
            for name in CRITERIA:
                model = copy.deepcopy(base)
                t0 = time.perf_counter()
                report = sf.prune(model, calib, amount=amount, criterion=criterion_for(name, seed), num_steps=cfg.num_steps,
                                  num_batches=len(calib), progress=False)
                score_s = time.perf_counter() - t0
                torch.manual_seed(seed)
                sf.fit(model, make_loader(tune_set, cfg.batch_size, shuffle=True, seed=seed),
                       epochs=cfg.finetune_epochs, num_steps=cfg.num_steps, lr=cfg.finetune_lr, progress=False)
                acc = sf.accuracy(model, test, num_steps=cfg.num_steps)
                runs.add_row([seed, name, amount, [r.channels_after for r in report.layers], report.params_after,
                              score_s, acc, base_acc])
                print(f"  seed {seed} amount {amount:.2f} {name:7s} -> {acc:.2f} % "
                      f"({time.perf_counter() - t_start:.0f} s)", flush=True)
    write(cfg, runs, costs, out_dir, time.perf_counter() - t_start)


def summarise(runs: sf.Table, costs: sf.Table) -> tuple[sf.Table, sf.Table]:
    records = runs.records()
    amounts = sorted({r["amount"] for r in records})
    acc = sf.Table(["criterion"] + [f"{int(a * 100)} % pruned" for a in amounts],
                   title="test accuracy (%) after pruning + equal fine-tuning, mean +- std over seeds")
    for name in CRITERIA:
        cells = []
        for a in amounts:
            vals = [r["accuracy"] for r in records if r["criterion"] == name and r["amount"] == a]
            sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
            cells.append(f"{statistics.mean(vals):.2f} +- {sd:.2f}")
        acc.add_row([name] + cells)
    base = sorted({(r["seed"], r["base_accuracy"]) for r in records})
    vals = [b for _, b in base]
    sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
    acc.add_row(["(unpruned FP32)"] + [f"{statistics.mean(vals):.2f} +- {sd:.2f}"] * len(amounts))
    crec = costs.records()
    time_t = sf.Table(["criterion", "score_s", "train_epoch_s", "ratio", "target"],
                      title="scoring time / one training epoch over the same calibration batches (mean over seeds)")
    for name in CRITERIA:
        rows = [r for r in crec if r["criterion"] == name]
        ratio = statistics.mean(r["ratio"] for r in rows)
        time_t.add_row([name, statistics.mean(r["score_s"] for r in rows),
                        statistics.mean(r["train_epoch_s"] for r in rows), ratio,
                        "<= 1.5" + (" ok" if ratio <= 1.5 else " MISSED")])
    return acc, time_t


def write(cfg: Config, runs: sf.Table, costs: sf.Table, out_dir: Path, seconds: float) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    acc, time_t = summarise(runs, costs)
    stem = out_dir / f"pruning_{cfg.mode}"
    header = (f"# Pruning criteria on Fashion-MNIST ({cfg.mode} mode)\n\n"
              f"Conv SNN conv_snn(channels={cfg.channels}, batch_norm=True), T={cfg.num_steps}, "
              f"trained FP32 on the first {cfg.train_samples} training images for {cfg.train_epochs} epochs "
              f"(Adam lr={cfg.lr}); pruned with {cfg.calib_batches} calibration batches of {cfg.batch_size}; "
              f"fine-tuned {cfg.finetune_epochs} epoch(s) on {cfg.finetune_samples} images (lr={cfg.finetune_lr}); "
              f"tested on the first {cfg.test_samples} test images; seeds {list(cfg.seeds)}. "
              f"Total {seconds / 60:.1f} min on {torch.get_num_threads()} CPU threads.\n\n"
              f"Command: `python benchmarks/pruning.py{' --quick' if cfg.mode == 'quick' else ''}`\n")
    text = "\n\n".join([header, acc.to_markdown(), time_t.to_markdown(), costs.to_markdown()]) + "\n"
    Path(f"{stem}.md").write_text(text)
    acc.to_csv(f"{stem}.csv")
    runs.to_csv(f"{stem}_runs.csv")
    costs.to_csv(f"{stem}_cost.csv")
    print()
    print(acc)
    print()
    print(time_t)
    print(f"\nwrote {stem}.md, {stem}.csv, {stem}_runs.csv, {stem}_cost.csv ({seconds / 60:.1f} min)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small subsets, 2 seeds: a few minutes")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    run(QUICK if args.quick else FULL, args.out)


if __name__ == "__main__":
    main()
