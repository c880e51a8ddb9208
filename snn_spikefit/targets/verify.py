"""``verify``: the same inputs through a target's simulator and through ours, spike for spike.

>>> from snn_spikefit.targets.verify import VerifyReport
>>> VerifyReport("lava", 4, 2, []).ok
True

Our simulation is the model itself (a ``.nir`` file: :func:`~snn_spikefit.import_nir`), run by
:func:`~snn_spikefit.run` in float64 (codebook layers stripped to their exact quantized weights).
The target gets the NIR graph of the model (:func:`~snn_spikefit.export_nir`) and the inputs our
simulation sees (in fixed point: quantized to the target's input grid, and the same quantized
inputs go to our simulation). In fixed point the target is also compared with our Loihi-faithful
integer model of the same program (``network.simulate``): that comparison decides agreement, and
the difference to our float simulation is the chip-arithmetic gap (differing spikes, accuracy).
A target whose ``keeps_state`` names the mode (Xylo's ``"fixed"``) runs a model that holds
chip-precision state as trained (state rules and frozen codebooks kept): the network trained with
``wrap(..., hardware="xylo")`` is then compared with the chip as it is.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import SpikeFitTypeError, SpikeFitValueError
from ..neurons.state import state_rules
from ..reports import Report
from ..runtime import check_module, eval_mode, run
from ..table import Table
from ..trace import Recorder
from . import get_target

__all__ = ["verify", "VerifyReport", "LayerAgreement"]


@dataclass(frozen=True)
class LayerAgreement:
    mode: str
    layer: str
    neurons: int
    ours: int                      # spikes in our (float64) simulation
    target: int                    # spikes in the target's simulator
    differing: int                 # (sample, step, neuron) where they differ
    ours_int: int | None = None    # fixed point: our integer model of the chip
    differing_int: int | None = None


@dataclass(frozen=True)
class VerifyReport(Report):
    """Per mode and layer, spikes in both simulators and how many differ; accuracies when labelled."""

    target: str
    steps: int
    samples: int
    layers: list[LayerAgreement]
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)   # mode -> {ours, target, ours_int}

    @property
    def ok(self) -> bool:
        """Float: no differing spike; fixed point: no spike differs from our integer model."""
        return all((r.differing_int if r.mode == "fixed" else r.differing) == 0 for r in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "steps": self.steps, "samples": self.samples, "ok": self.ok,
                "layers": [vars(r) for r in self.layers], "accuracy": self.accuracy}

    def table(self) -> Table:
        t = Table(["mode", "layer", "neurons", "ours", self.target, "differing", "ours_int", "differing_int",
                   "acc_ours", f"acc_{self.target}", "acc_int"])
        for r in self.layers:
            acc = self.accuracy.get(r.mode, {}) if r is self._last(r.mode) else {}
            t.add_row([r.mode, r.layer, r.neurons, r.ours, r.target, r.differing,
                       "" if r.ours_int is None else r.ours_int, "" if r.differing_int is None else r.differing_int,
                       *(_pct(acc.get(k)) for k in ("ours", "target", "ours_int"))])
        return t

    def _last(self, mode: str) -> LayerAgreement | None:
        rows = [r for r in self.layers if r.mode == mode]
        return rows[-1] if rows else None

    def __str__(self) -> str:
        verdict = "agree" if self.ok else "DIFFER"
        return (f"{self.target} vs our simulation: {self.samples} samples x {self.steps} steps: {verdict}\n"
                f"{self.table()}")


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}%"


def _our_spikes(model: nn.Module, x: np.ndarray, keep_state: bool = False) -> list[np.ndarray]:
    """Every neuron's spikes ``[N, T, ...]`` in float64 on time-major-converted ``x [N, T, ...]``.

    ``keep_state``: the model runs as trained, chip-precision state and frozen codebooks kept.
    """
    from ..quantize.layers import compressed_layers
    from ..quantize.wrap import strip

    ours = copy.deepcopy(model)
    if compressed_layers(ours) and not keep_state:
        strip(ours)
    ours = ours.double()
    for m in ours.modules():  # spikes of some frameworks come back float32: feed float64 on
        if any(p.dtype == torch.float64 for p in m.parameters(recurse=False)):
            m.register_forward_pre_hook(lambda _m, args: tuple(
                a.double() if isinstance(a, Tensor) and a.is_floating_point() else a for a in args))
    xt = torch.from_numpy(np.ascontiguousarray(np.swapaxes(x, 0, 1)))
    with torch.no_grad(), eval_mode(ours), Recorder(ours) as rec:
        run(ours, xt, num_steps=None)
    return [s.transpose(0, 1).numpy().astype(np.uint8) for s in rec.spikes.values()]


def _graph_and_model(model: Any, sample: Tensor, framework: str | None):
    from ..nir.exporter import export_nir
    from ..nir.importer import import_nir, read_nir

    if isinstance(model, (str, os.PathLike)):
        graph = read_nir(model)
        return graph, import_nir(graph, framework)
    check_module(model)
    import warnings

    with warnings.catch_warnings():  # the subtract-reset warning: this target honours it
        warnings.simplefilter("ignore", UserWarning)
        return export_nir(model, sample), model


def _inputs(data: Any, num_steps: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    x, y = (data if isinstance(data, (tuple, list)) and len(data) == 2 else (data, None))
    if not isinstance(x, Tensor):
        raise SpikeFitTypeError(f"data must be a tensor x or a pair (x, labels), got {type(x).__name__}")
    if num_steps is None:  # time-major [T, N, ...]
        xs = np.swapaxes(x.detach().double().cpu().numpy(), 0, 1)
    else:
        if num_steps < 1:
            raise SpikeFitValueError(f"num_steps={num_steps} is not allowed; use an int >= 1")
        xs = np.repeat(x.detach().double().cpu().numpy()[:, None], num_steps, axis=1)
    return xs, (None if y is None else y.detach().cpu().numpy())


def _accuracy(spikes: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    counts = spikes.reshape(spikes.shape[0], spikes.shape[1], -1).sum(1)
    return float((counts.argmax(1) == labels).mean())


def verify(model: Any, data: Any, *, target: str = "lava", modes: tuple[str, ...] = ("float",),
           num_steps: int | None = 50, framework: str | None = None) -> VerifyReport:
    """Run ``data`` through ``target`` and through our simulation; compare every layer's spikes.

    Args:
        model: a model of any adapter, or a path to a ``.nir`` file we wrote.
        data: inputs ``[N, ...]`` (repeated ``num_steps`` times) or ``(inputs, labels)``;
            with ``num_steps=None`` inputs are time-major ``[T, N, ...]``.
        modes: the target's arithmetic: ``"float"``, ``"fixed"`` (Loihi's integers) or both.
    """
    tgt = get_target(target)
    x, labels = _inputs(data, num_steps)
    graph, ours_model = _graph_and_model(model, torch.from_numpy(x[:1, 0]).float(), framework)
    rows, accuracy = [], {}
    for mode in modes:
        network = tgt.build(graph, mode=mode)
        xq = network.quantize(x)
        keep = mode in getattr(tgt, "keeps_state", ()) and bool(state_rules(ours_model))
        ours = _our_spikes(ours_model, xq, keep)
        if len(ours) != len(network.layers):
            raise SpikeFitValueError(f"our simulation has {len(ours)} neuron layers, the {target} network "
                                     f"{len(network.layers)} ({network.layers})")
        theirs = network.run(xq)
        ints = network.simulate(xq) if mode == "fixed" else [None] * len(ours)
        for name, a, b, c in zip(network.layers, ours, theirs, ints):
            a = a.reshape(b.shape)
            rows.append(LayerAgreement(
                mode, name, int(np.prod(b.shape[2:])), int(a.sum()), int(b.sum()), int((a != b).sum()),
                None if c is None else int(c.sum()), None if c is None else int((c != b).sum())))
        acc = {"ours": _accuracy(ours[-1], labels), "target": _accuracy(theirs[-1], labels)}
        if mode == "fixed":
            acc["ours_int"] = _accuracy(ints[-1], labels)
        accuracy[mode] = {k: v for k, v in acc.items() if v is not None}
    return VerifyReport(target, int(x.shape[1]), int(x.shape[0]), rows, accuracy)
