"""Multi-level (graded) spiking neurons: the level function and reset by hand, L = 2 is the binary
neuron, conversion, graded op counts and energy, the chip check, NIR round trips."""

import copy
import warnings

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.neurons.multilevel import LEVELS_KEY, levels, spike_levels
from snn_spikefit.trace import Recorder

from conftest import needs_snntorch

snn = pytest.importorskip("snntorch")
from snn_spikefit.adapters.snntorch_multilevel import MultiLevelLeaky  # noqa: E402

INPUTS = [0.5, 0.75, 2.0, 0.0, 3.5, 0.25, 0.0, 5.0, 0.0, 1.5, 0.125, 2.25, 0.0, 0.0, 4.0, 0.5, 1.0, 0.0, 2.5, 0.75]


def _steps(neuron, xs):
    spikes, mems = [], []
    for x in xs:
        spikes.append(float(neuron(torch.tensor([x]))))
        mems.append(float(neuron.mem))
    return spikes, mems


def _reference(xs, beta, theta, L):
    """The level function and the subtractive reset, one scalar at a time."""
    u, s, spikes, mems = 0.0, 0, [], []
    for x in xs:
        u = beta * u + x - s * theta
        s = sum(1 for k in range(1, L) if u > k * theta)
        spikes.append(float(s))
        mems.append(u)
    return spikes, mems


def test_levels_and_reset_by_hand_over_20_steps():
    neuron = MultiLevelLeaky(beta=1.0, threshold=1.0, levels=4, init_hidden=True)
    spikes, mems = _steps(neuron, INPUTS)
    # U: 0.5 | 1.25 -> 1 | 1.25+2-1=2.25 -> 2 | 2.25-2=0.25 -> 0 | 3.75 -> 3 | 3.75+0.25-3=1.0 -> 0 (strict >)
    #    | 1.0 -> 0 | 6.0 -> 3 (clipped to L-1) | 6-3=3.0 -> 2 (strict >)
    assert spikes[:9] == [0, 1, 2, 0, 3, 0, 0, 3, 2]
    assert mems[:9] == [0.5, 1.25, 2.25, 0.25, 3.75, 1.0, 1.0, 6.0, 3.0]
    assert (spikes, mems) == _reference(INPUTS, 1.0, 1.0, 4)
    leaky = MultiLevelLeaky(beta=0.5, threshold=0.5, levels=3, init_hidden=True)
    assert _steps(leaky, INPUTS) == _reference(INPUTS, 0.5, 0.5, 3)


def test_two_levels_is_the_binary_leaky_spikes_membranes_and_gradients():
    torch.manual_seed(0)
    x = (torch.randn(20, 4, 7) * 1.5).requires_grad_()
    xb = x.detach().clone().requires_grad_()
    a, b = snn.Leaky(beta=0.8, init_hidden=True), MultiLevelLeaky(beta=0.8, levels=2, init_hidden=True)
    out_a = torch.stack([a(t) for t in x])
    out_b = torch.stack([b(t) for t in xb])
    assert torch.equal(out_a, out_b) and 0 < int(out_a.sum()) < out_a.numel()
    out_a.sum().backward()
    out_b.sum().backward()
    assert torch.equal(x.grad, xb.grad)


def test_level_surrogate_sums_the_steps():
    u = torch.tensor([0.5, 1.5, 2.5, 9.0], requires_grad=True)
    s = levels(u, 1.0, 3)
    assert s.tolist() == [0.0, 1.0, 2.0, 2.0]
    s.sum().backward()
    g = lambda d: 1.0 / (1 + (torch.pi / 2 * 2 * d) ** 2)  # noqa: E731 - ATan, alpha = 2
    expected = torch.stack([g(u.detach() - 1) + g(u.detach() - 2)])[0]
    torch.testing.assert_close(u.grad, expected)


def _net():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=0.8, init_hidden=True, learn_beta=True),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 5), snn.Leaky(beta=0.9, init_hidden=True))


def test_to_multilevel_keeps_parameters_and_refuses_by_name():
    model = _net()
    before = copy.deepcopy(model.state_dict())
    assert sf.to_multilevel(model, levels=4) is model
    assert [spike_levels(m) for m in model] == [2, 4, 2, 2, 4]
    assert isinstance(model[1].beta, nn.Parameter) and not isinstance(model[4].beta, nn.Parameter)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    mixed = nn.Sequential(nn.Linear(3, 3), snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(3, 2),
                          snn.Synaptic(alpha=0.5, beta=0.5, init_hidden=True))
    with pytest.raises(sf.UnsupportedLayerError, match="Synaptic has no multi-level twin"):
        sf.to_multilevel(mixed, levels=4)
    assert type(mixed[1]) is snn.Leaky  # nothing swapped
    sf.to_multilevel(mixed, levels=3, ignore=["3"])
    assert spike_levels(mixed[1]) == 3 and type(mixed[3]) is snn.Synaptic
    with pytest.raises(sf.SpikeFitValueError, match="levels=1 is not allowed"):
        sf.to_multilevel(_net(), levels=1)
    zero = nn.Sequential(nn.Linear(3, 3), snn.Leaky(beta=0.5, reset_mechanism="zero", init_hidden=True))
    with pytest.raises(sf.UnsupportedLayerError, match="reset_mechanism='subtract'"):
        sf.to_multilevel(zero, levels=4)


def test_learned_threshold_survives_conversion_and_gets_gradients():
    from snn_spikefit.zoo.snntorch import conv_snn

    torch.manual_seed(0)
    model = sf.to_multilevel(conv_snn(1, 10, 8, (4, 4), batch_norm=True, learn_threshold=True), levels=4)
    neurons = [m for m in model.modules() if isinstance(m, MultiLevelLeaky)]
    assert len(neurons) == 2 and all(isinstance(m.threshold, nn.Parameter) for m in neurons)
    assert [float(m.threshold) for m in neurons] == [1.0, 1.0]
    fixed = sf.to_multilevel(conv_snn(1, 10, 8, (4, 4)), levels=4)
    assert not any(isinstance(m.threshold, nn.Parameter) for m in fixed.modules() if isinstance(m, MultiLevelLeaky))
    sf.run(model, torch.rand(16, 1, 8, 8) * 4, num_steps=1).square().sum().backward()
    assert all(float(m.threshold.grad) != 0.0 for m in neurons)


def _level_model(weight):
    fc = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor(weight))
    return nn.Sequential(MultiLevelLeaky(beta=1.0, threshold=1.0, levels=4, init_hidden=True), fc)


def test_graded_op_counts_and_energy_by_hand():
    model = _level_model([[1.0, 0.0, 2.0], [0.5, 0.5, 0.0]])
    x = torch.tensor([[[3.5, 0.5, 1.5]]])  # [T=1, B=1, 3] -> levels 3, 0, 1
    ops = sf.count_ops(model, x)
    # binary events: row 0 sees inputs 0 (level 3) and 2 (level 1) -> 4; row 1 sees input 0 -> 3
    assert (ops.acs, ops.macs, ops.graded_acs, ops.dense) == (7.0, 0.0, 3.0, 6.0)
    assert ops.firing_rates == {"0": pytest.approx(2 / 3)}
    assert ops.to_dict()["graded_acs"] == 3.0
    data = [(x[0], torch.tensor([0]))]
    binary = sf.evaluate(model, data, hardware=sf.HardwareProfile(name="b", e_ac_pj=1.0, graded_spikes=False),
                         num_steps=1)
    graded = sf.evaluate(model, data, hardware=sf.HardwareProfile(name="g", e_ac_pj=1.0, e_graded_pj=2.0,
                                                                  graded_spikes=True), num_steps=1)
    assert binary.energy_mj == pytest.approx(7.0e-9) and graded.energy_mj == pytest.approx(6.0e-9)
    assert "graded spikes" in graded.energy_note
    plain = sf.count_ops(model[1], torch.tensor([[[3.0, 0.0, 1.0]]]))  # the same values, not from a neuron
    assert (plain.acs, plain.macs) == (0.0, 3.0)


def test_check_refuses_graded_spikes_on_binary_chips():
    model = sf.to_multilevel(_net(), levels=4)
    sample = torch.rand(1, 1, 6, 6)
    report = sf.check(model, "loihi", sample=sample)
    bad = [v for v in report.violations if v.rule == "graded_spikes"]
    assert [v.layer for v in bad] == ["1", "4"] and not report.ok
    assert "binary events over more steps" in bad[0].hint and "loihi2" in bad[0].hint
    assert not [v for v in sf.check(model, "loihi2", sample=sample).violations if v.rule == "graded_spikes"]
    binary = sf.to_multilevel(_net(), levels=2)
    assert not [v for v in sf.check(binary, "loihi", sample=sample).violations if v.rule == "graded_spikes"]


def _boosted(levels_):
    torch.manual_seed(1)
    model = sf.to_multilevel(_net(), levels=levels_)
    with torch.no_grad():
        model[0].weight.mul_(3.0)
        model[3].weight.mul_(4.0)
    return model


def _recorded(model, x):
    with Recorder(model) as rec:
        out = sf.run(model, x)
    return out, list(rec.spikes.values())


def test_nir_round_trip_exact_with_levels_and_a_warning(tmp_path):
    model = _boosted(4)
    x = torch.rand(20, 2, 1, 6, 6) * 2
    with pytest.warns(UserWarning, match="other tools .* binary spikes"):
        sf.export_nir(model, x[0], tmp_path / "m.nir")
    import nir

    graph = nir.read(tmp_path / "m.nir")
    assert sorted(int(n.metadata[LEVELS_KEY]) for n in graph.nodes.values() if LEVELS_KEY in n.metadata) == [4, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = sf.import_nir(tmp_path / "m.nir", "snntorch")
    assert [spike_levels(m) for m in back.modules() if isinstance(m, MultiLevelLeaky)] == [4, 4]
    out_a, spk_a = _recorded(model, x)
    out_b, spk_b = _recorded(back, x)
    assert len(spk_a) == len(spk_b) == 2
    for a, b in zip(spk_a, spk_b):
        assert torch.equal(a, b)
    assert float(spk_a[0].max()) >= 2  # graded levels were exercised
    torch.testing.assert_close(out_a, out_b)


def test_runs_at_one_step_through_fit_prune_wrap_evaluate():
    torch.manual_seed(0)
    model = _boosted(4)
    x, y = torch.rand(16, 1, 6, 6), torch.randint(0, 5, (16,))
    data = [(x, y)]
    sf.fit(model, data, epochs=1, num_steps=1)
    sf.prune(model, data, amount=0.5, num_steps=1)
    assert model[0].out_channels == 2 and model[3].in_features == 2 * 36
    sf.wrap(model, m=4, bits=4)
    report = sf.evaluate(model, data, num_steps=1)
    assert report.num_steps == 1 and report.acs > 0


# -- Norse ------------------------------------------------------------------------------------------
def _norse_params():
    norse = pytest.importorskip("norse.torch")
    return norse, norse.LIFParameters(tau_mem_inv=torch.as_tensor(200.0), tau_syn_inv=torch.as_tensor(300.0))


def _norse_steps(cell, x):
    state, out = None, []
    for t in x:
        z, state = cell(t, state)
        out.append(z)
    return torch.stack(out), state


def test_norse_cell_by_hand_and_two_levels_is_lif_cell():
    norse, p = _norse_params()
    from snn_spikefit.adapters.norse_multilevel import MultiLevelLIFCell

    xs = torch.tensor([[4.0], [0.0], [8.0], [0.0], [0.0], [2.0]])
    got, _ = _norse_steps(MultiLevelLIFCell(p, levels=4), xs)
    i, v, want = 0.0, 0.0, []
    for x in xs[:, 0].tolist():  # Norse's order: current jump, membrane step, current decay, level, subtract
        i += x
        v += 0.2 * (-v + i)
        i -= 0.3 * i
        z = sum(1 for k in range(1, 4) if v > k)
        v -= z
        want.append(float(z))
    assert got[:, 0].tolist() == want and max(want) >= 2
    torch.manual_seed(0)
    x = torch.randn(30, 3, 5) * 3
    binary, _ = _norse_steps(norse.LIFCell(p), x)
    two, _ = _norse_steps(MultiLevelLIFCell(p, levels=2, reset="value"), x)
    assert torch.equal(binary, two) and 0 < int(binary.sum()) < binary.numel()


def test_norse_to_multilevel_nir_round_trip_exact(tmp_path):
    norse, p = _norse_params()
    from snn_spikefit.adapters.norse_multilevel import MultiLevelLIFCell

    torch.manual_seed(0)
    model = norse.SequentialState(nn.Conv2d(1, 4, 3, padding=1), norse.LIFCell(p), nn.Flatten(),
                                  nn.Linear(4 * 36, 5), norse.LIFCell(p))
    sf.to_multilevel(model, levels=4)
    assert [spike_levels(m) for m in model] == [2, 4, 2, 2, 4]
    with torch.no_grad():
        model[0].weight.mul_(6.0)
        model[3].weight.mul_(8.0)
    x = torch.rand(20, 2, 1, 6, 6)
    with pytest.warns(UserWarning, match="other tools .* binary spikes"):
        sf.export_nir(model, x[0], tmp_path / "n.nir")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = sf.import_nir(tmp_path / "n.nir", "norse")
        with pytest.raises(sf.UnsupportedLayerError, match="subtract_immediate"):
            sf.import_nir(tmp_path / "n.nir", "snntorch")
    assert [(m.spike_levels, m.reset) for m in back.modules() if isinstance(m, MultiLevelLIFCell)] == \
        [(4, "subtract"), (4, "subtract")]
    _, spk_a = _recorded(model, x)
    _, spk_b = _recorded(back, x)
    assert len(spk_a) == 2 and all(torch.equal(a, b) for a, b in zip(spk_a, spk_b))
    assert float(spk_a[0].max()) >= 2
    report = sf.check(model, "loihi", sample=x[0, :1])
    assert [v.layer for v in report.violations if v.rule == "graded_spikes"] == ["1", "4"]


def test_chip_precision_state_subtracts_the_level():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), snn.Leaky(beta=0.75, init_hidden=True), nn.Linear(6, 3),
                          snn.Leaky(beta=0.5, init_hidden=True))
    sf.to_multilevel(model, levels=4)
    with torch.no_grad():  # weights and inputs on the state grid (1/64): the integer state is exact
        for layer in (model[0], model[2]):
            layer.weight.copy_(torch.round(layer.weight * 64) / 64 * 8)
            layer.bias.zero_()
    x = torch.round(torch.rand(20, 4, 8) * 4) / 4
    chip = sf.quantize_state(copy.deepcopy(model), state_bits=24, scale=1 / 64)
    _, spk_a = _recorded(model, x)
    _, spk_b = _recorded(chip, x)
    assert all(torch.equal(a, b) for a, b in zip(spk_a, spk_b)) and float(spk_a[0].max()) == 3.0


def test_norse_graded_op_counts_by_hand_and_unknown_chip_is_skipped():
    norse, _ = _norse_params()
    from snn_spikefit.adapters.norse_multilevel import MultiLevelLIFCell

    # tau_mem_inv = 1000, dt = 1e-3: v = i after one step; tau_syn_inv irrelevant at one step
    p = norse.LIFParameters(tau_mem_inv=torch.as_tensor(1000.0), tau_syn_inv=torch.as_tensor(200.0))
    fc = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.5, 0.0]]))
    model = norse.SequentialState(MultiLevelLIFCell(p, levels=4), fc)
    ops = sf.count_ops(model, torch.tensor([[[3.5, 0.5, 1.5]]]))  # levels 3, 0, 1
    assert (ops.acs, ops.macs, ops.graded_acs) == (7.0, 0.0, 3.0)
    report = sf.check(model, "generic-45nm")
    assert not [v for v in report.violations if v.rule == "graded_spikes"]
    assert [s[0] for s in report.skipped].count("graded_spikes") == 1
