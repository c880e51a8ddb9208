"""``spikefit compress MODEL --hardware NAME --fit``: :func:`snn_spikefit.fit_to_chip` (``--sweep``:
:func:`snn_spikefit.chip_sweep`), writing OUT.nir, OUT.json and the trade-off plot OUT.png."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import emit, note, relay_warnings
from ..errors import SpikeFitValueError


def add_fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fit", action="store_true",
                   help="fit to the chip automatically: codebooks and per-layer channel counts from its budgets "
                        "(--prune is then not used; --epochs is the fine-tune per try)")
    p.add_argument("--objective", choices=["accuracy", "deploy_ratio", "energy"], default="accuracy",
                   help="with --fit: what the channel cuts spare (default accuracy)")
    p.add_argument("--validation", type=float, default=None, metavar="FRACTION",
                   help="with --fit: fraction of the training data held out to choose among the budget margins "
                        "tried (default 0.2; 0: no split, the first margin that passes is kept; not with --sweep)")
    p.add_argument("--distill", action="store_true",
                   help="with --fit: distil from the original model while fine-tuning (membranes and logits)")
    p.add_argument("--sweep", action="store_true",
                   help="with --fit: try budget margins 1, 0.75, 0.5 and print the Pareto front "
                        "(accuracy vs energy vs size)")


def fit_main(args: argparse.Namespace, profile, out: Path, loaded, data) -> int:
    import nir

    import snn_spikefit as sf


    if args.prune:
        raise SpikeFitValueError(f"--prune={args.prune} is not allowed with --fit: the chip's budgets choose the "
                                 f"channels each layer keeps (leave --prune out)")
    if args.sweep and args.validation is not None:
        raise SpikeFitValueError(f"--validation={args.validation} is not allowed with --sweep: the sweep keeps every "
                                 f"candidate and chooses none (leave --validation out)")
    progress = False if args.no_progress else None
    # --validation not given: fit_to_chip's own default; 0: no split
    validation = {} if args.validation is None else {"validation": args.validation or None}
    try:
        with relay_warnings(args):
            if args.sweep:
                result = sf.chip_sweep(loaded.model, data, hardware=profile, ms=(args.m,), bits=(args.bits,),
                                       objective=args.objective, max_epochs=args.epochs, lr=args.lr,
                                       granularity=args.granularity, criterion=args.criterion,
                                       distill=args.distill, seed=args.seed, progress=progress)
            else:
                result = sf.fit_to_chip(loaded.model, data, hardware=profile, objective=args.objective,
                                        max_epochs=args.epochs, lr=args.lr, m=args.m, bits=args.bits,
                                        granularity=args.granularity, criterion=args.criterion, seed=args.seed,
                                        distill=args.distill, progress=progress, **validation)
    except sf.ConstraintViolationError as exc:  # found before training: no allocation can fix it
        print(f"spikefit compress --fit: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    files = [out.with_suffix(".json")]
    result.to_json(files[0])
    if not args.sweep:
        sample = data.sample(1)
        nir.write(out, sf.export_nir(result.model, sample, num_steps=data.num_steps or 1))
        files.insert(0, out)
    with relay_warnings(args):  # no matplotlib: one line naming the extra, no plot
        png = result.save_plot(out.with_suffix(".png"))
    if png is not None:
        files.append(png)
    note(args, f"wrote {', '.join(str(f) for f in files)}")
    emit(args, str(result), dict(result.to_dict(), files=[str(f) for f in files]))
    return 0 if args.sweep or result.ok else 1
