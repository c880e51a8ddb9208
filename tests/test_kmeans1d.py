"""Tests of snn_spikefit.kmeans1d: exact 1-D k-means by dynamic programming."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from snn_spikefit.quantize import kmeans1d as km
from snn_spikefit.quantize.kmeans1d import kmeans_1d, kmeans_1d_batched

# ----------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------


def sse(x, centers) -> float:
    """Sum of squared distances of x to the nearest center (float64)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    c = np.asarray(centers, dtype=np.float64)
    return float(((x[:, None] - c[None, :]) ** 2).min(axis=1).sum())


def brute_force(x, k):
    """(best cost, second best cost, best centers) over all contiguous
    partitions of the sorted values into k non-empty segments."""
    xs = np.sort(np.asarray(x, dtype=np.float64))
    n = xs.size
    costs = []
    for cuts in itertools.combinations(range(1, n), k - 1):
        b = (0, *cuts, n)
        segs = [xs[b[t] : b[t + 1]] for t in range(k)]
        cost = sum(float(((s - s.mean()) ** 2).sum()) for s in segs)
        costs.append((cost, [float(s.mean()) for s in segs]))
    costs.sort(key=lambda t: t[0])
    second = costs[1][0] if len(costs) > 1 else np.inf
    return costs[0][0], second, np.array(costs[0][1])


def reference_dp(x, k) -> float:
    """Optimal cost by the plain O(k N^2) DP (no divide and conquer)."""
    xs = np.sort(np.asarray(x, dtype=np.float64))
    xs = xs - xs.mean()
    n = xs.size
    s1 = np.concatenate(([0.0], np.cumsum(xs)))
    s2 = np.concatenate(([0.0], np.cumsum(xs * xs)))
    j = np.arange(n + 1)[:, None]
    i = np.arange(n + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = (s2[i] - s2[j]) - (s1[i] - s1[j]) ** 2 / (i - j)
    cost = np.where(j < i, cost, np.inf)  # cost[j, i] of segment j+1 .. i
    d = cost[0].copy()
    for _ in range(2, k + 1):
        d = (d[:, None] + cost).min(axis=0)
    return float(d[n])


def lloyd(x, k, init) -> float:
    """Cost reached by Lloyd's algorithm from the given initial centers."""
    x = np.asarray(x, dtype=np.float64)
    c = np.array(init, dtype=np.float64)
    for _ in range(100):
        lab = np.abs(x[:, None] - c[None, :]).argmin(axis=1)
        new = np.array([x[lab == t].mean() if np.any(lab == t) else c[t] for t in range(k)])
        if np.array_equal(new, c):
            break
        c = new
    return sse(x, c)


def tolerance(x) -> float:
    """Rounding allowance for an optimal cost: float64 prefix sums are exact
    up to about eps * (total sum of squares about the mean)."""
    x = np.asarray(x, dtype=np.float64)
    return 1e-12 * float(((x - x.mean()) ** 2).sum()) + 1e-12


def assert_codebook(c: torch.Tensor, k: int) -> None:
    assert c.shape == (k,)
    assert bool(torch.isfinite(c).all())
    assert bool((c[1:] > c[:-1]).all()), f"centers not strictly increasing: {c}"


# ----------------------------------------------------------------------------
# exactness
# ----------------------------------------------------------------------------


def _random_case(rng, n):
    kind = rng.integers(4)
    if kind == 0:  # continuous, both signs
        return rng.normal(0.0, 3.0, n)
    if kind == 1:  # small integers: many duplicates, negatives
        return rng.integers(-4, 5, n).astype(np.float64)
    if kind == 2:  # clustered
        return rng.choice([-10.0, 0.0, 0.5, 7.0], n) + rng.normal(0, 0.05, n)
    return rng.standard_cauchy(n)  # heavy tails


def test_matches_brute_force_on_many_random_inputs():
    rng = np.random.default_rng(1234)
    checked = 0
    for _ in range(400):
        n = int(rng.integers(1, 13))
        k = int(rng.integers(1, 5))
        x = _random_case(rng, n)
        c = kmeans_1d(torch.from_numpy(x), k)
        assert c.dtype == torch.float64
        assert_codebook(c, k)
        if np.unique(x).size < k:
            continue
        best, second, best_centers = brute_force(x, k)
        assert sse(x, c) <= best + tolerance(x)
        if second - best > 1e-6 * (1.0 + best):  # unique optimum: same centers
            np.testing.assert_allclose(c.numpy(), best_centers, rtol=1e-9, atol=1e-9)
        checked += 1
    assert checked > 250


@pytest.mark.parametrize("seed", range(6))
def test_matches_plain_dp_on_medium_inputs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(150, 400))
    x = _random_case(rng, n)
    if seed % 2:
        x = np.round(x, 1)  # ties
    for k in (2, 3, 5, 9):
        c = kmeans_1d(x, k)
        assert sse(x, c) <= reference_dp(x, k) + tolerance(x)


def test_every_code_path_gives_the_same_result(monkeypatch):
    # flat evaluation in many small chunks, slice scans of "wide" ranges, and
    # checkpointed backtracking must all agree with the default settings
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0, 1, 500), rng.normal(6, 0.3, 100), [40.0, 41.0]])
    g = np.stack([x, x[::-1] * 2 - 1, np.round(x, 1)])
    want1 = kmeans_1d(x, 7)
    want2 = kmeans_1d_batched(torch.from_numpy(g), 7)
    monkeypatch.setattr(km, "_WIDE", 40)
    monkeypatch.setattr(km, "_CHUNK", 256)
    monkeypatch.setattr(km, "_OPT_MEMORY_BUDGET", 0)
    np.testing.assert_allclose(kmeans_1d(x, 7).numpy(), want1.numpy(), rtol=1e-12, atol=1e-12)
    got2 = kmeans_1d_batched(torch.from_numpy(g), 7)
    np.testing.assert_allclose(got2.numpy(), want2.numpy(), rtol=1e-12, atol=1e-12)
    assert sse(x, want1) <= reference_dp(x, 7) + tolerance(x)


def test_cost_never_worse_than_lloyd():
    rng = np.random.default_rng(3)
    for trial in range(10):
        x = np.concatenate([rng.normal(m, s, 60) for m, s in [(-3, 0.5), (0, 1), (4, 0.2)]])
        x = x if trial % 2 else np.round(x, 0)
        for k in (2, 4, 8):
            best = sse(x, kmeans_1d(x, k))
            inits = [rng.choice(x, k, replace=False) for _ in range(4)]
            inits.append(np.quantile(x, (np.arange(k) + 0.5) / k))
            inits.append(np.linspace(x.min(), x.max(), k))
            for init in inits:
                assert best <= lloyd(x, k, init) + tolerance(x)


def test_docstring_example_and_simple_cases():
    c = kmeans_1d(torch.tensor([0.0, 0.1, 5.0, 5.2]), 2)
    assert c.dtype == torch.float32
    np.testing.assert_allclose(c.numpy(), [0.05, 5.1], rtol=1e-6)
    # k = 1 is the mean
    x = torch.tensor([1.0, 2.0, 4.0, 9.0], dtype=torch.float64)
    np.testing.assert_allclose(kmeans_1d(x, 1).numpy(), [4.0], rtol=1e-15)
    # k = number of distinct values: the values themselves
    assert kmeans_1d(torch.tensor([3.0, 1.0, 2.0, 3.0]), 3).tolist() == [1.0, 2.0, 3.0]


def test_affine_equivariance_and_extreme_magnitudes():
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1, 500)
    c = kmeans_1d(x, 5).numpy()
    for a, b in [(1e-6, 3.0), (1e250, -1e251), (-2.0, 0.0)]:
        ca = kmeans_1d(a * x + b, 5).numpy()
        assert np.all(np.isfinite(ca))
        np.testing.assert_allclose(np.sort(a * c + b), ca, rtol=1e-6, atol=abs(a) * 1e-9)
    # values near the float64 limit: no overflow in the squares
    big = np.array([-1.7e308, -1.6e308, 1.6e308, 1.7e308])
    np.testing.assert_allclose(kmeans_1d(big, 2).numpy(), [-1.65e308, 1.65e308], rtol=1e-12)


def test_input_forms_dtype_device_and_shape():
    x = torch.tensor([[0.0, 0.1], [5.0, 5.2]], requires_grad=True)  # any shape, flattened
    c = kmeans_1d(x, 2)
    assert c.shape == (2,) and c.dtype == torch.float32 and not c.requires_grad
    assert kmeans_1d(x.detach().double(), 2).dtype == torch.float64
    assert kmeans_1d(x.detach().half(), 2).dtype == torch.float16
    assert kmeans_1d(x.detach().bfloat16(), 2).dtype == torch.bfloat16
    assert kmeans_1d(np.array([0.0, 1.0, 5.0], dtype=np.float32), 2).dtype == torch.float32
    assert kmeans_1d(np.array([0.0, 1.0, 5.0]), 2).dtype == torch.float64
    ints = kmeans_1d([0, 1, 5, 6], 2)  # a list of ints: default dtype
    assert ints.dtype == torch.get_default_dtype()
    assert ints.tolist() == [0.5, 5.5]
    assert kmeans_1d(torch.tensor(2.5), 1).tolist() == [2.5]  # 0-d tensor
    assert kmeans_1d(x, np.int64(2)).shape == (2,)  # numpy integer k


# ----------------------------------------------------------------------------
# fewer distinct values than k
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, k",
    [
        ([2.0, 2.0, 5.0], 4),
        ([0.0, 1.0, 3.0], 5),
        ([-1.0, -1.0, 4.0, 4.0, 4.0], 16),
        ([1e-8, 2e-8], 3),
        ([7.0], 1),
        ([7.0], 2),
        ([0.0, 0.0], 5),
        ([-3e4] * 4, 6),
    ],
)
def test_degenerate_inputs_give_k_distinct_centers_containing_the_values(values, k):
    for dtype in (torch.float32, torch.float64, torch.float16):
        x = torch.tensor(values, dtype=dtype)
        c = kmeans_1d(x, k)
        assert c.dtype == dtype
        assert_codebook(c, k)
        for v in torch.unique(x).tolist():
            assert v in c.tolist(), f"{v} missing from {c}"


def test_degenerate_padding_is_deterministic_and_documented():
    # gaps are split evenly, the gap with the longest pieces first (leftmost on ties)
    c = kmeans_1d(torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64), 5)
    assert c.tolist() == [0.0, 0.5, 1.0, 2.0, 3.0]
    # all equal: v + s * t, s = 1e-3 * max(|v|, 1), t = -(k-1)//2 .. k//2
    c = kmeans_1d(torch.full((6,), 2.0, dtype=torch.float64), 4)
    np.testing.assert_allclose(c.numpy(), [2.0 - 2e-3, 2.0, 2.0 + 2e-3, 2.0 + 4e-3], rtol=0, atol=1e-15)
    c = kmeans_1d(torch.zeros(3, dtype=torch.float64), 3)
    np.testing.assert_allclose(c.numpy(), [-1e-3, 0.0, 1e-3], rtol=0, atol=1e-18)
    assert torch.equal(kmeans_1d(torch.full((3,), 0.25), 3), kmeans_1d(torch.full((9,), 0.25), 3))


def test_degenerate_padding_survives_low_precision_rounding():
    one = torch.tensor(1.0, dtype=torch.float16)
    nxt = torch.nextafter(one, torch.tensor(2.0, dtype=torch.float16))
    x = torch.stack([one, nxt, one])  # two adjacent float16 numbers
    c = kmeans_1d(x, 4)
    assert_codebook(c, 4)
    assert {1.0, float(nxt)} <= set(c.tolist())
    big = torch.full((2,), torch.finfo(torch.float16).max, dtype=torch.float16)
    c = kmeans_1d(big, 3)  # cannot go above the largest finite value
    assert_codebook(c, 3)
    assert float(big[0]) in c.tolist()


# ----------------------------------------------------------------------------
# batched
# ----------------------------------------------------------------------------


def test_batched_equals_per_row_calls():
    rng = np.random.default_rng(5)
    rows = [
        rng.normal(0, 1, 40),
        np.round(rng.normal(0, 1, 40), 1),  # fewer distinct values than others
        np.full(40, 3.0),  # all equal -> padded row
        np.repeat([1.0, 2.0, 4.0], [10, 20, 10]).astype(np.float64),  # 3 distinct < k
        rng.standard_cauchy(40),
        np.arange(40.0)[::-1],
    ]
    g = torch.tensor(np.stack(rows), dtype=torch.float32)
    for k in (1, 2, 5):
        out = kmeans_1d_batched(g, k)
        assert out.shape == (len(rows), k) and out.dtype == torch.float32
        for r in range(len(rows)):
            assert torch.equal(out[r], kmeans_1d(g[r], k)), (r, k)
    assert kmeans_1d_batched(g[:0], 3).shape == (0, 3)
    assert kmeans_1d_batched(np.stack(rows), 2).dtype == torch.float64


def test_batched_many_small_rows_are_optimal():
    x = torch.randn(256, 64)
    out = kmeans_1d_batched(x, 8)
    assert out.shape == (256, 8)
    assert bool((out[:, 1:] > out[:, :-1]).all())
    for r in (0, 100, 255):
        xr = x[r].double().numpy()
        # float32 output: the centers carry float32 rounding
        assert sse(xr, out[r].numpy()) <= reference_dp(xr, 8) * (1 + 1e-6) + tolerance(xr)


# ----------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one_raises(k):
    with pytest.raises(ValueError, match=rf"kmeans_1d: k must be an integer >= 1; got k={k}"):
        kmeans_1d(torch.ones(3), k)
    with pytest.raises(ValueError, match=rf"kmeans_1d_batched: k must be an integer >= 1; got k={k}"):
        kmeans_1d_batched(torch.ones(2, 3), k)


@pytest.mark.parametrize("k", [2.5, "3", True, None])
def test_k_not_an_integer_raises_type_error(k):
    with pytest.raises(TypeError, match=r"k must be an integer >= 1; got k="):
        kmeans_1d(torch.ones(3), k)


def test_empty_and_non_finite_inputs_raise():
    with pytest.raises(ValueError, match=r"values is empty \(shape \(0,\)\); at least one value"):
        kmeans_1d(torch.empty(0), 2)
    with pytest.raises(ValueError, match=r"values is empty"):
        kmeans_1d([], 1)
    x = torch.tensor([1.0, float("nan"), float("inf"), 2.0, -float("inf")])
    with pytest.raises(ValueError, match=r"values contains 3 NaN/inf entries \(of 5\); all values must be finite"):
        kmeans_1d(x, 2)
    with pytest.raises(ValueError, match=r"values_2d contains 1 NaN/inf"):
        kmeans_1d_batched(torch.tensor([[1.0, 2.0], [float("nan"), 0.0]]), 1)
    with pytest.raises(ValueError, match=r"values_2d must be 2-D \[G, N\]; got shape \(3,\)"):
        kmeans_1d_batched(torch.ones(3), 2)
    with pytest.raises(ValueError, match=r"values_2d has no columns \(shape \(2, 0\)\)"):
        kmeans_1d_batched(torch.ones(2, 0), 2)
    with pytest.raises(TypeError, match=r"values must be real-valued"):
        kmeans_1d(torch.ones(3, dtype=torch.complex64), 2)
    with pytest.raises(TypeError, match=r"values must hold real numbers"):
        kmeans_1d(np.array(["a", "b"]), 1)
    with pytest.raises(TypeError, match=r"values must be a tensor, numpy array or sequence"):
        kmeans_1d([[1.0, 2.0], [3.0]], 1)


def test_errors_are_spikefit_errors():
    from snn_spikefit.errors import SpikeFitTypeError, SpikeFitValueError

    with pytest.raises(SpikeFitValueError):
        kmeans_1d(torch.ones(3), 0)
    with pytest.raises(SpikeFitTypeError):
        kmeans_1d(torch.ones(3), 1.5)


@pytest.mark.parametrize("dist", ["normal", "laplace", "mixture", "rounded"])
def test_large_inputs_binned_close_to_exact_and_not_worse_than_sklearn(dist):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(11)
    n, k = 20_000, 8
    x = {"normal": rng.normal(0, 1, n), "laplace": rng.laplace(0, 1, n),
         "mixture": np.concatenate([rng.normal(-2, 0.1, n // 4), rng.normal(0.5, 0.6, n - n // 4)]),
         "rounded": np.round(rng.normal(0, 1, n), 3)}[dist]
    assert np.unique(x).size > km.exact_limit(k)  # the binned path is the one under test
    fast = kmeans_1d(x, k)
    assert_codebook(fast, k)
    exact = kmeans_1d(x, k, exact=True)
    assert sse(x, exact) <= sse(x, fast) <= sse(x, exact) * 1.001
    ref = KMeans(k, n_init=1, random_state=0).fit(x.reshape(-1, 1)).cluster_centers_.ravel()
    assert sse(x, fast) <= sse(x, ref) + tolerance(x)


def test_batched_rows_above_the_limit_are_binned_row_by_row():
    rng = np.random.default_rng(12)
    g = np.stack([rng.normal(0, 1, 5000), rng.laplace(0, 2, 5000)])
    got = kmeans_1d_batched(torch.from_numpy(g), 4)
    for row in range(2):
        assert torch.equal(got[row], kmeans_1d(g[row], 4))
        assert sse(g[row], got[row]) <= sse(g[row], kmeans_1d(g[row], 4, exact=True)) * 1.001
