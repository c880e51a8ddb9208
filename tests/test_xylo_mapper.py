"""rockpool 3.1.0's own Xylo mapper (syns61201.mapper, imported without samna) against check(model, "xylo").

rockpool installs into the Xylo target environment with xylosim (``.ci/run`` creates it and sets
``SPIKEFIT_REQUIRE_TARGETS``). What our check passes maps, with our integers; what it fails for too many
hidden or readout neurons, or no synaptic current, fails in the mapper for the same reason. Where the
mapper does not refuse (more than 16 inputs, a bias, a decay that is no bit shift) the test pins what it
does instead: a warning, or a silently truncated ``dash``.
"""

import re

import numpy as np
import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.targets.xylo_map import rockpool_map

from conftest import needs_snntorch
from test_xylo import _dense, _frozen, _graph, _syn, xylo  # noqa: F401  (the session's Xylo environment)

pytestmark = [pytest.mark.slow, needs_snntorch]


def _map(net, target, n_in=16):
    report = sf.check(net, "xylo", sample=torch.zeros(1, n_in))
    return report, rockpool_map(_graph(net, n_in), target)


def test_what_check_passes_maps_with_our_integers(xylo):  # noqa: F811
    from snn_spikefit.zoo.snntorch import xylo_snn

    torch.manual_seed(0)
    trained = xylo_snn(16, 8, (40,), threshold=0.5)
    sf.wrap(trained, m=4, bits=8, hardware="xylo")
    sf.freeze(trained)
    for net in (_frozen(_dense()), trained):
        report, mapped = _map(net, xylo)
        assert report.ok and mapped.ok and not mapped.error and not mapped.ours, mapped.error
        spec = xylo.build(_graph(net)).spec
        hid, out = spec.layers
        assert np.array_equal(mapped.arrays["weights_in"].reshape(16, -1), hid.codes.T)
        assert np.array_equal(mapped.arrays["weights_out"], out.codes.T) and not mapped.arrays["weights_rec"].any()
        assert np.array_equal(mapped.arrays["threshold"], hid.threshold)
        assert np.array_equal(mapped.arrays["threshold_out"], out.threshold)
        assert set(mapped.arrays["dash_syn"].tolist()) == {hid.dash_syn} == {1}
        assert set(mapped.arrays["dash_mem_out"].tolist()) == {out.dash_mem} == {3}


def test_what_check_fails_fails_in_the_mapper_for_the_same_reason(xylo):  # noqa: F811
    import snntorch as snn

    leaky = _frozen(nn.Sequential(nn.Linear(16, 8, bias=False), snn.Leaky(beta=0.875, init_hidden=True,
                                  reset_mechanism="subtract"), nn.Linear(8, 4, bias=False),
                                  snn.Leaky(beta=0.875, init_hidden=True, reset_mechanism="subtract")))
    wide = _frozen(nn.Sequential(nn.Linear(16, 1001, bias=False), _syn(), nn.Linear(1001, 8, bias=False), _syn()))
    cases = [(wide, "xylo_layers", "1000 hidden neurons", "1001 hidden neurons",
              "hidden neurons.*Exceeded number of available resources"),
             (_frozen(_dense(n_out=10)), "xylo_layers", "8 readout neurons", "10 readout neurons",
              "output neurons.*Exceeded number"),
             (leaky, "neuron_model", "CUBA-LIF", "no synaptic current",  # the mapper: tau_syn <= dt
              "time constants <= `dt`.*cannot be converted to `dash`")]
    for net, rule, ours, compiled, theirs in cases:
        report, mapped = _map(net, xylo)
        hits = [v for v in report.violations if v.rule == rule]
        assert not report.ok and any(ours in v.hint for v in hits), [str(v) for v in report.violations]
        assert not mapped.ok and mapped.error.startswith("DRCError")
        assert re.search(theirs, mapped.error), mapped.error
        assert compiled in mapped.ours  # our compiler refuses it for that reason too
    assert "up to 8 output channels" in " ".join(_map(_frozen(_dense(n_out=10)), xylo)[1].warnings)


def test_where_the_mapper_does_not_refuse_it_warns_or_truncates(xylo):  # noqa: F811
    report, mapped = _map(_frozen(_dense(n_in=20)), xylo, 20)
    assert "inputs" in {v.rule for v in report.violations} and mapped.ok
    assert any("up to 16 input channels" in w for w in mapped.warnings)
    report, mapped = _map(_frozen(_dense(bias=True)), xylo)
    assert "no bias" in {v.limit for v in report.violations if v.rule == "xylo_layers"} and mapped.ok
    assert any("Bias parameters" in w and "not* transferred" in w for w in mapped.warnings)
    # alpha 0.6: dash_syn = log2(tau_syn / dt) = log2(2.5) = 1.32, cast to uint8: 1 (alpha 0.5), no warning
    report, mapped = _map(_frozen(_dense(alpha=0.6)), xylo)
    assert any(str(v.limit).startswith("1 - 2**-k") for v in report.violations if v.rule == "xylo_layers")
    assert mapped.ok and not mapped.warnings
    assert set(mapped.arrays["dash_syn"].tolist()) == {1}
