"""Sweep CAT fine-tuning settings on digits: commitment weight beta, lr, epochs, schedule.

The evidence behind the defaults (commitment beta = 0.25, cosine schedule):

    python examples/sweep_cat_digits.py --beta 0 0.25 1 4        # 8 epochs, lr 1e-3, cosine
    python examples/sweep_cat_digits.py --schedule none cosine

Each configuration starts from the same FP32 model per seed (conv SNN with
BatchNorm, 15 epochs, lr 5e-3), is wrapped with m=4 bits=4, fine-tuned, frozen
and tested; prints the mean gap FP32 - CAT over the seeds. One thread.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics

import torch

import snn_spikefit as sf
from snn_spikefit.zoo.snntorch import conv_snn
from snn_spikefit.data.datasets import digits, make_loader
from snn_spikefit.table import Table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--beta", type=float, nargs="+", default=[0.25])
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-3])
    ap.add_argument("--epochs", type=int, nargs="+", default=[8])
    ap.add_argument("--schedule", nargs="+", default=["cosine"], choices=["none", "cosine"])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    configs = list(itertools.product(args.epochs, args.lr, args.beta, args.schedule))
    gaps: dict[tuple, list[float]] = {c: [] for c in configs}
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        train, test = digits(seed=seed)
        test_loader = make_loader(test, 256)
        fp32 = conv_snn(1, 10, 8, (16, 32), batch_norm=True)
        sf.fit(fp32, make_loader(train, 64, shuffle=True, seed=seed, drop_last=True), epochs=15, num_steps=4,
               lr=5e-3, progress=False)
        acc = sf.accuracy(fp32, test_loader, num_steps=4)
        for cfg in configs:
            epochs, lr, beta, schedule = cfg
            torch.manual_seed(seed)
            cat = sf.wrap(copy.deepcopy(fp32), m=4, bits=4)
            sf.fit(cat, make_loader(train, 64, shuffle=True, seed=seed, drop_last=True), epochs=epochs,
                   num_steps=4, lr=lr, beta=beta, progress=False, schedule=None if schedule == "none" else schedule)
            sf.freeze(cat)
            gaps[cfg].append(acc - sf.accuracy(cat, test_loader, num_steps=4))
            print(f"seed {seed} {cfg}: gap {gaps[cfg][-1]:.2f}", flush=True)
    table = Table(["epochs", "lr", "beta", "schedule", "mean gap (points)", "per seed"],
                  title=f"digits, m=4 bits=4, FP32 - CAT frozen, {args.seeds} seeds")
    for cfg, g in gaps.items():
        table.add_row([*cfg, statistics.mean(g), [round(v, 2) for v in g]])
    print(table)


if __name__ == "__main__":
    main()
