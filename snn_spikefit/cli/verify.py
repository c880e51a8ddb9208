"""``spikefit verify``: run MODEL in a target's own simulator and in ours; exit 1 if a spike differs."""

from __future__ import annotations

import argparse

from .common import add_model_args, add_output_args, emit, load_model, note
from ..errors import SpikeFitValueError


def add_parser(sub) -> None:
    from ..targets import list_targets

    p = sub.add_parser(
        "verify", help="run the model in a chip toolchain's simulator and ours: same spikes? (exit 1 if not)",
        description="Run the same inputs through --target's simulator (Lava: floating point and Loihi's "
                    "bit-accurate fixed point; sinabs: Speck's layers; xylo: xylosim, Xylo's integers) and through snn_spikefit's simulation; print per layer the "
                    "spikes in each, how many differ, and the accuracy in each. Exit 0 when they agree "
                    "(fixed point: with our Loihi integer model), 1 when not, 2 on bad input. The target's "
                    "Python environment is created on first use (see snn_spikefit.targets.env).")
    add_model_args(p)
    p.add_argument("--target", required=True, choices=list_targets(), help="the toolchain")
    p.add_argument("--mode", choices=("float", "fixed", "both"), default="both",
                   help="the target's arithmetic (default both: those the target has; sinabs: float, xylo: fixed)")
    p.add_argument("--steps", type=int, default=50, metavar="T", help="timesteps per sample (default 50)")
    p.add_argument("--data", default="digits", metavar="SOURCE", help="inputs and labels (default digits; "
                   "the same sources as for compress)")
    p.add_argument("--data-root", metavar="DIR", help="folder of --data (fashion-mnist or tonic data sets)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="test samples to run (default 100)")
    add_output_args(p, out_help="also save the result: .json or .csv")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import torch

    from ..data.sources import load_data
    from ..targets.verify import verify
    from .common import check_fits

    if args.steps < 1 or args.limit < 1:
        raise SpikeFitValueError(f"--steps={args.steps} and --limit={args.limit} must be ints >= 1")
    if args.out and not args.out.endswith((".json", ".csv")):
        raise SpikeFitValueError(f"--out {args.out!r} is not allowed; give a .json or .csv path")
    loaded = load_model(args)
    data = load_data(args.data, root=args.data_root, num_steps=args.steps, batch_size=args.limit,
                     limit=args.limit, seed=0)
    check_fits(loaded, data)
    if data.num_steps is None:
        raise SpikeFitValueError(f"--data {args.data} is time-major (event data); verify takes static inputs")
    xs, ys = zip(*data.test)
    x, y = torch.cat(xs)[:args.limit], torch.cat(ys)[:args.limit]
    from ..targets import get_target

    have = get_target(args.target).modes  # sinabs: float only; xylo: fixed (integers) only
    modes = tuple(m for m in ("float", "fixed") if m in have) if args.mode == "both" else (args.mode,)
    note(args, f"running {len(x)} samples x {args.steps} steps in {args.target} ({', '.join(modes)}) and ours")
    model = loaded.source if loaded.kind == "nir" else loaded.model
    report = verify(model, (x, y), target=args.target, modes=modes, num_steps=args.steps,
                    framework=args.framework)
    if args.out:
        (report.to_json if args.out.endswith(".json") else report.to_csv)(args.out)
    emit(args, str(report), report.to_dict())
    return 0 if report.ok else 1
