"""``spikefit compress``: read MODEL and --data, run :func:`snn_spikefit.compress`, write and print its result."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ..pipeline.steps import DEFAULT_CALIB, DEFAULT_EPOCHS, METHODS
from .common import (add_data_args, add_hardware_arg, add_model_args, add_output_args, check_fits, emit,
                     load_data, load_model, note, relay_warnings)
from .fit import add_fit_args, fit_main
from ..errors import SpikeFitValueError


def add_parser(sub) -> None:
    from ..pruning.importance import CRITERIA

    p = sub.add_parser(
        "compress", help="compress a model for a chip: NIR + JSON record + Markdown/HTML report",
        description="Import MODEL, give its Linear/Conv layers learnable codebooks fitted to the chip "
                    "(m, bits and granularity from --hardware unless given), fine-tune, optionally prune "
                    "channels and fine-tune again, freeze to integers, evaluate, check against the chip and "
                    "export NIR. Writes OUT.nir, OUT.json (machine record), OUT.md (or .html) and PNG plots "
                    "next to it. Exit code 1 if the compressed model still breaks a rule of the chip.")
    add_model_args(p)
    add_hardware_arg(p, required=True)
    p.add_argument("--m", type=int, help="values per codebook (default: the chip's table size, e.g. 4 on TrueNorth)")
    p.add_argument("--bits", type=int, help="codebook integer bits, 2..8 (default: the chip's weight bits, at most 8)")
    p.add_argument("--granularity", choices=["layer", "channel"],
                   help="one codebook per layer or per output channel/neuron (default: from the chip)")
    p.add_argument("--init", choices=["kmeans", "linear", "quantile"], default="kmeans",
                   help="codebook initialisation (default kmeans)")
    p.add_argument("--exclude", action="append", metavar="LAYER",
                   help="leave this layer (name or glob pattern) uncompressed; repeatable")
    p.add_argument("--prune", type=float, default=0.0, metavar="FRACTION",
                   help="fraction of the channels of every spiking layer to remove, in [0, 1) (default 0: no pruning)")
    p.add_argument("--criterion", choices=sorted(CRITERIA), default="fsc",
                   help="channel importance for --prune (default fsc)")
    p.add_argument("--method", choices=list(METHODS), default="cat",
                   help="cat: wrap + fine-tune (default); posttraining: one-shot from --calib training samples, "
                        "no training (Spiking Brain Compression; one-shot CAT on chips with a weight table)")
    p.add_argument("--calib", type=int, default=DEFAULT_CALIB, metavar="N",
                   help=f"calibration samples for --method posttraining (default {DEFAULT_CALIB})")
    p.add_argument("--sparsity", type=float, default=0.0, metavar="FRACTION",
                   help="fraction of the weights --method posttraining sets to 0 (OBS), in [0, 1) (default 0)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"fine-tuning epochs after wrapping and again after pruning (default {DEFAULT_EPOCHS})")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (default 1e-3)")
    add_data_args(p)
    add_output_args(p, out_help="compressed NIR file (default <MODEL stem>_<hardware>.nir in the current folder); "
                                "the .json record, the report and the .png plots are written next to it")
    p.add_argument("--html", action="store_true", help="write the human report as HTML instead of Markdown")
    add_fit_args(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import snn_spikefit as sf

    start = time.perf_counter()
    profile = sf.get_profile(args.hardware)
    if not 0 <= args.prune < 1:
        raise SpikeFitValueError(f"--prune={args.prune} is not allowed; use a fraction in [0, 1)")
    if args.epochs < 0:
        raise SpikeFitValueError(f"--epochs={args.epochs} is not allowed; use an int >= 0")
    profile.wrap_arguments(m=args.m, bits=args.bits, granularity=args.granularity)  # refuse early
    out = Path(args.out) if args.out else Path(f"{Path(args.model).stem}_{profile.name}.nir")
    if out.suffix != ".nir":
        raise SpikeFitValueError(f"--out {str(out)!r} is not allowed; give a path ending in .nir")
    if not out.parent.is_dir():
        raise SpikeFitValueError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    torch.manual_seed(args.seed)

    note(args, f"reading {args.model}")
    loaded = load_model(args)
    data = load_data(args)
    data = check_fits(loaded, data, args)
    if args.fit or args.sweep or args.objective != "accuracy" or args.distill or args.validation is not None:
        if not args.fit:
            raise SpikeFitValueError("--sweep, --objective, --validation and --distill are not allowed without "
                                     "--fit; add --fit")
        return fit_main(args, profile, out, loaded, data)
    try:
        with relay_warnings(args):
            result = sf.compress(loaded.model, data, hardware=profile, m=args.m, bits=args.bits,
                                 granularity=args.granularity, init=args.init, exclude=args.exclude,
                                 prune=args.prune, criterion=args.criterion, epochs=args.epochs, lr=args.lr,
                                 seed=args.seed, source=loaded.source,
                                 progress=False if args.no_progress else None, log=lambda text: note(args, text),
                                 method=args.method, calib=args.calib, sparsity=args.sparsity)
    except sf.ConstraintViolationError as exc:  # found before training: no training can fix it
        print(f"spikefit compress: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    result.record["seconds"] = round(time.perf_counter() - start, 2)  # the whole command, reading included
    with relay_warnings(args):  # no matplotlib: one line naming the extra, no plots
        result.save(out, html=args.html)
    record = result.to_dict()
    title = (f"{Path(loaded.source).name} -> {out.name} ({profile.title or profile.name}, --data {data.name}, "
             f"T={args.num_steps})")
    text = f"{result.table(title)}\n\n{result.check_after}\n\nwrote {', '.join(record['files'])} in " \
           f"{record['seconds']:.1f} s"
    emit(args, text, record)
    return 0 if result.ok else 1

