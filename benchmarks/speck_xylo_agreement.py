"""The Speck (sinabs) and Xylo (xylosim) agreement tables: the networks of tests/test_sinabs.py and
tests/test_xylo.py (m=4, bits=8, trained briefly on digits), run in each toolchain and in ours.

    .venv/bin/python benchmarks/speck_xylo_agreement.py [--samples 100] [--steps 50] [--out res.json]

sinabs: conv Conv(1,4,3)-IF-AvgPool-Conv(4,8,3)-IF-Flatten-Linear(128,10)-IF, subtract reset with
biases (rounded to the weight grid: ``sf.round_biases``; Speck holds integer biases) and zero reset without; spikes of our float64 simulation vs sinabs' layers. Xylo: dense
16-40-8 snnTorch Synaptic (alpha 0.5, beta 0.875, subtract), digits 0..7 pooled to 4x4; xylosim
vs our integer model of the Xylo core (agreement) and vs our float simulation (Xylo's arithmetic):
once trained with plain ``wrap(m=4, bits=8)`` (our float simulation is snnTorch's equations), once
with ``wrap(m=4, bits=8, hardware="xylo")`` (the zoo's ``xylo_snn``: CAT trains Xylo's own neuron,
and our simulation, ``sf.run`` of the model as trained, is compared with xylosim).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_sinabs  # noqa: E402  (the tests' networks, the same seeds)
import test_xylo  # noqa: E402

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
    for reset, bias in (("subtract", True), ("zero", False)):
        report = verify(test_sinabs.trained(reset, bias), (x, y), target="sinabs", modes=("float",),
                        num_steps=args.steps)
        results[f"sinabs conv {reset} bias={bias}"] = report.to_dict()
        print(f"== sinabs conv, {reset} reset, bias={bias}\n{report}\n", flush=True)
    _, xd, yd = test_xylo._data(args.samples)
    report = verify(test_xylo.trained(), (xd, yd), target="xylo", modes=("fixed",), num_steps=args.steps)
    results["xylo dense 16-40-8 Synaptic"] = report.to_dict()
    print(f"== xylo dense 16-40-8 Synaptic (subtract)\n{report}\n", flush=True)
    report = verify(test_xylo.trained_xylo(), (xd, yd), target="xylo", modes=("fixed",), num_steps=args.steps)
    key = "xylo, trained with wrap(hardware='xylo'), float simulation vs xylosim"
    results[key] = report.to_dict()
    print(f"== {key}\n{report}\n", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    exact = all(r["differing"] == 0 for r in results[key]["layers"])
    return 0 if exact and all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
