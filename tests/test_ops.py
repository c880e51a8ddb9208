"""Operation counting: hand-computed ACs/MACs/dense ops, zero weights and pruned channels, NeuroBench."""

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.deploy.ops import OpCounter, count_ops, register_op_rule

from conftest import needs_snntorch


def _set(layer, weight, bias=None):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return layer


def test_dense_hand_computed_acs_and_macs():
    fc = _set(nn.Linear(3, 2), [[1.0, 0.0, 2.0], [0.5, -0.5, 0.0]], [5.0, 5.0])
    spikes = torch.tensor([[[1.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0]]])  # [T=3, B=1, 3]
    ops = count_ops(fc, spikes)
    # step 1: neuron 0 gets input 0 (w=1) -> 1, neuron 1 gets inputs 0, 1 -> 2; step 2: 1 + 0; step 3: 0
    assert (ops.acs, ops.macs, ops.dense) == (4.0, 0.0, 18.0)
    assert ops.layers[0].name == "" and ops.layers[0].type == "Linear"
    signed = count_ops(fc, -spikes)            # -1 is a spike too (AC)
    assert (signed.acs, signed.macs) == (4.0, 0.0)
    real = count_ops(fc, 0.5 * spikes)         # real values: the same count, as MACs
    assert (real.acs, real.macs, real.dense) == (0.0, 4.0, 18.0)


def test_bias_costs_nothing():
    x = (torch.rand(4, 2, 6) > 0.5).float()
    a = nn.Linear(6, 3)
    b = nn.Linear(6, 3, bias=False)
    _set(b, a.weight.tolist())
    assert count_ops(a, x).acs == count_ops(b, x).acs


def test_conv_hand_computed():
    conv = _set(nn.Conv2d(1, 1, 2, bias=False), [[[[1.0, 0.0], [0.0, -2.0]]]])
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]).reshape(1, 1, 1, 3, 3)  # [T, B, C, H, W]
    ops = count_ops(conv, x)
    # out[i, j] = x[i, j] + x[i+1, j+1] where both weights exist: 2, 0, 0, 1
    assert (ops.acs, ops.dense) == (3.0, 16.0)
    padded = _set(nn.Conv2d(1, 1, 2, padding=1, bias=False), [[[[1.0, 0.0], [0.0, -2.0]]]])
    ops = count_ops(padded, x)
    # with padding 1 every (input, weight) pair meets a real output: 4 active inputs x 2 weights
    assert (ops.acs, ops.dense) == (8.0, 36.0)


def test_counts_are_per_sample_and_summed_over_steps():
    fc = nn.Linear(5, 4)
    x = (torch.rand(1, 5) > 0.3).float()
    one = count_ops(fc, x, num_steps=3)
    many = count_ops(fc, x.repeat(7, 1), num_steps=3)
    assert one.acs == many.acs and one.dense == many.dense == 3 * 20
    assert one.acs == 3 * 4 * float((x != 0).sum())


def test_zero_weights_cost_nothing():
    fc = nn.Linear(6, 4)
    x = torch.ones(2, 6)
    before = count_ops(fc, x, num_steps=2)
    with torch.no_grad():
        fc.weight[1] = 0.0
        fc.weight[3, :2] = 0.0
    after = count_ops(fc, x, num_steps=2)
    assert before.acs - after.acs == 2 * (6 + 2)
    assert after.dense == before.dense


@needs_snntorch
def test_pruned_channel_costs_what_a_removed_channel_costs():
    import snntorch as snn

    fc1, fc2 = nn.Linear(6, 4, bias=False), nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        fc1.weight.mul_(4)
        fc1.weight[2] = 0.0       # channel 2 pruned by zeros
        fc2.weight[:, 2] = 0.0
    keep = [0, 1, 3]
    small1, small2 = nn.Linear(6, 3, bias=False), nn.Linear(3, 3, bias=False)   # channel 2 removed
    _set(small1, fc1.weight[keep].tolist())
    _set(small2, fc2.weight[:, keep].tolist())
    leaky = lambda: snn.Leaky(beta=0.5, init_hidden=True)  # noqa: E731
    zeroed = nn.Sequential(fc1, leaky(), fc2, leaky())
    removed = nn.Sequential(small1, leaky(), small2, leaky())
    x = (torch.rand(5, 6) > 0.4).float()
    a, b = count_ops(zeroed, x, num_steps=4), count_ops(removed, x, num_steps=4)
    assert [layer.acs for layer in a.layers] == [layer.acs for layer in b.layers]
    assert a.acs > 0 and a.macs == b.macs == 0.0
    assert a.dense > b.dense


@needs_snntorch
def test_neuron_updates_and_firing_rates():
    import snntorch as snn

    net = nn.Sequential(nn.Linear(8, 5), snn.Leaky(beta=0.5, init_hidden=True))
    with torch.no_grad():
        net[0].weight.mul_(5)
    x = torch.rand(3, 8)
    ops = count_ops(net, x, num_steps=6)
    spikes = sf.run(net, x, num_steps=6).detach()
    assert ops.neuron_updates == 5 * 6
    assert ops.neurons[0].neurons == 5
    assert ops.firing_rates["1"] == pytest.approx(float(spikes.mean()))
    assert ops.activation_sparsity == pytest.approx(1 - float(spikes.mean()))
    assert "firing_rate" in str(ops)


def test_wrapped_layer_counts_its_effective_weight():
    fc = nn.Linear(16, 4, bias=False)
    with torch.no_grad():
        fc.weight[:, :8] = 0.0
    sf.wrap(fc, m=3)
    with torch.no_grad():          # a codebook with an exact zero: the zeros stay zero
        fc.parametrizations.weight[0].codebook.copy_(torch.tensor([[-0.2, 0.0, 0.2]]))
    zeros = int((fc.weight == 0).sum())
    assert zeros >= 32
    ops = count_ops(fc, torch.full((1, 16), 0.5), num_steps=1)
    assert ops.macs == 64 - zeros


def test_counter_errors():
    with pytest.raises(sf.SpikeFitValueError, match="no samples counted"):
        with OpCounter(nn.Linear(2, 2)) as c:
            pass
        c.result()
    with pytest.raises(sf.SpikeFitTypeError, match="layer_type must be an nn.Module subclass"):
        register_op_rule(int, lambda m, x, w: x)
    with pytest.raises(sf.SpikeFitTypeError, match="model must be a torch.nn.Module"):
        OpCounter("net")


@needs_snntorch
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_matches_neurobench(kind):
    pytest.importorskip("neurobench")
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import SNNTorchModel

    from snn_spikefit.zoo.snntorch import conv_snn, dense_snn

    net = dense_snn(64, 10, (32,)) if kind == "dense" else conv_snn(1, 10, 8, (4, 8))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3)

    class TimeMajor(nn.Module):   # NeuroBench feeds [B, T, ...]
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, data):
            return sf.run(self.inner, data.transpose(0, 1))

    T, B = 4, 6
    x = torch.rand(B, 1, 8, 8)
    y = torch.randint(0, 10, (B,))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x.unsqueeze(1).repeat(1, T, 1, 1, 1), y), batch_size=3)
    bench = Benchmark(SNNTorchModel(TimeMajor(net), custom_forward=True), loader, [], [],
                      [[], [SynapticOperations, ActivationSparsity]])
    theirs = bench.run(quiet=True)
    ours = count_ops(net, x, num_steps=T)
    syn = theirs["SynapticOperations"]
    assert ours.acs == pytest.approx(syn["Effective_ACs"], rel=1e-9)
    assert ours.macs == pytest.approx(syn["Effective_MACs"], rel=1e-9)
    assert ours.dense == pytest.approx(syn["Dense"], rel=1e-9)
    assert ours.activation_sparsity == pytest.approx(theirs["ActivationSparsity"], rel=1e-9)
