"""The Xylo target (Xylo Audio 2): our integer codes as xylosim's weights, bit for bit with our integer model.

xylosim 0.1.3 builds from its sdist into the targets cache once per session (``.ci/run`` creates it
and sets ``SPIKEFIT_REQUIRE_TARGETS``: there a failed install fails instead of skipping). Networks:
16 inputs (digits pooled to 4x4), 40 hidden, 8 readout neurons, snnTorch Synaptic (alpha 0.5 = dash
1, beta 0.875 = dash 3), subtract reset, compressed m=4 bits=8.
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
from snn_spikefit.targets.verify import verify
from snn_spikefit.targets.xylo_int import HI, _accumulate, simulate_xylo

from conftest import needs_snntorch

STEPS, SAMPLES = 50, 8


@pytest.fixture(scope="session")
def xylo():
    target = get_target("xylo")
    try:
        target.python()
    except TargetError as exc:
        if os.environ.get("SPIKEFIT_REQUIRE_TARGETS"):
            pytest.fail(f"SPIKEFIT_REQUIRE_TARGETS is set but the xylosim environment could not be made: {exc}")
        pytest.skip(f"xylosim 0.1.3 cannot be installed here: {exc}")
    return target


def _data(n=None):
    train, test = sf.data.datasets.digits()
    pick = lambda d: (torch.nn.functional.avg_pool2d(d.tensors[0][d.tensors[1] < 8], 2).flatten(1),  # noqa: E731
                      d.tensors[1][d.tensors[1] < 8])
    (xt, yt), (x, y) = pick(train), pick(test)
    return torch.utils.data.TensorDataset(xt, yt), x[:n], y[:n]


def _syn(**kw):
    import snntorch as snn

    args = dict(alpha=0.5, beta=0.875, threshold=1.0, init_hidden=True, reset_mechanism="subtract") | kw
    return snn.Synaptic(**args)


def _dense(n_in=16, n_out=8, bias=False, **kw):
    return nn.Sequential(nn.Linear(n_in, 40, bias=bias), _syn(**kw), nn.Linear(40, n_out, bias=bias), _syn(**kw))


def _frozen(net):
    sf.wrap(net, m=4, bits=8)
    sf.freeze(net)
    return net


def _graph(net, n_in=16):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sf.export_nir(net, torch.zeros(1, n_in))


def trained():
    """The dense 16-40-8 Synaptic net, m=4 bits=8, trained 30 batches on pooled digits 0..7, frozen."""
    torch.manual_seed(0)
    train, _, _ = _data()
    net = _dense()
    sf.wrap(net, m=4, bits=8)
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True)
    sf.fit(net, [b for _, b in zip(range(30), loader)], num_steps=8, lr=1e-2, progress=False)
    sf.freeze(net)
    return net


@pytest.mark.slow
@needs_snntorch
def test_xylosim_runs_our_integers_bit_for_bit(xylo):
    _, x, y = _data(SAMPLES)
    net = trained()
    report = verify(net, (x, y), target="xylo", modes=("fixed",), num_steps=STEPS)
    assert report.ok and [r.mode for r in report.layers] == ["fixed", "fixed"]
    for row in report.layers:
        assert 0 < row.target < SAMPLES * STEPS * row.neurons, f"{row.layer} silent or saturated"
        assert row.differing_int == 0 and row.ours_int == row.target
    assert report.accuracy["fixed"]["target"] == report.accuracy["fixed"]["ours_int"]
    # xylosim's synapses hold our frozen codes, not rescaled
    graph = _graph(net)
    network = xylo.build(graph)
    network.run(np.zeros((1, 3, 16)))
    codes = [layer.codes for layer in network.spec.layers]
    assert np.array_equal(network.held["held_in"], codes[0].T)
    assert np.array_equal(network.held["held_out"], codes[1].T) and not network.held["held_rec"].any()
    for c in codes:
        assert len(np.unique(c)) <= 4 and np.abs(c).max() <= 127
    assert [(layer.dash_syn, layer.dash_mem) for layer in network.spec.layers] == [(1, 3), (1, 3)]


def trained_xylo(batches=30):
    """The zoo's Xylo net (16-40-8 Synaptic, alpha 0.5, beta 0.875), m=4 bits=8, wrap(hardware="xylo"): CAT
    trains Xylo's own neuron (neurons/xylo_state.py), frozen."""
    from snn_spikefit.zoo.snntorch import xylo_snn

    torch.manual_seed(0)
    train, _, _ = _data()
    net = xylo_snn(16, 8, (40,), threshold=0.5)
    sf.wrap(net, m=4, bits=8, hardware="xylo")
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True)
    sf.fit(net, [b for _, b in zip(range(batches), loader)], num_steps=8, lr=1e-2, progress=False)
    sf.freeze(net)
    return net


@pytest.mark.slow
@needs_snntorch
def test_trained_for_xylo_our_simulation_is_xylosim_spike_for_spike(xylo, tmp_path):
    """wrap(hardware="xylo") -> CAT -> freeze: sf.run's spikes == xylosim's at every step of 50, every layer."""
    _, x, y = _data(SAMPLES)
    net = trained_xylo()
    assert {type(r).__name__ for r in sf.state_rules(net).values()} == {"XyloRule"}
    report = verify(net, (x, y), target="xylo", modes=("fixed",), num_steps=STEPS)
    assert report.ok
    for row in report.layers:
        assert 0 < row.target < SAMPLES * STEPS * row.neurons, f"{row.layer} silent or saturated"
        assert row.differing == 0 and row.ours == row.target  # our own simulation, not only our integer model
        assert row.differing_int == 0
    acc = report.accuracy["fixed"]
    assert acc["ours"] == acc["target"] == acc["ours_int"]
    # through a .nir file: the importer gives the neurons Xylo's update back, the same spikes again
    path = tmp_path / "xylo.nir"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.export_nir(net, torch.zeros(1, 16), path)
    again = verify(str(path), (x, y), target="xylo", modes=("fixed",), num_steps=STEPS)
    assert [(r.ours, r.target, r.differing) for r in again.layers] == [(r.ours, r.target, 0) for r in report.layers]
    network = xylo.build(_graph(net))
    network.run(np.zeros((1, 3, 16)))
    codes = [layer.codes for layer in network.spec.layers]
    assert np.array_equal(network.held["held_in"], codes[0].T) and np.array_equal(network.held["held_out"], codes[1].T)
    for layer, c in zip(net[0::2], codes):  # the codes are our frozen integers
        q = layer.parametrizations.weight[0]
        assert np.array_equal(q.codebook_int[0][q.codes.long()].numpy().reshape(c.shape), c)
        assert len(np.unique(c)) <= 4


def _loud_net():
    """Three Synaptic layers, weights x8 and low thresholds: several spikes a step and saturating currents."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 12, bias=False), _syn(alpha=0.75, beta=0.5, threshold=0.05),
                        nn.Linear(12, 10, bias=False), _syn(threshold=0.2), nn.Linear(10, 4, bias=False),
                        _syn(threshold=0.2))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(8.0)
    return net


@pytest.mark.slow
@needs_snntorch
def test_xylo_state_multi_spike_and_saturation_in_xylosim(xylo):
    """Large weights, low thresholds, full inputs: several hidden spikes a step and saturating currents."""
    net = _loud_net()
    sf.wrap(net, hardware="xylo")
    sf.freeze(net)
    x = np.random.default_rng(0).integers(0, 16, (3, 30, 16)) / 15
    report = verify(net, torch.from_numpy(x).transpose(0, 1), target="xylo", modes=("fixed",), num_steps=None)
    assert report.ok and all(r.differing == 0 and r.target > 0 for r in report.layers)
    ours = xylo.build(_graph(net)).simulate(x)
    assert ours[0].max() == 31 and ours[1].max() > 1  # hidden layers at Xylo's 31-spike limit


@pytest.mark.slow
@needs_snntorch
def test_xylosim_saturation_and_recurrent_hops(xylo):
    """Three layers (one recurrent hop), large weights and full inputs: int16 saturation on both sides."""
    net = _loud_net()
    _frozen(net)
    network = xylo.build(_graph(net))
    x = np.random.default_rng(0).integers(0, 16, (3, 30, 16)) / 15
    ours, theirs = network.simulate(x), network.run(x)
    assert [a.shape for a in ours] == [(3, 30, 12), (3, 30, 10), (3, 30, 4)]
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    assert ours[0].max() > 1 and ours[1].sum() > 0 and ours[2].sum() > 0  # multi-spike hidden, live readout


def test_accumulate_saturates_after_every_add():
    w = np.array([[30000], [30000], [-30000]])
    c = np.array([[1, 1, 1]])
    assert _accumulate(np.zeros((1, 1), np.int64), c, w)[0, 0] == HI - 30000  # saturates, then subtracts
    small = np.array([[3], [-2], [5]])
    got = _accumulate(np.full((1, 1), 7, np.int64), np.array([[2, 3, 1]]), small)
    assert got[0, 0] == 7 + 6 - 6 + 5


def test_integer_model_shift_rounding_and_spike_counts():
    a = dict(w_in=np.array([[100]]), w_rec=np.zeros((1, 1), int), w_out=np.array([[0]]), shifts=np.array([0, 0, 0]),
             threshold=np.array([30]), threshold_out=np.array([1]), dash_mem=np.array([1]), dash_syn=np.array([1]),
             dash_mem_out=np.array([1]), dash_syn_out=np.array([1]))
    hid, out = simulate_xylo(a, np.array([[[1], [0], [0]]]))
    # step 0: I = 100 - 50 = 50, V = 50 -> 1 spike, V = 20; step 1: I = 25, V = 20 - 10 + 25 = 35 -> 1, V = 5;
    # step 2: I = 13 (25 - 12), V = 5 - 2 + 13 = 16 -> 0
    assert hid[0, :, 0].tolist() == [1, 1, 0] and not out.any()
    a["threshold"] = np.array([10])
    hid, _ = simulate_xylo(a, np.array([[[1]]]))
    assert hid[0, 0, 0] == 5  # several spikes in one step (at most 31)


@needs_snntorch
def test_xylo_refusals_say_why_and_the_fix():
    import snntorch as snn

    target = get_target("xylo")
    leaky = _frozen(nn.Sequential(nn.Linear(16, 8, bias=False), snn.Leaky(beta=0.875, init_hidden=True,
                                  reset_mechanism="subtract"), nn.Linear(8, 4, bias=False),
                                  snn.Leaky(beta=0.875, init_hidden=True, reset_mechanism="subtract")))
    with pytest.raises(UnsupportedLayerError, match="no synaptic current.*dash_syn = 0.*Synaptic"):
        target.build(_graph(leaky))
    cases = [(_dense(alpha=0.6), 16, "not 1 - 2\\*\\*-k"), (_dense(reset_mechanism="zero", reset_delay=True), 16,
             "subtract"), (_dense(n_in=64), 64, "64 inputs.*at most 16"), (_dense(n_out=10), 16, "10 readout"),
             (_dense(bias=True), 16, "bias=False")]
    for net, n_in, phrase in cases:
        with pytest.raises(UnsupportedLayerError, match=phrase):
            target.build(_graph(_frozen(net), n_in))
    with pytest.raises(UnsupportedLayerError, match="no frozen integer codebook"):
        target.build(_graph(_dense()))
    with pytest.raises(SpikeFitValueError, match="integers only"):
        target.build(_graph(_frozen(_dense())), mode="float")
    with pytest.raises(SpikeFitValueError, match="event counts"):
        target.build(_graph(_frozen(_dense()))).quantize(-np.ones((1, 2, 16)))


@needs_snntorch
def test_check_xylo_agrees_with_the_target():
    """What check(model, "xylo") passes, the Xylo target compiles; what it fails, the target refuses."""
    import snntorch as snn

    sample = torch.zeros(1, 16)
    good = _frozen(_dense())
    assert sf.check(good, "xylo", sample=sample).ok
    get_target("xylo").build(_graph(good))
    leaky = _frozen(nn.Sequential(nn.Linear(16, 8, bias=False), snn.Leaky(beta=0.875, init_hidden=True),
                                  nn.Linear(8, 4, bias=False), snn.Leaky(beta=0.875, init_hidden=True)))
    cases = [(leaky, "neuron_model", "synaptic current"), (_frozen(_dense(alpha=0.6)), "xylo_layers", "bit shifts"),
             (_frozen(_dense(n_out=10)), "xylo_layers", "readout"), (_frozen(_dense(bias=True)), "xylo_layers", "bias"),
             (_frozen(_dense(n_in=20)), "inputs", "at most 16")]
    for net, rule, phrase in cases:
        n_in = net[0].in_features
        report = sf.check(net, "xylo", sample=torch.zeros(1, n_in))
        assert not report.ok and rule in {v.rule for v in report.violations}
        with pytest.raises(UnsupportedLayerError, match=phrase):
            get_target("xylo").build(_graph(net, n_in))
