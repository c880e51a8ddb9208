"""Deployment report: a dense SNN on scikit-learn digits, before and after compressing it for TrueNorth.

    python examples/deploy_report.py [--epochs 3] [--out examples/results]

Trains a small snnTorch SNN (T=4), measures it with ``evaluate`` (accuracy,
macro-F1, latency, NeuroBench-style ACs/MACs, energy under generic-45nm, size,
DeployRatio), compresses it with ``wrap(model, hardware="truenorth")`` (4 values
per neuron, 8-bit codebooks), fine-tunes, freezes, measures again, and checks
both models against TrueNorth. DR has units: compare the two rows only because
they share the profile, this machine and T.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

import snn_spikefit as sf
from snn_spikefit.zoo.snntorch import dense_snn
from snn_spikefit.data.datasets import digits, make_loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="folder for JSON/CSV reports")
    args = parser.parse_args()
    torch.manual_seed(0)
    train, test = digits()
    train_loader, test_loader = make_loader(train, 64, shuffle=True), make_loader(test, 256)

    model = dense_snn(64, 10, (128,))
    sf.fit(model, train_loader, epochs=args.epochs, num_steps=args.steps, lr=2e-3, desc="fp32")
    sf.reset(model)  # snnTorch keeps the last step's state (with its graph): clear it before copying
    compressed = sf.wrap(copy.deepcopy(model), hardware="truenorth")
    sf.fit(compressed, train_loader, epochs=1, num_steps=args.steps, lr=5e-4, desc="CAT truenorth")
    sf.freeze(compressed)

    reports = {}
    for name, net in (("fp32", model), ("truenorth-cat", compressed)):
        reports[name] = sf.evaluate(net, test_loader, num_steps=args.steps, hardware="generic-45nm")
        print(f"\n== {name} ==\n{reports[name]}")
        print(f"\n{sf.check(net, 'truenorth')}")

    summary = sf.Table(["model", "DR_acc", "accuracy_%", "latency_s", "energy_mJ", "size_MB", "ACs", "MACs"],
                       title="DeployRatio next to its components (generic-45nm, this machine, T=%d)" % args.steps)
    for name, r in reports.items():
        summary.add_row([name, r.dr_acc, r.accuracy, r.latency_s, r.energy_mj, r.size_mb, r.acs, r.macs])
    print(f"\n{summary}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, r in reports.items():
            r.to_json(args.out / f"deploy_{name}.json")
            r.to_csv(args.out / f"deploy_{name}.csv")


if __name__ == "__main__":
    main()
