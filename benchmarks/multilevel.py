"""Multi-level neurons at T = 1 against binary neurons at T = 4 on the zoo's conv SNN, one command.

    python benchmarks/multilevel.py --seeds 0 1 2 --epochs 15 --out benchmarks/results   # digits

Per seed: ``conv_snn`` (snnTorch, Leaky beta=0.5) trained from scratch with ``sf.fit`` (Adam, same
epochs and lr for every row) as binary T = 4, binary T = 1 (control), and ``sf.to_multilevel(levels=L)``
for L = 2, 4, 8 at T = 1. Each row: test accuracy, ACs per inference counted as binary events (``acs``:
k per level-k spike) and as graded events (``graded_acs``), MACs (the pixel layer), energy under
``generic-45nm`` (binary-event pricing) and ``generic-45nm-graded`` (the same constants with
``graded_spikes=True``: an assumption of this script, a graded event priced as one AC, payload width
ignored), and size. Results: ``multilevel.md`` and ``multilevel.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

import snn_spikefit as sf

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.suite import _seed_all  # noqa: E402
from snn_spikefit.data.datasets import digits, make_loader  # noqa: E402

ROWS = [("binary T=4", None, 4), ("binary T=1", None, 1), ("L=2 T=1", 2, 1), ("L=4 T=1", 4, 1),
        ("L=8 T=1", 8, 1)]
GRADED = replace(sf.get_profile("generic-45nm"), name="generic-45nm-graded", graded_spikes=True,
                 title="generic-45nm constants, graded spikes (benchmark assumption)")


def _row(label, levels, steps, seed, epochs, train, test):
    from snn_spikefit.zoo.snntorch import conv_snn

    _seed_all(seed)
    model = conv_snn(1, 10, 8, (16, 32))
    if levels is not None:
        sf.to_multilevel(model, levels=levels)
    sf.fit(model, make_loader(train, 64, shuffle=True, seed=seed), epochs=epochs, num_steps=steps, lr=2e-3,
           progress=False)
    loader = make_loader(test, 256)
    binary = sf.evaluate(model, loader, hardware="generic-45nm", num_steps=steps, progress=False)
    graded = sf.evaluate(model, loader, hardware=GRADED, num_steps=steps, progress=False)
    ops = binary.to_dict()
    return {"row": label, "seed": seed, "accuracy": binary.accuracy, "acs": binary.acs,
            "graded_acs": sum(layer["graded"] for layer in ops["layers"]), "macs": binary.macs,
            "energy_binary_uj": binary.energy_mj * 1e3, "energy_graded_uj": graded.energy_mj * 1e3,
            "size_kb": binary.size_mb * 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    train, test = digits()
    runs = [_row(label, lv, t, s, args.epochs, train, test) for s in args.seeds for label, lv, t in ROWS]
    keys = ["accuracy", "acs", "graded_acs", "macs", "energy_binary_uj", "energy_graded_uj", "size_kb"]
    summary = []
    for label, _, _ in ROWS:
        mine = [r for r in runs if r["row"] == label]
        summary.append({"row": label, **{k: statistics.mean(r[k] for r in mine) for k in keys},
                        "accuracy_sd": statistics.pstdev([r["accuracy"] for r in mine])})
    base = summary[0]
    lines = [f"# Multi-level neurons vs binary (digits, conv_snn, seeds {args.seeds}, {args.epochs} epochs)", "",
             "| row | accuracy % (sd) | ACs binary-event | ACs graded | MACs | energy uJ binary-event (x T=4) "
             "| energy uJ graded (x T=4) | size kB |", "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['row']} | {r['accuracy']:.2f} ({r['accuracy_sd']:.2f}) | {r['acs']:.0f} | "
                     f"{r['graded_acs']:.0f} | {r['macs']:.0f} | {r['energy_binary_uj']:.4f} "
                     f"({r['energy_binary_uj'] / base['energy_binary_uj']:.2f}) | {r['energy_graded_uj']:.4f} "
                     f"({r['energy_graded_uj'] / base['energy_graded_uj']:.2f}) | {r['size_kb']:.1f} |")
    lines += ["", "Energy: E_AC x ACs + E_MAC x MACs (Horowitz 45 nm); graded: one AC per non-zero level "
              "(generic-45nm-graded is this script's assumption, not a chip). Command: "
              f"`python benchmarks/multilevel.py --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs}`"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multilevel.md").write_text("\n".join(lines) + "\n")
    (args.out / "multilevel.json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
