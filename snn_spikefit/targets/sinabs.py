"""The sinabs target (SynSense Speck): our NIR graph as sinabs layers, run in sinabs' simulation.

``SinabsTarget().build(graph, mode="float")`` compiles the graph (:func:`.sinabs_program.compile_sinabs`:
our integer codes as the Conv2d / Linear weights, IAF neurons set to ours exactly, or a refusal
with the reason and the fix); ``network.run(inputs)`` runs :mod:`.sinabs_worker` with this
interpreter and sinabs 3.1.3 on ``PYTHONPATH``, installed ``--no-deps`` into the targets cache
(:func:`.env.target_site`): sinabs pins ``nir<=1.0.4`` but runs beside our nir 1.0.8, so our
environment is not changed. sinabs' own layers start in the step of their input: no lag.
``samna`` (SynSense's chip library) cannot be installed offline (the package index holds a stub
that downloads the real one at import), and ``sinabs.backend.dynapcnn`` imports it: the chip
configuration (``DynapcnnNetwork``, ``make_config``) does not run here; ``check(model, "speck")``
applies its limits.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ..errors import SpikeFitValueError, UnsupportedLayerError
from .env import run_worker, target_site
from .sinabs_program import SinabsProgram, SinabsRefusal, compile_sinabs

__all__ = ["SinabsTarget", "SinabsNetwork", "SINABS_PACKAGES", "WORKER"]

SINABS_PACKAGES = ["sinabs==3.1.3", "pbr==7.1.3"]
WORKER = Path(__file__).with_name("sinabs_worker.py")


class SinabsNetwork:
    def __init__(self, program: SinabsProgram, target: "SinabsTarget") -> None:
        self.program, self.target, self.mode = program, target, "float"
        self.layers = [name for name, _ in program.layers]
        self.held: dict[str, np.ndarray] = {}   # the Conv2d / Linear weights sinabs held, after a run

    def quantize(self, inputs: np.ndarray) -> np.ndarray:
        return np.asarray(inputs, np.float64)

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Per IAF layer, sinabs' spikes ``[N, T, *shape]`` on ``inputs [N, T, *in_shape]``."""
        x = np.asarray(inputs, np.float64)
        if x.ndim < 3 or x.shape[2:] != self.program.in_shape:
            raise SpikeFitValueError(f"inputs must be [N, T, {', '.join(map(str, self.program.in_shape))}], "
                                     f"got {list(x.shape)}")
        site = self.target.site()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")])))
        got = run_worker([sys.executable], WORKER, self.program.npz(x), what="sinabs",
                         timeout_s=self.target.timeout_s, env=env)
        self.held = {k: v for k, v in got.items() if k.startswith("held")}
        return [got[f"L{j}"] for j in range(len(self.layers))]


class SinabsTarget:
    """SynSense Speck through sinabs 3.1.3's layers (simulation; no chip configuration without samna)."""

    name = "sinabs"
    modes = ("float",)
    timeout_s = 900

    def site(self) -> str:
        return target_site("sinabs-3.1.3", packages=SINABS_PACKAGES)

    def build(self, graph, *, mode: str = "float") -> SinabsNetwork:
        if mode not in self.modes:
            raise SpikeFitValueError(f"mode={mode!r} is not allowed; sinabs simulates in floating point: "
                                     f"{list(self.modes)}")
        try:
            return SinabsNetwork(compile_sinabs(graph), self)
        except SinabsRefusal as exc:
            raise UnsupportedLayerError(f"Speck (sinabs) cannot run this graph: {exc}") from None
