"""One-shot CAT's parts: Hessian-weighted k-means starts, several starts, bias correction."""

import pytest
import torch
from torch import nn

from snn_spikefit.ptq.api import _hessian
from snn_spikefit.ptq.plan import layer_plans as _plans
from snn_spikefit.ptq.codebook import STARTS, fit_layer, weighted_kmeans
from snn_spikefit.ptq.hessian import damped
from snn_spikefit.ptq.obs import hessian_error, nearest
from tests.conftest import needs_snntorch

T = 5


def _objective(x, omega, centers):
    k = nearest(x, centers)
    return float((omega * (x - centers.gather(1, k)) ** 2).sum())


def test_weighted_kmeans_is_a_fixed_point_and_lowers_the_weighted_error():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 200, generator=g)
    omega = torch.rand(2, 200, generator=g) ** 4  # very uneven importances
    start = torch.tensor([[-1.0, 0.0, 1.0, 2.0], [-2.0, -0.5, 0.5, 2.0]])
    c = weighted_kmeans(x, omega, start, iterations=200)
    assert _objective(x, omega, c) <= _objective(x, omega, start)
    k = nearest(x, c)
    for r in range(2):
        for j in range(4):
            sel = k[r] == j
            if sel.any():  # every center is the importance-weighted mean of its cluster
                mean = float((omega[r, sel] * x[r, sel]).sum() / omega[r, sel].sum())
                assert float(c[r, j]) == pytest.approx(mean, rel=1e-5, abs=1e-6)
    assert bool((c[:, 1:] > c[:, :-1]).all())


def test_weighted_kmeans_with_equal_weights_is_lloyd():
    x = torch.tensor([[0.0, 0.1, 0.2, 5.0, 5.2, 9.0]])
    c = weighted_kmeans(x, torch.ones_like(x), torch.tensor([[0.0, 4.0, 8.0]]))
    assert torch.allclose(c, torch.tensor([[0.1, 5.1, 9.0]]), atol=1e-6)


def _layer_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(300, 24, generator=g) < 0.3).double() * torch.rand(24, generator=g, dtype=torch.float64) * 3
    return torch.randn(16, 24, generator=g) * 0.3, damped(2 * a.T @ a / 300, 0.01)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_several_starts_never_lose_to_any_one_of_them(m):
    w, h = _layer_problem(m)
    gain2 = torch.rand(16, dtype=torch.float64) + 0.5
    alone = [fit_layer(w, h, m=m, bits=8, groups=1, gain2=gain2, starts=(s,)).error for s in STARTS]
    both = fit_layer(w, h, m=m, bits=8, groups=1, gain2=gain2, starts=STARTS)
    assert both.error == pytest.approx(min(alone), rel=1e-12)
    assert hessian_error(both.quantized - w, h, gain2) == pytest.approx(both.error, rel=1e-9)
    assert int(both.values.unique().numel()) <= m


def test_an_unknown_start_is_refused():
    w, h = _layer_problem()
    with pytest.raises(ValueError, match="start 'random' is not one of"):
        fit_layer(w, h, m=3, bits=8, groups=1, starts=("random",))


@needs_snntorch
@pytest.mark.parametrize("conv", [False, True])
def test_bias_shift_is_the_least_squares_bias_for_a_weight_change(conv):
    import snntorch as snn

    layer = nn.Conv2d(2, 3, 2) if conv else nn.Linear(4, 3)
    model = nn.Sequential(layer, snn.Leaky(beta=0.5, threshold=1e9, init_hidden=True))
    spikes = (torch.rand(T, 3, 2, 4, 4) < 0.4).float() if conv else (torch.rand(T, 3, 4) < 0.4).float()
    plan = _plans(model, [spikes], None, None, None)[0]
    acc = _hessian(model, plan, [spikes], None)
    delta = torch.randn(3, layer.weight[0].numel(), dtype=torch.float64)
    db = acc.bias_shift(delta, torch.zeros_like(delta))  # the weights move from 0 to delta
    # explicit: the membrane error of (delta, db) over every sample, position and step, K written out
    k = torch.tril(0.5 ** (torch.arange(T)[:, None] - torch.arange(T)[None, :]).clamp_min(0).double())
    with torch.no_grad():
        if conv:
            s = nn.functional.unfold(spikes.reshape(-1, 2, 4, 4).double(), 2).transpose(1, 2)  # [T*B, L, n]
            s = s.reshape(T, -1, s.shape[-1])
        else:
            s = spikes.double()
    v = torch.einsum("ts,sjn->tjn", k, s)             # K S per sample/position
    k1 = k.sum(dim=1)                                  # K 1
    for r in range(3):
        design = k1[:, None].expand(T, v.shape[1]).reshape(-1, 1)       # the bias column
        target = -(v @ delta[r]).reshape(-1, 1)
        best = torch.linalg.lstsq(design, target).solution[0, 0]
        assert float(db[r]) == pytest.approx(float(best), rel=1e-9, abs=1e-12)
        # the bias-absorbing Hessian measures the error that is left after the correction
        left = ((design * db[r] - target) ** 2).sum() * 2 / acc.m
        absorbed = acc.hessian(absorb_bias=True)
        assert float(delta[r] @ absorbed @ delta[r]) == pytest.approx(float(left), rel=1e-9)
        assert float(delta[r] @ acc.hessian() @ delta[r]) >= float(left)


def test_asymmetric_target_is_the_least_squares_fit_to_the_reference_output():
    from snn_spikefit.ptq.hessian import HessianAccumulator

    g = torch.Generator().manual_seed(4)
    layer = nn.Linear(6, 3)
    acc, same = HessianAccumulator(layer, (0.5,)), HessianAccumulator(layer, (0.5,))
    now = (torch.rand(T, 40, 6, generator=g) < 0.4).float()        # inputs after earlier layers were compressed
    ref = (torch.rand(T, 40, 6, generator=g) < 0.4).float()        # inputs of the original model
    acc.add(now, ref)
    same.add(now)
    w = torch.randn(3, 6, generator=g, dtype=torch.float64)
    h = acc.hessian()
    assert torch.equal(same.target(w, damped(h, 0.0)), w)           # no reference: the weights themselves
    k = torch.tril(0.5 ** (torch.arange(T)[:, None] - torch.arange(T)[None, :]).clamp_min(0).double())
    xq = torch.einsum("ts,sbn->tbn", k, now.double()).reshape(-1, 6)
    x = torch.einsum("ts,sbn->tbn", k, ref.double()).reshape(-1, 6)
    expected = torch.linalg.lstsq(xq, x @ w.T).solution.T          # min |Xq w' - X w|^2 per row
    assert torch.allclose(acc.target(w, damped(h, 0.0)), expected, atol=1e-9)
    # with the bias absorbed: the weights of the least-squares fit with a free bias column
    k1 = k.sum(dim=1)[:, None].expand(T, 40).reshape(-1, 1)
    both = torch.linalg.lstsq(torch.cat([xq, k1], 1), x @ w.T).solution.T
    hb = acc.hessian(absorb_bias=True)
    assert torch.allclose(acc.target(w, damped(hb, 0.0), absorb_bias=True), both[:, :6], atol=1e-9)
