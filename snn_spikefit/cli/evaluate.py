"""``spikefit evaluate``: accuracy, F1, latency, operations, energy, size and DeployRatio on a chip."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (add_data_args, add_hardware_arg, add_model_args, add_output_args, check_fits, emit,
                     load_data, load_model)
from ..errors import SpikeFitValueError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="measure accuracy, F1, latency, operations, energy, size and DeployRatio",
        description="Run MODEL on the test split of --data and report DeployRatio with its components "
                    "(accuracy, macro-F1, latency per input, energy per inference under --hardware, size).")
    add_model_args(p)
    add_hardware_arg(p, default="generic-45nm")
    add_data_args(p)
    add_output_args(p, out_help="also save the report: .json (everything) or .csv (the metric table)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import torch

    import snn_spikefit as sf

    profile = sf.get_profile(args.hardware)
    if args.out and Path(args.out).suffix not in (".json", ".csv"):
        raise SpikeFitValueError(f"--out {args.out!r} is not allowed; give a .json or .csv path")
    torch.manual_seed(args.seed)
    loaded = load_model(args)
    data = load_data(args)
    data = check_fits(loaded, data, args)
    report = sf.evaluate(loaded.model, data.test, hardware=profile, num_steps=data.num_steps,
                         progress=False if args.no_progress else None)
    if args.out:
        (report.to_json if args.out.endswith(".json") else report.to_csv)(args.out)
    emit(args, str(report), report.to_dict())
    return 0
