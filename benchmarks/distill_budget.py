"""How much of CAT's gap to the FP32 control is training budget, and how much of it distillation recovers.

    python benchmarks/distill_budget.py --seeds 0 --tag _s0      # one process per seed
    python benchmarks/distill_budget.py --merge /tmp/b/distill_budget_s*_runs.csv --out benchmarks/results

Fashion-MNIST as in ``benchmarks/distill_sweep.py`` (the suite's conv SNN, the first 4000 training
images, FP32 trained once, the FP32 + fine-tune control as the teacher), scored on training-file images
4000..5999 that no model trains on. For each fine-tune setting (``x1``: the suite's budget, 2 epochs on
2000 images at lr 1e-3 with a cosine schedule; ``x4``: 4 times the epochs; ``lr 3e-3``: the suite's budget
at 3 times the rate) it trains the FP32 control, CAT (m, 4 bits) and CAT distilled with the Distiller's
defaults, and reports the share of the gap distillation closes, ``(distilled - CAT) / (control - CAT)``.
Writes ``distill_budget.md`` and ``_runs.csv`` in ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

import snn_spikefit as sf
from snn_spikefit.table import Table

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.distill_sweep import _defaults, _Sweep, commands, read_runs  # noqa: E402

#: name -> (epoch multiplier, learning rate, the m it is run for)
SETTINGS = {"x1": (1, 1e-3, (2, 4)), "x4": (4, 1e-3, (2, 4)), "lr 3e-3": (1, 3e-3, (2,))}
METHODS = ("FP32 + fine-tune", "CAT", "CAT distilled")


def _train(sw: _Sweep, model, teacher, mult: int, lr: float) -> float:
    return sw.score(sw.finetune(model, teacher, None, epochs_times=mult, lr=lr))


def run_seed(seed: int, settings) -> list[dict]:
    sw = _Sweep(seed, 2000, False)
    rows = []
    for name in settings:
        mult, lr, ms = SETTINGS[name]
        control = _train(sw, copy.deepcopy(sw.fp32), None, mult, lr)
        rows.append({"seed": seed, "setting": name, "m": "-", "method": METHODS[0], "val": control})
        print(rows[-1], flush=True)
        for m in ms:
            for method, teacher in zip(METHODS[1:], (None, sw.teachers["ft"])):
                acc = _train(sw, sf.wrap(copy.deepcopy(sw.fp32), m=m, bits=4), teacher, mult, lr)
                rows.append({"seed": seed, "setting": name, "m": m, "method": method, "val": acc})
                print(rows[-1], flush=True)
    return rows


def _mean(rows, **match) -> tuple[float, float, int]:
    vals = [r["val"] for r in rows if all(r[k] == v for k, v in match.items())]
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def table(rows: list[dict]) -> Table:
    t = Table(["setting", "m", "seeds", "FP32 + fine-tune", "CAT", "CAT distilled", "gap", "closed by distillation"])
    for name, (_, _, ms) in SETTINGS.items():
        if not any(r["setting"] == name for r in rows):
            continue
        control, _, _ = _mean(rows, setting=name, method=METHODS[0])
        for m in ms:
            (cat, cs, n), (kd, ks, _) = (_mean(rows, setting=name, m=m, method=x) for x in METHODS[1:])
            gap = control - cat
            t.add_row([name, m, n, round(control, 2), f"{cat:.2f} +- {cs:.2f}", f"{kd:.2f} +- {ks:.2f}",
                       round(gap, 2), f"{100 * (kd - cat) / gap:.0f} %" if gap > 0 else "-"])
    return t


def _write(out: Path, tag: str, command: str, rows: list[dict], wall: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    head = (f"# CAT's gap to the FP32 control: training budget and distillation\n\n`{command}`\n\n"
            f"Fashion-MNIST, models as in `distill.py --full`, teacher the FP32 + fine-tune control (x1); accuracy "
            f"on training-file images 4000..5999 (no model trains on them); Distiller defaults ({_defaults()}, "
            f"weights 0.1); x4: 4 times the fine-tune epochs; lr 3e-3: the x1 budget at 3 times the rate; "
            f"wall {wall:.0f} s (0: merged)\n\n")
    (out / f"distill_budget{tag}.md").write_text(head + table(rows).to_markdown() + "\n")
    keys = ["seed", "setting", "m", "method", "val"]
    Table(keys, [[r[k] for k in keys] for r in rows]).to_csv(out / f"distill_budget{tag}_runs.csv")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="")
    ap.add_argument("--merge", nargs="+", default=None, metavar="CSV", help="one table from several runs files")
    args = ap.parse_args(argv)
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    command = "python benchmarks/distill_budget.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.merge:
        _write(Path(args.out), args.tag, "; ".join(commands(args.merge) + [command]), read_runs(args.merge), 0.0)
        return 0
    begin, rows = time.perf_counter(), []
    for seed in args.seeds:
        rows += run_seed(seed, args.settings)
        _write(Path(args.out), args.tag, command, rows, time.perf_counter() - begin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
