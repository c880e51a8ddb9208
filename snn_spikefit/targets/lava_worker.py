"""Run a compiled Lava program (see :mod:`snn_spikefit.targets.lava_program`) in Lava's own simulator.

A standalone script for the target's Python (3.10, numpy < 2, lava-nc): it imports only numpy and
lava, never torch or snn_spikefit, and exchanges arrays through ``.npz`` files (no pickle)::

    python lava_worker.py PROGRAM.npz SPIKES.npz

``PROGRAM.npz`` holds ``meta`` (a JSON string: mode ``float``/``fixed``, the sample period, the
number of steps, one dict per layer) and per layer ``L<k>.weights``, ``L<k>.bias_mant``,
``L<k>.bias_exp``, plus ``input`` ``[n_in, steps]``. The network is
``RingBuffer -> (Dense -> LIFReset) * L``, each LIF layer feeding a sink ``RingBuffer``; the
``LIFReset`` of layer ``k`` clears ``u`` and ``v`` at the step its sample's first input arrives
(Lava's Dense delivers the previous step's accumulation: layer ``k`` lags the input by ``k`` steps),
so samples run back to back and a bias starts with its sample's first input. ``SPIKES.npz`` gets
``L<k>`` ``[n_out, steps]``: the spikes of layer ``k`` at every simulator step.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def _subtract_reset_process():
    """``LIFSubtractReset`` from ``lava_processes/lif_subtract.py`` beside this file."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lava_processes")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    from lif_subtract import LIFSubtractReset

    return LIFSubtractReset


def build_and_run(program: dict) -> dict:
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIFReset

    meta = json.loads(str(program["meta"]))
    fixed = meta["mode"] == "fixed"
    steps, period = int(meta["steps"]), int(meta["period"])
    cast = (lambda a: np.asarray(a).astype(np.int32)) if fixed else (lambda a: np.asarray(a, np.float64))
    num = (lambda v: int(v)) if fixed else (lambda v: float(v))
    source = Source(data=cast(program["input"]))
    prev, sinks = source.s_out, []
    for k, layer in enumerate(meta["layers"]):
        w = cast(program[f"L{k}.weights"])
        dense = Dense(weights=w, weight_exp=int(layer["weight_exp"]),
                      num_message_bits=int(layer["num_message_bits"]))
        kwargs = dict(shape=(w.shape[0],), du=num(layer["du"]), dv=num(layer["dv"]), vth=num(layer["vth"]),
                      bias_mant=cast(program[f"L{k}.bias_mant"]), bias_exp=cast(program[f"L{k}.bias_exp"]),
                      reset_interval=period, reset_offset=(k + 2) % period)
        if layer["reset"] == "subtract":
            neuron = _subtract_reset_process()(**kwargs)
        else:
            neuron = LIFReset(**kwargs)
        sink = Sink(shape=(w.shape[0],), buffer=steps)
        prev.connect(dense.s_in)
        dense.a_out.connect(neuron.a_in)
        neuron.s_out.connect(sink.a_in)
        prev, sinks = neuron.s_out, sinks + [sink]
    cfg = Loihi2SimCfg(select_tag="fixed_pt" if fixed else "floating_pt")
    source.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
    try:
        return {f"L{k}": np.asarray(s.data.get()).astype(np.int8) for k, s in enumerate(sinks)}
    finally:
        source.stop()


def main(argv: list[str]) -> int:
    # this file's folder holds snn_spikefit's own lava.py: never let it shadow the lava package
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    if len(argv) != 2:
        print("usage: lava_worker.py PROGRAM.npz SPIKES.npz", file=sys.stderr)
        return 2
    with np.load(argv[0], allow_pickle=False) as f:
        program = {k: f[k] for k in f.files}
    np.savez(argv[1], **build_and_run(program))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
