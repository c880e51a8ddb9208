"""``spikefit profiles``: the known chips and their limits, or one chip's values with sources."""

from __future__ import annotations

import argparse
from ..table import Table
from ..errors import SpikeFitValueError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "profiles", help="list hardware profiles, or show one with every value's source",
        description="Without NAME: one line per hardware profile with its main limits. With NAME: every value "
                    "of that profile, whether it is known, uncertain or unknown, and its source.")
    p.add_argument("name", nargs="?", metavar="NAME", help="a profile to describe")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", metavar="PATH", help="also save the table: .json or .csv")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import snn_spikefit as sf

    if args.out and not args.out.endswith((".json", ".csv")):
        raise SpikeFitValueError(f"--out {args.out!r} is not allowed; give a .json or .csv path")
    if args.name is not None:
        profile = sf.get_profile(args.name)
        table, payload = profile.describe(), profile.to_dict()
    else:
        table = Table(["name", "chip", "weight bits", "distinct/neuron", "distinct/layer", "fan-in",
                       "neurons/core", "conv", "E_AC pJ"], title="hardware profiles")
        for name in sf.list_profiles():
            p = sf.get_profile(name)
            table.add_row([name, p.title, p.weight_bits, p.distinct_weights_per_neuron, p.distinct_weights_per_layer,
                           p.fan_in, p.neurons_per_core, p.conv, p.e_ac_pj])
        payload = {"profiles": [sf.get_profile(n).to_dict() for n in sf.list_profiles()]}
    if args.out:
        (table.to_json if args.out.endswith(".json") else table.to_csv)(args.out)
    if args.json:
        import json

        print(json.dumps(payload, indent=2))
    else:
        print(table)
    return 0
