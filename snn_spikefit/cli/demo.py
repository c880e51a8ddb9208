"""``spikefit demo``: CAT on scikit-learn digits, FP32 vs m-value codebooks."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train a small conv SNN on digits, compress it with CAT, print FP32 vs CAT",
        description="Train a small convolutional snnTorch SNN on scikit-learn's digits (no download), "
                    "wrap it with M learnable weight values per layer, fine-tune, freeze and print a table.",
    )
    p.add_argument("--m", type=int, default=4, help="values per codebook (default 4)")
    p.add_argument("--bits", type=int, default=4, help="codebook integer bits, 2..8 (default 4)")
    p.add_argument("--granularity", choices=["layer", "channel"], default="layer",
                   help="one codebook per layer or per output channel (default layer)")
    p.add_argument("--epochs", type=int, default=15, help="FP32 training epochs (default 15)")
    p.add_argument("--finetune-epochs", type=int, default=15, help="CAT fine-tune epochs (default 15)")
    p.add_argument("--num-steps", type=int, default=4, help="timesteps T (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import torch

    from ..zoo.demo import run_demo

    result = run_demo(m=args.m, bits=args.bits, epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                      num_steps=args.num_steps, seed=args.seed, progress=False if args.no_progress else None,
                      granularity=args.granularity)
    if args.json:
        print(json.dumps({"fp32_accuracy": result.fp32_accuracy, "cat_accuracy": result.cat_accuracy,
                          "frozen_accuracy": result.frozen_accuracy, "seconds": result.seconds,
                          "cpu_seconds": result.cpu_seconds, "threads": torch.get_num_threads(),
                          "layers": result.table.records(), "codebooks": result.codebooks.records()},
                         indent=2))
    else:
        print(result.table)
        print()
        print(result.codebooks)
        print(f"\ndone in {result.seconds:.1f} s wall ({result.cpu_seconds:.1f} s CPU, "
              f"{torch.get_num_threads()} threads)")
    return 0
