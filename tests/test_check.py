"""check(): a model compressed for a chip passes; each kind of violation names its rule and layer."""

import json

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.deploy.check import ConstraintViolationError
from snn_spikefit.deploy.hardware import HardwareProfile

from conftest import needs_snntorch


def _rules(report):
    return {(v.rule, v.layer) for v in report.violations}


@needs_snntorch
def test_model_compressed_for_truenorth_passes():
    from snn_spikefit.zoo.snntorch import dense_snn

    net = dense_snn(64, 10, (128,))
    sf.wrap(net, hardware="truenorth")
    sf.freeze(net)
    report = sf.check(net, "truenorth")
    assert report.ok and report.violations == ()
    report.raise_if_failed()
    assert "OK" in str(report)


def test_distinct_weights_per_neuron_and_bits_and_fan_in():
    net = nn.Sequential(nn.Linear(300, 10))
    report = sf.check(net, "truenorth")
    assert _rules(report) == {("distinct_weights_per_neuron", "0"), ("weight_bits", "0"), ("fan_in", "0")}
    v = {v.rule: v for v in report.violations}
    assert v["fan_in"].limit == 256 and v["fan_in"].actual == 300 and v["fan_in"].severity == "error"
    assert "wrap(model, m=4, granularity='channel')" in v["distinct_weights_per_neuron"].hint
    assert "layer 0 has 300 distinct weights per neuron" in v["distinct_weights_per_neuron"].hint


def test_float_codebook_breaks_only_weight_bits():
    net = nn.Sequential(nn.Linear(20, 10))
    sf.wrap(net, m=4, granularity="channel")     # bits=None: float codebook
    sf.freeze(net)
    assert _rules(sf.check(net, "truenorth")) == {("weight_bits", "0")}


def test_zero_weights_are_no_synapses_for_fan_in():
    net = nn.Sequential(nn.Linear(300, 4))
    assert ("fan_in", "0") in _rules(sf.check(net, "truenorth"))
    with torch.no_grad():
        net[0].weight[:, 200:] = 0.0
    assert ("fan_in", "0") not in _rules(sf.check(net, "truenorth"))


def test_distinct_weights_per_layer():
    net = nn.Sequential(nn.Linear(10, 8))
    sf.wrap(net, m=4, granularity="channel")     # up to 32 values per layer
    report = sf.check(net, "dynap-se2")
    v = [v for v in report.violations if v.rule == "distinct_weights_per_layer"]
    assert len(v) == 1 and v[0].layer == "0" and v[0].limit == 16 and v[0].actual > 16
    assert "granularity='layer'" in v[0].hint and "strip(model)" in v[0].hint


def test_conv_on_dense_only_chip_and_kernel_size():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    report = sf.check(net, "truenorth", sample=torch.rand(1, 1, 8, 8))
    assert ("layer_type", "0") in _rules(report) and ("layer_type", "2") not in _rules(report)
    big = nn.Sequential(nn.Conv2d(1, 2, 17))
    assert ("kernel_size", "0") in _rules(sf.check(big, "speck", sample=torch.rand(1, 1, 20, 20)))


def test_neurons_cores_synapses_and_inputs():
    chip = HardwareProfile("tiny", neurons_per_core=4, cores=2, max_neurons=5, max_synapses=10, max_inputs=3)
    report = sf.check(nn.Sequential(nn.Linear(4, 6)), chip)
    v = {v.rule: v for v in report.violations}
    assert set(v) == {"neurons", "synapses", "inputs"}
    assert (v["neurons"].actual, v["synapses"].actual, v["inputs"].actual) == (6, 24, 4)
    three = sf.check(nn.Sequential(nn.Linear(3, 10)), HardwareProfile("t", neurons_per_core=4, cores=2))
    assert [(v.rule, v.layer, v.limit, v.actual) for v in three.violations] == [("cores", "(model)", 2, 3)]
    one_core = HardwareProfile("one", neurons_per_core=8, layer_fits_one_core=True)
    assert _rules(sf.check(nn.Sequential(nn.Linear(3, 10)), one_core)) == {("neurons_per_core", "0")}
    assert _rules(sf.check(nn.Sequential(nn.Linear(64, 10)), "xylo")) >= {("inputs", "(input)")}


def test_conv_neurons_need_a_sample():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))
    chip = HardwareProfile("c", max_neurons=100, conv=True)
    without = sf.check(net, chip)
    assert without.ok and ("neurons", "0", "conv output size needs sample=<an input batch>") in without.skipped
    with_sample = sf.check(net, chip, sample=torch.rand(2, 1, 8, 8))
    assert [(v.rule, v.actual) for v in with_sample.violations] == [("neurons", 4 * 8 * 8)]


@needs_snntorch
def test_neuron_model():
    import snntorch as snn

    lif = nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=0.5, init_hidden=True))
    report = sf.check(lif, "speck")
    v = [v for v in report.violations if v.rule == "neuron_model"]
    assert [(x.layer, x.actual, x.limit) for x in v] == [("1", "LIF", ["IF"])]
    assert "beta=1" in v[0].hint
    iaf = nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=1.0, init_hidden=True))
    assert all(v.rule != "neuron_model" for v in sf.check(iaf, "speck").violations)


def test_uncertain_limit_is_a_warning():
    report = sf.check(nn.Sequential(nn.Linear(4, 3)), "loihi2")     # weight_bits 8 is uncertain
    assert [(v.rule, v.severity) for v in report.violations] == [("weight_bits", "warning")]
    assert report.ok and "(uncertain)" in str(report.violations[0].limit)


def test_raise_if_failed_lists_violations_and_model_is_unchanged(tmp_path):
    net = nn.Sequential(nn.Linear(300, 10), nn.MaxPool1d(2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = sf.check(net, "truenorth")
    with pytest.raises(ConstraintViolationError, match=r"does not fit truenorth \(4 violations\)(.|\n)*fan_in: layer 0"):
        report.raise_if_failed()
    assert isinstance(ConstraintViolationError("x"), sf.SpikeFitError)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # MaxPool1d: no NIR node, so no chip toolchain can take the model -- an error, not "not checked"
    (pool,) = [v for v in report.violations if v.layer == "1"]
    assert (pool.rule, pool.actual, pool.severity) == ("layer_type", "MaxPool1d", "error")
    assert "use nn.AvgPool2d" in pool.hint and pool in report.structural
    d = json.loads(report.to_json(tmp_path / "c.json"))
    assert d["ok"] is False and len(d["violations"]) == 4
    assert report.to_csv().splitlines()[0] == "rule,layer,limit,actual,severity,hint"


def test_bad_arguments():
    with pytest.raises(sf.SpikeFitValueError, match="known profiles"):
        sf.check(nn.Linear(2, 2), "nochip")
    with pytest.raises(sf.SpikeFitTypeError, match="model must be a torch.nn.Module"):
        sf.check("net", "truenorth")
    with pytest.raises(sf.SpikeFitTypeError, match="sample must be a torch.Tensor"):
        sf.check(nn.Linear(2, 2), "truenorth", sample=[1, 2])


def _max_layers(limit):
    def rule(ctx):
        if len(ctx.layers) > limit:
            ctx.add("max_layers", "max_layers", "(model)", limit, len(ctx.layers), "merge layers")
    return rule


def test_custom_rule_is_run_refused_twice_and_replaced():
    from snn_spikefit.deploy.check import check_rules, register_check_rule, unregister_check_rule

    builtin = list(check_rules())
    assert builtin == ["layer_type", "kernel_size", "distinct_weights_per_neuron", "distinct_weights_per_layer",
                       "weight_bits", "fan_in", "neurons_per_core", "cores", "neurons", "synapses", "inputs",
                       "neuron_model", "speck_memory", "bias_bits", "xylo_layers", "neuron_state", "graded_spikes"]
    net = nn.Sequential(nn.Linear(300, 10), nn.Linear(10, 2))
    chip = HardwareProfile("vendor-chip", fan_in=256)
    register_check_rule("max_layers", _max_layers(1))
    try:
        report = sf.check(net, chip)
        # a layer's findings first (model order), then the model-wide ones
        assert [(v.rule, v.layer, v.limit, v.actual) for v in report.violations] == [
            ("fan_in", "0", 256, 300), ("max_layers", "(model)", 1, 2)]
        with pytest.raises(sf.SpikeFitValueError, match="check rule named 'max_layers' is already registered"):
            register_check_rule("max_layers", _max_layers(5))
        register_check_rule("max_layers", _max_layers(5), replace=True)
        assert list(check_rules()) == builtin + ["max_layers"]
        assert [v.rule for v in sf.check(net, chip).violations] == ["fan_in"]
    finally:
        unregister_check_rule("max_layers")
    assert list(check_rules()) == builtin
    with pytest.raises(sf.SpikeFitValueError, match="'max_layers' is not a registered check rule"):
        unregister_check_rule("max_layers")
    with pytest.raises(sf.SpikeFitValueError, match="check rule named 'fan_in' is already registered"):
        register_check_rule("fan_in", _max_layers(1))
    with pytest.raises(sf.SpikeFitTypeError, match="fn must be callable"):
        register_check_rule("bad", 3)


def test_replacing_a_builtin_rule_keeps_its_place():
    from snn_spikefit.deploy.check import check_rules, register_check_rule

    original = check_rules()["fan_in"]
    net = nn.Sequential(nn.Linear(300, 10))

    def strict_fan_in(ctx):
        for f in ctx.layers:
            ctx.add("fan_in", "fan_in", f.name, 1, int(f.nonzero_rows.max()), "vendor rule")

    register_check_rule("fan_in", strict_fan_in, replace=True)
    try:
        assert list(check_rules()).index("fan_in") == 5
        v = [v for v in sf.check(net, "truenorth").violations if v.rule == "fan_in"]
        assert [(x.limit, x.actual, x.hint) for x in v] == [(1, 300, "vendor rule")]
    finally:
        register_check_rule("fan_in", original, replace=True)
    v = [v for v in sf.check(net, "truenorth").violations if v.rule == "fan_in"]
    assert [(x.limit, x.actual) for x in v] == [(256, 300)]


def test_bias_bits_rule_follows_the_profile_field_and_round_biases_for_fixes_it():
    """A profile with ``bias_bits`` wants integer biases of the weight LSB; ``round_biases_for`` puts them there."""
    from snn_spikefit.quantize.bias import round_biases_for
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3))
    sf.wrap(net, m=4, bits=8)
    sf.freeze(net)
    chip = HardwareProfile("bias-chip", bias_bits=4)
    with torch.no_grad():
        net[0].bias.fill_(0.37 * float(net[0].parametrizations.weight[0].scale))  # off the grid
        net[1].bias.fill_(20 * float(net[1].parametrizations.weight[0].scale))    # on it, over 4 bits (7)
    found = {(v.layer, str(v.limit)) for v in sf.check(net, chip).violations if v.rule == "bias_bits"}
    assert found == {("0", "integer weight LSBs"), ("1", "7")}
    assert not [v for v in sf.check(net, HardwareProfile("plain")).violations if v.rule == "bias_bits"]
    assert round_biases_for(net, HardwareProfile("plain")) is None        # no field: nothing changes
    report = round_biases_for(net, chip)
    assert [row["clipped"] for row in report.to_dict()["layers"]] == [0, 3]
    assert not [v for v in sf.check(net, chip).violations if v.rule == "bias_bits"]
    assert sf.get_profile("speck").bias_bits == 8 and "bias_bits" in sf.get_profile("speck").sources
