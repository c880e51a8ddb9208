"""Run a compiled sinabs program (see :mod:`snn_spikefit.targets.sinabs_program`) in sinabs 3.1.3.

A standalone script run by our interpreter with the sinabs folder (installed ``--no-deps``,
beside our nir 1.0.8) on ``PYTHONPATH``; it imports torch, numpy and sinabs, never snn_spikefit::

    python sinabs_worker.py PROGRAM.npz SPIKES.npz

``PROGRAM.npz``: ``meta`` (JSON list of ops), ``W<k>`` / ``B<k>`` (integer weights, device biases),
``input [N, T, *in_shape]``. ``SPIKES.npz``: ``L<j>`` ``[N, T, *shape]`` per IAF layer, and
``held<k>`` the weights of each Conv2d / Linear as the sinabs model holds them (``heldbias<k>`` its bias).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def _double_module():
    from torch import nn

    class Double(nn.Module):
        def forward(self, x):
            return x.double()

    return Double


def build(ops: list, arrays: dict, batch: int):
    import sinabs.activation as sa
    import sinabs.layers as sl
    import torch
    from torch import nn

    layers, held, _Double = [], {}, _double_module()
    for k, op in enumerate(ops):
        if op["kind"] in ("conv", "linear"):
            w = torch.from_numpy(arrays[f"W{k}"].astype(np.float64))
            if op["kind"] == "conv":
                m = nn.Conv2d(w.shape[1] * op["groups"], w.shape[0], tuple(w.shape[2:]), stride=tuple(op["stride"]),
                              padding=tuple(op["padding"]), dilation=tuple(op["dilation"]), groups=op["groups"],
                              bias=op["bias"]).double()
            else:
                m = nn.Linear(w.shape[1], w.shape[0], bias=op["bias"]).double()
            with torch.no_grad():
                m.weight.copy_(w)
                if op["bias"]:
                    m.bias.copy_(torch.from_numpy(arrays[f"B{k}"]))
            held[f"held{k}"] = m.weight
            if op["bias"]:
                held[f"heldbias{k}"] = m.bias
            layers += [_Double(), m]  # sinabs' IAF hands float32 spikes on
        elif op["kind"] == "sumpool":
            layers.append(sl.SumPool2d(kernel_size=tuple(op["kernel"]), stride=tuple(op["stride"])))
        elif op["kind"] == "flatten":
            layers.append(nn.Flatten())
        else:
            reset = sa.MembraneSubtract() if op["reset"] == "subtract" else sa.MembraneReset()
            layers.append(sl.IAFSqueeze(batch_size=batch, spike_threshold=float(op["threshold"]),
                                        spike_fn=sa.SingleSpike, reset_fn=reset, min_v_mem=None))
    return nn.Sequential(*layers).double(), held


def run(program: dict) -> dict:
    import sinabs.layers as sl
    import torch

    ops = json.loads(str(program["meta"]))
    x = np.asarray(program["input"], np.float64)
    n, t = x.shape[:2]
    model, held = build(ops, program, n)
    spikes = []
    for m in model:
        if isinstance(m, sl.IAFSqueeze):
            m.register_forward_hook(lambda _m, _i, out: spikes.append(out.detach()))
    with torch.no_grad():
        model(torch.from_numpy(x.reshape((n * t,) + x.shape[2:])))  # sinabs squeezes batch-major: b * T + t
    out = {f"L{j}": s.reshape((n, t) + tuple(s.shape[1:])).numpy().astype(np.uint8) for j, s in enumerate(spikes)}
    out.update({k: w.detach().numpy() for k, w in held.items()})
    return out


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    if len(argv) != 2:
        print("usage: sinabs_worker.py PROGRAM.npz SPIKES.npz", file=sys.stderr)
        return 2
    with np.load(argv[0], allow_pickle=False) as f:
        program = {k: f[k] for k in f.files}
    np.savez(argv[1], **run(program))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
