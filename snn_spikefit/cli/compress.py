"""``spikefit compress``: import -> wrap -> fine-tune -> prune -> fine-tune -> freeze -> evaluate -> check -> export."""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from .common import (add_data_args, add_hardware_arg, add_model_args, add_output_args, check_fits, emit,
                     load_data, load_model, note, relay_warnings)

DEFAULT_EPOCHS = 2


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
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"fine-tuning epochs after wrapping and again after pruning (default {DEFAULT_EPOCHS})")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (default 1e-3)")
    add_data_args(p)
    add_output_args(p, out_help="compressed NIR file (default <MODEL stem>_<hardware>.nir in the current folder); "
                                "the .json record, the report and the .png plots are written next to it")
    p.add_argument("--html", action="store_true", help="write the human report as HTML instead of Markdown")
    p.set_defaults(handler=main)


def _join_layers(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    after_by_name = {r["layer"]: r for r in after}
    rows = []
    for b in before:
        a = after_by_name.get(b["layer"], b)
        rows.append({"layer": b["layer"], "type": b["type"], "channels_before": b["channels"],
                     "channels_after": a["channels"], "distinct_per_neuron_before": b["distinct_per_neuron"],
                     "distinct_per_neuron_after": a["distinct_per_neuron"], "distinct_before": b["distinct"],
                     "distinct_after": a["distinct"]})
    return rows


def main(args: argparse.Namespace) -> int:
    import snn_spikefit as sf
    from ..errors import SpikeFitValueError
    from ..pipeline.report import codebook_records, layer_stats, write_report
    from ..table import Table

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
    progress = not args.no_progress
    torch.manual_seed(args.seed)

    note(args, f"reading {args.model}")
    loaded = load_model(args)
    data = load_data(args)
    check_fits(loaded, data)
    model, sample = loaded.model, data.sample(1)
    if sf.is_wrapped(model):
        note(args, "MODEL is already compressed: starting again from its quantized weights")
        sf.strip(model)
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        note(args, "folding BatchNorm into the preceding layers (chips have no BatchNorm)")
        model.eval()
        sf.fold_batchnorm(model)
    try:  # find what NIR cannot hold before spending time on training
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sf.export_nir(copy.deepcopy(model), sample)
    except sf.UnsupportedLayerError as exc:
        raise sf.UnsupportedLayerError(f"the compressed model could not be exported, so nothing was done: {exc}") \
            from None

    stats_before = layer_stats(model)
    check_before = sf.check(model, profile, sample)
    note(args, "evaluating the original model")
    before = sf.evaluate(model, data.test, profile=profile, num_steps=data.num_steps, progress=progress)

    sf.wrap(model, m=args.m, bits=args.bits, granularity=args.granularity, hardware=profile.name, init=args.init,
            exclude=args.exclude)
    books = sf.codebook_summary(model).records()
    note(args, f"wrapped {len(books)} layers: m={books[0]['m']}, bits={books[0]['bits']}, "
               f"granularity={books[0]['granularity']}; fine-tuning {args.epochs} epochs")
    losses = {"finetune": sf.fit(model, data.train, epochs=args.epochs, num_steps=data.num_steps, lr=args.lr,
                                 progress=progress, desc="fine-tune")}
    prune_report = None
    if args.prune > 0:
        note(args, f"pruning {args.prune:g} of the channels by {args.criterion}")
        prune_report = sf.prune(model, data.train, args.prune, criterion=args.criterion, num_steps=data.num_steps,
                                progress=progress)
        losses["after_prune"] = sf.fit(model, data.train, epochs=args.epochs, num_steps=data.num_steps,
                                       lr=args.lr, progress=progress, desc="fine-tune after pruning")
    sf.freeze(model)
    note(args, "evaluating the compressed model")
    after = sf.evaluate(model, data.test, profile=profile, num_steps=data.num_steps, progress=progress)
    check_after = sf.check(model, profile, sample)
    with relay_warnings(args):
        sf.export_nir(model, sample, out)

    json_path, report_path = out.with_suffix(".json"), out.with_suffix(".html" if args.html else ".md")
    record: dict[str, Any] = {
        "command": "compress", "version": sf.__version__, "model": loaded.source, "hardware": profile.name,
        "data": data.name, "num_steps": args.num_steps,
        "settings": {"m": books[0]["m"], "bits": books[0]["bits"], "granularity": books[0]["granularity"],
                     "init": args.init, "exclude": args.exclude, "prune": args.prune, "criterion": args.criterion,
                     "epochs": args.epochs, "lr": args.lr, "seed": args.seed, "limit": args.limit},
        "limit_per_neuron": profile.distinct_weights_per_neuron or profile.distinct_weights_per_layer,
        "output": str(out), "layers": _join_layers(stats_before, layer_stats(model)),
        "codebooks": codebook_records(model), "codebook_summary": sf.codebook_summary(model).records(),
        "prune": prune_report.to_dict() if prune_report is not None else None, "losses": losses,
        "before": before.to_dict(), "after": after.to_dict(),
        "check_before": check_before.to_dict(), "check_after": check_after.to_dict(),
    }
    record["seconds"] = round(time.perf_counter() - start, 2)
    record["files"] = [str(out), str(json_path)]
    record["files"] += [str(p) for p in write_report(record, report_path)]
    json_path.write_text(json.dumps(record, indent=2, default=str))

    table = Table(["model", "accuracy %", "parameters", "bits/weight", "size MB", "energy mJ", "DR_acc",
                   f"check {profile.name}"],
                  title=f"{Path(loaded.source).name} -> {out.name} ({profile.title or profile.name}, "
                        f"--data {data.name}, T={args.num_steps})")
    for label, rep, chk in (("original", before, check_before), ("compressed", after, check_after)):
        table.add_row([label, rep.accuracy, rep.parameters, rep.bits_per_weight, rep.size_mb, rep.energy_mj,
                       rep.dr_acc, "OK" if chk.ok else f"{len(chk.errors)} violations"])
    text = f"{table}\n\n{check_after}\n\nwrote {', '.join(record['files'])} in {record['seconds']:.1f} s"
    emit(args, text, record)
    return 0 if check_after.ok else 1
