"""The Lava target (Loihi): our compressed networks run spike for spike in Lava's own simulator.

Builds the Lava environment (Python 3.10, lava-nc, numpy < 2) once per session in the targets
cache (``.ci/run`` sets ``SPIKEFIT_REQUIRE_LAVA=1``: there a missing Python 3.10 fails instead of
skipping). Networks: dense and conv, m=4 bits=8, trained a few steps on digits so every layer spikes.
"""

import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.errors import SpikeFitValueError, UnsupportedLayerError
from snn_spikefit.targets import get_target, list_targets, register_target
from snn_spikefit.targets.env import find_python
from snn_spikefit.targets.verify import verify

from conftest import needs_snntorch

STEPS, SAMPLES = 50, 6
# Fixed point vs our float simulation: the integers are exact (weights, inputs), but the threshold and
# the bias round to Loihi's grid (vth to one Dense output unit, <= 2**-3 of a code step here; bias to
# 1/64 of it) and Loihi's decay rounds toward zero every step, so a spike moves when the float
# membrane passes within that rounding of the threshold, and a moved hidden spike moves later ones.
# Measured (benchmarks/lava_agreement.py, 100 digits x 50 steps, these 8 nets): at most 1.2 % of a
# layer's spikes differ (6 samples: 2.9 %), accuracy equal. Bound: 5 % per layer, one sample of accuracy.
FIXED_GAP = 0.05


@pytest.fixture(scope="session")
def lava():
    if find_python("3.10", "SPIKEFIT_PYTHON310") is None:
        if os.environ.get("SPIKEFIT_REQUIRE_LAVA"):
            pytest.fail("SPIKEFIT_REQUIRE_LAVA is set but no Python 3.10 was found for the Lava environment")
        pytest.skip("Python 3.10 is absent: the Lava target needs it (lava-nc requires Python < 3.11)")
    target = get_target("lava")
    target.python()  # creates the environment once
    return target


def _digits():
    train, test = sf.data.datasets.digits()
    return train, test.tensors[0][:SAMPLES], test.tensors[1][:SAMPLES]


def _net(arch, reset, bias):
    import snntorch as snn

    def lif():
        return snn.Leaky(beta=0.875, threshold=1.0, init_hidden=True, reset_mechanism=reset)
    if arch == "dense":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 40, bias=bias), lif(), nn.Linear(40, 10, bias=bias), lif())
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=bias), lif(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(64, 10, bias=bias), lif())


_TRAINED = {}


def trained(arch, reset, bias):
    """A network compressed to m=4 bits=8, trained 30 batches, frozen (cached per session)."""
    key = (arch, reset, bias)
    if key not in _TRAINED:
        torch.manual_seed(0)
        train, _, _ = _digits()
        net = _net(arch, reset, bias)
        sf.wrap(net, m=4, bits=8)
        loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True)
        sf.fit(net, [b for _, b in zip(range(30), loader)], num_steps=8, lr=1e-2, progress=False)
        sf.freeze(net)
        _TRAINED[key] = net
    return _TRAINED[key]


@pytest.mark.slow
@needs_snntorch
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("arch", ["dense", "conv"])
def test_lava_matches_our_simulation(lava, arch, reset, bias):
    net = trained(arch, reset, bias)
    _, x, y = _digits()
    report = verify(net, (x, y), target="lava", modes=("float", "fixed"), num_steps=STEPS)
    assert report.steps == STEPS and report.samples == SAMPLES
    for row in report.layers:
        total = SAMPLES * STEPS * row.neurons
        assert 0 < row.ours < total, f"{row.layer} is silent or saturated: the comparison would be vacuous"
        if row.mode == "float":
            assert row.differing == 0 and row.target == row.ours
        else:  # Loihi's integers: bit for bit with our integer model, close to our float simulation
            assert row.differing_int == 0 and row.ours_int == row.target
            assert row.differing <= FIXED_GAP * row.ours
    assert report.ok
    acc = report.accuracy
    assert acc["float"]["ours"] == acc["float"]["target"]
    assert acc["fixed"]["target"] == acc["fixed"]["ours_int"]
    assert abs(acc["fixed"]["target"] - acc["fixed"]["ours"]) <= 1 / SAMPLES + 1e-9


@pytest.mark.slow
@needs_snntorch
@pytest.mark.parametrize("kind", ["IF", "CubaLIF", "CubaLIF-subtract"])
def test_if_and_cuba_neurons_match(lava, kind):
    import snntorch as snn

    def neuron():
        if kind == "IF":
            return snn.Leaky(beta=1.0, threshold=2.0, init_hidden=True, reset_mechanism="zero")
        return snn.Synaptic(alpha=0.5, beta=0.875, threshold=1.0, init_hidden=True,
                            reset_mechanism="subtract" if kind.endswith("subtract") else "zero",
                            reset_delay=kind.endswith("subtract"))
    torch.manual_seed(0)
    train, x, y = _digits()
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 40, bias=False), neuron(), nn.Linear(40, 10, bias=False), neuron())
    sf.wrap(net, m=4, bits=8)
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True)
    sf.fit(net, [b for _, b in zip(range(30), loader)], num_steps=8, lr=1e-2, progress=False)
    sf.freeze(net)
    report = verify(net, (x, y), target="lava", modes=("float", "fixed"), num_steps=STEPS)
    assert report.ok and all(0 < r.ours < SAMPLES * STEPS * r.neurons for r in report.layers)
    assert all(r.differing == 0 for r in report.layers if r.mode == "float")


@pytest.mark.slow
@needs_snntorch
def test_verify_command(lava, tmp_path):
    from snn_spikefit.cli import main

    net = trained("dense", "zero", True)
    path = tmp_path / "net.nir"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.export_nir(net, torch.zeros(1, 1, 8, 8), path)
    out = tmp_path / "agree.json"
    assert main(["verify", str(path), "--target", "lava", "--steps", "50", "--limit", "4", "--out", str(out),
                 "--no-progress"]) == 0
    import json

    data = json.loads(out.read_text())
    assert data["ok"] and {r["mode"] for r in data["layers"]} == {"float", "fixed"}
    assert main(["verify", str(path), "--target", "lava", "--steps", "0"]) == 2


@needs_snntorch
def test_verify_command_refuses_missing_model(tmp_path, capsys):
    from snn_spikefit.cli import main

    assert main(["verify", str(tmp_path / "none.nir"), "--target", "lava"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _graph(net, shape=(1, 1, 8, 8)):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sf.export_nir(net, torch.zeros(shape))


@needs_snntorch
def test_refusals_name_the_layer_and_the_reason():
    import snntorch as snn

    target = get_target("lava")
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), snn.Leaky(beta=0.875, init_hidden=True))
    target.build(_graph(plain), mode="float")  # float runs any weights
    with pytest.raises(UnsupportedLayerError, match="no frozen integer codebook"):
        target.build(_graph(plain), mode="fixed")
    readout = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), snn.Leaky(beta=0.875, init_hidden=True),
                            nn.Linear(10, 3))
    with pytest.raises(UnsupportedLayerError, match="end the network with a spiking layer"):
        target.build(_graph(readout), mode="float")
    per_neuron = nn.Sequential(nn.Flatten(), nn.Linear(64, 10),
                               snn.Leaky(beta=torch.linspace(0.5, 0.9, 10), init_hidden=True))
    with pytest.raises(UnsupportedLayerError, match="tau differs between neurons"):
        target.build(_graph(per_neuron), mode="float")
    channel = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), snn.Leaky(beta=0.875, init_hidden=True))
    sf.wrap(channel, m=4, bits=8, granularity="channel")
    sf.freeze(channel)
    with pytest.raises(UnsupportedLayerError, match="per-channel scales"):
        target.build(_graph(channel), mode="fixed")
    with pytest.raises(SpikeFitValueError, match="Lava modes"):
        target.build(_graph(plain), mode="int4")


def test_target_registry_refuses_duplicates():
    assert "lava" in list_targets()
    lava = get_target("lava")
    with pytest.raises(SpikeFitValueError, match="already registered"):
        register_target(lava)
    assert register_target(lava, replace=True) is lava
    with pytest.raises(SpikeFitValueError, match="targets: \\['lava'"):
        get_target("loihi3")


def test_lava_side_modules_import_without_torch():
    """The worker and the Lava process file run in the target's Python: no torch, no snn_spikefit."""
    import ast
    from pathlib import Path

    folder = Path(sf.__file__).parent / "targets"
    for path in [folder / "lava_worker.py", folder / "lava_processes" / "lif_subtract.py"]:
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert names <= {"json", "os", "sys", "numpy", "lava", "lif_subtract", "__future__"}, (path, names)


def test_environment_without_the_python_names_what_to_install(tmp_path, monkeypatch):
    from snn_spikefit.targets import TargetError
    from snn_spikefit.targets.env import target_python, targets_home

    monkeypatch.setenv("SPIKEFIT_TARGETS_HOME", str(tmp_path))
    assert targets_home() == tmp_path
    with pytest.raises(TargetError, match="needs Python 3.99 .*pyenv install 3.99"):
        target_python("nothing", version="3.99", packages=["x"], env_var="SPIKEFIT_PYTHON399")
    with pytest.raises(TargetError, match="does not exist or is out of date"):
        target_python("nothing", version="3.99", packages=["x"], env_var="SPIKEFIT_PYTHON399", create=False)
    assert not (tmp_path / "nothing").exists()


@needs_snntorch
def test_check_loihi_accepts_what_lava_fixed_point_runs():
    """Loihi's rule is 8-bit codes: Lava keeps 8 bits of a mixed-sign weight (2 * code is exact)."""
    import snntorch as snn

    assert sf.get_profile("loihi").weight_bits == 8 and sf.get_profile("loihi2").weight_bits == 8
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), snn.Leaky(beta=0.875, init_hidden=True))
    sf.wrap(net, m=4, bits=8)
    sf.freeze(net)
    x = torch.zeros(1, 1, 8, 8)
    assert sf.check(net, "loihi", sample=x).ok and sf.check(net, "loihi2", sample=x).ok
    network = get_target("lava").build(_graph(net), mode="fixed")
    layer = network.program.layers[0]
    assert np.array_equal(layer.fixed["weights"], 2 * layer.codes) and np.abs(layer.codes).max() <= 127


def test_run_worker_round_trips_arrays_and_names_a_failed_or_slow_worker(tmp_path):
    import sys

    from snn_spikefit.targets import TargetError
    from snn_spikefit.targets.env import run_worker

    echo = tmp_path / "echo.py"
    echo.write_text("import sys, numpy as np\nf = np.load(sys.argv[1])\n"
                    "np.savez(sys.argv[2], **{'x2': 2 * f['x']})\n")
    got = run_worker([sys.executable], echo, {"x": np.arange(5)}, what="echo", timeout_s=60)
    assert list(got) == ["x2"] and np.array_equal(got["x2"], 2 * np.arange(5))
    crash = tmp_path / "crash.py"
    crash.write_text("import sys\nsys.exit('no such layer: L3')\n")
    with pytest.raises(TargetError, match=r"the echo run failed \(exit 1\):\nno such layer: L3"):
        run_worker([sys.executable], crash, {"x": np.arange(5)}, what="echo", timeout_s=60)
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    with pytest.raises(TargetError, match="echo did not finish within 0.5 s; hint"):
        run_worker([sys.executable], slow, {"x": np.arange(5)}, what="echo", timeout_s=0.5, hint="; hint")
