"""nir versions: files written for nir 1.0.4 (sinabs pins nir<=1.0.4) read there, and read back exactly here."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.nir import compat

from conftest import needs_snntorch

nir = pytest.importorskip("nir")
ROOT = Path(__file__).resolve().parents[1]


def _nir104_python() -> str | None:
    """The Python of a venv with nir 1.0.4: $SPIKEFIT_NIR104_PYTHON, <repo>/.nir104 (.ci/run makes it), /work/wt/nir104."""
    for candidate in (os.environ.get("SPIKEFIT_NIR104_PYTHON"), ROOT / ".nir104/bin/python", "/work/wt/nir104/bin/python"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


NIR104 = _nir104_python()
needs_nir104 = pytest.mark.skipif(NIR104 is None, reason="no venv with nir 1.0.4 (.ci/run creates .nir104: python3 -m "
                                                         "venv .nir104 && .nir104/bin/pip install nir==1.0.4 numpy h5py)")

_READER = """
import json, sys, numpy as np, nir
g = nir.read(sys.argv[1])
out = {"version": nir.version if hasattr(nir, "version") else "?", "edges": [list(e) for e in g.edges],
       "metadata": {k: str(v) for k, v in g.metadata.items()}, "nodes": {}}
for k, n in g.nodes.items():
    out["nodes"][k] = {"type": type(n).__name__, **{f: np.asarray(getattr(n, f), np.float64).ravel().tolist()
                       for f in ("weight", "bias", "tau", "r", "v_threshold", "tau_syn", "tau_mem", "w_in")
                       if getattr(n, f, None) is not None}}
print(json.dumps(out))
"""


def _model():
    import snntorch as snn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), snn.Leaky(beta=0.5, reset_mechanism="zero", init_hidden=True),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3),
                         snn.Synaptic(alpha=0.5, beta=0.6, reset_mechanism="zero", reset_delay=False, init_hidden=True),
                         nn.Linear(3, 2, bias=False))


@needs_snntorch
@needs_nir104
def test_file_for_nir_104_reads_there_with_the_same_graph(tmp_path):
    model = sf.wrap(_model(), m=4, bits=4)
    model.eval()
    with pytest.warns(UserWarning, match=r"nir 1.0.4 has no metadata on nodes \['0', '6'\]"):
        graph = sf.export_nir(model, torch.rand(1, 1, 4, 4), tmp_path / "old.nir", nir_version="1.0.4")
    done = subprocess.run([NIR104, "-c", _READER, str(tmp_path / "old.nir")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["version"] == "1.0.4" and seen["metadata"]["spikefit.dt"] == "0.0001"
    assert sorted(map(tuple, seen["edges"])) == sorted(graph.edges)
    for key, node in graph.nodes.items():
        assert seen["nodes"][key]["type"] == type(node).__name__
        for field, values in seen["nodes"][key].items():
            if field != "type":
                np.testing.assert_array_equal(values, np.asarray(getattr(node, field), np.float64).ravel())
    # and the file reads back here (nir 1.0.8) as the same network: same weights, same spikes
    back = sf.import_nir(tmp_path / "old.nir", "snntorch")
    x = torch.rand(50, 3, 1, 4, 4) * 3
    out = sf.run(model, x)
    assert out.abs().sum() > 0 and torch.equal(sf.run(back, x), out)


@needs_snntorch
def test_nir_104_layout_refuses_what_it_cannot_hold(tmp_path):
    g = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((2, 3), np.float32), bias=np.zeros(2, np.float32)),
                               nir.LIF(tau=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2),
                                       v_threshold=np.ones(2), v_reset=np.full(2, -0.5)))
    with pytest.raises(sf.UnsupportedLayerError, match=r"node 'lif' \(LIF\) has v_reset != 0, which nir 1.0.4"):
        compat.write_nir(tmp_path / "x.nir", g, "1.0.4")
    with pytest.raises(sf.SpikeFitValueError, match=r"nir_version='0.9' is not allowed; use one of \['1.0.4', '1.0.8'\]"):
        compat.write_nir(tmp_path / "x.nir", g, "0.9")


def test_installed_nir_is_a_tested_version_and_old_ones_are_refused(monkeypatch):
    assert nir.version in compat.NIR_TESTED
    compat.require_nir()
    monkeypatch.setattr(nir, "version", "1.0.4")
    with pytest.raises(sf.SpikeFitError, match=r"nir 1.0.4 is installed; snn_spikefit needs nir >= 1.0.8.*nir_version='1.0.4'"):
        sf.export_nir(nn.Sequential(nn.Linear(2, 2)), torch.rand(1, 2))
