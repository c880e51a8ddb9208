"""The benchmark suite's machinery on a tiny digits run: outputs' structure and reproducibility."""

import csv
import json

import pytest

from benchmarks.suite import BenchConfig, DataBudget, run_suite, summarize, write_results

from conftest import needs_snntorch

DETERMINISTIC = ("accuracy", "f1", "size_mb", "sops", "macs", "energy_mj")
TINY = BenchConfig("test", ("digits",), (0,), {"digits": DataBudget(192, 96, 1, 1)}, grid=((3, 2), (4, 4)),
                   cluster_ms=(4,), cluster_methods=("kmeans",), qp_bits=(2,), recal_batches=1, channels=(4, 8),
                   conversion_scales=(1.0,), batch_size=64)


@pytest.fixture(scope="module")
def two_runs():
    return run_suite(TINY, progress=False), run_suite(TINY, progress=False)


@needs_snntorch
@pytest.mark.slow  # runs the suite twice
def test_same_seed_same_numbers(two_runs):
    (rows_a, _), (rows_b, _) = two_runs
    assert len(rows_a) == len(rows_b) > 0
    for a, b in zip(rows_a, rows_b):
        assert (a["method"], a["m"], a["bits"]) == (b["method"], b["m"], b["bits"])
        assert [a[k] for k in DETERMINISTIC] == [b[k] for k in DETERMINISTIC], a["method"]


@needs_snntorch
@pytest.mark.slow  # runs the suite twice
def test_every_method_is_measured(two_runs):
    (rows, _), _ = two_runs
    got = {(r["method"], r["m"], r["bits"]) for r in rows}
    assert {("FP32", None, 32), ("FP32 + fine-tune", None, 32), ("CAT", 3, 2), ("CAT", 4, 4), ("QAT INT8", 255, 8),
            ("Clustered QAT (kmeans)", 4, 8), ("Clustered post-training (kmeans)", 4, 8),
            ("Clustered QAT -> SNN conversion (LIF beta=0.5)", 4, 8), ("Clustered QAT -> SNN conversion (IF)", 4, 8), ("TTQ", 3, None), ("CAT (first/last FP32)", 3, None), ("QP-SNN (ReScaW)", 3, 2),
            ("FP32 + FSC 50%", None, 32), ("CAT + FSC 50%", 4, 4)} == got
    size = {(r["method"], r["m"], r["bits"]): r["size_mb"] for r in rows}
    assert size[("CAT", 4, 4)] < size[("QAT INT8", 255, 8)] < size[("FP32", None, 32)]
    assert size[("CAT + FSC 50%", 4, 4)] < size[("CAT", 4, 4)]
    assert all(0 <= r["accuracy"] <= 100 and r["energy_mj"] > 0 for r in rows)


@needs_snntorch
@pytest.mark.slow  # runs the suite twice
def test_outputs_table_csv_json_and_plots(two_runs, tmp_path):
    (rows, extra), _ = two_runs
    summary = write_results(TINY, rows, extra, tmp_path, 1.0, "python benchmarks/suite.py --test")
    assert len(summary) == len(rows)  # one seed: one summary row per run
    assert summary.columns[:6] == ["dataset", "method", "M", "bits", "seeds", "accuracy %"]
    md = (tmp_path / "bench_test.md").read_text()
    assert "python benchmarks/suite.py --test" in md and "| CAT | 4 | 4 |" in md and "FP32 1 epochs" in md
    with open(tmp_path / "bench_test_runs.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    data = json.loads((tmp_path / "bench_test.json").read_text())
    assert data["config"]["mode"] == "test" and len(data["runs"]) == len(rows)
    for name in ("accuracy_vs_m", "codebook_histogram", "codebook_trace"):
        png = tmp_path / f"bench_test_digits_{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
    trace = extra["digits"]["cat_trace"]
    # 2 epochs (one-stage methods get the two stages of the clustered pipeline) x (3 batches + 1 at the end)
    assert trace["m"] == 4 and len(trace["values"]) == 2 * (192 // 64 + 1) and all(len(v) == 4 for v in trace["values"])


def test_summary_mean_and_std_over_seeds():
    rows = [{"dataset": "d", "seed": s, "method": "CAT", "m": 4, "bits": 4, "accuracy": a, "f1": 50.0,
             "size_mb": 1.0, "sops": 2.0, "macs": 3.0, "energy_mj": None, "dr_acc": None, "note": ""}
            for s, a in enumerate([80.0, 82.0, 84.0])]
    (row,) = summarize(rows).records()
    assert row["accuracy %"] == 82.0 and row["acc std"] == 2.0 and row["seeds"] == 3 and row["energy mJ"] is None
