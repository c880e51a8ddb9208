"""Benchmark: residual SNNs on digits: the spike avalanche per block, and 50 % pruning FSC vs L1 with exact NIR.

Models: ``snn_spikefit.zoo.{snntorch,norse}.ResidualSNN`` (Conv3x3 stem -> neuron, 3 residual blocks of 8
channels, AvgPool(2) -> Flatten -> Linear), two block types:

* ``sew``: SEW-ResNet style, ``out = n2(conv2(n1(conv1(x)))) + x``: spikes are added on the shortcut, so the
  residual path carries counts 0, 1, 2, ... that grow block after block (the "spike avalanche").
* ``sparse``: Sparse-ResNet style (arXiv 2510.24637's description): a barrier neuron re-spikes each sum.

Each (framework, block type, seed) model is trained FP32 on the digits training split (direct encoding,
T = 4, Adam). Measured on the test split:

* Avalanche: at the output of the stem and of every block (the residual path), per position and step:
  ``events`` = mean value (a value-k position is k binary events), ``rate`` = fraction non-zero,
  ``ge2`` = fraction holding 2 or more, ``max``. And the model's synaptic operations per sample
  (:func:`snn_spikefit.count_ops`: ``acs`` counts k ACs for a value k, ``graded`` one event).
* Pruning: a copy pruned 50 % (every group and layer, ``scope="layer"``) with ``fsc`` and ``l1`` on 4
  calibration batches of the training split, fine-tuned with the same budget, then test accuracy,
  parameters, ACs; then ``export_nir`` -> ``import_nir`` in the same framework and the same test batch run
  through both: ``exact`` = same output and the same spikes of every neuron at every step.

Nothing is selected on the test split. Data: scikit-learn digits (ships with it). Run:

    python benchmarks/residual.py --quick   # 1 seed, 40 s wall (measured once on the 2-core machine)
    python benchmarks/residual.py           # 3 seeds, a few minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import snn_spikefit as sf
from snn_spikefit.data.datasets import digits, make_loader
from snn_spikefit.trace import Recorder

KINDS = ("sew", "sparse")
CRITERIA = ("fsc", "l1")


@dataclass(frozen=True)
class Config:
    mode: str
    frameworks: tuple[str, ...] = ("snntorch", "norse")
    channels: int = 8
    blocks: int = 3
    num_steps: int = 4
    epochs: int = 8
    lr: float = 5e-3
    amount: float = 0.5
    calib_batches: int = 4
    finetune_epochs: int = 2
    finetune_lr: float = 2e-3
    batch_size: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)


def build(framework: str, kind: str, cfg: Config, seed: int):
    zoo = importlib.import_module(f"snn_spikefit.zoo.{framework}")
    torch.manual_seed(seed)
    return zoo.ResidualSNN(channels=cfg.channels, blocks=cfg.blocks, kind=kind)


def residual_path(model, x, num_steps: int) -> list[dict[str, float]]:
    """Per stem/block output (the residual path): events, rate, ge2, max per position and step."""
    seen: dict[str, list] = {}
    points = [("stem", model.stem_lif)] + [(f"block{i}", b) for i, b in enumerate(model.blocks)]

    def hook(name):
        def fn(_m, _a, out):
            seen.setdefault(name, []).append((out[0] if isinstance(out, tuple) else out).detach())
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in points]
    try:
        with torch.no_grad():
            sf.run(model, x, num_steps=num_steps)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name, _ in points:
        v = torch.stack(seen[name]).double()
        rows.append({"point": name, "events": float(v.mean()), "rate": float((v != 0).double().mean()),
                     "ge2": float((v >= 2).double().mean()), "max": float(v.max())})
    return rows


def exact_round_trip(model, framework: str, x, num_steps: int) -> tuple[bool, int]:
    """export_nir -> import_nir: (same output and spikes everywhere, number of differing spike values)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # notes about stock importers
        back = sf.import_nir(sf.export_nir(model, x), framework)
    with Recorder(model) as r1, torch.no_grad():
        out1 = sf.run(model, x, num_steps=num_steps)
    with Recorder(back) as r2, torch.no_grad():
        out2 = sf.run(back, x, num_steps=num_steps)
    differ = 0
    for name, s in r1.spikes.items():
        other = r2.spikes.get(f"layers.{name.replace('.', '_')}.0")
        differ += s.numel() if other is None or other.shape != s.shape else int((other != s).sum())
    return bool(torch.equal(out1, out2) and differ == 0 and len(r1.spikes) == len(r2.spikes)), differ


def one(framework: str, kind: str, seed: int, cfg: Config, train, test) -> dict:
    model = build(framework, kind, cfg, seed)
    loader = make_loader(train, cfg.batch_size, shuffle=True, seed=seed)
    sf.fit(model, loader, epochs=cfg.epochs, num_steps=cfg.num_steps, lr=cfg.lr, progress=False)
    test_loader = make_loader(test, 512)
    xt = next(iter(test_loader))[0]
    row = {"framework": framework, "kind": kind, "seed": seed,
           "accuracy": sf.accuracy(model, test_loader, num_steps=cfg.num_steps),
           "path": residual_path(model, xt, cfg.num_steps)}
    ops = sf.count_ops(model, xt, num_steps=cfg.num_steps)
    row.update(acs=ops.acs, graded=ops.graded_acs, macs=ops.macs)
    calib = [b for _, b in zip(range(cfg.calib_batches), make_loader(train, cfg.batch_size, shuffle=True, seed=99))]
    row["pruned"] = {}
    for crit in CRITERIA:
        work = copy.deepcopy(model)
        report = sf.prune(work, calib, amount=cfg.amount, criterion=crit, num_steps=cfg.num_steps, progress=False)
        sf.fit(work, make_loader(train, cfg.batch_size, shuffle=True, seed=seed + 1000), epochs=cfg.finetune_epochs,
               num_steps=cfg.num_steps, lr=cfg.finetune_lr, progress=False)
        exact, differ = exact_round_trip(work, framework, xt, cfg.num_steps)
        pops = sf.count_ops(work, xt, num_steps=cfg.num_steps)
        row["pruned"][crit] = {"accuracy": sf.accuracy(work, test_loader, num_steps=cfg.num_steps),
                               "params_before": report.params_before, "params_after": report.params_after,
                               "acs": pops.acs, "exact": exact, "differing_spikes": differ,
                               "groups": [[r.neuron, *r.group] for r in report.layers if r.group]}
    return row


def _ms(values: list[float], digits: int = 3) -> str:
    m = statistics.mean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.{digits}f} +- {s:.{digits}f}"


def tables(runs: list[dict], cfg: Config) -> tuple[sf.Table, sf.Table, sf.Table]:
    ava = sf.Table(["framework", "kind", "point", "events", "rate", "ge2", "max"],
                   title="residual path per position and step (mean +- std over seeds; events: value k = k events)")
    prune = sf.Table(["framework", "kind", "criterion", "acc_before", "acc_after", "params", "acs_before",
                      "acs_after", "exact_nir"],
                     title=f"pruned {int(cfg.amount * 100)} % + {cfg.finetune_epochs} fine-tune epochs "
                           f"(test accuracy %, ACs per sample; exact_nir: runs with the same spikes after import)")
    ops = sf.Table(["framework", "kind", "accuracy", "acs", "graded", "acs_over_graded"],
                   title="trained models: test accuracy %, synaptic operations per sample (acs: value k = k ACs; "
                         "graded: one event per non-zero input)")
    keys = sorted({(r["framework"], r["kind"]) for r in runs}, key=lambda k: (cfg.frameworks.index(k[0]), k[1]))
    for fw, kind in keys:
        group = [r for r in runs if (r["framework"], r["kind"]) == (fw, kind)]
        ops.add_row([fw, kind, _ms([r["accuracy"] for r in group], 1), _ms([r["acs"] for r in group], 0),
                     _ms([r["graded"] for r in group], 0), _ms([r["acs"] / r["graded"] for r in group], 3)])
        for i, point in enumerate(p["point"] for p in group[0]["path"]):
            vals = {k: [r["path"][i][k] for r in group] for k in ("events", "rate", "ge2", "max")}
            ava.add_row([fw, kind, point, _ms(vals["events"]), _ms(vals["rate"]), _ms(vals["ge2"]),
                         f"{max(vals['max']):.0f}"])
        for crit in CRITERIA:
            p = [r["pruned"][crit] for r in group]
            prune.add_row([fw, kind, crit, _ms([r["accuracy"] for r in group], 1), _ms([q["accuracy"] for q in p], 1),
                           f"{p[0]['params_before']} -> {p[0]['params_after']}", _ms([r["acs"] for r in group], 0),
                           _ms([q["acs"] for q in p], 0), f"{sum(q['exact'] for q in p)}/{len(p)}"])
    return ava, ops, prune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = Config("quick", seeds=(0,)) if args.quick else Config("full")
    train, test = digits()
    start = time.process_time()
    runs = [one(fw, kind, seed, cfg, train, test) for seed in cfg.seeds for fw in cfg.frameworks for kind in KINDS]
    seconds = time.process_time() - start
    ava, ops, prune = tables(runs, cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"residual_{cfg.mode}"
    text = (f"# Residual SNNs on digits ({cfg.mode})\n\nCommand: `python benchmarks/residual.py"
            f"{' --quick' if args.quick else ''}`; seeds {list(cfg.seeds)}, {cfg.blocks} blocks x {cfg.channels} "
            f"channels, T = {cfg.num_steps}, {cfg.epochs} epochs; {seconds:.0f} s CPU time, one thread.\n\n"
            f"## Spike avalanche\n\n```\n{ava}\n```\n\n```\n{ops}\n```\n\n## Pruning and NIR round trip\n\n```\n{prune}\n```\n")
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"config": asdict(cfg), "runs": runs, "seconds": seconds},
                                                    indent=1))
    print(text)


if __name__ == "__main__":
    main()
