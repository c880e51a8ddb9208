"""``spikefit check``: every rule of a chip the model breaks, by layer. Exit code 1 if there is one."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_hardware_arg, add_model_args, add_output_args, emit, load_model, model_sample
from ..errors import SpikeFitValueError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "check", help="list every chip constraint the model violates (exit code 1 if any)",
        description="Check MODEL against the limits of --hardware (distinct weights per neuron or layer, weight "
                    "bits, fan-in, neurons per core, cores, convolution, neuron model, ...). Prints each "
                    "violation with a fix; exit code 0 when it fits, 1 when a rule is broken.")
    add_model_args(p)
    add_hardware_arg(p, required=True)
    p.add_argument("--input-shape", type=int, nargs="+", metavar="DIM",
                   help="one sample's input shape (e.g. 1 8 8), to count conv neurons of a checkpoint; "
                        ".nir files declare it")
    p.add_argument("--data", metavar="SOURCE",
                   help="take the input shape from this data set instead (same values as for compress)")
    p.add_argument("--data-root", metavar="DIR", help="folder of --data (fashion-mnist or tonic data sets)")
    p.add_argument("--num-steps", type=int, default=4, metavar="T",
                   help="time bins of tonic --data, and the steps the model is traced for: "
                   "a model whose forward runs its own time loop needs its count (default 4)")
    add_output_args(p, out_help="also save the result: .json or .csv")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import snn_spikefit as sf

    profile = sf.get_profile(args.hardware)
    if args.out and Path(args.out).suffix not in (".json", ".csv"):
        raise SpikeFitValueError(f"--out {args.out!r} is not allowed; give a .json or .csv path")
    loaded = load_model(args)
    sample = model_sample(args, loaded)
    report = sf.check(loaded.model, profile, sample=sample, num_steps=args.num_steps)
    if args.out:
        (report.to_json if args.out.endswith(".json") else report.to_csv)(args.out)
    emit(args, str(report), report.to_dict())
    return 0 if report.ok else 1
