"""Baselines: TTQ, the clustered baseline (QAT, k-means, INT8, conversion), QP-SNN, freeze_baseline."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.baselines import (ClusterWeight, TernaryFunction, TernaryWeight, cluster, convert_to_snn,
                                    freeze_baseline, qat, qpsnn, relu_twin, strip_qat, ternary_layers, ttq)
from snn_spikefit.deploy.metrics import model_size_bits
from snn_spikefit.quantize.quantizer import compressed_bits

from conftest import needs_snntorch


def mlp():
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


# -- TTQ --------------------------------------------------------------------------------------------------

def test_ttq_three_values_learned_scales_first_last_untouched():
    net = mlp()
    before = copy.deepcopy(net)
    ttq(net)
    assert [n for n, _ in ternary_layers(net)] == ["2"]
    for i in (0, 4):
        assert not torch.nn.utils.parametrize.is_parametrized(net[i])
        assert torch.equal(net[i].weight, before[i].weight)
    q = net[2].parametrizations.weight[0]
    values = set(net[2].weight.detach().unique().tolist())
    assert values == {-float(q.w_n.detach()), 0.0, float(q.w_p.detach())}
    assert {id(q.w_p), id(q.w_n)} <= {id(p) for p in net.parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.randn(16, 8)).pow(2).sum().backward()
    old = (float(q.w_p), float(q.w_n))
    opt.step()
    assert (float(q.w_p), float(q.w_n)) != old
    assert set(net[2].weight.detach().unique().tolist()) == {-float(q.w_n.detach()), 0.0, float(q.w_p.detach())}


def test_ttq_gradients_follow_the_paper():
    w = torch.tensor([0.5, -1.0, 0.01, 0.2, -0.03, -0.6], requires_grad=True)  # max|w| = 1, Delta = 0.05
    w_p = torch.tensor(0.7, requires_grad=True)
    w_n = torch.tensor(0.4, requires_grad=True)
    out = TernaryFunction.apply(w, w_p, w_n, 0.05)
    assert out.tolist() == pytest.approx([0.7, -0.4, 0.0, 0.7, 0.0, -0.4])
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    (out * g).sum().backward()
    assert float(w_p.grad) == pytest.approx(1.0 + 4.0)          # sum of g over the positives
    assert float(w_n.grad) == pytest.approx(-(2.0 + 6.0))       # minus the sum over the negatives
    assert w.grad.tolist() == pytest.approx([1 * 0.7, 2 * 0.4, 3.0, 4 * 0.7, 5.0, 6 * 0.4])  # W_p / 1 / W_n


def test_ttq_refuses_bad_arguments_and_leaves_model():
    with pytest.raises(sf.SpikeFitValueError, match="threshold=0"):
        ttq(mlp(), threshold=0)
    with pytest.raises(sf.SpikeFitValueError, match="none is left"):
        ttq(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    net = ttq(mlp())
    with pytest.raises(sf.SpikeFitValueError, match="already has parametrized"):
        ttq(net)
    with pytest.raises(sf.SpikeFitTypeError, match="torch.nn.Module"):
        ttq("net")


# -- clustered baseline -----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["kmeans", "minibatch", "uniform"])
def test_cluster_gives_m_centroids_on_the_int8_grid(method):
    net = cluster(mlp(), m=4, method=method, seed=0)
    for layer in (net[0], net[2], net[4]):
        q = layer.parametrizations.weight[0]
        assert isinstance(q, ClusterWeight)
        form = q.integer_form(layer.parametrizations.weight.original)
        ints, scale = form.ints, form.scale
        assert ints.dtype == torch.int8 and int(ints.abs().max()) <= 127
        assert torch.equal(form.values, ints.float() * scale[:, None])
        used = layer.weight.detach().unique()
        assert used.numel() == 4
        assert set(used.tolist()) <= set(form.values.flatten().tolist())
        assert torch.equal(form.decode(), layer.weight)


def test_cluster_uses_scikit_learn_kmeans():
    from sklearn.cluster import KMeans

    net = mlp()
    w = net[2].weight.detach().double().reshape(-1, 1).numpy()
    centers = np.sort(KMeans(n_clusters=3, n_init=4, random_state=7).fit(w).cluster_centers_[:, 0])
    cluster(net, m=3, seed=7)
    got = np.sort(net[2].parametrizations.weight[0].centroids.detach().double().numpy())
    assert np.allclose(got, centers, atol=1e-6)


def test_centroid_finetune_trains_centroids_with_fixed_assignments():
    net = cluster(qat(mlp()), m=3)
    q = net[2].parametrizations.weight[0]
    labels = q.labels.clone()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.05)
    old = q.centroids.detach().clone()
    net(torch.randn(16, 8)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(q.centroids, old) and torch.equal(q.labels, labels)
    assert not net[2].parametrizations.weight.original.requires_grad
    assert net[2].weight.detach().unique().numel() <= 3


def test_qat_puts_weights_on_the_int8_grid_and_strip_keeps_them():
    net = qat(mlp())
    w = net[0].weight.detach()
    scale = w.abs().max() / 127
    assert torch.allclose(w / scale, (w / scale).round(), atol=1e-4)
    strip_qat(net)
    assert not torch.nn.utils.parametrize.is_parametrized(net[0]) and torch.equal(net[0].weight, w)


def test_cluster_refuses_bad_arguments():
    with pytest.raises(sf.SpikeFitValueError, match="m=300 is not allowed with bits=8"):
        cluster(mlp(), m=300)
    with pytest.raises(sf.SpikeFitValueError, match="method='median'"):
        cluster(mlp(), m=4, method="median")
    with pytest.raises(sf.SpikeFitValueError, match="bits=9"):
        qat(mlp(), bits=9)


# -- QP-SNN -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [2, 4, 8])
def test_qpsnn_uniform_levels_per_channel_times_gamma(bits):
    net = qpsnn(mlp(), bits=bits)
    q = 2 ** (bits - 1) - 1
    latent = net[2].parametrizations.weight.original.detach()
    gamma = latent.abs().mean(dim=1, keepdim=True)
    levels = net[2].weight.detach() / (gamma / q)
    assert torch.allclose(levels, levels.round(), atol=1e-3) and float(levels.abs().max()) <= q + 1e-3
    assert max(int(row.unique().numel()) for row in net[2].weight.detach()) <= 2 ** bits - 1


def test_qpsnn_gradient_is_straight_through_inside_the_clip_range():
    net = qpsnn(nn.Sequential(nn.Linear(4, 1, bias=False)), bits=4)
    with torch.no_grad():
        net[0].parametrizations.weight.original.copy_(torch.tensor([[0.1, -0.1, 0.1, 0.9]]))  # gamma = 0.3
    net[0].weight.sum().backward()
    assert net[0].parametrizations.weight.original.grad.tolist() == [[1.0, 1.0, 1.0, 0.0]]


def test_qpsnn_refuses_bad_bits():
    with pytest.raises(sf.SpikeFitValueError, match="bits=1"):
        qpsnn(mlp(), bits=1)


# -- freezing ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, bits_per_weight", [(lambda n: ttq(n), 2), (lambda n: cluster(n, m=4), 2),
                                                   (lambda n: qpsnn(n, bits=4), 4)])
def test_freeze_baseline_keeps_outputs_and_counts_index_bits(make, bits_per_weight):
    net = make(mlp())
    x = torch.randn(5, 8)
    before = net(x).detach()
    weights = {n: m.weight.detach().clone() for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    freeze_baseline(net)
    assert torch.equal(net(x), before)
    assert all(torch.equal(m.weight, weights[n]) for n, m in net.named_modules() if isinstance(m, nn.Linear))
    frozen = {layer.name: layer for layer in sf.compressed_layers(net)}
    assert frozen and all(layer.frozen for layer in frozen.values())
    q = frozen["2"].quantizer
    assert max(1, (q.m - 1).bit_length()) == bits_per_weight
    expected = 0
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear):
            n = m.weight.numel()
            expected += m.bias.numel() * 32 + (compressed_bits(n, frozen[name].quantizer.groups, frozen[name].quantizer.m,
                                                               frozen[name].quantizer.bits) if name in frozen else 32 * n)
    assert model_size_bits(net)[1] == expected


def test_freeze_baseline_refuses_a_plain_model():
    with pytest.raises(sf.NotWrappedError, match="no layer quantized"):
        freeze_baseline(mlp())


# -- ANN -> SNN conversion --------------------------------------------------------------------------------

@needs_snntorch
def test_relu_twin_replaces_neurons_only():
    from snn_spikefit.zoo.snntorch import conv_snn

    snn = conv_snn(batch_norm=True)
    ann = relu_twin(snn)
    assert [type(m).__name__ for m in ann] == [
        "Conv2d", "BatchNorm2d", "AvgPool2d", "ReLU", "Conv2d", "BatchNorm2d", "AvgPool2d", "ReLU", "Flatten", "Linear"]
    assert type(snn[3]).__name__ == "Leaky"
    with pytest.raises(sf.SpikeFitValueError, match="no spiking neuron"):
        relu_twin(mlp())


@needs_snntorch
def test_converted_snn_agrees_with_its_relu_net():
    """Measured on digits (seed 0): top-1 agreement 0.984 at T=8, threshold scale 0.5 (0.969 at T=4)."""
    from snn_spikefit.zoo.snntorch import dense_snn
    from snn_spikefit.data.datasets import digits, make_loader
    from snn_spikefit.train import scores

    train, test = digits()
    snn = dense_snn(64, 10, (64,))
    ann = relu_twin(snn)
    sf.fit(ann, make_loader(train, 64, shuffle=True), epochs=8, num_steps=1, lr=5e-3, progress=False)
    converted = convert_to_snn(ann, snn, list(make_loader(train, 128))[:4], scale=0.5)
    assert type(snn[2]).__name__ == "Leaky" and type(converted[2][1]).__name__ == "Leaky"
    x, _ = test.tensors
    with torch.no_grad():
        ann_top1 = ann(x).argmax(1)
        snn_top1 = scores(sf.run(converted, x, num_steps=8)).argmax(1)
    assert float((ann_top1 == snn_top1).float().mean()) >= 0.95


def test_activation_scales_per_layer_and_per_channel():
    from snn_spikefit.baselines import activation_scales

    ann = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU())
    with torch.no_grad():
        ann[0].weight.copy_(torch.tensor([1.0, 2.0, 3.0]).reshape(3, 1, 1, 1))  # positive percentiles
    data = [(torch.randn(4, 1, 5, 5), torch.zeros(4)) for _ in range(2)]
    out = torch.cat([ann(x) for x, _ in data]).detach()
    layer = activation_scales(ann, ["1"], data, percentile=90)["1"]
    per_channel = activation_scales(ann, ["1"], data, percentile=90, channelwise=True)["1"]
    assert float(layer) == pytest.approx(float(torch.quantile(out.flatten(), 0.9)), rel=1e-5)
    assert per_channel.shape == (3, 1, 1)
    expected = torch.quantile(out.transpose(0, 1).reshape(3, -1), 0.9, dim=1)
    assert torch.allclose(per_channel.flatten(), expected, rtol=1e-5)
    with pytest.raises(sf.SpikeFitValueError, match="percentile=0"):
        activation_scales(ann, ["1"], data, percentile=0)
