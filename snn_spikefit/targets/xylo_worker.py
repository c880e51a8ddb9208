"""Run a Xylo specification (see :mod:`snn_spikefit.targets.xylo_spec`) in xylosim, SynSense's
bit-accurate Xylo Audio 2 simulator (the model under rockpool's ``XyloSim``; no rockpool, no samna).

A standalone script for the Xylo environment (numpy, xylosim); it imports neither torch nor
snn_spikefit::

    python xylo_worker.py SPEC.npz SPIKES.npz

``SPEC.npz``: ``w_in [n_in, Nh]``, ``w_rec [Nh, Nh]``, ``w_out [Nh, No]`` (int8 values),
``threshold``, ``threshold_out``, ``dash_mem``, ``dash_syn``, ``dash_mem_out``, ``dash_syn_out``,
``shifts`` (input, recurrent, output) and ``counts [N, T, n_in]``. ``SPIKES.npz`` gets ``hidden
[N, T, Nh]`` and ``out [N, T, No]`` (each sample from a reset core) and the weights xylosim holds
(``held_in``, ``held_rec``, ``held_out``), read back from its synapse objects.
"""

from __future__ import annotations

import os
import sys

import numpy as np


def _synapses(v2, w: np.ndarray) -> list:
    """One list per presynaptic neuron of ``XyloSynapse(target, 0, weight)`` for the non-zero weights."""
    return [[v2.XyloSynapse(int(j), 0, int(w[i, j])) for j in np.flatnonzero(w[i])] for i in range(w.shape[0])]


def _held(lists: list, shape: tuple[int, int]) -> np.ndarray:
    w = np.zeros(shape, np.int64)
    for i, syns in enumerate(lists):
        for s in syns:
            w[i, s.target_neuron_id] += s.weight
    return w


def run(a: dict) -> dict:
    from xylosim import v2

    nh, no = a["w_in"].shape[1], a["w_out"].shape[1]
    # xylosim keeps raw pointers to the synapse objects: these lists must outlive every evolve()
    syn_in, syn_rec, syn_out = _synapses(v2, a["w_in"]), _synapses(v2, a["w_rec"]), _synapses(v2, a["w_out"])
    ints = lambda k: [int(v) for v in a[k]]  # noqa: E731
    layer = v2.XyloLayer(syn_in, syn_rec, syn_out, [[] for _ in range(nh)], ints("threshold"),
                         ints("threshold_out"), False, [0] * nh, [0] * no, int(a["shifts"][0]),
                         int(a["shifts"][1]), int(a["shifts"][2]), ints("dash_mem"), ints("dash_mem_out"),
                         [[int(d)] for d in a["dash_syn"]], [[int(d)] for d in a["dash_syn_out"]], "spikefit")
    counts = np.asarray(a["counts"], np.int64)
    hidden = np.zeros(counts.shape[:2] + (nh,), np.int64)
    out = np.zeros(counts.shape[:2] + (no,), np.int64)
    for k in range(counts.shape[0]):
        layer.reset_all()
        out[k] = np.asarray(layer.evolve(counts[k].tolist()), np.int64).reshape(counts.shape[1], no)
        hidden[k] = np.asarray(layer.rec_recurrent_spikes, np.int64).reshape(counts.shape[1], nh)
    held = dict(held_in=_held(layer.synapses_in, a["w_in"].shape), held_rec=_held(layer.synapses_rec, (nh, nh)),
                held_out=_held(layer.synapses_out, (nh, no)))
    del syn_in, syn_rec, syn_out
    return dict(hidden=hidden, out=out, **held)


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    if len(argv) != 2:
        print("usage: xylo_worker.py SPEC.npz SPIKES.npz", file=sys.stderr)
        return 2
    with np.load(argv[0], allow_pickle=False) as f:
        spec = {k: f[k] for k in f.files}
    np.savez(argv[1], **run(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
