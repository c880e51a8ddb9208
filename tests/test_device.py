"""Device- and dtype-agnostic verbs: a float64 or bfloat16 model stays in its dtype through every verb.

The CUDA case is the same code path (indices and scores are moved to where they are used, never created
on the CPU next to device tensors); it is run on a GPU when one is lent (see README "Distributed").
"""

import copy

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit import adapter as adapter_module
from tiny_lif import TinyAdapter, TinyLIF

T = 3


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(adapter_module._REGISTRY, "tiny", TinyAdapter())


def _net(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 12), nn.BatchNorm1d(12), TinyLIF(torch.linspace(0.5, 0.9, 12), 0.6),
                        nn.Linear(12, 4), TinyLIF(0.8, 0.3))
    with torch.no_grad():
        net[0].weight.mul_(2)
    g = torch.Generator().manual_seed(1)
    data = [(torch.rand(16, 8, generator=g).to(dtype), torch.randint(0, 4, (16,), generator=g)) for _ in range(2)]
    return net.to(dtype), data


def _dtypes(net):
    return {t.dtype for t in [*net.parameters(), *net.buffers()] if t.is_floating_point()}


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_every_verb_keeps_the_model_dtype(tiny, dtype, scope):
    net, data = _net(dtype)
    sf.wrap(net, m=4)
    sf.fit(net, data, epochs=1, num_steps=T, progress=False)
    report = sf.prune(net, data, amount=0.3, scope=scope, num_steps=T, progress=False)
    assert report.params_after < report.params_before
    sf.recalibrate_bn(net, data, num_steps=T)
    assert 0.0 <= sf.accuracy(net, data, num_steps=T) <= 100.0
    assert sf.evaluate(net, data, num_steps=T).samples == 32
    out = sf.run(net, data[0][0], num_steps=T)
    sf.freeze(net)
    assert torch.equal(sf.run(net, data[0][0], num_steps=T), out)  # freezing changes no output
    assert _dtypes(net) == {dtype} and out.dtype == dtype


def test_float64_prune_keeps_the_channels_float32_keeps(tiny):
    net32, data32 = _net(torch.float32)
    net64 = copy.deepcopy(net32).double()
    data64 = [(x.double(), y) for x, y in data32]
    r32 = sf.prune(net32, data32, amount=0.5, criterion="l1", num_steps=T, progress=False)
    r64 = sf.prune(net64, data64, amount=0.5, criterion="l1", num_steps=T, progress=False)
    assert [r.kept for r in r32.layers] == [r.kept for r in r64.layers]
    assert all(s.device.type == "cpu" for s in r64.scores.values())

