"""The Lava agreement table: dense and conv nets (m=4, bits=8, trained briefly on digits), zero and
subtract reset, with and without bias, in Lava floating point and Loihi fixed point.

    .venv/bin/python benchmarks/lava_agreement.py [--samples 100] [--steps 50] [--out lava.json]

Prints per network and layer: spikes in our float64 simulation, in Lava, differing spikes; in fixed
point also our Loihi integer model and its differences to Lava; and test accuracy on the samples run.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_lava import trained  # noqa: E402  (the tests' networks, the same seeds)

import snn_spikefit as sf  # noqa: E402
from snn_spikefit.targets.verify import verify  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    _, test = sf.data.datasets.digits()
    x, y = test.tensors[0][:args.samples], test.tensors[1][:args.samples]
    results = {}
    for arch in ("dense", "conv"):
        for reset in ("zero", "subtract"):
            for bias in (False, True):
                name = f"{arch} {reset} {'bias' if bias else 'no-bias'}"
                report = verify(trained(arch, reset, bias), (x, y), modes=("float", "fixed"), num_steps=args.steps)
                print(f"== {name}\n{report}\n", flush=True)
                results[name] = report.to_dict()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
