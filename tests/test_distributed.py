"""torch.distributed: 2 gloo processes on the CPU give what 1 process gives on the whole batch.

Tolerances: every rank is bit-identical to the other (DDP broadcasts, then both apply the same averaged
gradient), and the 2-process Adam run is bit-identical to one process that accumulates the gradients of the
same two half batches (``dist_worker._accumulated``: the same sums in the same order as DDP's). Against one
process on the whole batch the gradients differ by summation order only (the mean of two half-batch means
is not the mean of the batch: measured 3e-8 at most per step), so after 6 steps the latent weights and
codebooks agree to 1e-6 with SGD (measured 2e-11: lr 0.05 times a rounding-sized gradient difference) and to
1e-6 with Adam (measured 6e-8: Adam's step is lr * m / sqrt(v), whose relative error is the gradient's
relative rounding error except where |g| is near eps = 1e-8, where a difference d moves the step by up to
lr * d / eps; no gradient here sits that close to 0 with a non-zero rounding difference, so the bound stays
at float32 rounding of the weights, 6e-8 ~ one ulp of weights near 0.5). CAT is discontinuous (a weight
on a codebook boundary or a membrane on its threshold flips), which these tolerances would show. FSC scores
to 1e-6 relative (float64 sums), BN statistics to 1e-6 (float64 sums per call), BN trained with
``sync_batchnorm`` to 1e-6 (float32 sums per rank, in a different order; the mean's all-reduced in float64).
"""

import copy
import os
import sys

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.distributed import DistributedMismatchError, checksum, check_same, rank, real_samples, world_size

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
    for key in ("trained", "adam", "sync_bn", "after_prune", "bn", "scores"):
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
    assert _maxdiff(one["trained"], r0["trained"]) < 1e-6
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


@needs_snntorch
@pytest.mark.slow
def test_training_moves_the_weights_far_beyond_the_tolerances(runs):
    """The 1e-6 bounds above and below are not met by a run that stands still (measured largest change:
    SGD 0.036, Adam 0.057, sync-BN model 1.2)."""
    one, _, _ = runs
    for key, init in (("trained", "init"), ("adam", "init"), ("sync_bn", "init_bn")):
        moved = max(float((one[key][k].double() - v.double()).abs().max())
                    for k, v in one[init].items() if v.is_floating_point())
        assert moved > 1e-3, key


@needs_snntorch
@pytest.mark.slow
def test_adam_two_ranks_equal_accumulated_halves_exactly_and_the_whole_batch_to_rounding(runs):
    one, r0, r1 = runs
    for k, v in one["adam_accumulated"].items():
        assert torch.equal(r0["adam"][k], v) and torch.equal(r1["adam"][k], v), k
    assert _maxdiff(one["adam"], r0["adam"]) < 1e-6


@needs_snntorch
@pytest.mark.slow
def test_sync_batchnorm_trains_the_model_one_process_trains(runs):
    one, r0, r1 = runs
    assert any("running_mean" in k for k in one["sync_bn"])
    for k, v in one["sync_bn"].items():
        assert torch.equal(r0["sync_bn"][k], r1["sync_bn"][k]), k
        torch.testing.assert_close(r0["sync_bn"][k], v, rtol=0, atol=1e-6, msg=k)


@needs_snntorch
@pytest.mark.slow
def test_distributed_sampler_padding_is_not_counted(runs):
    one, r0, r1 = runs
    assert (r0["odd_local"], r1["odd_local"]) == (12, 11)  # rank 1's padded repeat of sample 0 dropped
    assert one["odd_evaluate"][0] == r0["odd_evaluate"][0] == 23
    assert one["odd_accuracy"] == r0["odd_accuracy"] == r1["odd_accuracy"]
    assert one["odd_evaluate"] == r0["odd_evaluate"] == r1["odd_evaluate"]


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


def test_real_samples_drops_exactly_the_padded_tail():
    from torch.utils.data import DataLoader, DistributedSampler

    for n, w in [(23, 2), (10, 3), (2, 4), (12, 4)]:
        ds = list(range(n))
        seen = []
        for r in range(w):
            loader = DataLoader(ds, batch_size=3, sampler=DistributedSampler(ds, num_replicas=w, rank=r, shuffle=True))
            yielded = torch.cat(list(loader)).tolist()
            seen += yielded[:real_samples(loader)]
        assert sorted(seen) == ds, (n, w)  # every sample once, none twice
    ds = list(range(5))
    assert real_samples(DataLoader(ds, sampler=DistributedSampler(ds, num_replicas=2, rank=1, drop_last=True))) is None
    assert real_samples(DataLoader(ds)) is None and real_samples([(torch.zeros(1), torch.zeros(1))]) is None


def test_ddp_keeps_neuron_state_local_and_still_broadcasts_batchnorm(tmp_path):
    from snn_spikefit.adapter import get_adapter
    from snn_spikefit.distributed import local_neuron_state

    snntorch = pytest.importorskip("snntorch")
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/s", rank=0, world_size=1)
    try:
        net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), snntorch.Leaky(beta=0.9, init_hidden=True))
        ddp = nn.parallel.DistributedDataParallel(net)
        neurons = [m for _, n in get_adapter(ddp).neurons(ddp) for m in n.modules()]
        assert neurons == [net[2]]
        local_neuron_state(ddp, neurons)
        kept = {id(b) for b in ddp.modules_buffers}
        assert kept == {id(b) for b in net[1].buffers()}  # BN's running statistics are still broadcast
        sf.run(ddp, torch.rand(2, 4), num_steps=3)  # and a DDP forward per step runs
    finally:
        torch.distributed.destroy_process_group()


def test_sync_batchnorm_is_the_same_module_and_plain_batchnorm_in_one_process():
    from snn_spikefit.distributed import SyncBatchNorm2d, sync_batchnorm, unsync_batchnorm
    from snn_spikefit.pruning.surgery import surgery_for

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.BatchNorm2d(2))
    ref = copy.deepcopy(net)
    bn, weight = net[1], net[1].weight
    assert sync_batchnorm(net) == 2
    assert net[1] is bn and net[1].weight is weight and type(net[1]) is SyncBatchNorm2d
    assert isinstance(net[1], nn.BatchNorm2d)
    x = torch.rand(3, 1, 7, 7)
    assert torch.equal(net(x), ref(x))  # one process: plain BatchNorm, running statistics included
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values()))
    assert surgery_for(net[1]) is surgery_for(nn.BatchNorm2d(4)) is not None  # prune knows it
    assert unsync_batchnorm(net) == 2 and type(net[1]) is nn.BatchNorm2d


@pytest.mark.parametrize("dtype, work", [(torch.float16, torch.float32), (torch.float32, torch.float64)])
def test_global_moments_in_one_process_are_the_batch_moments_in_two_reduces(dtype, work):
    """With the identity as the all-reduce: torch's biased moments per channel, computed in ``work``."""
    from snn_spikefit.distributed.batchnorm import global_moments

    torch.manual_seed(0)
    x = (torch.randn(5, 3, 4, 2) * 2 + 1).to(dtype).requires_grad_()
    calls = []
    n, mean, var, centred = global_moments(x, lambda t: calls.append(t.dtype) or t, work)
    assert calls == [torch.float64, work] and n == 5 * 4 * 2
    assert mean.dtype == var.dtype == centred.dtype == work and mean.shape == var.shape == (3,)
    ref_var, ref_mean = torch.var_mean(x.detach().to(torch.float64), dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(var.double(), ref_var, rtol=1e-6, atol=1e-6)
    assert torch.equal(centred, x.to(work) - mean.reshape(1, 3, 1, 1))
    # differentiable through both reduces (SyncBatchNorm backpropagates through them): d mean / dx = 1 / n,
    # d var / dx = 2 (x - mean) / n
    (gm,) = torch.autograd.grad(mean.sum(), x, retain_graph=True)
    torch.testing.assert_close(gm.double(), torch.full(x.shape, 1 / n, dtype=torch.float64), rtol=1e-3, atol=0)
    (gv,) = torch.autograd.grad(var.sum(), x)
    torch.testing.assert_close(gv.double(), (2 * centred / n).detach().double(), rtol=1e-3, atol=1e-3)


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
