"""Xylo's own neuron order (snn_spikefit.neurons.xylo_state): trained with wrap(hardware="xylo"), our torch
simulation computes Xylo's integers, spike for spike against our integer model of the Xylo core (the model
that agrees with xylosim: tests/test_xylo.py runs xylosim itself)."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.errors import SpikeFitValueError, UnsupportedLayerError
from snn_spikefit.neurons.state import StateRule
from snn_spikefit.neurons.xylo_state import XyloRule, xylo_threshold
from snn_spikefit.targets import get_target
from snn_spikefit.targets.verify import _our_spikes
from snn_spikefit.targets.xylo_int import simulate_xylo

from conftest import needs_snntorch

pytestmark = needs_snntorch


def _graph(net, n_in):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sf.export_nir(net, torch.zeros(1, n_in))


def _net(hidden=12, n_out=4, threshold=1.0, alpha=0.5, beta=0.875, seed=0):
    from snn_spikefit.zoo.snntorch import xylo_snn

    torch.manual_seed(seed)
    return xylo_snn(16, n_out, (hidden,), alpha=alpha, beta=beta, threshold=threshold)


def test_one_neuron_follows_xylos_order_by_hand():
    """One input event, weight code 127, theta 30, dash_syn 1, dash_mem 3: counts 2, 1, 0 (Xylo's order)."""
    import snntorch as snn

    net = nn.Sequential(nn.Linear(1, 1, bias=False), snn.Synaptic(alpha=0.5, beta=0.875, init_hidden=True,
                                                                  reset_mechanism="subtract"))
    with torch.no_grad():
        net[0].weight.fill_(0.5)
    sf.wrap(net, m=2, bits=8, hardware="xylo")
    sf.freeze(net)
    rule = sf.state_rules(net)["1"]
    assert isinstance(rule, XyloRule) and rule.most == 1  # the only neuron is the readout
    rule.most = 31  # as a hidden neuron
    s = float(rule.scale)
    assert s == pytest.approx(0.5 / 127 / 15)
    net[1].threshold.fill_(29.5 * s)
    assert int(xylo_threshold(net[1].threshold, rule.scale)) == 30
    x = torch.tensor([[1.0 / 15], [0.0], [0.0]]).unsqueeze(1)  # [T, N=1, 1]
    out, mems = [], []
    sf.reset(net)
    for xt in x:
        out.append(float(net(xt)))
        mems.append(round(float(net[1].mem) / s))
    # step 0: I = 127 - (127 >> 1) = 64, V = 64 -> 2 spikes; step 1: U = 64 - 60 = 4, I = 32,
    # V = 4 - 1 + 32 = 35 -> 1 spike; step 2: U = 5, I = 16, V = 5 - 1 + 16 = 20 -> 0
    assert out == [2.0, 1.0, 0.0] and mems == [64, 35, 20]


def _trained_agrees(threshold, gain, batches, steps):
    net = _net(threshold=threshold)
    with torch.no_grad():
        net[0].weight.mul_(gain)
    sf.wrap(net, hardware="xylo")
    before = net[0].parametrizations.weight.original.detach().clone()
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(16, 16, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(batches)]
    sf.fit(net, data, num_steps=6, lr=1e-2, progress=False)
    assert not torch.equal(before, net[0].parametrizations.weight.original)  # the surrogates train it
    sf.freeze(net)
    network = get_target("xylo").build(_graph(net, 16))
    assert [layer.shift for layer in network.spec.layers] == [0, 0]
    x = network.quantize(np.random.default_rng(1).random((4, steps, 16)))
    ours, ints = _our_spikes(net, x, keep_state=True), network.simulate(x)
    for a, b in zip(ours, ints):
        assert np.array_equal(a.reshape(b.shape), b)
    assert ints[0].sum() > 0 and ints[1].sum() > 0
    return ints


def test_trained_net_computes_the_xylo_integer_model_spike_for_spike():
    """CAT-trained with wrap(hardware="xylo"), frozen: our simulation == the Xylo core, every step and layer
    (several spikes a step in the hidden layer, saturating currents)."""
    assert _trained_agrees(0.05, 6.0, batches=2, steps=30)[0].max() > 1


@pytest.mark.slow
def test_trained_net_agrees_over_50_steps_single_and_multi_spike():
    assert _trained_agrees(0.3, 2.0, batches=4, steps=50)[0].max() >= 1
    assert _trained_agrees(0.05, 6.0, batches=4, steps=50)[0].max() > 1


def test_the_framework_order_differs_and_strip_gives_the_plain_neuron_back():
    net = _net(threshold=0.3)
    sf.wrap(net, hardware="xylo")
    sf.freeze(net)
    network = get_target("xylo").build(_graph(net, 16))
    x = network.quantize(np.random.default_rng(2).random((4, 40, 16)))
    ints = network.simulate(x)
    assert {"fire", "mem_reset"} <= set(vars(net[1])) and set(sf.state_rules(net)) == {"1", "3"}
    sf.strip(net)
    assert not {"fire", "mem_reset"} & set(vars(net[1])) and not sf.state_rules(net)
    assert type(net[1]).__name__ == "Synaptic"
    plain = _our_spikes(net, x)
    assert sum(int((a.reshape(b.shape) != b).sum()) for a, b in zip(plain, ints)) > 0


def test_neurons_xylos_order_does_not_describe_keep_the_generic_rule():
    import snntorch as snn

    net = nn.Sequential(nn.Linear(16, 8, bias=False), snn.Leaky(beta=0.875, init_hidden=True),
                        nn.Linear(8, 4, bias=False), snn.Synaptic(alpha=0.5, beta=0.5, init_hidden=True,
                                                                  reset_mechanism="zero"))
    sf.wrap(net, hardware="xylo")
    assert all(type(r) is StateRule for r in sf.state_rules(net).values())
    plain = _net()
    sf.quantize_state(plain, hardware="xylo")  # no integer weights: nothing to take Xylo's integers from
    assert all(type(r) is StateRule for r in sf.state_rules(plain).values())


def test_xylo_rule_refusals_name_the_value():
    net = _net()
    sf.wrap(net, hardware="xylo")
    with pytest.raises(SpikeFitValueError, match="most=7 is not allowed.*31.*1"):
        XyloRule(sf.state_rules(net)["1"].fmt, net[0], most=7)
    with pytest.raises(UnsupportedLayerError, match="integer weights.*bits=8"):
        XyloRule(sf.state_rules(net)["1"].fmt, nn.Linear(2, 2))
    net[3].threshold.fill_(1e6)
    sf.freeze(net)
    with pytest.raises(UnsupportedLayerError, match="threshold 1000000.0 is .* state LSBs.*1..32767"):
        get_target("xylo").build(_graph(net, 16))


def test_scale_and_theta_follow_every_change_of_the_codebook_and_threshold():
    """The rule keeps its scale and theta between steps; any change of their inputs is seen, however made."""
    from snn_spikefit.neurons.xylo_state import weight_lsb
    from snn_spikefit.quantize.layers import quantizer_of

    net = sf.wrap(_net(), hardware="xylo")
    rule = sf.state_rules(net)["1"]
    fresh = lambda: weight_lsb(net[0]).double() * rule.quantum  # noqa: E731  (no cache)
    dyn = {"threshold": net[1].threshold}
    theta = lambda: rule.theta(dyn, rule.scale).clone()  # noqa: E731
    assert torch.equal(rule.scale, fresh())
    first = theta()
    codebook = quantizer_of(net[0], "weight").codebook
    codebook.data.mul_(2.0)  # through .data: the parameter's version counter does not move
    assert torch.equal(rule.scale, fresh()) and not torch.equal(theta(), first)
    net.load_state_dict({k: v * 0.5 if k.endswith("codebook") else v for k, v in net.state_dict().items()})
    assert torch.equal(rule.scale, fresh()) and torch.equal(theta(), first)
    quantizer_of(net[0], "weight").bits = 4  # the same codebook values on a coarser grid
    assert torch.equal(rule.scale, fresh()) and not torch.equal(theta(), first)
    quantizer_of(net[0], "weight").bits = 8
    assert torch.equal(rule.scale, fresh()) and torch.equal(theta(), first)
    net[1].threshold.data.fill_(2.0)  # the threshold alone
    assert torch.equal(theta(), xylo_threshold(net[1].threshold, rule.scale).clamp(1, 2 ** 15 - 1))
    before = rule.scale.clone()
    sf.freeze(net)  # the codebook becomes a frozen one: its scale is the same LSB
    assert torch.equal(rule.scale, before) and torch.equal(rule.scale, fresh())


def test_a_deep_copy_or_a_double_copy_keeps_its_own_scale():
    """The kept scale belongs to the rule's own model: a copy's changes are seen by the copy only."""
    import copy

    from snn_spikefit.neurons.xylo_state import weight_lsb
    from snn_spikefit.quantize.layers import quantizer_of

    net = sf.wrap(_net(), hardware="xylo")
    rule = sf.state_rules(net)["1"]
    before = rule.scale.clone()
    twin = copy.deepcopy(net)
    quantizer_of(twin[0], "weight").codebook.data.mul_(3.0)
    twin_rule = sf.state_rules(twin)["1"]
    assert torch.equal(twin_rule.scale, weight_lsb(twin[0]).double() * twin_rule.quantum)
    assert torch.equal(rule.scale, before) and not torch.equal(twin_rule.scale, before)
    wide = copy.deepcopy(net).double()
    wide_rule = sf.state_rules(wide)["1"]
    assert quantizer_of(wide[0], "weight").codebook.dtype == torch.float64
    assert torch.equal(wide_rule.scale, weight_lsb(wide[0]).double() * wide_rule.quantum)


@pytest.mark.parametrize("create_graph", [False, True])
def test_count_surrogate_is_the_sum_of_arctangents_at_every_level(create_graph):
    import math

    from snn_spikefit.neurons.xylo_state import _Count

    torch.manual_seed(0)
    mem = (torch.randn(5, 7, dtype=torch.float64) * 3).requires_grad_()
    thr, grad = torch.tensor(0.7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    count = torch.div(mem.detach(), thr, rounding_mode="floor").clamp(0, 31)
    (g,) = torch.autograd.grad(_Count.apply(mem, count, thr, 31), mem, grad, create_graph=create_graph)
    by_hand = sum(1 / (1 + (math.pi * (mem.detach() - k * thr)) ** 2) for k in range(1, 32)) * grad
    torch.testing.assert_close(g.detach(), by_hand, rtol=1e-12, atol=0)
    assert g.requires_grad == create_graph


def test_count_surrogate_in_place_is_the_differentiable_sum_to_the_bit():
    """The in-place backward (create_graph=False) gives the bits the out-of-place one gives (float32)."""
    from snn_spikefit.neurons.xylo_state import _Count

    torch.manual_seed(1)
    mem = (torch.randn(64, 200) * 3).requires_grad_()
    thr, grad = torch.tensor(0.5), torch.randn(64, 200)
    count = torch.div(mem.detach(), thr, rounding_mode="floor").clamp(0, 31)
    (plain,) = torch.autograd.grad(_Count.apply(mem, count, thr, 31), mem, grad)
    (graph,) = torch.autograd.grad(_Count.apply(mem, count, thr, 31), mem, grad, create_graph=True)
    assert torch.equal(plain, graph.detach())


def test_a_xylo_trained_net_comes_back_from_nir_with_xylos_update_and_the_same_spikes():
    from snn_spikefit.neurons.xylo_state import CHIP_STATE_KEY

    net = _net(threshold=0.05)
    with torch.no_grad():
        net[0].weight.mul_(6.0)
    sf.wrap(net, hardware="xylo")
    sf.freeze(net)
    graph = _graph(net, 16)
    marked = sorted(k for k, n in graph.nodes.items() if (n.metadata or {}).get(CHIP_STATE_KEY) == "xylo")
    assert marked == sorted(sf.state_rules(net))  # every neuron trained in Xylo's order is marked
    back = sf.import_nir(graph, "snntorch")
    assert sorted(n for n, r in sf.state_rules(back).items() if isinstance(r, XyloRule)) == marked
    x = torch.rand(30, 4, 16) * 15 // 1 / 15  # Xylo's input grid: 0..15 events per step
    assert torch.equal(sf.run(net, x, num_steps=None), sf.run(back, x, num_steps=None))
    # one node more marked than Xylo's update fits: refused, the names given
    graph.nodes["0"].metadata = {CHIP_STATE_KEY: "xylo"}
    with pytest.raises(UnsupportedLayerError, match=r"NIR nodes \['0', .*\] carry spikefit.chip_state='xylo' but"):
        sf.import_nir(graph, "snntorch")


def test_xylo_marked_neurons_in_a_graph_that_is_not_a_chain_are_refused():
    import nir

    from snn_spikefit.neurons.xylo_state import CHIP_STATE_KEY

    w = np.ones((4, 16), dtype=np.float32) * 0.1
    cuba = nir.CubaLIF(tau_syn=np.full(4, 2e-3), tau_mem=np.full(4, 8e-3), r=np.full(4, 8.0), v_leak=np.zeros(4),
                       v_threshold=np.ones(4), w_in=np.full(4, 2.0), metadata={CHIP_STATE_KEY: "xylo"})
    nodes = {"input": nir.Input(np.array([16])), "a": nir.Linear(w), "b": nir.Linear(w), "lif": cuba,
             "output": nir.Output(np.array([4]))}
    edges = [("input", "a"), ("input", "b"), ("a", "lif"), ("b", "lif"), ("lif", "output")]
    graph = nir.NIRGraph(nodes, edges)
    with pytest.raises(UnsupportedLayerError, match=r"NIR nodes \['lif'\] carry spikefit.chip_state='xylo', but the "
                                                    r"graph is not a chain"):
        sf.import_nir(graph, "snntorch")
    cuba.metadata = {}
    assert sf.import_nir(graph, "snntorch") is not None  # the same graph unmarked imports
