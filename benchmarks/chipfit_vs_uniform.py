"""Benchmark: ``fit_to_chip`` against the best uniform ``--prune`` ratio that also passes ``check``.

For each chip, an SNN built 2-4x over one of the chip's budgets is trained FP32 on digits
(``pretrain`` epochs), once per seed, on the training split less a validation split (20% of it,
held out with ``split_validation`` and the seed, the same samples ``fit_to_chip`` holds out). Then,
from the same trained model, with the same codebooks (the chip's, as ``wrap(hardware=)`` chooses),
the same FSC scores and the same fine-tune budget per candidate (``epochs`` epochs of CAT +
commitment, on the same training samples):

* ``fit_to_chip``: the per-layer allocation from the budgets (plus core packing), at margins
  1.0 / 0.9 / 0.8 of the budgets (3 candidates at most), the one passing ``check`` with the best
  validation accuracy kept;
* uniform: every ratio of the grid 0.0 .. 0.9 (``floor(ratio * C)`` channels of every prunable
  layer removed, by FSC, as ``sf.prune(amount=ratio)`` does); a ratio whose allocation the budget
  estimate already rejects is not trained (0.0 only passes on a chip whose budgets are codebook ones:
  Akida); of those passing ``check``, the one with the best validation accuracy is kept.

Both report *test* accuracy (the digits test split: 449 samples; 355 for Xylo's 8 classes). The uniform
grid trains up to 10 candidates to choose from, fit_to_chip at most 3 (more tries favour the baseline).
For reference the table also gives the uniform ratio best on the test split (an oracle no user has) and the mean over
the passing ratios. With ``--distill`` both fine-tune with distillation from the original (the
uniform grid's teacher membranes cut to each ratio's kept channels, as fit_to_chip's are).
Writes ``benchmarks/results/chipfit_vs_uniform.md`` (``--out``).

    python benchmarks/chipfit_vs_uniform.py                 # truenorth loihi speck xylo xylo2 akida spinnaker
    python benchmarks/chipfit_vs_uniform.py --only truenorth --seeds 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

import snn_spikefit as sf
from snn_spikefit.chipfit.fit import _Job
from snn_spikefit.chipfit.validation import split_validation
from snn_spikefit.data import LoadedData, load_data
from snn_spikefit.data.datasets import digits
from snn_spikefit.data.sources import DataOptions
from snn_spikefit.pruning.prune import _removed_by as removed_by
from snn_spikefit.zoo.snntorch import conv_snn, dense_snn

GRID = tuple(round(0.1 * i, 1) for i in range(0, 10))


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


def _speck_data() -> LoadedData:
    return _images(lambda x: F.interpolate(x, size=64, mode="nearest"), "digits 64x64")


def cases():
    """``(key, chip, model factory, data, what is over)``: each model 2-4x over one budget of its chip."""
    plain = load_data("digits", num_steps=4)
    xylo_data = _images(lambda x: F.avg_pool2d(x, 2).flatten(1), "digits 4x4", 8)
    return [
        ("truenorth", "truenorth", lambda: dense_snn(64, 10, hidden=(300, 300)), plain, "fan_in 300 / 256 (dense)"),
        ("loihi", "loihi", lambda: dense_snn(64, 10, hidden=(10000,)), plain, "fan_in 10000 / 4096"),
        ("speck", "speck", lambda: conv_snn(1, 10, 64, channels=(32, 8), beta=1.0), _speck_data(),
         "neurons per core 131072 / 65536"),
        ("xylo", "xylo", lambda: _xylo_net(3000), xylo_data, "neurons 3008 / 1008"),
        ("xylo2", "xylo", lambda: _xylo_net(1500, 1500), xylo_data, "neurons 3008 / 1008 (2 layers)"),
        ("akida", "akida", lambda: dense_snn(64, 10, hidden=(300,)), plain, "weight bits 32 / 8"),
        ("spinnaker", "spinnaker", lambda: dense_snn(64, 10, hidden=(9000,)), plain, "cores 36 / 18"),
    ]


def uniform(job, epochs: int, seed: int):
    """Every grid ratio the budget estimate accepts, fine-tuned: ``[(ratio, candidate)]``."""
    out = []
    for ratio in GRID:
        keep = {g: c - removed_by(c, ratio, 1, 1) for g, c in job.layout.channels.items()}  # sf.prune's count
        if job.layout.over(keep, job.limits):
            continue  # the budget estimate (exact for neurons, cores and dense fan-in) rejects it
        torch.manual_seed(seed)
        *_, cand = job.candidate(keep, epochs=epochs, lr=1e-3, name=f"uniform {ratio}", margin=1.0)
        out.append((ratio, cand))
    return out


def _pick(tried, key):
    passing = [(r, c) for r, c in tried if c.ok]
    return max(passing, key=lambda rc: key(rc[1])) if passing else (None, None)


def run_seed(key, hardware, factory, data, seed, args):
    """One row: pretrain, fit_to_chip, the uniform grid, on the same split."""
    rest, val = split_validation(data, 0.2, seed=seed)
    torch.manual_seed(seed)
    model = factory()
    sf.fit(model, rest.train, epochs=args.pretrain, num_steps=4, lr=1e-2, progress=False)
    base = sf.accuracy(model, data.test, num_steps=4)
    distill = ({"membrane_weight": args.membrane_weight} if args.membrane_weight is not None else True) \
        if args.distill else False
    rep = sf.fit_to_chip(model, data, hardware=hardware, max_epochs=args.epochs, seed=seed, progress=False,
                         validation=0.2, distill=distill)
    tried = []
    if not args.fit_only:
        torch.manual_seed(seed)
        job = _Job(model, rest, sf.get_profile(hardware), m=None, bits=None, granularity=None, criterion="fsc",
                   num_batches=8, progress=False, val=val, distill=distill, all_groups=True)
        tried = uniform(job, args.epochs, seed)
    (vr, vc), (tr, tc) = _pick(tried, lambda c: c.val_accuracy), _pick(tried, lambda c: c.accuracy)
    passing = [c.accuracy for _, c in tried if c.ok]
    chosen = rep.candidates[rep.chosen]
    return dict(key=key, hardware=hardware, seed=seed, base=base, fit=rep.after.accuracy, fit_ok=rep.ok,
                fit_name=chosen.name, fit_n=len(rep.candidates),
                alloc=", ".join(f"{a[2]}->{a[3]}" for a in rep.allocation),
                uni=None if vc is None else vc.accuracy, uni_ratio=vr, uni_n=len(tried),
                oracle=None if tc is None else tc.accuracy, oracle_ratio=tr,
                uni_mean=statistics.mean(passing) if passing else None)


def _f(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def _row(r, over):
    return (f"| {r['key']} | {over} | {r['seed']} | {r['base']:.1f} | {r['fit']:.1f} | {r['fit_ok']} | {r['fit_name']} "
            f"of {r['fit_n']} | {r['alloc']} | {_f(r['uni'])} ({r['uni_ratio']}, {r['uni_n']}) | "
            f"{_f(r['oracle'])} ({r['oracle_ratio']}) | {_f(r['uni_mean'])} |")


def _summary(rows):
    def ms(vals):
        vals = [v for v in vals if v is not None]
        return f"{statistics.mean(vals):.2f} +- {statistics.pstdev(vals):.2f}" if vals else "-"
    fit, uni = [r["fit"] for r in rows], [r["uni"] for r in rows]
    diff = [f - u for f, u in zip(fit, uni) if u is not None]
    gap = _f(statistics.mean(diff) if diff else None, "+.2f")
    return (f"| {rows[0]['key']} | {rows[0]['hardware']} | {ms(fit)} | {ms(uni)} | {gap} "
            f"| {sum(r['fit_ok'] for r in rows)}/{len(rows)} | {ms([r['oracle'] for r in rows])} "
            f"| {ms([r['uni_mean'] for r in rows])} |")


HEAD = ("| case | oversize | seed | trained | fit_to_chip acc | fit ok | kept (of tried) | allocation | uniform acc, "
        "picked on val (ratio, trained) | uniform best on test (ratio) | mean uniform (passing) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|")
SUMMARY = ("| case | chip | fit_to_chip (mean +- std) | uniform picked on val (mean +- std) | fit - uniform | fit ok "
           "| uniform best on test (oracle) | uniform mean over passing |\n|---|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pretrain", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--distill", action="store_true", help="fit_to_chip and the uniform grid distil from the original")
    ap.add_argument("--only", nargs="*", help="cases to run (keys of cases())")
    ap.add_argument("--membrane-weight", type=float, default=None,
                    help="with --distill: the Distiller's membrane_weight (default: the Distiller's own)")
    ap.add_argument("--fit-only", action="store_true", help="leave the uniform grid out (e.g. with --distill)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "chipfit_vs_uniform.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines, summary = [HEAD], []
    for key, hardware, factory, data, over in cases():
        if args.only and key not in args.only:
            continue
        rows = []
        for seed in range(args.seeds):
            t0 = time.process_time()
            rows.append(run_seed(key, hardware, factory, data, seed, args))
            lines.append(_row(rows[-1], over))
            print(lines[-1], f"cpu {time.process_time() - t0:.0f}s", flush=True)
        summary.append(_summary(rows))
    command = ("python benchmarks/chipfit_vs_uniform.py " + f"--seeds {args.seeds} --pretrain {args.pretrain} "
               f"--epochs {args.epochs}"
               + (" --distill" + ("" if args.membrane_weight is None else f" --membrane-weight {args.membrane_weight:g}")
                  if args.distill else "")
               + (" --fit-only" if args.fit_only else "")
               + (f" --only {' '.join(args.only)}" if args.only else ""))
    text = (f"# fit_to_chip vs the uniform prune ratio passing check, both chosen on a validation split (digits, "
            f"{args.seeds} seeds, pretrain {args.pretrain} epochs, fine-tune {args.epochs} epochs per candidate"
            f"{(', both distil, ' + ('Distiller defaults' if args.membrane_weight is None else f'membrane_weight {args.membrane_weight:g}')) if args.distill else ''})\n\n"
            + "\n".join(lines) + "\n\n" + SUMMARY + "\n"
            + "\n".join(summary) + f"\n\nCommand: `{command}`\n")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
