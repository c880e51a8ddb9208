"""SparseGPT-style pruning (blockwise masks, lazy updates) against exact OBS and the closed form."""

import pytest
import torch

import snn_spikefit as sf
from snn_spikefit.errors import SpikeFitValueError
from snn_spikefit.ptq.obs import hessian_error, inverse_cholesky, obs_order, obs_prune, row_counts
from snn_spikefit.ptq.sparsegpt import sparsegpt_prune
from tests.conftest import needs_snntorch


def _quadratic(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(3 * n, n, generator=g, dtype=torch.float64) @ torch.randn(n, n, generator=g, dtype=torch.float64)
    return a.T @ a / (3 * n) + 0.1 * torch.eye(n, dtype=torch.float64)


def _closed_form(w, h, mask):
    """Per row: the w' with w'_J = 0 minimising (w' - w) H (w' - w)^T, solved on the kept weights."""
    out = w.clone()
    for r in range(w.shape[0]):
        gone = mask[r].nonzero().flatten().tolist()
        keep = [i for i in range(w.shape[1]) if i not in gone]
        if gone and keep:
            out[r, keep] += torch.linalg.solve(h[keep][:, keep], h[keep][:, gone] @ w[r, gone])
        out[r, gone] = 0
    return out


def test_inverse_cholesky_factors_the_inverse():
    h = _quadratic(7)
    u = inverse_cholesky(h)
    assert torch.allclose(u.T @ u, torch.linalg.inv(h), atol=1e-10)
    assert torch.equal(u, torch.triu(u))


@pytest.mark.parametrize("block", [1, 3, 128])
def test_prefix_masks_give_the_exact_obs_update(block):
    # every row's removed weights are its first columns: the left-to-right updates are exact OBS
    h, w = _quadratic(9), torch.randn(4, 9, dtype=torch.float64)
    counts = torch.tensor([0, 1, 4, 8])
    mask = torch.arange(9)[None, :] < counts[:, None]
    pruned, out_mask = sparsegpt_prune(w, h, 0, mask=mask, block=block)
    hinv = torch.linalg.inv(h)
    expected, _ = obs_prune(w, hinv, torch.arange(9).repeat(4, 1), counts)
    assert torch.equal(out_mask, mask)
    assert torch.allclose(pruned, expected, atol=1e-10)
    assert torch.allclose(pruned, _closed_form(w, h, mask), atol=1e-10)


def test_diagonal_hessian_picks_the_same_weights_as_exact_obs():
    # no coupling: OBS costs w_q^2 H_qq never change, and one block sees the whole row
    g = torch.Generator().manual_seed(1)
    h = torch.diag(torch.rand(12, generator=g, dtype=torch.float64) + 0.5)
    w = torch.randn(5, 12, generator=g, dtype=torch.float64)
    gain2 = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    hinv = torch.linalg.inv(h)
    order, cost = obs_order(w, hinv, block=1)
    for k in (1, 5, 17, 59):
        exact, exact_mask = obs_prune(w, hinv, order, row_counts(cost, k, gain2))
        pruned, mask = sparsegpt_prune(w, h, k, gain2=gain2, block=12)
        assert torch.equal(mask, exact_mask) and int(mask.sum()) == k
        assert torch.allclose(pruned, exact, atol=1e-12)


@pytest.mark.parametrize("block", [1, 4, 7, 128])
@pytest.mark.parametrize("k", [0, 1, 13, 50, 80])
def test_requested_count_is_removed_exactly_and_zeros_are_exact(block, k):
    h, w = _quadratic(10, seed=2), torch.randn(8, 10, dtype=torch.float64)
    pruned, mask = sparsegpt_prune(w, h, k, block=block)
    assert int(mask.sum()) == k
    assert bool((pruned[mask] == 0).all())
    if k == 0:
        assert torch.equal(pruned, w)


@pytest.mark.parametrize("block", [1, 5, 128])
def test_error_lies_between_the_closed_form_and_plain_zeroing(block):
    h, w = _quadratic(16, seed=3), torch.randn(6, 16, dtype=torch.float64)
    pruned, mask = sparsegpt_prune(w, h, 48, block=block)
    err = hessian_error(pruned - w, h)
    best = hessian_error(_closed_form(w, h, mask) - w, h)
    zeroed = hessian_error(torch.where(mask, torch.zeros_like(w), w) - w, h)
    assert best - 1e-9 <= err <= zeroed + 1e-9
    assert err < zeroed  # compensation helps on a coupled Hessian


def test_bad_count_is_refused():
    with pytest.raises(ValueError, match="k=13 weights cannot be removed from a layer of 12"):
        sparsegpt_prune(torch.ones(3, 4), torch.eye(4), 13)


def _dense():
    from snn_spikefit.zoo.snntorch import dense_snn

    torch.manual_seed(0)
    return dense_snn(300, 4, (6,)).eval()  # the first layer has 300 inputs: SparseGPT under "auto"


def _linear_weights(net):
    return [mod.weight.detach().clone() for mod in net.modules() if isinstance(mod, torch.nn.Linear)]


@needs_snntorch
def test_every_pruner_reaches_the_sparsity_and_auto_picks_by_row_length():
    x, result = torch.rand(24, 300), {}
    for pruner in ("auto", "sparsegpt", "obs"):
        net = _dense()
        report = sf.compress_posttraining(net, x, sparsity=0.7, pruner=pruner, progress=False)
        weights = _linear_weights(net)
        total = sum(w.numel() for w in weights)
        assert sum(r.pruned for r in report.layers) == int(0.7 * total)
        assert sum(int((w == 0).sum()) for w in weights) >= int(0.7 * total)
        result[pruner] = weights
    # the 300-input layer comes first: "auto" prunes it by SparseGPT, bit for bit
    assert torch.equal(result["auto"][0], result["sparsegpt"][0])
    assert not torch.equal(result["auto"][0], result["obs"][0])


@needs_snntorch
def test_unknown_pruner_is_refused_and_the_model_untouched():
    net = _dense()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(SpikeFitValueError, match=r"pruner='greedy' is not allowed; use one of \('auto', "):
        sf.compress_posttraining(net, torch.rand(4, 300), sparsity=0.5, pruner="greedy", progress=False)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_blocks_lose_weights_where_the_cheap_columns_are():
    # inputs 4..7 barely ever spike (tiny H diagonal): all 4 x 4 removals belong to the second block
    h = torch.diag(torch.tensor([5.0, 4.0, 6.0, 5.0, 1e-4, 2e-4, 1e-4, 3e-4], dtype=torch.float64))
    g = torch.Generator().manual_seed(5)
    w = (torch.rand(4, 8, generator=g, dtype=torch.float64) + 0.5) * torch.sign(torch.randn(4, 8, generator=g))
    pruned, mask = sparsegpt_prune(w, h, 16, block=4)
    assert not bool(mask[:, :4].any()) and bool(mask[:, 4:].all())
    assert torch.equal(pruned[:, :4], w[:, :4])
