"""Map a dense network with rockpool 3.1.0's own Xylo Audio 2 mapper (``syns61201.mapper``), without samna.

A standalone script for the Xylo environment (numpy, rockpool); it imports neither torch nor
snn_spikefit::

    python xylo_mapper_worker.py LAYERS.npz MAPPED.npz

``LAYERS.npz``: ``dt``, ``n_layers`` and per layer ``k``: ``w{k} [n_in, n_out]`` (the weights the
mapper is given), ``tau_mem{k}``, ``tau_syn{k}``, ``threshold{k}`` (per neuron) and optionally
``b{k}`` (a bias on the weights). The layers become a rockpool graph (``LinearWeights`` ->
``LIFNeuronWithSynsRealValue`` per layer, the graph that rockpool's own ``Linear``/``LIF`` modules
produce) and go through ``mapper(graph, "int8", "int16", "uint8")``. ``MAPPED.npz`` gets ``ok``,
``error`` (the mapper's message chain, ``DRCError`` and its causes), ``warnings`` (its
``DRCWarning`` lines) and, when mapped, the specification's arrays (``weights_in``,
``weights_rec``, ``weights_out``, ``threshold``, ``threshold_out``, ``dash_mem``, ``dash_syn``,
``dash_mem_out``, ``dash_syn_out``).

rockpool's ``devices/xylo/__init__`` imports samna through ``syns65302`` unguarded; the
sub-packages guard their own samna imports, so the package object is registered without running
that ``__init__`` (the import bypass of ../shared/TARGETS.md).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import warnings

import numpy as np

KEYS = ("weights_in", "weights_rec", "weights_out", "threshold", "threshold_out", "dash_mem", "dash_syn",
        "dash_mem_out", "dash_syn_out")


def _bypass() -> None:
    spec = importlib.util.find_spec("rockpool.devices.xylo")
    mod = types.ModuleType("rockpool.devices.xylo")
    mod.__path__, mod.__spec__ = list(spec.submodule_search_locations), spec
    sys.modules.setdefault("rockpool.devices.xylo", mod)


def _graph(a: dict):
    from rockpool.graph import GraphHolder, LIFNeuronWithSynsRealValue, LinearWeights, connect_modules

    dt, mods = float(a["dt"]), []
    for k in range(int(a["n_layers"])):
        w = np.asarray(a[f"w{k}"])
        bias = a.get(f"b{k}")
        mods.append(LinearWeights._factory(w.shape[0], w.shape[1], f"w{k}", None, w, bias))
        n = w.shape[1]
        mods.append(LIFNeuronWithSynsRealValue._factory(
            n, n, f"lif{k}", None, np.asarray(a[f"tau_mem{k}"]).tolist(), np.asarray(a[f"tau_syn{k}"]).tolist(),
            np.asarray(a[f"threshold{k}"]).tolist(), np.zeros(n).tolist(), dt))
    for src, dst in zip(mods[:-1], mods[1:]):
        connect_modules(src, dst)
    return GraphHolder(mods[0].input_nodes, mods[-1].output_nodes, "spikefit", None)


def _chain(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(parts)


def run(a: dict) -> dict:
    _bypass()
    from rockpool.devices.xylo.syns61201 import mapper

    out: dict = {"ok": np.array(False), "error": np.array(""), "warnings": np.array([""])}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            spec = mapper(_graph(a), weight_dtype="int8", threshold_dtype="int16", dash_dtype="uint8")
        except Exception as exc:  # noqa: BLE001  (the mapper's refusal is the answer)
            out["error"] = np.array(_chain(exc))
            spec = None
    out["warnings"] = np.array([str(w.message).replace("\n", " ") for w in caught] or [""])
    if spec is not None:
        out["ok"] = np.array(True)
        out.update({k: np.asarray(spec[k]) for k in KEYS})
    return out


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    if len(argv) != 2:
        print("usage: xylo_mapper_worker.py LAYERS.npz MAPPED.npz", file=sys.stderr)
        return 2
    with np.load(argv[0], allow_pickle=False) as f:
        layers = {k: f[k] for k in f.files}
    np.savez(argv[1], **run(layers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
