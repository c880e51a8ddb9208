"""Chip-precision neuron state: bit-exact against hand-written integer chip rules, strip, wrap, check."""

import copy
import json
from importlib import resources

import numpy as np
import pytest
import torch

import snn_spikefit as sf
from snn_spikefit.neurons.state import StateFormat, StateRule

from conftest import needs_norse, needs_snntorch

S = 2.0 ** -4  # the state LSB of the hand simulations: threshold 1.0 is 16 LSBs


def _inputs(steps=50, shape=(3, 7), low=-10, high=34, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (steps, *shape), generator=g).double().float() * S


def _run(neuron, x):
    neuron.reset_mem()
    spikes, mems, syns = [], [], []
    for xt in x:
        spikes.append(neuron(xt).detach())
        mems.append(neuron.mem.detach().clone())
        syns.append(neuron.syn.detach().clone() if hasattr(neuron, "syn") else None)
    return spikes, mems, syns


def _loihi_decay(v, c):  # Lava PyLifModelBitAcc: sign(v) * (|v| * c >> 12)
    return np.sign(v) * ((np.abs(v) * c) >> 12)


def _xylo_decay(v, k):  # xylosim XyloIAFNeuron: v - max(|v >> k|, 1) * sign(v)
    dv = v >> k
    dv = np.where((dv == 0) & (v != 0), np.sign(v), dv)
    return v - dv


def _assert_same(spikes, mems, syns, hand):
    fired = 0
    for t, (sp, v, i) in enumerate(hand):
        assert np.array_equal(spikes[t].numpy() > 0, sp), f"spikes differ at step {t}"
        assert np.array_equal(np.round(mems[t].double().numpy() / S).astype(np.int64), v), f"membrane, step {t}"
        assert np.array_equal(mems[t].double().numpy(), v * S), f"membrane not on the grid at step {t}"
        if i is not None:
            assert np.array_equal(np.round(syns[t].double().numpy() / S).astype(np.int64), i)
        fired += int(sp.sum())
    assert 0 < fired < sp.size * len(hand)  # neither silent nor always firing


@needs_snntorch
def test_loihi_cuba_state_matches_an_integer_simulation_bit_for_bit():
    import snntorch as snn

    n = snn.Synaptic(alpha=0.8, beta=0.9, threshold=1.0, init_hidden=True)
    sf.quantize_state(n, hardware="loihi", scale=S)
    x = _inputs()
    spikes, mems, syns = _run(n, x)
    c_i, c_v, theta = round(0.8 * 4096), round(0.9 * 4096), 16
    i = np.zeros(x.shape[1:], np.int64)
    v = np.zeros_like(i)
    hand = []
    for t in range(50):
        r = (v > theta).astype(np.int64)  # snnTorch's delayed subtract reset
        i = _loihi_decay(i, c_i) + np.round(x[t].double().numpy() / S).astype(np.int64)
        i = np.where(i > 2**23, i - 2**24, np.where(i <= -2**23, i + 2**24, i))
        v = np.clip(_loihi_decay(v, c_v) + i - r * theta, -(2**23 - 1), 2**23 - 1)
        hand.append((v > theta, v.copy(), i.copy()))
    _assert_same(spikes, mems, syns, hand)


@needs_snntorch
def test_xylo_shift_state_matches_an_integer_simulation_bit_for_bit():
    import snntorch as snn

    # beta = 0.8 is not a Xylo decay: the chip's nearest is 1 - 2**-2 = 0.75 (shift 2)
    n = snn.Leaky(beta=0.8, threshold=1.0, reset_mechanism="zero", init_hidden=True)
    sf.quantize_state(n, hardware="xylo", scale=S)
    x = _inputs(low=-20, high=22)
    spikes, mems, _ = _run(n, x)
    v = np.zeros(x.shape[1:], np.int64)
    hand = []
    for t in range(50):
        r = (v > 16).astype(np.int64)
        v = np.clip(_xylo_decay(v * (1 - r), 2) + np.round(x[t].double().numpy() / S).astype(np.int64),
                    -(2**15 - 1), 2**15 - 1)
        hand.append((v > 16, v.copy(), None))
    _assert_same(spikes, mems, [None] * 50, hand)


@needs_snntorch
def test_generic_state_bits_round_and_saturate():
    import snntorch as snn

    n = snn.Leaky(beta=0.7, threshold=1.0, reset_mechanism="none", init_hidden=True)
    sf.quantize_state(n, state_bits=8, scale=S)
    x = _inputs(low=20, high=60)
    _, mems, _ = _run(n, x)
    v = np.zeros(x.shape[1:], np.int64)
    for t in range(50):
        v = np.clip(np.round(v * float(np.float32(0.7))) + np.round(x[t].double().numpy() / S), -127, 127).astype(np.int64)
        assert np.array_equal(np.round(mems[t].double().numpy() / S).astype(np.int64), v)
    assert int(v.max()) == 127  # saturated: the test reaches the limit


@needs_snntorch
def test_straight_through_gradient_and_strip_restores_the_plain_neuron():
    import snntorch as snn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), snn.Leaky(beta=0.6, init_hidden=True), torch.nn.Linear(4, 2))
    plain = copy.deepcopy(net)
    original = net[1].state_function
    sf.wrap(net, m=3, bits=4, state_bits=12)
    assert set(sf.state_rules(net)) == {"1"} and isinstance(net[1], snn.Leaky)
    x = torch.rand(6, 5) * 3
    out = sf.run(net, x, num_steps=4)
    out.sum().backward()
    g = net[0].parametrizations.weight.original.grad
    assert g is not None and bool(g.abs().sum() > 0)
    sf.reset(net)  # the stored membrane holds the graph; a clean state deep-copies
    twin = copy.deepcopy(net)  # the copy's rule drives the copy, not the original
    assert twin[1].state_function.module is twin[1]
    sf.strip(net)
    assert sf.state_rules(net) == {} and type(net[1]) is snn.Leaky
    assert net[1].state_function == original and "state_function" in vars(net[1])
    assert torch.equal(net[1].beta, plain[1].beta) and torch.equal(net[1].threshold, plain[1].threshold)
    with torch.no_grad():
        net[0].weight.copy_(plain[0].weight)
        net[2].weight.copy_(plain[2].weight)
    assert torch.equal(sf.run(net, x, num_steps=4), sf.run(plain, x, num_steps=4))


@needs_snntorch
def test_wrap_hardware_turns_state_on_where_the_chip_publishes_it():
    from snn_spikefit.zoo.snntorch import conv_snn

    net = conv_snn(image_size=8, channels=(4, 4))
    assert set(sf.state_rules(sf.wrap(copy.deepcopy(net), hardware="loihi"))) == {"2", "5"}
    assert sf.state_rules(sf.wrap(copy.deepcopy(net), hardware="loihi", state=False)) == {}
    assert sf.state_rules(sf.wrap(copy.deepcopy(net), hardware="truenorth")) == {}  # no decay rule published
    loihi = sf.wrap(copy.deepcopy(net), hardware="loihi")
    rule = sf.state_rules(loihi)["2"]
    w_lsb = float(loihi[0].parametrizations.weight[0].integer_form(loihi[0].parametrizations.weight.original).scale)
    assert float(rule.scale) == w_lsb / 64  # Loihi shifts inputs 6 bits into state units
    with pytest.raises(sf.SpikeFitValueError, match="state=True needs"):
        sf.wrap(copy.deepcopy(net), m=4, state=True)
    with pytest.raises(sf.SpikeFitValueError, match="state_bits=1"):
        sf.wrap(copy.deepcopy(net), m=4, state_bits=1)


@needs_norse
def test_unsupported_neurons_are_refused_or_warned_and_the_model_is_unchanged():
    from snn_spikefit.zoo.norse import dense_snn

    net = dense_snn(6, 3, hidden=(5,))
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(sf.UnsupportedLayerError, match="cannot simulate chip-precision state"):
        sf.wrap(net, m=4, state_bits=8)
    assert not sf.is_wrapped(net) and net.state_dict().keys() == before.keys()
    with pytest.warns(RuntimeWarning, match="keep float state"):
        sf.wrap(net, hardware="loihi")
    assert sf.is_wrapped(net)


@needs_snntorch
def test_check_reports_decays_thresholds_and_ranges_the_chip_cannot_hold():
    import snntorch as snn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), snn.Leaky(beta=0.7, threshold=1.0, init_hidden=True))
    report = sf.check(net, "xylo")
    decay = [v for v in report.violations if v.rule == "decay"]
    assert len(decay) == 1 and decay[0].layer == "1" and "0.75" in decay[0].hint
    assert decay[0].severity == "warning"  # Xylo's largest shift is marked uncertain
    assert [v for v in sf.check(net, "loihi").violations if v.rule == "decay"]  # 0.7 * 4096 is no integer
    net[1].beta.fill_(0.75)
    assert not [v for v in sf.check(net, "xylo").violations if v.rule in ("decay", "threshold")]
    sf.wrap(net, m=3, bits=4, hardware="xylo")
    net[1].threshold.fill_(1e6)
    hits = [v for v in sf.check(net, "xylo").violations if v.rule == "threshold"]
    assert hits and hits[0].limit == 2**15 - 1
    net[1].threshold.fill_(1.0)
    with torch.no_grad():
        net[0].parametrizations.weight.original.mul_(1e3)
        net[0].bias.fill_(1e4)
    found = sf.check(net, "xylo", sample=torch.ones(2, 4))
    assert [v.layer for v in found.violations if v.rule == "membrane_range"] == ["1"]
    assert any(s[0] == "membrane_range" for s in sf.check(net, "xylo").skipped)


def test_every_published_state_field_has_a_source():
    data = json.loads(resources.files("snn_spikefit.deploy").joinpath("profiles/chips.json").read_text())
    fields = ("membrane_bits", "current_bits", "threshold_bits", "decay", "decay_bits", "state_fraction_bits",
              "current_overflow")
    published = 0
    for p in data["profiles"]:
        for f in fields:
            if p.get(f) is not None:
                published += 1
                assert p["sources"].get(f), f"{p['name']}.{f} has no source"
    assert published >= 14
    assert StateFormat.from_profile("loihi").decay_bits == 12 and StateFormat.from_profile("xylo").decay == "shift"
    assert StateFormat.from_profile("generic-45nm") is None


def test_state_rule_threshold_matches_the_float_comparison():
    rule = StateRule(StateFormat(16, 16), 0.1)
    thr = torch.tensor([1.0, 0.35, 2.5])
    theta = rule.threshold_int(thr)
    for k, t in zip(theta.tolist(), thr.tolist()):
        assert np.float32(k * 0.1) <= np.float32(t) < np.float32((k + 1) * 0.1)
    with pytest.raises(sf.SpikeFitValueError, match="scale"):
        StateRule(StateFormat(16, 16), 0.0)
