"""The Lava target (Intel Loihi): our NIR graph as Lava processes, run in Lava's simulator.

``LavaTarget().build(graph, mode="float"|"fixed")`` compiles the graph
(:func:`.lava_program.compile_graph`); ``network.run(inputs)`` writes the program and the inputs
to an ``.npz`` file, runs :mod:`.lava_worker` in the Lava environment (Python 3.10, numpy < 2,
lava-nc; found or created by :func:`.env.target_python`), and reads back every layer's spikes,
shifted by the layer's lag so that step ``t`` is our step ``t``. Fixed point takes inputs in
``[-1, 1]`` quantized to ``input_bits`` fractional bits (:meth:`LavaNetwork.quantize`); the same
quantized inputs go to our simulation. ``network.simulate`` is our Loihi-faithful integer model
(:mod:`.loihi_fixed`) of the same program. numpy and nir only (no torch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import SpikeFitValueError, UnsupportedLayerError
from .env import run_worker, target_python
from .lava_program import LavaProgram, LavaRefusal, compile_graph
from .loihi_fixed import quantize_inputs, simulate_fixed

__all__ = ["LavaTarget", "LavaNetwork", "LAVA_PACKAGES", "WORKER"]

LAVA_PACKAGES = ["lava-nc==0.10.0", "nir==1.0.8", "numpy==1.26.4"]
WORKER = Path(__file__).with_name("lava_worker.py")


class LavaNetwork:
    """A compiled program in one mode; :meth:`run` runs it in Lava, :meth:`simulate` in our integer model."""

    def __init__(self, program: LavaProgram, mode: str, target: "LavaTarget") -> None:
        self.program, self.mode, self.target = program, mode, target
        self.layers = [layer.name for layer in program.layers]

    def quantize(self, inputs: np.ndarray) -> np.ndarray:
        """The inputs this network really sees: unchanged in float, multiples of ``2**-input_bits`` in fixed."""
        x = np.asarray(inputs, np.float64)
        if self.mode == "float":
            return x
        if np.abs(x).max(initial=0) > 1:
            raise SpikeFitValueError(f"fixed point takes inputs in [-1, 1]; got values up to {np.abs(x).max():.4g}")
        return quantize_inputs(x, self.program.input_bits) / 2.0 ** self.program.input_bits

    def _feed(self, inputs: np.ndarray) -> np.ndarray:
        x = np.asarray(inputs, np.float64)
        if x.ndim < 3 or x.shape[2:] != self.program.in_shape:
            raise SpikeFitValueError(f"inputs must be [N, T, {', '.join(map(str, self.program.in_shape))}], "
                                     f"got {list(x.shape)}")
        x = x.reshape(x.shape[0], x.shape[1], -1)
        return quantize_inputs(x, self.program.input_bits) if self.mode == "fixed" else x

    def simulate(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Our Loihi-faithful integer model (fixed point only), same layout as :meth:`run`."""
        if self.mode != "fixed":
            raise SpikeFitValueError("simulate() is the fixed-point integer model; build with mode='fixed'")
        x = self._feed(inputs)
        return [s.reshape(s.shape[:2] + layer.shape) for s, layer in
                zip(simulate_fixed(self.program, x), self.program.layers)]

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Per layer, Lava's spikes ``[N, T, *shape]`` on ``inputs [N, T, *in_shape]``."""
        x = self._feed(inputs)
        n, t = x.shape[:2]
        got = run_worker([self.target.python(), "-I"], WORKER, self.program.arrays(self.mode, x), what="Lava",
                         timeout_s=self.target.timeout_s,
                         hint=f" ({n} samples x {t} steps); Lava hangs on some parameter types: report the model")
        raw = [got[f"L{k}"] for k in range(len(self.layers))]
        out = []
        for k, (s, layer) in enumerate(zip(raw, self.program.layers)):
            cols = s[:, 1 + k:1 + k + n * t]  # layer k of sample j, step i is column j*T + i + 1 + k
            out.append(cols.T.reshape((n, t) + layer.shape).astype(np.uint8))
        return out


class LavaTarget:
    """Intel Loihi through Lava (lava-nc 0.10.0): floating point and Loihi's bit-accurate fixed point."""

    name = "lava"
    modes = ("float", "fixed")
    timeout_s = 900

    def __init__(self, *, input_bits: int = 8) -> None:
        self.input_bits = input_bits

    def python(self) -> str:
        return target_python("lava-py310", version="3.10", packages=LAVA_PACKAGES, env_var="SPIKEFIT_PYTHON310")

    def build(self, graph, *, mode: str = "float") -> LavaNetwork:
        if mode not in self.modes:
            raise SpikeFitValueError(f"mode={mode!r} is not allowed; Lava modes: {list(self.modes)}")
        try:
            program = compile_graph(graph, input_bits=self.input_bits)
        except LavaRefusal as exc:
            raise UnsupportedLayerError(f"Lava cannot run this graph: {exc}") from None
        if mode == "fixed" and program.why_not_fixed():
            raise UnsupportedLayerError(f"Lava fixed point cannot run this graph: {program.why_not_fixed()}")
        return LavaNetwork(program, mode, self)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("import snn_spikefit.targets.lava; this module is not a script")
