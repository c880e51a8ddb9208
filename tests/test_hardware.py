"""Hardware profiles: sources for every value, unknowns stay unknown, lookup errors, wrap(hardware=...)."""

import dataclasses

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.deploy import hardware
from snn_spikefit.deploy.hardware import HardwareProfile, get_profile, list_profiles, register_profile

REQUIRED = ["truenorth", "loihi", "loihi2", "spinnaker2", "speck", "xylo", "akida", "dynap-se2", "altai",
            "tianjic", "generic-45nm"]
NO_SOURCE_NEEDED = {"name", "title", "uncertain", "sources", "notes", "layer_fits_one_core",
                    "chip_rules"}  # chip_rules names rules whose sources are in deploy/chip_rules.py


def test_required_profiles_exist():
    assert set(REQUIRED) <= set(list_profiles())


@pytest.mark.parametrize("name", sorted(set(REQUIRED) | {"spinnaker", "brainscales2", "generic-45nm-int8"}))
def test_every_published_value_has_a_source(name):
    p = get_profile(name)
    for f in dataclasses.fields(p):
        value = getattr(p, f.name)
        if f.name in NO_SOURCE_NEEDED or value is None:
            continue
        assert p.sources.get(f.name), f"{name}.{f.name}={value!r} has no source"
    for u in p.uncertain:
        assert getattr(p, u) is not None and p.sources.get(u)


def test_uncertain_and_unknown_values_are_marked():
    assert "e_ac_pj" in get_profile("loihi").uncertain          # 23.6 pJ (?) in HARDWARE.md
    assert get_profile("loihi").e_ac_pj == 23.6
    assert get_profile("truenorth").e_ac_pj == 26.0
    for name in ("loihi2", "spinnaker2", "speck", "akida", "dynap-se2", "altai", "tianjic"):
        p = get_profile(name)
        assert p.e_ac_pj is None and p.e_mac_pj is None and "e_ac_pj" in p.unknown
    table = get_profile("loihi2").describe()
    statuses = {r["field"]: r["status"] for r in table.records()}
    assert statuses["e_ac_pj"] == "unknown" and statuses["weight_bits"] == "uncertain"
    g = get_profile("generic-45nm")
    assert (g.e_mac_pj, g.e_ac_pj) == (4.6, 0.9)


def test_unknown_profile_lists_known_ones():
    with pytest.raises(sf.SpikeFitValueError, match=r"unknown hardware profile 'truenort'.*'truenorth'"):
        get_profile("truenort")
    with pytest.raises(sf.SpikeFitValueError, match="known profiles"):
        sf.wrap(nn.Sequential(nn.Linear(2, 2)), hardware="nope")


def test_profile_is_frozen_and_validated():
    p = get_profile("truenorth")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.fan_in = 3
    with pytest.raises(sf.SpikeFitValueError, match="fan_in=0"):
        HardwareProfile("x", fan_in=0)
    with pytest.raises(sf.SpikeFitValueError, match="e_ac_pj=-1"):
        HardwareProfile("x", e_ac_pj=-1)
    with pytest.raises(sf.SpikeFitValueError, match=r"unknown fields \['colour'\]"):
        HardwareProfile("x", uncertain=("colour",))
    with pytest.raises(sf.SpikeFitValueError, match=r"unknown HardwareProfile fields \['fanin'\]"):
        HardwareProfile.from_dict({"name": "x", "fanin": 3})
    assert HardwareProfile.from_dict(p.to_dict()) == p


def test_register_profile():
    mine = HardwareProfile("my-chip", fan_in=8, e_ac_pj=1.0, sources={"fan_in": "me", "e_ac_pj": "me"})
    try:
        assert register_profile(mine) is mine
        assert get_profile("my-chip") is mine and "my-chip" in list_profiles()
        other = dataclasses.replace(mine, fan_in=16)
        with pytest.raises(sf.SpikeFitValueError, match="already registered"):
            register_profile(other)
        register_profile(other, replace=True)
        assert get_profile("my-chip").fan_in == 16
        with pytest.raises(sf.SpikeFitTypeError, match="HardwareProfile"):
            register_profile("my-chip")
    finally:
        hardware._REGISTRY.pop("my-chip", None)


@pytest.mark.parametrize("name, expected", [
    ("truenorth", (4, 8, "channel")),        # 4 per neuron; 9-bit chip weights, wrap's widest is 8
    ("loihi", (255, 8, "layer")),            # per-synapse weights: plain 8-bit quantization
    ("speck", (255, 8, "layer")),
    ("dynap-se2", (16, None, "layer")),      # 16 values per core, no integer weight format
    ("tianjic", (32, 8, "layer")),
    ("generic-45nm", (None, None, "layer")),  # no limit: wrap's own defaults
])
def test_wrap_arguments_from_profile(name, expected):
    assert get_profile(name).wrap_arguments(m=None, bits=None, granularity=None) == expected


def test_wrap_arguments_keep_user_values_and_refuse_violations():
    tn = get_profile("truenorth")
    assert tn.wrap_arguments(m=3, bits=4, granularity="layer") == (3, 4, "layer")
    with pytest.raises(sf.SpikeFitValueError, match=r"m=8 is not allowed on truenorth.*4 distinct weights per neuron"):
        tn.wrap_arguments(m=8, bits=None, granularity=None)
    with pytest.raises(sf.SpikeFitValueError, match=r"bits=10 is not allowed on speck.*8 bits"):
        get_profile("speck").wrap_arguments(m=None, bits=10, granularity=None)
    with pytest.raises(sf.SpikeFitValueError, match=r"granularity='channel' is not allowed on dynap-se2"):
        get_profile("dynap-se2").wrap_arguments(m=None, bits=None, granularity="channel")


def test_wrap_with_hardware_meets_the_chip():
    net = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5))
    sf.wrap(net, hardware="truenorth")
    for layer in (net[0], net[2]):
        rows = layer.weight.detach()
        assert max(int(r.unique().numel()) for r in rows) <= 4
    q = sf.compressed_layers(net)[0].quantizer
    assert (q.m, q.bits, q.granularity) == (4, 8, "channel")
    plain = nn.Sequential(nn.Linear(4, 3))
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    with pytest.raises(sf.SpikeFitValueError, match="m=5"):
        sf.wrap(plain, m=5, hardware="truenorth")
    assert not sf.is_wrapped(plain) and all(torch.equal(before[k], v) for k, v in plain.state_dict().items())


def test_chip_rules_follow_the_profile_field_not_its_name():
    """A renamed copy of the Xylo profile keeps Xylo's own rules; the same numbers without the field do not."""
    xylo = get_profile("xylo")
    assert xylo.chip_rules == ("xylo_layers",) and get_profile("speck").chip_rules == ("speck_memory",)
    net = nn.Sequential(nn.Linear(16, 1200), nn.ReLU(), nn.Linear(1200, 8))
    mine = dataclasses.replace(xylo, name="my-xylo")
    assert "xylo_layers" in {v.rule for v in sf.check(net, mine).violations}
    plain = dataclasses.replace(xylo, name="no-rules", chip_rules=())
    assert "xylo_layers" not in {v.rule for v in sf.check(net, plain).violations}
    with pytest.raises(sf.SpikeFitValueError, match="chip_rules=.*not allowed"):
        dataclasses.replace(xylo, chip_rules=(3,))
