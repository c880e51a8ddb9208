"""The sinabs target (Speck): compressed conv networks run spike for spike in sinabs' own layers.

sinabs 3.1.3 is installed ``--no-deps`` (it pins nir<=1.0.4; it runs beside our nir 1.0.8) into
the targets cache once per session; where pip cannot install it the run tests skip, unless
``SPIKEFIT_REQUIRE_TARGETS`` is set (``.ci/run``). Refusals need no sinabs (they come from the compiler).
"""

import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.errors import SpikeFitValueError, UnsupportedLayerError
from snn_spikefit.targets import TargetError, get_target
from snn_spikefit.targets.linear_ops import integer_weights
from snn_spikefit.targets.verify import verify

from conftest import needs_snntorch

STEPS, SAMPLES = 50, 8


@pytest.fixture(scope="session")
def sinabs():
    target = get_target("sinabs")
    try:
        target.site()
    except TargetError as exc:
        if os.environ.get("SPIKEFIT_REQUIRE_TARGETS"):
            pytest.fail(f"SPIKEFIT_REQUIRE_TARGETS is set but sinabs could not be installed: {exc}")
        pytest.skip(f"sinabs 3.1.3 cannot be installed here: {exc}")
    return target


def _conv(reset, bias):
    import snntorch as snn

    def iaf():
        return snn.Leaky(beta=1.0, threshold=1.0, init_hidden=True, reset_mechanism=reset)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=bias), iaf(), nn.AvgPool2d(2),
                         nn.Conv2d(4, 8, 3, padding=1, bias=False), iaf(), nn.Flatten(),
                         nn.Linear(128, 10, bias=bias), iaf())


def trained(reset, bias, integer_bias=True):
    """The conv net, m=4 bits=8, trained 30 batches on digits, frozen (biases rounded to the weight grid)."""
    torch.manual_seed(0)
    train, _ = sf.data.datasets.digits()
    net = _conv(reset, bias)
    sf.wrap(net, m=4, bits=8)
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True)
    sf.fit(net, [b for _, b in zip(range(30), loader)], num_steps=8, lr=1e-2, progress=False)
    sf.freeze(net)
    if bias and integer_bias:
        sf.round_biases(net, bits=8)
    return net


def _graph(net):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sf.export_nir(net, torch.zeros(1, 1, 8, 8))


@pytest.mark.slow
@needs_snntorch
@pytest.mark.parametrize("reset,bias", [("subtract", True), ("zero", False)])
def test_sinabs_matches_our_simulation_and_keeps_our_integers(sinabs, reset, bias):
    net = trained(reset, bias)
    _, test = sf.data.datasets.digits()
    x, y = test.tensors[0][:SAMPLES], test.tensors[1][:SAMPLES]
    report = verify(net, (x, y), target="sinabs", modes=("float",), num_steps=STEPS)
    assert report.ok and len(report.layers) == 3
    for row in report.layers:
        assert 0 < row.ours < SAMPLES * STEPS * row.neurons, f"{row.layer} silent or saturated"
        assert row.differing == 0 and row.target == row.ours
    assert report.accuracy["float"]["ours"] == report.accuracy["float"]["target"]
    # the weights in sinabs' Conv2d / Linear are our frozen integer codes, unchanged
    graph = _graph(net)
    network = sinabs.build(graph)
    network.run(np.zeros((1, 2, 1, 8, 8)))
    ops = [(k, op) for k, op in enumerate(network.program.ops) if op["kind"] in ("conv", "linear")]
    assert len(ops) == 3 and len([k for k in network.held if not k.startswith("heldbias")]) == 3
    for k, op in ops:
        expected = integer_weights(graph.nodes[op["name"]])
        assert np.array_equal(network.held[f"held{k}"], expected)
        assert len(np.unique(expected)) <= 4 and np.abs(expected).max() <= 127
    # the biases sinabs holds are our integers: bias / weight LSB, exactly
    biased = [(k, m) for (k, op), m in zip(ops, net[0::3]) if op["bias"]]
    assert len(biased) == (2 if bias else 0)
    for k, module in biased:
        q = module.parametrizations.weight[0]
        ours = module.bias.detach().double() / q.scale.double()
        held = network.held[f"heldbias{k}"]
        assert np.array_equal(held, np.rint(ours.numpy())) and np.abs(held - ours.numpy()).max() < 1e-4
        assert np.abs(held).max() <= 127 and np.any(held != 0)


@needs_snntorch
def test_sinabs_refusals_say_why_and_the_fix():
    import snntorch as snn

    target = get_target("sinabs")
    leaky = nn.Sequential(nn.Conv2d(1, 4, 3), snn.Leaky(beta=0.875, init_hidden=True, reset_mechanism="subtract"))
    sf.wrap(leaky, m=4, bits=8)
    sf.freeze(leaky)
    with pytest.raises(UnsupportedLayerError, match="integrate-and-fire.*beta=1.0"):
        target.build(_graph(leaky))
    loose = _conv("subtract", False)
    with pytest.raises(UnsupportedLayerError, match="no frozen integer codebook.*freeze"):
        target.build(_graph(loose))
    sf.wrap(loose, m=4, bits=8, granularity="channel")
    sf.freeze(loose)
    with pytest.raises(UnsupportedLayerError, match="per-channel scales"):
        target.build(_graph(loose))
    with pytest.raises(SpikeFitValueError, match="floating point"):
        target.build(_graph(leaky), mode="fixed")
    torch.manual_seed(0)
    biased = _conv("subtract", True)
    sf.wrap(biased, m=4, bits=8)
    sf.freeze(biased)
    with pytest.raises(UnsupportedLayerError, match="bias .* weight LSBs .*not an integer.*round_biases"):
        target.build(_graph(biased))
    off = [v for v in sf.check(biased, "speck").violations if v.rule == "bias_bits"]
    assert [v.layer for v in off] == ["0", "6"] and "round_biases" in off[0].hint
    with torch.no_grad():
        biased[0].bias.fill_(200 * float(biased[0].parametrizations.weight[0].scale))
    with pytest.raises(UnsupportedLayerError, match="200 weight LSBs exceeds Speck's 8-bit biases"):
        target.build(_graph(biased))
    assert {("bias_bits", "0")} <= {(v.rule, v.layer) for v in sf.check(biased, "speck").violations}
    report = sf.round_biases(biased, bits=8)
    assert report.to_dict()["layers"][0]["clipped"] == 4
    target.build(_graph(biased))
    assert not [v for v in sf.check(biased, "speck").violations if v.rule == "bias_bits"]


@needs_snntorch
def test_round_biases_puts_biases_on_the_weight_grid():
    from snn_spikefit.errors import NotWrappedError

    torch.manual_seed(0)
    net = _conv("subtract", True)
    with pytest.raises(NotWrappedError, match="frozen with integer codebooks"):
        sf.round_biases(net)
    sf.wrap(net, m=4, bits=8)
    sf.freeze(net)
    before = {i: net[i].bias.detach().clone() for i in (0, 6)}
    with pytest.raises(SpikeFitValueError, match="bits=1 is not allowed"):
        sf.round_biases(net, bits=1)
    assert all(torch.equal(net[i].bias, b) for i, b in before.items())  # unchanged on error
    report = sf.round_biases(net)
    assert [r["layer"] for r in report.to_dict()["layers"]] == ["0", "6"]
    for i, b in before.items():
        s = net[i].parametrizations.weight[0].scale.double()
        k = net[i].bias.double() / s
        assert torch.allclose(k, torch.round(k), atol=1e-4, rtol=0)
        assert float(((net[i].bias.double() - b.double()) / s).abs().max()) <= 0.5 + 1e-4
    assert max(r["max_change_lsb"] for r in report.to_dict()["layers"]) <= 0.5 + 1e-6


@needs_snntorch
def test_sinabs_program_folds_the_scale_into_the_threshold():
    net = _conv("subtract", True)
    sf.wrap(net, m=4, bits=8)
    sf.freeze(net)
    sf.round_biases(net, bits=8)
    program = get_target("sinabs").build(_graph(net)).program
    iaf = [op for op in program.ops if op["kind"] == "iaf"]
    pools = [op for op in program.ops if op["kind"] == "sumpool"]
    assert [op["reset"] for op in iaf] == ["subtract"] * 3 and len(pools) == 1
    for op in iaf:  # strictly above our threshold in device units: sinabs spikes at v >= threshold
        assert op["threshold"] > 1.0 / op["factor"] and np.nextafter(1.0 / op["factor"], np.inf) == op["threshold"]


@needs_snntorch
def test_check_speck_memory_rules_follow_sinabs():
    import snntorch as snn

    def iaf():
        return snn.Leaky(beta=1.0, init_hidden=True, reset_mechanism="subtract")
    small = _conv("subtract", True)
    sf.wrap(small, m=4, bits=8)
    sf.freeze(small)
    sf.round_biases(small, bits=8)
    assert sf.check(small, "speck", sample=torch.zeros(1, 1, 8, 8)).ok
    get_target("sinabs").build(_graph(small))
    # sinabs memory_summary: kernel = c * 2**(ceil(log2 9) + ceil(log2 128)) = 64 * 2**11; neurons = 128 * 2**(5+5)
    big = nn.Sequential(nn.Conv2d(1, 64, 3), iaf(), nn.Conv2d(64, 128, 3), iaf())
    report = sf.check(big, "speck", sample=torch.zeros(1, 1, 34, 34))
    got = {(v.rule, v.limit, v.actual) for v in report.violations if v.layer == "2"}
    assert ("speck_memory", 65536, 64 * 2 ** 11) in got and ("speck_memory", 65536, 128 * 2 ** 10) in got
    leaky = nn.Sequential(nn.Conv2d(1, 4, 3), snn.Leaky(beta=0.875, init_hidden=True))
    assert "neuron_model" in {v.rule for v in sf.check(leaky, "speck").violations}


@pytest.mark.slow
@needs_snntorch
def test_verify_command_on_sinabs(sinabs, tmp_path):
    import json

    from snn_spikefit.cli import main

    path, out = tmp_path / "conv.nir", tmp_path / "agree.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.export_nir(trained("subtract", True), torch.zeros(1, 1, 8, 8), path)
    assert main(["verify", str(path), "--target", "sinabs", "--steps", "50", "--limit", "4", "--out", str(out),
                 "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert data["ok"] and {r["mode"] for r in data["layers"]} == {"float"} and len(data["layers"]) == 3
    assert main(["verify", str(path), "--target", "sinabs", "--mode", "fixed", "--no-progress"]) == 2
