"""Which nir versions read and write our files, and a writer for readers older than the installed nir.

snn_spikefit runs with nir >= 1.0.8 (:data:`NIR_REQUIRED`; tested: :data:`NIR_TESTED`).
Files written by nir 1.0.8 cannot be read by nir 1.0.4 (which sinabs pins,
``nir<=1.0.4``): 1.0.4 rejects every field it does not know (``metadata`` on
``Conv2d``/``Linear``/``Scale``/``AvgPool2d``/``Input``/``Output``, ``v_reset`` on
neurons). ``export_nir(..., nir_version="1.0.4")`` writes the 1.0.4 layout:

* ``v_reset`` is left out; nir 1.0.4 has no such field and nir >= 1.0.5 reads a
  missing ``v_reset`` as 0, so a neuron whose ``v_reset`` is not 0 is refused by name;
* node metadata that 1.0.4 has no place for is dropped, with a warning naming the
  nodes (a codebook on a ``Conv2d``/``Linear``: the weights stay exact, the integer
  codes are lost); graph metadata (``spikefit.dt``) and neuron metadata stay.

>>> NIR_WRITE_VERSIONS
('1.0.4', '1.0.8')
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import nir
import numpy as np

from ..errors import SpikeFitError, SpikeFitValueError, UnsupportedLayerError

__all__ = ["NIR_REQUIRED", "NIR_TESTED", "NIR_WRITE_VERSIONS", "require_nir", "write_nir"]

#: The oldest nir snn_spikefit runs with (``metadata`` on every node, ``v_reset``).
NIR_REQUIRED = "1.0.8"
#: nir versions the test suite runs with (the library) and reads our files with (1.0.4, in a subprocess).
NIR_TESTED = ("1.0.4", "1.0.8")
#: Layouts ``export_nir(nir_version=...)`` writes.
NIR_WRITE_VERSIONS = ("1.0.4", "1.0.8")

# the fields each node type takes in nir 1.0.4 (besides "type"; Input/Output store "shape")
_FIELDS_104 = {
    "Affine": {"weight", "bias", "metadata"}, "Linear": {"weight"}, "Scale": {"scale"},
    "Conv1d": {"input_shape", "weight", "stride", "padding", "dilation", "groups", "bias", "metadata"},
    "Conv2d": {"input_shape", "weight", "stride", "padding", "dilation", "groups", "bias"},
    "AvgPool2d": {"kernel_size", "stride", "padding"}, "SumPool2d": {"kernel_size", "stride", "padding", "metadata"},
    "Flatten": {"input_type", "start_dim", "end_dim", "metadata"}, "Delay": {"delay", "metadata"},
    "Input": {"shape"}, "Output": {"shape"}, "Threshold": {"threshold", "metadata"},
    "LIF": {"tau", "r", "v_leak", "v_threshold", "metadata"}, "IF": {"r", "v_threshold", "metadata"},
    "CubaLIF": {"tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "w_in", "metadata"},
    "LI": {"tau", "r", "v_leak", "metadata"}, "I": {"r", "metadata"},
    "NIRGraph": {"nodes", "edges", "metadata"},
}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


def require_nir() -> None:
    """Refuse, with the versions, when the installed nir is older than :data:`NIR_REQUIRED`."""
    installed = getattr(nir, "version", None) or getattr(nir, "__version__", "0")
    if _version(str(installed)) < _version(NIR_REQUIRED):
        raise SpikeFitError(
            f"nir {installed} is installed; snn_spikefit needs nir >= {NIR_REQUIRED} to export and import "
            f"(pip install 'nir>={NIR_REQUIRED}'); to hand files to nir {installed} (e.g. sinabs' nir<=1.0.4), "
            f"export in a nir >= {NIR_REQUIRED} environment with export_nir(..., nir_version='1.0.4')")


def _node_104(key: str, d: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    kind = d["type"]
    if kind not in _FIELDS_104:
        raise UnsupportedLayerError(f"node {key!r} ({kind}) cannot be written for nir 1.0.4, which has no {kind} "
                                    f"node; use nir_version='{NIR_WRITE_VERSIONS[-1]}'")
    if "v_reset" in d and np.any(np.asarray(d["v_reset"]) != 0):
        raise UnsupportedLayerError(
            f"node {key!r} ({kind}) has v_reset != 0, which nir 1.0.4 cannot hold (it has no v_reset and newer "
            f"nir reads a missing one as 0); use nir_version='{NIR_WRITE_VERSIONS[-1]}'")
    out = {"type": kind}
    for name, value in d.items():
        if name in _FIELDS_104[kind]:
            out[name] = value
        elif name == "metadata" and value:
            dropped.append(key)
    if kind == "NIRGraph":
        out["nodes"] = {k: _node_104(k, n, dropped) for k, n in d["nodes"].items()}
    return out


def _write_h5(path: str | os.PathLike, version: str, tree: dict[str, Any]) -> None:
    import h5py

    def write(group, node: dict) -> None:
        for k, v in node.items():
            if k == "metadata" and not v:
                continue
            if isinstance(v, str):
                group.create_dataset(k, data=v, dtype=h5py.string_dtype())
            elif isinstance(v, dict):
                write(group.create_group(str(k)), v)
            elif isinstance(v, np.ndarray):
                group.create_dataset(k, data=v, dtype=v.dtype)
            else:
                group.create_dataset(k, data=v)

    with h5py.File(path, "w") as f:
        f.create_dataset("version", data=version, dtype=h5py.string_dtype())
        write(f.create_group("node"), tree)


def write_nir(path: str | os.PathLike, graph: nir.NIRGraph, nir_version: str | None = None) -> None:
    """Write ``graph`` for readers of ``nir_version`` (default: the installed nir's own layout)."""
    if nir_version is None or nir_version == NIR_WRITE_VERSIONS[-1]:
        nir.write(path, graph)
        return
    if nir_version != "1.0.4":
        raise SpikeFitValueError(f"nir_version={nir_version!r} is not allowed; use one of {list(NIR_WRITE_VERSIONS)}")
    dropped: list[str] = []
    tree = _node_104("graph", graph.to_dict(), dropped)
    if dropped:
        warnings.warn(f"nir 1.0.4 has no metadata on nodes {sorted(set(dropped))}: their spikefit.* metadata "
                      f"(codebook codes, scale) is not written; the weights themselves are exact",
                      UserWarning, stacklevel=3)
    _write_h5(path, "1.0.4", tree)
