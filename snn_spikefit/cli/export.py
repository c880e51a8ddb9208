"""``spikefit export``: write a checkpoint (or a .nir file, re-checked) as a NIR graph."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_model_args, emit, load_model, model_sample, note, relay_warnings
from ..errors import SpikeFitValueError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to a NIR file",
        description="Write MODEL as a NIR graph (compressed layers carry their integer codes, codebook and scale "
                    "in spikefit.* node metadata). The input shape comes from --input-shape or --data.")
    add_model_args(p)
    p.add_argument("--input-shape", type=int, nargs="+", metavar="DIM", help="one sample's input shape, e.g. 1 8 8")
    p.add_argument("--data", metavar="SOURCE", help="take the input shape from this data set (as for compress)")
    p.add_argument("--data-root", metavar="DIR", help="folder of --data (fashion-mnist or tonic data sets)")
    p.add_argument("--num-steps", type=int, default=4, metavar="T",
                   help="time bins of tonic --data, and the steps the model is traced for: "
                   "a model whose forward runs its own time loop needs its count (default 4)")
    p.add_argument("--for-importer", choices=["snntorch", "norse"], default=None,
                   help="write a file that stock snntorch.import_nir (dt=1e-4) or norse.torch.from_nir (dt=1e-3) "
                        "runs with the same spikes, or refuse naming the layer (default: a file for snn_spikefit, "
                        "with a warning naming what the model's own framework's stock importer would run differently)")
    p.add_argument("--nir-version", choices=["1.0.4", "1.0.8"], default=None,
                   help="file layout: 1.0.4 for readers pinned to nir 1.0.4 such as sinabs (default: the installed nir's)")
    p.add_argument("--out", metavar="PATH", required=True, help="the .nir file to write")
    p.add_argument("--json", action="store_true", help="print a summary of the written graph as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide stage messages")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import snn_spikefit as sf

    if not args.out.endswith(".nir"):
        raise SpikeFitValueError(f"--out {args.out!r} is not allowed; give a path ending in .nir")
    if not Path(args.out).absolute().parent.is_dir():
        raise SpikeFitValueError(f"--out {args.out!r}: folder {str(Path(args.out).parent)!r} does not exist")
    loaded = load_model(args)
    sample = model_sample(args, loaded)
    if sample is None:
        raise SpikeFitValueError("export of a checkpoint needs the input shape: give --input-shape DIM ... or --data")
    with relay_warnings(args):
        graph = sf.export_nir(loaded.model, sample, args.out, dt=args.dt, num_steps=args.num_steps,
                              for_importer=args.for_importer, nir_version=args.nir_version)
    layers = sorted(k for k in graph.nodes if k not in ("input", "output"))
    compressed = sorted(k for k, n in graph.nodes.items() if "spikefit.codes" in n.metadata)
    note(args, f"wrote {args.out}")
    emit(args, f"wrote {args.out}: {len(layers)} nodes ({len(compressed)} with codebooks), input "
               f"{tuple(sample.shape[1:])}", {"out": args.out, "nodes": layers, "compressed": compressed,
                                              "input_shape": list(sample.shape[1:])})
    return 0
