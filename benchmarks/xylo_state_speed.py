"""Cost of training with Xylo's chip-precision neurons (``wrap(..., hardware="xylo")``), as ratios.

    .venv/bin/python benchmarks/xylo_state_speed.py [--rounds 15]

One training step (``sf.run`` over T steps, cross-entropy + commitment, backward, Adam) of the zoo's
``xylo_snn`` (16 inputs, one hidden layer, 8 read-outs), timed in interleaved rounds in this one run
(one thread, CPU time; medians and min-max of the per-round ratios), for:

* ``fp32``: the plain network (the baseline);
* ``cat``: CAT at Xylo's settings without chip-precision state (``wrap(net, hardware="xylo", state=False)``);
* ``xylo``: CAT with Xylo's neuron (the library as it is);
* ``xylo, no reuse``: the same with each rule's state LSB and threshold recomputed at every use, as
  before they were kept between steps (three LSBs and two thresholds per neuron and step).

and the backward of the spike count's surrogate (31 arctangents per neuron) on a ``[batch, hidden]``
membrane, in place (what a step runs) against the out-of-place sum it runs under ``create_graph``
(the formulation before).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch

import snn_spikefit as sf
from snn_spikefit.neurons.xylo_state import MAX_SPIKES_HIDDEN, XyloRule, _Count

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.speed import interleaved, train_step  # noqa: E402


class _NoReuse(XyloRule):
    """The rule with nothing kept: the state LSB and theta are computed again at every use."""

    @property
    def scale(self):
        self._seen = None
        return XyloRule.scale.fget(self)

    def theta(self, dyn, s):
        self._theta = None
        return super().theta(dyn, s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from snn_spikefit.zoo.snntorch import xylo_snn

    torch.manual_seed(0)
    base = xylo_snn(16, 8, (args.hidden,))
    x, y = torch.rand(args.batch, 16), torch.randint(0, 8, (args.batch,))
    models = {"fp32": copy.deepcopy(base), "cat": sf.wrap(copy.deepcopy(base), hardware="xylo", state=False),
              "xylo": sf.wrap(copy.deepcopy(base), hardware="xylo"),
              "xylo, no reuse": sf.wrap(copy.deepcopy(base), hardware="xylo")}
    rules = sf.state_rules(models["xylo, no reuse"]).values()
    assert rules and all(isinstance(r, XyloRule) for r in rules)
    for r in rules:
        r.__class__ = _NoReuse
    steps = {k: train_step(m, x, y, args.steps) for k, m in models.items()}
    times = interleaved(steps, args.rounds)
    print(f"xylo_snn 16-{args.hidden}-8, T={args.steps}, batch {args.batch}, one thread, CPU time, "
          f"{args.rounds} interleaved rounds; fp32 step {1e3 * statistics.median(times['fp32']):.1f} ms")
    for a, b in (("cat", "fp32"), ("xylo", "fp32"), ("xylo, no reuse", "fp32"), ("xylo", "xylo, no reuse")):
        ratios = sorted(t / u for t, u in zip(times[a], times[b]))
        print(f"  {a:>15} / {b:<15} median {statistics.median(ratios):.3f}  [{ratios[0]:.3f}-{ratios[-1]:.3f}]")
    _surrogate_rows(args)
    return 0


class _Saved:
    def __init__(self, mem, thr):
        self.saved_tensors, self.most = (mem, thr), MAX_SPIKES_HIDDEN


def _surrogate_rows(args) -> None:
    ctx = _Saved(torch.randn(args.batch, args.hidden) * 3, torch.tensor(0.5))
    grad = torch.randn(args.batch, args.hidden)

    def run(enabled: bool):
        def fn():
            with torch.set_grad_enabled(enabled):  # mem needs no grad: no graph is built either way
                for _ in range(args.steps):
                    _Count.backward(ctx, grad)
        return fn

    assert torch.equal(run_once(ctx, grad, False), run_once(ctx, grad, True))
    times = interleaved({"in place": run(False), "out of place": run(True)}, args.rounds)
    ratios = sorted(t / u for t, u in zip(times["in place"], times["out of place"]))
    print(f"  surrogate backward ({args.steps} calls of [{args.batch}, {args.hidden}]) in place / out of place "
          f"median {statistics.median(ratios):.3f}  [{ratios[0]:.3f}-{ratios[-1]:.3f}]; out of place "
          f"{1e3 * statistics.median(times['out of place']):.1f} ms; equal to the bit")


def run_once(ctx, grad, enabled: bool):
    with torch.set_grad_enabled(enabled):
        return _Count.backward(ctx, grad)[0]


if __name__ == "__main__":
    raise SystemExit(main())
