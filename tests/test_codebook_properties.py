"""hypothesis property tests of the codebook invariants, over random weights and settings.

For m in 2..16, bits in 2..8 (m <= 2**bits - 1) or float codebooks, and both granularities:
at most m values per codebook; every weight ``scale * k`` with integer ``|k| <= 2**(bits-1) - 1``;
``freeze`` and ``strip`` leave outputs bit-identical; a frozen layer survives the NIR round trip
exactly (weights, codes, integers, scales). A fixed example budget keeps them to a few seconds.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import snn_spikefit as sf

BUDGET = settings(max_examples=20, derandomize=True, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])


@st.composite
def setups(draw):
    bits = draw(st.none() | st.integers(2, 8))
    m = draw(st.integers(2, 16 if bits is None else min(16, 2**bits - 1)))
    granularity = draw(st.sampled_from(["layer", "channel"]))
    out_f, in_f = draw(st.integers(1, 6)), draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**16))
    spread = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_f, in_f, generator=gen) * spread
    if draw(st.booleans()):  # ties and constant rows
        weight = weight.round()
    return m, bits, granularity, weight


def _layer(weight: torch.Tensor) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(weight.shape[1], weight.shape[0]))
    with torch.no_grad():
        net[0].weight.copy_(weight)
    return net


@BUDGET
@given(setups())
def test_codebook_values_and_integers(setup):
    m, bits, granularity, weight = setup
    net = sf.wrap(_layer(weight), m=m, bits=bits, granularity=granularity)
    w = net[0].weight.detach()
    rows = w.reshape(w.shape[0], -1) if granularity == "channel" else w.reshape(1, -1)
    assert max(int(r.unique().numel()) for r in rows) <= m
    form = sf.compressed_layers(net)[0].integer_form()
    assert torch.equal(form.values.gather(1, form.codes.long()).reshape(w.shape), w)
    if bits is not None:
        top = 2 ** (bits - 1) - 1
        assert not form.ints.is_floating_point() and int(form.ints.abs().max()) <= top
        assert torch.equal(form.ints.to(form.scale.dtype) * form.scale[:, None], form.values)


@BUDGET
@given(setups())
def test_freeze_and_strip_keep_outputs_bit_identical(setup):
    m, bits, granularity, weight = setup
    net = sf.wrap(_layer(weight), m=m, bits=bits, granularity=granularity).eval()
    x = torch.randn(5, weight.shape[1], generator=torch.Generator().manual_seed(1))
    before = net(x)
    sf.freeze(net)
    assert torch.equal(net(x), before)
    sf.strip(net)
    assert torch.equal(net(x), before)


@BUDGET
@given(setup=setups())
def test_a_frozen_layer_survives_the_nir_round_trip_exactly(setup, tmp_path_factory):
    pytest.importorskip("snntorch")
    m, bits, granularity, weight = setup
    net = sf.freeze(sf.wrap(_layer(weight), m=m, bits=bits, granularity=granularity))
    path = tmp_path_factory.mktemp("rt") / "net.nir"
    sf.export_nir(net, torch.rand(1, weight.shape[1]), path, dt=1e-3)
    back = sf.import_nir(path, "snntorch")
    first = next(mod for mod in back.modules() if isinstance(mod, nn.Linear))
    assert torch.equal(first.weight, net[0].weight)
    a, b = sf.compressed_layers(net)[0].integer_form(), sf.compressed_layers(back)[0].integer_form()
    assert torch.equal(a.codes, b.codes) and torch.equal(a.values, b.values)
    if bits is not None:
        assert torch.equal(a.ints, b.ints) and torch.equal(a.scale, b.scale)
