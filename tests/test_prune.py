"""prune(): exact surgery, parameter counts, codebooks kept, iterative/global schedules, errors."""

import copy
import json

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.pruning.surgery import count_parameters

from conftest import needs_snntorch

T = 3
pytestmark = needs_snntorch


def _net(batch_norm=True, channels=(4, 6)):
    from snn_spikefit.zoo.snntorch import conv_snn

    torch.manual_seed(0)
    model = conv_snn(1, 5, 8, channels, batch_norm=batch_norm)
    with torch.no_grad():
        model[0].weight.mul_(3)
        if batch_norm:  # non-trivial BN statistics, so a wrong slice shows
            for bn in (model[1], model[5]):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)
                bn.weight.uniform_(0.5, 2.0)
    return model.eval()


def _data(n=2, b=4):
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(b, 1, 8, 8, generator=g), torch.randint(0, 5, (b,), generator=g)) for _ in range(n)]


def _out(model, x):
    with torch.no_grad():
        return sf.run(model, x, num_steps=T)


def _lowest(targets):
    """A user criterion scoring channel targets[layer] lowest and the others by their index."""
    def fn(batch):
        c = batch.spikes.shape[2]
        s = torch.arange(1.0, c + 1.0)
        s[targets[batch.name]] = 0.0
        return s * batch.spikes.shape[1]
    return fn


def _mask_outgoing(model, report):
    """Copy of the unpruned model with the outgoing weights of removed channels zeroed."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for row in report.layers:
            gone = sorted(set(range(row.channels_before)) - set(row.kept))
            if row.neuron == "2":
                m[4].weight[:, gone] = 0
            else:  # "6" -> Flatten -> Linear: features c*2*2 .. c*2*2+3
                cols = [c * 4 + k for c in gone for k in range(4)]
                m[9].weight[:, cols] = 0
    return m


def test_amount_zero_is_identity():
    model, data = _net(), _data()
    before = _out(model, data[0][0])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = sf.prune(model, data, amount=0.0, num_steps=T, progress=False)
    assert torch.equal(_out(model, data[0][0]), before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [r.channels_after for r in report.layers] == [4, 6]
    assert all(p.grad is None for p in model.parameters())  # scoring leaves .grad alone


def test_removing_channels_with_zero_outgoing_weights_keeps_outputs():
    model, data = _net(), _data()
    with torch.no_grad():
        model[4].weight[:, 1] = 0          # channel 1 of the first spiking layer feeds nothing
        model[9].weight[:, 2 * 4:3 * 4] = 0  # channel 2 of the second one feeds nothing
    x = data[0][0]
    before = _out(model, x)
    report = sf.prune(model, data, amount=0.25, criterion=_lowest({"3": 1, "7": 2}), num_steps=T, progress=False)
    assert [r.kept for r in report.layers] == [(0, 2, 3), (0, 1, 3, 4, 5)]
    after = _out(model, x)
    assert torch.equal(after, before)


def test_pruned_model_equals_original_with_removed_channels_silenced():
    model, data = _net(), _data()
    reference = copy.deepcopy(model)
    report = sf.prune(model, data, amount=0.5, criterion="fsc", num_steps=T, progress=False)
    masked = _mask_outgoing(reference, report)
    x = data[1][0]
    assert torch.allclose(_out(model, x), _out(masked, x), atol=1e-6, rtol=0)
    # BatchNorm and Flatten->Linear follow the kept channels exactly
    k1, k2 = (torch.tensor(r.kept) for r in report.layers)
    assert torch.equal(model[1].running_mean, reference[1].running_mean[k1])
    assert torch.equal(model[5].weight, reference[5].weight[k2])
    cols = (k2[:, None] * 4 + torch.arange(4)).flatten()
    assert torch.equal(model[9].weight, reference[9].weight[:, cols])
    assert torch.equal(model[4].weight, reference[4].weight[k2][:, k1])


def test_parameter_counts():
    model, data = _net(), _data()

    def expected(c1, c2):  # conv1 + bn1 + conv2 + bn2 + linear (2x2 map after two pools)
        return (9 + 1) * c1 + 2 * c1 + (9 * c1 + 1) * c2 + 2 * c2 + 4 * c2 * 5 + 5

    assert count_parameters(model) == sum(p.numel() for p in model.parameters()) == expected(4, 6)
    report = sf.prune(model, data, amount=0.5, criterion="l1", num_steps=T, progress=False)
    assert report.params_before == expected(4, 6)
    assert report.params_after == sum(p.numel() for p in model.parameters()) == expected(2, 3)
    assert (model[0].out_channels, model[1].num_features, model[4].in_channels, model[4].out_channels,
            model[9].in_features) == (2, 2, 2, 3, 12)
    row = report.layers[0]
    assert (row.params_before, row.params_after) == (10 * 4 + 8, 10 * 2 + 4)


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("frozen", [False, True])
def test_codebooks_survive_pruning(granularity, frozen):
    model, data = _net(), _data()
    sf.wrap(model, m=3, bits=4, granularity=granularity)
    if frozen:
        sf.freeze(model)
    reference = copy.deepcopy(model)
    report = sf.prune(model, data, amount=0.5, criterion="fsc", num_steps=T, progress=False)
    k1, k2 = (torch.tensor(r.kept) for r in report.layers)
    cols = (k2[:, None] * 4 + torch.arange(4)).flatten()
    assert torch.equal(model[0].weight, reference[0].weight[k1])
    assert torch.equal(model[4].weight, reference[4].weight[k2][:, k1])
    assert torch.equal(model[9].weight, reference[9].weight[:, cols])
    for layer in sf.compressed_layers(model):
        w = layer.module.weight
        groups = w.shape[0] if granularity == "channel" else 1
        assert layer.quantizer.groups == groups
        assert all(row.unique().numel() <= 3 for row in w.reshape(groups, -1))
        if frozen:
            assert tuple(layer.quantizer.shape) == tuple(w.shape)
    if not frozen and granularity == "layer":
        assert torch.equal(model[0].parametrizations.weight[0].codebook, reference[0].parametrizations.weight[0].codebook)
    if not frozen:
        sf.fit(model, data, epochs=1, num_steps=T, progress=False)  # still trains with its codebooks
        sf.freeze(model)
        assert all(l.frozen for l in sf.compressed_layers(model))


def test_pruned_model_trains_and_can_be_wrapped():
    model, data = _net(), _data()
    sf.prune(model, data, amount=0.5, num_steps=T, progress=False)
    model.train()
    loss = nn.functional.cross_entropy(sf.run(model, data[0][0], num_steps=T).sum(0), data[0][1])
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    history = sf.fit(model, data, epochs=2, num_steps=T, progress=False, lr=1e-2)
    assert all(torch.isfinite(torch.tensor(history)))
    sf.wrap(model, m=4)
    sf.freeze(model)
    assert model[4].weight.shape == (3, 2, 3, 3)


def test_per_channel_neuron_parameters_follow():
    import snntorch as snn

    torch.manual_seed(2)
    beta = torch.rand(5, 1, 1) * 0.9
    thr = torch.rand(5, 1, 1) + 0.5
    model = nn.Sequential(
        nn.Conv2d(1, 5, 3, padding=1),
        snn.Leaky(beta=beta, threshold=thr, learn_beta=True, init_hidden=True),  # beta Parameter, thr buffer
        nn.Flatten(), nn.Linear(5 * 16, 3),
    )
    with torch.no_grad():
        model[0].weight.mul_(3)
    reference = copy.deepcopy(model)
    data = [(torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0]))]
    report = sf.prune(model, data, amount=0.4, criterion="random", num_steps=T, progress=False)
    keep = torch.tensor(report.layers[0].kept)
    assert isinstance(model[1].beta, nn.Parameter) and torch.equal(model[1].beta, beta[keep])
    assert "threshold" in dict(model[1].named_buffers()) and torch.equal(model[1].threshold, thr[keep])
    assert model[1].graded_spikes_factor.numel() == 1  # scalars untouched
    with torch.no_grad():
        cols = [c * 16 + k for c in sorted(set(range(5)) - set(keep.tolist())) for k in range(16)]
        reference[3].weight[:, cols] = 0
    x = torch.rand(3, 1, 4, 4)
    assert torch.allclose(_out(model, x), _out(reference, x), atol=1e-6, rtol=0)


def test_iterative_steps_and_finetune_calls():
    model, data = _net(), _data()
    calls = []
    report = sf.prune(model, data, amount=0.5, steps=3, criterion="taylor", num_steps=T, progress=False,
                      finetune=lambda m: calls.append(m[0].out_channels))
    assert [r.channels_after for r in report.layers] == [2, 3]
    assert len(calls) == 2 and calls[0] >= calls[1] >= 2
    with pytest.raises(sf.SpikeFitTypeError, match="one-shot iterator"):
        sf.prune(model, iter(data), amount=0.5, steps=2, progress=False)


def test_global_scope_removes_the_total_amount():
    model, data = _net(), _data()
    report = sf.prune(model, data, amount=0.5, scope="global", criterion="sca", num_steps=T, progress=False)
    after = [r.channels_after for r in report.layers]
    assert sum(after) == 10 - 5 and min(after) >= 1


def test_output_layer_never_pruned_and_report_prints():
    import snntorch as snn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(8, 3),
                          snn.Leaky(beta=0.5, init_hidden=True))
    data = [(torch.rand(4, 6) * 3, torch.tensor([0, 1, 2, 0]))]
    report = sf.prune(model, data, amount=0.5, criterion="svs", num_steps=T, progress=False)
    assert [r.neuron for r in report.layers] == ["1"] and model[2].out_features == 3
    text = str(report)
    assert "channels_before" in text and "criterion=svs" in text
    d = json.loads(json.dumps(report.to_dict()))
    assert d["layers"][0]["channels_after"] == 4 and len(d["layers"][0]["kept"]) == 4
    assert report.table().records()[0]["layer"] == "0"


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        import snntorch as snn

        self.fc1, self.lif1 = nn.Linear(4, 6), snn.Leaky(beta=0.5, init_hidden=True)
        self.fc2, self.lif2 = nn.Linear(6, 6), snn.Leaky(beta=0.5, init_hidden=True)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        h = self.lif1(self.fc1(x))
        return self.out(self.lif2(self.fc2(h) * 2.0))  # functional op before lif2


def test_unprunable_layer_is_refused_unless_ignored():
    model = _Functional()
    data = [(torch.rand(3, 4), torch.tensor([0, 1, 0]))]
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(sf.UnsupportedLayerError, match=r"cannot prune spiking layer 'lif2'.*'\?'.*ignore=\['lif2'\]"):
        sf.prune(model, data, amount=0.5, num_steps=T, progress=False)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    report = sf.prune(model, data, amount=0.5, ignore=["lif2"], num_steps=T, progress=False)
    assert [r.neuron for r in report.layers] == ["lif1"]
    assert model.fc1.out_features == 3 and model.fc2.in_features == 3 and model.fc2.out_features == 6


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"amount": 1.0}, sf.SpikeFitValueError, r"amount=1.0 is not allowed; .* in \[0, 1\)"),
    ({"amount": -0.1}, sf.SpikeFitValueError, r"amount=-0.1 is not allowed"),
    ({"amount": True}, sf.SpikeFitValueError, r"amount=True is not allowed"),
    ({"criterion": "fisher"}, sf.SpikeFitValueError, r"criterion='fisher' is not known"),
    ({"scope": "model"}, sf.SpikeFitValueError, r"scope='model' is not allowed"),
    ({"steps": 0}, sf.SpikeFitValueError, r"steps=0 is not allowed"),
    ({"ignore": ["nothing"]}, sf.SpikeFitValueError, r"ignore='nothing' matches no module"),
])
def test_bad_arguments(kwargs, exc, match):
    model, data = _net(), _data()
    before = _out(model, data[0][0])
    with pytest.raises(exc, match=match):
        sf.prune(model, data, **{"amount": 0.5, **kwargs}, num_steps=T, progress=False)
    assert torch.equal(_out(model, data[0][0]), before)


def test_empty_data_and_bad_batches():
    model = _net()
    with pytest.raises(sf.SpikeFitValueError, match="data yielded no batch"):
        sf.prune(model, [], amount=0.5, progress=False)
    with pytest.raises(sf.SpikeFitTypeError, match=r"data must yield \(x, y\) pairs"):
        sf.prune(model, [torch.rand(2, 1, 8, 8)], amount=0.5, progress=False)


def test_pruned_model_exports_to_nir_and_round_trips(tmp_path):
    pytest.importorskip("nir")
    model, data = _net(batch_norm=False), _data(n=1)
    sf.prune(model, data, amount=0.5, num_steps=T, progress=False)
    path = tmp_path / "pruned.nir"
    sf.export_nir(model, data[0][0][:1], path)
    again = sf.import_nir(path, framework="snntorch")
    x = data[0][0]
    assert torch.equal(_out(again, x), _out(model, x))


@pytest.mark.parametrize("amount", [0.0, 0.5])
def test_norse_model_prunes_through_its_adapter(amount):
    pytest.importorskip("norse")
    from snn_spikefit.zoo.norse import conv_snn as norse_conv_snn

    torch.manual_seed(0)
    model = norse_conv_snn()
    x = torch.rand(6, 1, 8, 8) * 4
    data = [(x, torch.arange(6) % 10)]
    before = sf.run(model, x, num_steps=4)
    report = sf.prune(model, data, amount=amount, num_steps=4, progress=False)
    chans = [(r.channels_before, r.channels_after) for r in report.layers]
    assert chans == [(16, 16 - int(16 * amount)), (32, 32 - int(32 * amount))]
    after = sf.run(model, x, num_steps=4)
    assert after.shape == before.shape
    if amount == 0:
        assert torch.equal(after, before)
