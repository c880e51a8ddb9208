"""Importance criteria equal their definitions, computed by brute force with explicit loops."""

import numpy as np
import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.pruning.importance import CRITERIA, Criterion, LayerBatch, Random, get_criterion

from conftest import needs_snntorch

BETA, THR, T = 0.5, 1.0, 3


def _tiny_conv():
    import snntorch as snn

    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), snn.Leaky(beta=BETA, threshold=THR, init_hidden=True),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 4),
    )
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    return model


def _data():
    g = torch.Generator().manual_seed(5)
    return [(torch.rand(3, 1, 4, 4, generator=g) * 2, torch.tensor([0, 1, 3])),
            (torch.rand(2, 1, 4, 4, generator=g) * 2, torch.tensor([2, 2]))]


def _by_hand(model, x, y):
    """Spikes, dL/dspikes and pre-reset membrane, each [T, B, C, H, W], without the library."""
    conv, lif, rest = model[0], model[1], model[2:]
    cur = conv(x)
    mem = torch.zeros_like(cur)
    spikes, pre = [], []
    for _ in range(T):
        reset = (mem > THR).float()
        mem = BETA * mem + cur - reset * THR
        pre.append(mem.detach())
        s = (mem > THR).float().requires_grad_(True)
        spikes.append(s)
    # the loss reaches the spikes only through the (linear) read-out path
    out = torch.stack([rest(s) for s in spikes])
    loss = nn.functional.cross_entropy(out.sum(0), y, reduction="sum")
    grads = torch.autograd.grad(loss, spikes)
    return torch.stack(spikes).detach(), torch.stack(grads), torch.stack(pre)


def _brute_force(model, data):
    C = model[0].out_channels
    fsc, taylor, sca, svs = np.zeros(C), np.zeros(C), np.zeros(C), np.zeros(C)
    n = 0
    for x, y in data:
        s, g, u = (t.double().numpy() for t in _by_hand(model, x, y))
        Tn, B, _, H, W = s.shape
        for b in range(B):
            for c in range(C):
                m = np.zeros((H, W))
                for t in range(Tn):
                    for h in range(H):
                        for w in range(W):
                            fsc[c] += g[t, b, c, h, w] ** 2 * s[t, b, c, h, w] ** 2
                            taylor[c] += g[t, b, c, h, w] * s[t, b, c, h, w]
                            sca[c] += abs(u[t, b, c, h, w]) / Tn
                            m[h, w] += s[t, b, c, h, w] / Tn
                svs[c] += int((np.linalg.svd(m, compute_uv=False) > 1e-6).sum())
        n += B
    return {"fsc": fsc / n, "taylor": np.abs(taylor) / n, "sca": sca / n, "svs": svs / n}


@needs_snntorch
@pytest.mark.parametrize("name", ["fsc", "svs", "sca", "taylor"])
def test_scores_equal_brute_force(name):
    model, data = _tiny_conv(), _data()
    expected = _brute_force(model, data)[name]
    spikes, _, _ = _by_hand(model, *data[0])
    assert 0 < float(spikes.mean()) < 1  # the layer spikes, but not everywhere: the test can tell channels apart
    report = sf.prune(model, data, amount=0.0, criterion=name, num_steps=T, progress=False)
    got = report.scores["1"].double().numpy()
    assert report.num_samples == 5
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
    assert len(set(np.round(expected, 6))) > 1  # scores differ between channels


@needs_snntorch
def test_svs_of_dense_layer_is_firing_indicator():
    import snntorch as snn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), snn.Leaky(beta=BETA, init_hidden=True), nn.Linear(6, 2))
    x, y = torch.rand(8, 5) * 4, torch.zeros(8, dtype=torch.long)
    report = sf.prune(model, [(x, y)], amount=0.0, criterion="svs", num_steps=T, progress=False)
    spikes = sf.run(nn.Sequential(model[0], model[1]), x, num_steps=T)  # [T, B, C]
    fired = (spikes.sum(0) > 0).double().mean(0)
    assert torch.allclose(report.scores["1"].double(), fired)


def test_l1_uses_effective_weight_and_random_is_seeded():
    conv = nn.Conv2d(2, 3, 3)
    batch = LayerBatch("x", conv, None, None, None)
    assert torch.equal(CRITERIA["l1"](batch), conv.weight.detach().abs().sum(dim=(1, 2, 3)))
    sf.wrap(conv, m=2)
    assert torch.equal(CRITERIA["l1"](batch), conv.weight.detach().abs().sum(dim=(1, 2, 3)))
    assert conv.weight.unique().numel() <= 2
    r0, r1 = get_criterion("random"), Random(seed=1)
    assert torch.equal(r0(batch), r0(batch)) and not torch.equal(r0(batch), r1(batch))


def test_registry_and_user_callables():
    class Ones(Criterion):
        needs_data = False

        def __call__(self, batch):
            return torch.ones(batch.producer.weight.shape[0])

    sf.register_criterion("ones_test", Ones())
    try:
        assert isinstance(get_criterion("ones_test"), Ones)
        with pytest.raises(sf.SpikeFitValueError, match="already registered"):
            sf.register_criterion("ones_test", Ones())
    finally:
        CRITERIA.pop("ones_test")
    fn = get_criterion(lambda b: b.spikes.sum(dim=(0, 1)))
    assert fn.needs_grad and fn.needs_pre_reset
    with pytest.raises(sf.SpikeFitValueError, match=r"criterion='nope' is not known; use one of \["):
        get_criterion("nope")
    with pytest.raises(sf.SpikeFitTypeError, match="criterion must be"):
        get_criterion(3)
    with pytest.raises(sf.SpikeFitTypeError, match="Criterion instance"):
        sf.register_criterion("bad", lambda b: b)
