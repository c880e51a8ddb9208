"""The Xylo target (SynSense Xylo Audio 2): our NIR graph as a Xylo core, run in xylosim.

``XyloTarget().build(graph, mode="fixed")`` compiles the graph (:func:`.xylo_spec.compile_xylo`:
our integer codes as the weights, thresholds and bit-shift decays derived exactly, or a refusal
naming what Xylo cannot represent and the fix); ``network.run(inputs)`` runs :mod:`.xylo_worker`
in the Xylo environment (numpy + ``xylosim==0.1.3``, built from its sdist, and ``rockpool==3.1.0``,
whose own mapper :mod:`.xylo_map` runs; found or created by :func:`.env.target_python`) and
returns every layer's spikes with Xylo's lag taken out (layer ``k`` answers ``k`` steps after the
input). ``network.simulate`` is our integer model
(:mod:`.xylo_int`). Xylo has no floating point: its only mode is ``"fixed"``, where agreement is
with our integer model and the difference to our float simulation is Xylo's arithmetic (shift
rounding, reset before the leak, several spikes a step). No samna (not installable offline): no
chip configuration (``config_from_specification``), the limits are enforced here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import SpikeFitValueError, UnsupportedLayerError
from .env import run_worker, target_python
from .xylo_int import simulate_xylo
from .xylo_spec import XyloRefusal, XyloSpec, compile_xylo

__all__ = ["XyloTarget", "XyloNetwork", "XYLO_PACKAGES", "WORKER"]

XYLO_PACKAGES = ["xylosim==0.1.3", "rockpool==3.1.0", "numpy"]
WORKER = Path(__file__).with_name("xylo_worker.py")


class XyloNetwork:
    """A compiled Xylo core; :meth:`run` runs it in xylosim, :meth:`simulate` in our integer model."""

    def __init__(self, spec: XyloSpec, target: "XyloTarget") -> None:
        self.spec, self.target, self.mode = spec, target, "fixed"
        self.layers = [layer.name for layer in spec.layers]
        self.held: dict[str, np.ndarray] = {}   # the weights xylosim holds, after a run

    def quantize(self, inputs: np.ndarray) -> np.ndarray:
        """The inputs Xylo sees: multiples of ``q = 1/15`` in [0, 1] (0..15 events per step and channel)."""
        x = np.asarray(inputs, np.float64)
        if x.min(initial=0) < 0 or x.max(initial=0) > 1:
            raise SpikeFitValueError(f"Xylo takes event counts: inputs in [0, 1] (x 15 events); got "
                                     f"{x.min():.4g}..{x.max():.4g}")
        return np.rint(x / self.spec.input_quantum) * self.spec.input_quantum

    def counts(self, inputs: np.ndarray) -> np.ndarray:
        x = np.asarray(inputs, np.float64)
        if x.ndim < 3 or x.shape[2:] != self.spec.in_shape:
            raise SpikeFitValueError(f"inputs must be [N, T, {', '.join(map(str, self.spec.in_shape))}], "
                                     f"got {list(x.shape)}")
        c = np.rint(self.quantize(x).reshape(x.shape[0], x.shape[1], -1) / self.spec.input_quantum)
        lag = len(self.layers) - 1  # run until the readout has answered the last step
        return np.concatenate([c, np.zeros((c.shape[0], lag, c.shape[2]))], 1).astype(np.int64)

    def _split(self, hidden: np.ndarray, out: np.ndarray, t: int) -> list[np.ndarray]:
        res, start = [], 0
        for k, layer in enumerate(self.spec.layers[:-1]):
            res.append(hidden[:, k:k + t, start:start + layer.n])
            start += layer.n
        lag = len(self.layers) - 1
        return res + [out[:, lag:lag + t]]

    def simulate(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Our integer model of the Xylo core: spike counts per layer ``[N, T, n]``."""
        c = self.counts(inputs)
        return self._split(*simulate_xylo(self.spec.arrays(), c), np.asarray(inputs).shape[1])

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Per layer, xylosim's spike counts ``[N, T, n]`` on ``inputs [N, T, *in_shape]``."""
        c = self.counts(inputs)
        got = run_worker([self.target.python(), "-I"], WORKER, dict(counts=c, **self.spec.arrays()),
                         what="xylosim", timeout_s=self.target.timeout_s)
        self.held = {k: got[k] for k in ("held_in", "held_rec", "held_out")}
        return self._split(got["hidden"], got["out"], np.asarray(inputs).shape[1])


class XyloTarget:
    """SynSense Xylo Audio 2 (syns61201) through xylosim 0.1.3: Xylo's integer arithmetic only."""

    name = "xylo"
    modes = ("fixed",)
    keeps_state = ("fixed",)  # verify runs a model trained in Xylo's order as trained (see verify.py)
    timeout_s = 900

    def python(self) -> str:
        version = "%d.%d" % sys.version_info[:2]
        return target_python(f"xylo-py{version.replace('.', '')}", version=version, packages=XYLO_PACKAGES,
                             env_var="SPIKEFIT_PYTHON_XYLO")

    def build(self, graph, *, mode: str = "fixed") -> XyloNetwork:
        if mode not in self.modes:
            raise SpikeFitValueError(f"mode={mode!r} is not allowed; Xylo computes in integers only: "
                                     f"{list(self.modes)}")
        try:
            return XyloNetwork(compile_xylo(graph), self)
        except XyloRefusal as exc:
            raise UnsupportedLayerError(f"Xylo cannot run this graph: {exc}") from None
