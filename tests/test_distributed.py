"""torch.distributed: 2 gloo processes on the CPU give what 1 process gives on the whole batch.

Tolerances: every rank is bit-identical to the other (DDP broadcasts, then both apply the same averaged
gradient). Against one process the gradients differ by rounding only (the mean of two half-batch means
is not summed in the same order as the mean of the batch), but CAT is discontinuous: a weight next to a
codebook boundary or a membrane next to the threshold can flip, so after 6 SGD steps the latent weights
and codebooks agree to 1e-3 (measured: 2e-4), FSC scores to 1e-6 relative (float64 sums), BN statistics
to 1e-6 (float64 sums per call). Adam is not used in this test: it divides by sqrt(v), so rounding noise
in near-zero gradients becomes steps of size lr.
"""

import os
import sys

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.distributed import DistributedMismatchError, checksum, check_same, rank, world_size

from conftest import needs_snntorch

sys.path.insert(0, os.path.dirname(__file__))  # so the spawned ranks import dist_worker


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import torch.multiprocessing as mp

    import dist_worker

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    d = str(tmp_path_factory.mktemp("ddp"))
    dist_worker.work(0, 1, d)
    mp.spawn(dist_worker.work, args=(2, d), nprocs=2, join=True)
    load = lambda name: torch.load(os.path.join(d, name), weights_only=False)  # noqa: E731
    return load("rank0_of1.pt"), load("rank0_of2.pt"), load("rank1_of2.pt")


def _maxdiff(a, b):
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@needs_snntorch
@pytest.mark.slow
def test_two_ranks_are_identical_to_each_other(runs):
    _, r0, r1 = runs
    for key in ("trained", "after_prune", "bn", "scores"):
        assert r0[key].keys() == r1[key].keys()
        for k in r0[key]:
            assert torch.equal(r0[key][k], r1[key][k]), (key, k)
    assert r0["kept"] == r1["kept"] and r0["kept_trained"] == r1["kept_trained"] and r0["history"] == r1["history"] and r0["accuracy"] == r1["accuracy"]
    assert r0["evaluate"] == r1["evaluate"]


@needs_snntorch
@pytest.mark.slow
def test_two_ranks_equal_one_process_on_the_whole_batch(runs):
    one, r0, _ = runs
    assert one["trained"].keys() == r0["trained"].keys()
    assert _maxdiff(one["trained"], r0["trained"]) < 1e-3
    assert one["history"] == pytest.approx(r0["history"], rel=1e-5)
    assert one["reseeded"] == r0["reseeded"]
    for k in one["scores"]:
        torch.testing.assert_close(r0["scores"][k], one["scores"][k], rtol=1e-6, atol=1e-9)
    assert one["kept"] == r0["kept"] and one["kept_trained"] == r0["kept_trained"]
    assert one["after_prune"].keys() == r0["after_prune"].keys()
    assert {k: v.shape for k, v in one["after_prune"].items()} == {k: v.shape for k, v in r0["after_prune"].items()}
    assert _maxdiff(one["bn"], r0["bn"]) < 1e-6
    assert one["accuracy"] == r0["accuracy"]
    assert one["evaluate"] == r0["evaluate"] and r0["evaluate"][0] == 24  # the whole set, not a rank's share


def test_single_process_helpers_are_no_ops():
    assert (rank(), world_size()) == (0, 1)
    check_same(123, "anything")  # one process: nothing to compare, no error
    a = torch.arange(4.0)
    assert checksum(a) == checksum(a.clone()) and checksum(a) != checksum(a + 1)
    assert checksum(a) != checksum(a.double())


def test_ddp_models_are_refused_by_verbs_that_replace_parameters(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/s", rank=0, world_size=1)
    try:
        net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        before = {k: v.clone() for k, v in net.state_dict().items()}
        ddp = nn.parallel.DistributedDataParallel(net)
        for verb in (sf.wrap, lambda m: sf.prune(m, [(torch.rand(2, 4), torch.tensor([0, 1]))])):
            with pytest.raises(sf.SpikeFitTypeError, match="DistributedDataParallel model"):
                verb(ddp)
        assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    finally:
        torch.distributed.destroy_process_group()


def test_mismatch_error_names_what_differs():
    err = DistributedMismatchError("prune round 1: the kept channels differs between ranks")
    assert isinstance(err, sf.SpikeFitError)


@needs_snntorch
@pytest.mark.slow
def test_example_trains_prunes_and_freezes_under_torchrun(tmp_path):
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "model.nir"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           os.path.join(root, "examples", "torchrun_cat.py"), "--epochs", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "processes=2" in proc.stdout and out.exists()
    graph = sf.import_nir(str(out), framework="snntorch")
    assert isinstance(graph, nn.Module)
