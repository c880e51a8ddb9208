"""The lookup-table nearest-codeword search equals torch.searchsorted exactly."""

import pytest
import torch

from snn_spikefit.quantize import assign
from snn_spikefit.quantize.assign import bucket


def _case(gen, g, m, n, dtype, ties):
    c = torch.sort(torch.randn(g, m, generator=gen, dtype=dtype) * 3, dim=1).values
    if ties:
        c = torch.sort(torch.round(c * 2) / 2, dim=1).values  # repeated codewords: equal bounds
    b = ((c[:, 1:] + c[:, :-1]) * 0.5).contiguous()
    x = torch.randn(g, n, generator=gen, dtype=dtype) * 4
    on = b.flatten()[torch.randint(0, b.numel(), (g, n), generator=gen)]  # exactly on a bound ...
    x = torch.where(torch.rand(g, n, generator=gen) < 0.4, on, x)
    up = torch.nextafter(x, torch.full_like(x, float("inf")))  # ... and one ulp either side
    down = torch.nextafter(x, torch.full_like(x, -float("inf")))
    r = torch.rand(g, n, generator=gen)
    x = torch.where(r < 0.2, up, torch.where(r < 0.4, down, x))
    x[:, 0], x[:, -1] = float("inf"), -float("inf")
    return x, b


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ties", [False, True])
def test_bucket_equals_searchsorted(dtype, ties, monkeypatch):
    monkeypatch.setattr(assign, "MIN_SIZE", 0)  # small cases, through the tables
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        g = int(torch.randint(1, 5, (), generator=gen))
        m = int(torch.randint(2, 40, (), generator=gen))
        n = int(torch.randint(1, 300, (), generator=gen))
        x, b = _case(gen, g, m, n, dtype, ties)
        want = torch.searchsorted(b, x)
        assert torch.equal(bucket(x, b), want)
        order = torch.stack([torch.randperm(m, generator=gen) for _ in range(g)])
        assert torch.equal(bucket(x, b, order), torch.gather(order, 1, want))


def test_bucket_falls_back_on_crowded_cells_and_nan(monkeypatch):
    monkeypatch.setattr(assign, "MIN_SIZE", 0)
    gen = torch.Generator().manual_seed(1)
    b = torch.tensor([[0.0, 1e-6, 2e-6, 3e-6, 4e-6, 10.0]])  # five bounds in one cell
    x = torch.cat([torch.rand(1, 500, generator=gen) * 1e-5, torch.rand(1, 500, generator=gen) * 20], 1)
    assert torch.equal(bucket(x, b), torch.searchsorted(b, x))
    x[0, 3] = float("nan")
    assert torch.equal(bucket(x, b), torch.searchsorted(b, x))
    monkeypatch.setattr(assign, "MAX_CROWD", 100)  # the table path itself on the crowded layout
    x[0, 3] = 0.5
    assert torch.equal(bucket(x, b), torch.searchsorted(b, x))
