"""Benchmark: ``fit_to_chip`` against the best uniform ``--prune`` ratio that also passes ``check``.

For each chip, a dense (or conv) SNN built 2-4x over one of the chip's budgets is trained FP32 on
digits (``pretrain`` epochs), once per seed. Then, from the same trained model, with the same
codebooks (the chip's, as ``wrap(hardware=)`` chooses), the same FSC scores and the same fine-tune
budget (``epochs`` epochs of CAT + commitment per candidate):

* ``fit_to_chip``: the per-layer allocation from the budgets (plus core packing);
* uniform: every ratio of the grid 0.1 .. 0.9 (``floor(ratio * C)`` channels of every prunable
  layer removed, by FSC, as ``sf.prune(amount=ratio)`` does); a ratio whose allocation the budget
  estimate already rejects is not trained; the best test accuracy among those passing ``check``.

Accuracy is on the digits test split (450 samples). Writes ``benchmarks/results/chipfit_vs_uniform.md``.

    python benchmarks/chipfit_vs_uniform.py              # truenorth, dynap-se2, xylo, spinnaker, tianjic
    python benchmarks/chipfit_vs_uniform.py --loihi      # adds Loihi (a conv net on 32x32 digits; slow)
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

import snn_spikefit as sf
from snn_spikefit.chipfit.fit import _Job
from snn_spikefit.data import LoadedData, load_data
from snn_spikefit.data.datasets import digits
from snn_spikefit.data.sources import DataOptions
from snn_spikefit.zoo.snntorch import conv_snn, dense_snn

GRID = tuple(round(0.1 * i, 1) for i in range(1, 10))


def _images(transform, name: str, classes: int = 10) -> LoadedData:
    train, test = digits()
    keep_tr, keep_te = train.tensors[1] < classes, test.tensors[1] < classes
    tr = TensorDataset(transform(train.tensors[0][keep_tr]), train.tensors[1][keep_tr])
    te = TensorDataset(transform(test.tensors[0][keep_te]), test.tensors[1][keep_te])
    return LoadedData.from_splits(tr, te, name=name, options=DataOptions(num_steps=4, seed=0))


def _xylo_net(*hidden: int):
    """What Xylo runs: CUBA-LIF (snnTorch Synaptic) with bit-shift decays, no bias, 8 readout neurons, 16 inputs."""
    import snntorch as snn
    from torch import nn

    layers, width = [], 16
    for h in (*hidden, 8):
        layers += [nn.Linear(width, h, bias=False), snn.Synaptic(alpha=0.5, beta=0.875, init_hidden=True)]
        width = h
    layers[-1] = snn.Synaptic(alpha=0.5, beta=0.875, init_hidden=True, output=True)
    return nn.Sequential(*layers)


def cases(loihi: bool):
    plain = load_data("digits", num_steps=4)
    out = [("truenorth", lambda: dense_snn(64, 10, hidden=(300, 300)), plain, "fan_in 300 / 256"),
           ("dynap-se2", lambda: dense_snn(64, 10, hidden=(200,)), plain, "fan_in 200 / 64"),
           ("tianjic", lambda: dense_snn(64, 10, hidden=(600,)), plain, "fan_in 600 / 256"),
           ("spinnaker", lambda: dense_snn(64, 10, hidden=(9000,)), plain, "cores 37 / 18"),
           ("xylo", lambda: _xylo_net(3000), _images(lambda x: F.avg_pool2d(x, 2).flatten(1), "digits 4x4", 8),
            "neurons 3008 / 1008"),
           ("xylo", lambda: _xylo_net(1500, 1500), _images(lambda x: F.avg_pool2d(x, 2).flatten(1), "digits 4x4", 8),
            "neurons 3008 / 1008 (2 layers)")]
    if loihi:
        out.append(("loihi", lambda: conv_snn(1, 10, 32, channels=(256, 8)),
                    _images(lambda x: F.interpolate(x, size=32, mode="nearest"), "digits 32x32"),
                    "neurons 264k / 131k"))
    return out


def uniform_best(model, data, hardware: str, epochs: int, seed: int):
    """(best test accuracy, its ratio, candidates trained, mean accuracy of the passing ones)."""
    torch.manual_seed(seed)
    job = _Job(model, data, sf.get_profile(hardware), m=None, bits=None, granularity=None, criterion="fsc",
               num_batches=8, progress=False)
    best, best_ratio, trained, passing = None, None, 0, []
    for ratio in GRID:
        keep = {g: c - math.floor(c * ratio) for g, c in job.layout.channels.items()}
        if job.layout.over(keep, job.limits):
            continue  # the budget estimate (exact for neurons, cores and dense fan-in) rejects it
        torch.manual_seed(seed)
        *_, cand = job.candidate(keep, epochs=epochs, lr=1e-3, name=f"uniform {ratio}", margin=1.0)
        trained += 1
        if cand.ok:
            passing.append(cand.accuracy)
        if cand.ok and (best is None or cand.accuracy > best):
            best, best_ratio = cand.accuracy, ratio
    return best, best_ratio, trained, (statistics.mean(passing) if passing else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pretrain", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--loihi", action="store_true")
    ap.add_argument("--only", nargs="*", help="chips to run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "chipfit_vs_uniform.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = ["| chip | oversize | seed | trained | fit_to_chip acc | fit ok | allocation | best uniform acc "
             "(ratio, candidates trained) | mean uniform acc (passing) |", "|---|---|---|---|---|---|---|---|---|"]
    summary = []  # the best uniform ratio is picked on the test split: an optimistic (oracle) baseline
    for hardware, factory, data, over in cases(args.loihi):
        if args.only and hardware not in args.only:
            continue
        fit_acc, uni_acc, uni_mean = [], [], []
        for seed in range(args.seeds):
            t0 = time.process_time()
            torch.manual_seed(seed)
            model = factory()
            sf.fit(model, data.train, epochs=args.pretrain, num_steps=4, lr=1e-2, progress=False)
            base = sf.accuracy(model, data.test, num_steps=4)
            rep = sf.fit_to_chip(model, data, hardware=hardware, max_epochs=args.epochs, seed=seed, progress=False)
            best, ratio, trained, mean = uniform_best(model, data, hardware, args.epochs, seed)
            alloc = ", ".join(f"{a[2]}->{a[3]}" for a in rep.allocation)
            lines.append(f"| {hardware} | {over} | {seed} | {base:.1f} | {rep.after.accuracy:.1f} | {rep.ok} | {alloc} "
                         f"| {'-' if best is None else f'{best:.1f}'} ({ratio}, {trained}) | {'-' if mean is None else f'{mean:.1f}'} |")
            print(lines[-1], f"cpu {time.process_time() - t0:.0f}s", flush=True)
            fit_acc.append(rep.after.accuracy)
            if best is not None:
                uni_acc.append(best)
                uni_mean.append(mean)
        summary.append(f"| {hardware} | {statistics.mean(fit_acc):.2f} +- {statistics.pstdev(fit_acc):.2f} | "
                       + (f"{statistics.mean(uni_acc):.2f} +- {statistics.pstdev(uni_acc):.2f} | "
                          f"{statistics.mean(uni_mean):.2f}" if uni_acc else "- | -") + " |")
    text = ("# fit_to_chip vs the best uniform prune ratio passing check (digits, "
            f"{args.seeds} seeds, pretrain {args.pretrain} epochs, fine-tune {args.epochs} epochs per candidate)\n\n"
            + "\n".join(lines) + "\n\n| chip | fit_to_chip (mean +- std) | best uniform, picked on test (mean +- std) | "
            "uniform, mean over passing ratios |\n|---|---|---|---|\n"
            + "\n".join(summary) + "\n\nCommand: `python benchmarks/chipfit_vs_uniform.py "
            + " ".join(f"--{k} {v}" for k, v in (("seeds", args.seeds), ("pretrain", args.pretrain),
                                                 ("epochs", args.epochs))) + ("  --loihi" if args.loihi else "") + "`\n")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
