"""CAT vs FP32 on scikit-learn digits over several seeds (the issue's accuracy check).

    python examples/cat_digits.py                 # m=4, bits=4, 3 seeds
    python examples/cat_digits.py --m 3 --bits 2 --granularity channel

Prints per-seed and mean accuracy of FP32, CAT (trainable) and CAT frozen, and
the gap; writes examples/results/cat_digits_m{m}_b{bits}.csv.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from snn_spikefit.zoo.demo import run_demo
from snn_spikefit.table import Table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--granularity", default="layer", choices=["layer", "channel"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--finetune-epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    table = Table(["seed", "fp32 %", "CAT %", "CAT frozen %", "gap (points)", "seconds"],
                  title=f"digits, conv SNN, T=4: FP32 vs CAT m={args.m} bits={args.bits} {args.granularity}")
    gaps, fp, cat, frozen = [], [], [], []
    for seed in range(args.seeds):
        r = run_demo(m=args.m, bits=args.bits, epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                     seed=seed, progress=False, granularity=args.granularity)
        table.add_row([seed, r.fp32_accuracy, r.cat_accuracy, r.frozen_accuracy,
                       r.fp32_accuracy - r.frozen_accuracy, r.seconds])
        fp.append(r.fp32_accuracy)
        cat.append(r.cat_accuracy)
        frozen.append(r.frozen_accuracy)
        gaps.append(r.fp32_accuracy - r.frozen_accuracy)
    table.add_row(["mean", statistics.mean(fp), statistics.mean(cat), statistics.mean(frozen),
                   statistics.mean(gaps), ""])
    print(table)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    table.to_csv(out / f"cat_digits_m{args.m}_b{args.bits}_{args.granularity}.csv")
    verdict = "within" if statistics.mean(gaps) <= 1.0 else "NOT within"
    print(f"\nmean gap {statistics.mean(gaps):.2f} points: {verdict} 1.0 point of FP32")


if __name__ == "__main__":
    main()
