"""Multi-level neurons at T = 1 against binary neurons at T = 4 on the zoo's conv SNN, one command.

    python benchmarks/multilevel.py --dataset digits --seeds 0 1 2 --out benchmarks/results
    python benchmarks/multilevel.py --dataset fashion-mnist --fit-size 10000 --seeds 0 1 2

Two phases, one recipe for every row:

1. **Selection** (validation split only). Every candidate recipe of the grid (epochs, lr, cosine or
   constant schedule, BatchNorm, learnable per-layer threshold, surrogate slope) trains every row on
   the *fit* split and is scored on the *validation* split (held out of the training file; the test
   set is not looked at). The recipe with the best validation accuracy averaged over all rows (and
   the selection seeds) wins: the same recipe for binary T = 4 and for every multi-level row.
2. **Test**. Each row is trained with the chosen recipe on the fit split for every ``--seeds`` seed and
   measured once on the test split.

Rows: binary T = 4, and ``sf.to_multilevel(levels=L)`` for L = 2, 4, 8 at T = 1. Every row's neurons
are ``MultiLevelLeaky`` (binary rows with ``levels=2``, which is ``snn.Leaky`` spike for spike and
gradient for gradient, tested), so the recipe's surrogate slope reaches every row; ``L=2 T=1`` *is*
binary T = 1. Input is direct (the analog image at every step). Each row: test accuracy, ACs per
inference counted as binary events (``acs``: k per level-k spike) and as graded events
(``graded_acs``), MACs (the pixel layer), energy under ``generic-45nm`` (binary-event pricing) and
``generic-45nm-graded`` (the same constants with ``graded_spikes=True``: an assumption of this script,
a graded event priced as one AC, payload width ignored), and size. Results:
``multilevel_<dataset>.md``/``.json`` and ``multilevel_<dataset>_select.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import Subset

import snn_spikefit as sf

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.suite import _seed_all  # noqa: E402
from snn_spikefit.data.datasets import digits, fashion_mnist, make_loader  # noqa: E402
from snn_spikefit.deploy.metrics import _energy  # noqa: E402
from snn_spikefit.neurons.multilevel import MultiLevelNeuron  # noqa: E402

ROWS = [("binary T=4", 2, 4), ("L=2 T=1", 2, 1), ("L=4 T=1", 4, 1), ("L=8 T=1", 8, 1)]
GRADED = replace(sf.get_profile("generic-45nm"), name="generic-45nm-graded", graded_spikes=True,
                 title="generic-45nm constants, graded spikes (benchmark assumption)")


@dataclass(frozen=True)
class Recipe:
    """One training recipe, applied unchanged to every row."""

    epochs: int = 15
    lr: float = 5e-3
    schedule: str | None = "cosine"
    batch_norm: bool = True
    learn_threshold: bool = False
    alpha: float = 2.0  # arctangent surrogate slope of every level step

    def label(self) -> str:
        return (f"ep={self.epochs} lr={self.lr:g} {self.schedule or 'const'} bn={int(self.batch_norm)} "
                f"learn_thr={int(self.learn_threshold)} alpha={self.alpha:g}")


def grid(args) -> list[Recipe]:
    """Candidate recipes: the previous session's recipe (digits), then epochs x lr x threshold x slope."""
    old = Recipe(epochs=15, lr=2e-3, schedule=None, batch_norm=False)
    cands = [Recipe(epochs=e, lr=lr, learn_threshold=bool(lt), alpha=a)
             for e, lr, lt, a in itertools.product(args.epochs, args.lrs, args.learn_threshold, args.alphas)]
    return ([old] if args.dataset == "digits" else []) + cands


def splits(dataset: str, fit_size: int | None, val_size: int, test_size: int | None):
    """``(fit, val, test)``: val is held out of the training file, never of the test file."""
    if dataset == "digits":
        train, test = digits()
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1234)).tolist()
        val_size = val_size or len(train) // 5
        fit_idx = order[val_size:][:fit_size] if fit_size else order[val_size:]
        return Subset(train, fit_idx), Subset(train, order[:val_size]), test
    train, test = fashion_mnist(limit_test=test_size)
    fit_size = fit_size or len(train) - val_size
    if fit_size + val_size > len(train):
        raise SystemExit(f"--fit-size {fit_size} + --val-size {val_size} > {len(train)} training images")
    # fit: the file's first images; val: its last ones (disjoint)
    return Subset(train, range(fit_size)), Subset(train, range(len(train) - val_size, len(train))), test


def _model(recipe: Recipe, levels: int, image_size: int) -> torch.nn.Module:
    from snn_spikefit.zoo.snntorch import conv_snn

    model = conv_snn(1, 10, image_size, (16, 32), batch_norm=recipe.batch_norm,
                     learn_threshold=recipe.learn_threshold)
    sf.to_multilevel(model, levels=levels)
    for m in model.modules():
        if isinstance(m, MultiLevelNeuron):
            m.surrogate_alpha = recipe.alpha
    return model


def train_row(recipe: Recipe, levels: int, steps: int, seed: int, fit_ds, image_size: int):
    _seed_all(seed)
    model = _model(recipe, levels, image_size)
    loader = make_loader(fit_ds, 64, shuffle=True, seed=seed, drop_last=True)
    sf.fit(model, loader, epochs=recipe.epochs, num_steps=steps, lr=recipe.lr, schedule=recipe.schedule,
           progress=False)
    return model


def measure(model, ds, steps: int) -> dict:
    loader = make_loader(ds, 256)
    binary = sf.evaluate(model, loader, hardware="generic-45nm", num_steps=steps, progress=False)
    graded_acs = sum(layer.graded for layer in binary.layers)
    # the same counted ops priced by the library under the graded profile (one evaluate pass, not two)
    graded_mj, _ = _energy(GRADED, binary.acs, binary.macs, binary.neuron_updates, graded_acs)
    thresholds = [round(float(m.threshold.detach()), 4) for m in model.modules() if isinstance(m, MultiLevelNeuron)]
    return {"accuracy": binary.accuracy, "acs": binary.acs,
            "graded_acs": graded_acs, "macs": binary.macs,
            "energy_binary_uj": binary.energy_mj * 1e3, "energy_graded_uj": graded_mj * 1e3,
            "size_kb": binary.size_mb * 1e3, "thresholds": thresholds}


def select(recipes, seeds, fit_ds, val_ds, image_size, log) -> tuple[Recipe, list[dict]]:
    """Score every recipe on the validation split; the best mean over rows and seeds wins."""
    table = []
    for recipe in recipes:
        t0 = time.process_time()
        accs = {}
        for label, levels, steps in ROWS:
            model_accs = []
            for seed in seeds:
                model = train_row(recipe, levels, steps, seed, fit_ds, image_size)
                model_accs.append(sf.accuracy(model, make_loader(val_ds, 256), num_steps=steps))
            accs[label] = statistics.mean(model_accs)
        row = {"recipe": recipe.label(), **asdict(recipe), "val": accs, "mean": statistics.mean(accs.values()),
               "cpu_s": time.process_time() - t0}
        table.append(row)
        log(f"select {row['recipe']}: " + ", ".join(f"{k} {v:.2f}" for k, v in accs.items())
            + f" | mean {row['mean']:.2f} ({row['cpu_s']:.0f} s CPU)")
    best = max(table, key=lambda r: r["mean"])
    return recipes[table.index(best)], table


def summarise(runs: list[dict]) -> list[dict]:
    keys = ["accuracy", "acs", "graded_acs", "macs", "energy_binary_uj", "energy_graded_uj", "size_kb"]
    out = []
    for label, _, _ in ROWS:
        mine = [r for r in runs if r["row"] == label]
        out.append({"row": label, **{k: statistics.mean(r[k] for r in mine) for k in keys},
                    "accuracy_sd": statistics.pstdev([r["accuracy"] for r in mine])})
    return out


def render(args, recipe: Recipe, summary: list[dict], sizes: tuple[int, int, int]) -> list[str]:
    base = summary[0]
    lines = [f"# Multi-level neurons vs binary ({args.dataset}, conv_snn, seeds {args.seeds})", "",
             f"Recipe (chosen on the validation split, the same for every row): {recipe.label()}. "
             f"Split: fit {sizes[0]}, validation {sizes[1]}, test {sizes[2]} images.", "",
             "| row | test accuracy % (sd) | ACs binary-event (x T=4) | ACs graded | MACs | energy uJ binary-event "
             "(x T=4) | energy uJ graded (x T=4) | size kB |", "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['row']} | {r['accuracy']:.2f} ({r['accuracy_sd']:.2f}) | {r['acs']:.0f} "
                     f"({r['acs'] / base['acs']:.2f}) | "
                     f"{r['graded_acs']:.0f} | {r['macs']:.0f} | {r['energy_binary_uj']:.4f} "
                     f"({r['energy_binary_uj'] / base['energy_binary_uj']:.2f}) | {r['energy_graded_uj']:.4f} "
                     f"({r['energy_graded_uj'] / base['energy_graded_uj']:.2f}) | {r['size_kb']:.1f} |")
    commands = getattr(args, "commands", None) or [args.argv]
    lines += ["", "sd: population standard deviation over seeds. `L=2 T=1` is binary T=1 (same spikes). "
              "Energy: E_AC x ACs + E_MAC x MACs (Horowitz 45 nm), per inference; graded: one AC per non-zero "
              "level (generic-45nm-graded is this script's assumption, not a chip). Command(s): "
              + "; ".join(f"`python benchmarks/multilevel.py {shlex.join(c)}`" for c in commands)]
    return lines


def merge(args) -> int:
    """Re-render one table from the ``.json`` of runs made separately (e.g. one seed per process)."""
    parts = [json.loads(Path(p).read_text()) for p in args.merge]
    recipes = {json.dumps(p["recipe"], sort_keys=True) for p in parts}
    if len(recipes) != 1 or len({tuple(p["sizes"]) for p in parts}) != 1:
        raise SystemExit(f"--merge needs runs of one recipe and one split, got {sorted(recipes)}")
    runs = [r for p in parts for r in p["runs"]]
    args.seeds = sorted({r["seed"] for r in runs})
    args.commands = [p.get("argv", []) for p in parts] + [args.argv]
    recipe, sizes = Recipe(**parts[0]["recipe"]), tuple(parts[0]["sizes"])
    return write(args, recipe, runs, sizes, [])


def write(args, recipe: Recipe, runs: list[dict], sizes, table: list[dict]) -> int:
    summary = summarise(runs)
    lines = render(args, recipe, summary, sizes)
    stem = args.out / f"multilevel_{args.dataset}"
    args.out.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    Path(f"{stem}.json").write_text(json.dumps({"recipe": asdict(recipe), "sizes": sizes, "argv": args.argv,
                                                "runs": runs, "summary": summary, "selection": table},
                                               indent=1) + "\n")
    print("\n".join(lines))
    return 0


def render_select(args, table: list[dict], recipe: Recipe) -> list[str]:
    head = "| recipe | " + " | ".join(label for label, _, _ in ROWS) + " | mean | CPU s |"
    lines = [f"# Recipe selection on the validation split ({args.dataset}, seeds {args.select_seeds})", "",
             head, "|" + "---|" * (len(ROWS) + 3)]
    for r in table:
        mark = " **(chosen)**" if r["recipe"] == recipe.label() else ""
        lines.append(f"| {r['recipe']}{mark} | " + " | ".join(f"{r['val'][lbl]:.2f}" for lbl, _, _ in ROWS)
                     + f" | {r['mean']:.2f} | {r['cpu_s']:.0f} |")
    lines += ["", f"Command: `python benchmarks/multilevel.py {shlex.join(args.argv)}`"]
    return lines


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["digits", "fashion-mnist"], default="digits")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--select-seeds", type=int, nargs="+", default=[100], help="seeds of the selection phase")
    ap.add_argument("--epochs", type=int, nargs="+", help="grid: epochs (default: digits 15 30, fmnist 4)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[2e-3, 5e-3, 1e-2], help="grid: learning rates")
    ap.add_argument("--learn-threshold", type=int, nargs="+", default=[0, 1], help="grid: 0 fixed, 1 learned")
    ap.add_argument("--alphas", type=float, nargs="+", default=[1.0, 2.0], help="grid: surrogate slopes")
    ap.add_argument("--recipe", help="skip selection: a JSON Recipe, e.g. '{\"lr\": 0.005}'")
    ap.add_argument("--fit-size", type=int, help="training images used (default: all but validation)")
    ap.add_argument("--val-size", type=int, default=0, help="validation images (default digits 1/5, fmnist 5000)")
    ap.add_argument("--test-size", type=int, help="fashion-mnist: first N test images (default all 10000)")
    ap.add_argument("--merge", nargs="+", help="only re-render the table from these runs' .json files")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.dataset == "fashion-mnist" and not args.val_size:
        args.val_size = 5000
    args.epochs = args.epochs or ([15, 30] if args.dataset == "digits" else [4])
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.merge:
        return merge(args)
    torch.set_num_threads(1)
    fit_ds, val_ds, test_ds = splits(args.dataset, args.fit_size, args.val_size, args.test_size)
    image_size = int(test_ds[0][0].shape[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"multilevel_{args.dataset}"
    log = lambda s: print(s, flush=True)  # noqa: E731
    if args.recipe:
        recipe, table = Recipe(**json.loads(args.recipe)), []
    else:
        recipe, table = select(grid(args), args.select_seeds, fit_ds, val_ds, image_size, log)
        Path(f"{stem}_select.md").write_text("\n".join(render_select(args, table, recipe)) + "\n")
    log(f"recipe: {recipe.label()}")
    runs = []
    for seed in args.seeds:
        for label, levels, steps in ROWS:
            model = train_row(recipe, levels, steps, seed, fit_ds, image_size)
            runs.append({"row": label, "seed": seed, **measure(model, test_ds, steps)})
            log(f"seed {seed} {label}: {runs[-1]['accuracy']:.2f} % thresholds {runs[-1]['thresholds']}")
    return write(args, recipe, runs, (len(fit_ds), len(val_ds), len(test_ds)), table)


if __name__ == "__main__":
    raise SystemExit(main())
