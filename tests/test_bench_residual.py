"""benchmarks/residual.py's measurements on untrained tiny models: invariants of the two block types."""

import pytest
import torch

from conftest import needs_snntorch

pytestmark = needs_snntorch


@pytest.mark.parametrize("kind", ["sew", "sparse"])
def test_residual_path_counts_and_exact_round_trip(kind):
    from benchmarks.residual import Config, build, exact_round_trip, residual_path

    model = build("snntorch", kind, Config("test", channels=4, blocks=3), seed=0).eval()
    with torch.no_grad():
        for conv in [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]:
            conv.weight.mul_(4)
    x = torch.rand(6, 1, 8, 8) * 2
    rows = residual_path(model, x, num_steps=4)
    assert [r["point"] for r in rows] == ["stem", "block0", "block1", "block2"]
    assert rows[0]["rate"] > 0 and rows[0]["max"] == 1
    for i, r in enumerate(rows):
        assert 0 <= r["rate"] <= 1 and r["rate"] <= r["events"] + 1e-12 and 0 <= r["ge2"] <= r["rate"]
        if kind == "sew":  # each block adds one spike map to what it got: at most i + 1 spikes meet at row i
            assert r["max"] <= i + 1 and r["events"] >= rows[max(i - 1, 0)]["events"]
        else:              # a barrier neuron after every sum: binary spikes all along the path
            assert r["max"] == 1 and r["ge2"] == 0
    assert exact_round_trip(model, "snntorch", x, 4) == (True, 0)
