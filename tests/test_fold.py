"""fold_batchnorm: exact folding, frozen per-channel codebooks, refusals."""

import copy

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.quantize.fold import fold_batchnorm

from conftest import needs_snntorch


def _bn_net():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6))
    with torch.no_grad():
        for bn in (net[1], net[5]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(-2, 2)
            bn.bias.uniform_(-1, 1)
    return net.eval()


def test_fold_keeps_outputs_and_removes_batchnorm():
    net = _bn_net()
    x = torch.rand(5, 2, 6, 6)
    before = net(x)
    fold_batchnorm(net)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert isinstance(net[1], nn.Identity) and net[0].bias is not None
    assert torch.allclose(net(x), before, atol=1e-5)


def test_frozen_channel_codebook_folds_into_scales_exactly():
    net = _bn_net()
    sf.wrap(net, m=4, bits=4, granularity="channel")
    sf.freeze(net)
    x = torch.rand(5, 2, 6, 6)
    before = net(x)
    ints = [c.quantizer.codebook_int.clone() for c in sf.compressed_layers(net)]
    fold_batchnorm(net)
    assert torch.allclose(net(x), before, atol=1e-5)
    for layer, k in zip(sf.compressed_layers(net), ints):
        q = layer.quantizer
        assert torch.equal(q.codebook_int, k)  # the integers a chip holds do not change
        w = layer.weight.reshape(q.groups, -1)
        assert (w.sort(dim=1).values.diff(dim=1) != 0).sum(dim=1).max() + 1 <= 4
        assert torch.equal(w, q.scale[:, None] * q.codebook_int.float().gather(1, q.codes.long()))


@pytest.mark.parametrize("granularity,freeze", [("layer", True), ("channel", False)])
def test_refuses_codebooks_that_would_break(granularity, freeze):
    net = _bn_net()
    sf.wrap(net, m=4, bits=4, granularity=granularity)
    if freeze:
        sf.freeze(net)
    snapshot = copy.deepcopy(net.state_dict())
    with pytest.raises(sf.UnsupportedLayerError, match=r"layer '0' has a .*codebook; folding '1'"):
        fold_batchnorm(net)
    assert all(torch.equal(snapshot[k], v) for k, v in net.state_dict().items())
    assert isinstance(net[1], nn.BatchNorm2d)


def test_refuses_batchnorm_after_non_foldable_layer():
    net = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3))
    with pytest.raises(sf.UnsupportedLayerError, match=r"BatchNorm '1' follows '0' \(ReLU\)"):
        fold_batchnorm(net)


@needs_snntorch
def test_folded_snn_exports_to_nir(tmp_path):
    from snn_spikefit.zoo.snntorch import conv_snn

    net = conv_snn(1, 10, 8, (4, 8), batch_norm=True).eval()
    x = torch.rand(3, 1, 8, 8)
    before = sf.run(net, x, num_steps=4)
    fold_batchnorm(net)
    after = sf.run(net, x, num_steps=4)
    assert torch.allclose(after, before, atol=1e-4)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.export_nir(net, x[:1], tmp_path / "net.nir")
    assert (tmp_path / "net.nir").exists()


def test_refused_fold_on_a_frozen_model_with_gradients_leaves_it_unchanged():
    """freeze empties the latent weight in place; a gradient of the old shape must not survive it."""
    import snn_spikefit as sf
    from snn_spikefit.errors import UnsupportedLayerError
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 12, 3), nn.BatchNorm2d(12), nn.Flatten(), nn.Linear(12 * 6 * 6, 3))
    sf.wrap(net, m=4)
    net(torch.rand(2, 1, 8, 8)).sum().backward()
    sf.freeze(net)
    assert all(layer.latent.grad is None for layer in sf.compressed_layers(net))
    net.eval()
    x = torch.rand(2, 1, 8, 8)
    before, state = net(x), {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(UnsupportedLayerError, match="frozen layer codebook"):
        sf.fold_batchnorm(net)
    assert torch.equal(net(x), before)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
