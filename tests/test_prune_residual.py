"""prune() of residual SNNs: channel groups across additions, exact removal of silent channels, refusals."""

import copy

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.pruning.surgery import prunable_layers
from snn_spikefit.trace import Recorder, trace

from conftest import needs_norse, needs_snntorch

T = 3
pytestmark = needs_snntorch
GROUP = ["stem_lif", "blocks.0.n2", "blocks.1.n2"]


def _net(kind="sew", channels=6):
    from snn_spikefit.zoo.snntorch import ResidualSNN

    torch.manual_seed(0)
    model = ResidualSNN(channels=channels, kind=kind)
    with torch.no_grad():
        model.stem.weight.mul_(4)
        for b in model.blocks:
            b.conv1.weight.mul_(3)
            b.conv2.weight.mul_(3)
    return model.eval()


def _data(n=2, b=4):
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(b, 1, 8, 8, generator=g) * 2, torch.randint(0, 10, (b,), generator=g)) for _ in range(n)]


def _silence(model, c):
    """Channel ``c`` of every neuron on the residual path never spikes (its producers' input is -10)."""
    with torch.no_grad():
        for conv in [model.stem] + [b.conv2 for b in model.blocks]:
            conv.weight[c] = 0
            conv.bias[c] = -10.0


def _lowest(channel):
    def fn(batch):  # a user criterion: channel ``channel`` lowest, the others by index
        s = torch.arange(1.0, batch.spikes.shape[2] + 1.0)
        s[channel] = 0.0
        return s * batch.spikes.shape[1]
    return fn


@pytest.mark.parametrize("kind", ["sew", "sparse"])
def test_residual_group_is_found_and_added_shapes_stay_consistent(kind):
    model, data = _net(kind), _data()
    x = data[0][0]
    layers = prunable_layers(model, x, num_steps=T)
    group = layers[0]
    extra = [f"blocks.{i}.barrier" for i in range(2)] if kind == "sparse" else []
    assert sorted(group.neurons) == sorted(GROUP + extra)
    assert group.producers == ("stem", "blocks.0.conv2", "blocks.1.conv2")
    assert sorted(c for c, _, _ in group.consumers) == ["blocks.0.conv1", "blocks.1.conv1", "fc"]
    assert group.adds == ("blocks.0.add", "blocks.1.add")
    report = sf.prune(model, data, amount=0.5, criterion="l1", num_steps=T, progress=False)
    assert [(r.neuron, r.channels_after) for r in report.layers] == [
        ("stem_lif", 3), ("blocks.0.n1", 3), ("blocks.1.n1", 3)]
    assert report.layers[0].group == tuple(n for n in group.neurons if n != "stem_lif")
    g = trace(model, x, num_steps=T)
    for add in (n for n in g.nodes if n.is_add):  # both operands of every addition: the same 3 channels
        shapes = {g.node(i).out_shape for i in add.inputs}
        assert shapes == {(1, 3, 8, 8)}, (add.name, shapes)
    for b in model.blocks:
        assert (b.conv1.in_channels, b.conv1.out_channels, b.conv2.in_channels, b.conv2.out_channels) == (3, 3, 3, 3)
    assert model.stem.out_channels == 3 and model.fc.in_features == 3 * 16
    assert sf.run(model, x, num_steps=T).shape == (T, 4, 10)


@pytest.mark.parametrize("kind", ["sew", "sparse"])
def test_removing_a_channel_that_never_spikes_keeps_every_spike_and_output(kind):
    model, data = _net(kind), _data()
    _silence(model, 2)
    x = data[0][0]
    with Recorder(model) as rec:
        before = sf.run(model, x, num_steps=T).detach()
    spikes = rec.spikes
    assert all(float(spikes[n][:, :, 2].abs().sum()) == 0 for n in GROUP)  # silent ...
    assert all(float(spikes[n].sum()) > 0 for n in GROUP)                # ... the others fire
    report = sf.prune(model, data, amount=1 / 6, criterion=_lowest(2), ignore=["blocks.*.n1"], num_steps=T,
                      progress=False)
    assert [(r.neuron, r.kept) for r in report.layers] == [("stem_lif", (0, 1, 3, 4, 5))]
    with Recorder(model) as rec:
        after = sf.run(model, x, num_steps=T).detach()
    assert torch.equal(after, before)
    keep = torch.tensor([0, 1, 3, 4, 5])
    for name, s in rec.spikes.items():
        want = spikes[name][:, :, keep] if name in report.layers[0].group + ("stem_lif",) else spikes[name]
        assert torch.equal(s, want), name


def test_group_score_is_the_sum_of_normalised_member_scores():
    model, data = _net(), _data(n=1)
    per = {"stem_lif": torch.tensor([1.0, 2, 3, 4, 5, 6]), "blocks.0.n2": torch.tensor([6.0, 0, 0, 0, 0, 0]),
           "blocks.1.n2": torch.tensor([0.0, 0, 0, 0, 0, 0])}

    def fn(batch):
        c = batch.spikes.shape[2]
        return per.get(batch.name, torch.arange(1.0, c + 1)) * batch.spikes.shape[1]

    report = sf.prune(model, data, amount=0.5, criterion=fn, num_steps=T, progress=False)
    want = per["stem_lif"] / per["stem_lif"].mean() + per["blocks.0.n2"] / 1.0 + 0.0
    assert torch.allclose(report.scores["stem_lif"], want)
    assert report.layers[0].kept == (0, 4, 5)  # sums 6.29, 0.57, 0.86, 1.14, 1.43, 1.71: 1, 2, 3 go


def test_ignoring_one_member_leaves_the_whole_group():
    model, data = _net(), _data()
    report = sf.prune(model, data, amount=0.5, criterion="l1", ignore=["blocks.1.n2"], num_steps=T, progress=False)
    assert [r.neuron for r in report.layers] == ["blocks.0.n1", "blocks.1.n1"]
    assert model.stem.out_channels == 6 and model.blocks[1].conv2.out_channels == 6 and model.fc.in_features == 96


class _InputShortcut(nn.Module):
    """A residual block on the raw input: its channels are the model input's."""

    def __init__(self):
        super().__init__()
        import snntorch as snn

        self.conv, self.lif = nn.Conv2d(2, 2, 3, padding=1), snn.Leaky(beta=0.5, init_hidden=True)
        self.flat, self.fc = nn.Flatten(), nn.Linear(2 * 16, 3)

    def forward(self, x):
        return self.fc(self.flat(self.lif(self.conv(x)) + x))


class _Scaled(nn.Module):
    """A shortcut scaled by a functional op (0.5 * x): not an addition pruning can group."""

    def __init__(self):
        super().__init__()
        import snntorch as snn

        self.conv0, self.lif0 = nn.Conv2d(1, 3, 3, padding=1), snn.Leaky(beta=0.5, init_hidden=True)
        self.conv1, self.lif1 = nn.Conv2d(3, 3, 3, padding=1), snn.Leaky(beta=0.5, init_hidden=True)
        self.flat, self.fc = nn.Flatten(), nn.Linear(3 * 16, 3)

    def forward(self, x):
        h = self.lif0(self.conv0(x))
        return self.fc(self.flat(self.lif1(self.conv1(h)) + 0.5 * h))


@pytest.mark.parametrize("model,x,match", [
    (_InputShortcut, torch.rand(3, 2, 4, 4),
     r"cannot prune spiking layers \['lif'\] together \(their channels are joined by the additions \['add'\]\): "
     r"the additions \['add'\] add the model input, whose channels cannot be removed; pass ignore=\['lif'\]"),
    (_Scaled, torch.rand(3, 1, 4, 4),
     r"cannot prune spiking layers \['lif1'\] together .*'add' receives the result of a functional op in "
     r"forward .*pass ignore=\['lif1'\]"),
])
def test_groups_that_cannot_be_pruned_are_refused_by_name_and_nothing_changes(model, x, match):
    torch.manual_seed(0)
    net = model()
    state = copy.deepcopy(net.state_dict())
    with pytest.raises(sf.UnsupportedLayerError, match=match):
        sf.prune(net, [(x, torch.tensor([0, 1, 2]))], amount=0.5, criterion="l1", num_steps=T, progress=False)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_an_add_of_the_output_is_not_pruned_and_fan_out_without_add_is_grouped():
    import snntorch as snn

    class FanOut(nn.Module):  # one spike map read by two layers whose outputs are added
        def __init__(self):
            super().__init__()
            self.fc0, self.lif0 = nn.Linear(4, 6), snn.Leaky(beta=0.5, init_hidden=True)
            self.a, self.b = nn.Linear(6, 3), nn.Linear(6, 3)

        def forward(self, x):
            h = self.lif0(self.fc0(x))
            return self.a(h) + self.b(h)

    torch.manual_seed(0)
    net = FanOut()
    report = sf.prune(net, [(torch.rand(3, 4) * 3, torch.tensor([0, 1, 2]))], amount=0.5, criterion="l1",
                      num_steps=T, progress=False)
    assert [(r.neuron, r.channels_after) for r in report.layers] == [("lif0", 3)]
    assert (net.a.in_features, net.b.in_features, net.a.out_features, net.b.out_features) == (3, 3, 3, 3)


@needs_norse
def test_norse_residual_model_prunes_in_groups():
    from snn_spikefit.zoo.norse import ResidualSNN

    torch.manual_seed(0)
    model = ResidualSNN(channels=6)
    x = torch.rand(4, 1, 8, 8) * 3
    before = sf.run(model, x, num_steps=T)
    report = sf.prune(model, [(x, torch.arange(4))], amount=0.5, criterion="l1", num_steps=T, progress=False)
    assert [(r.neuron, r.channels_after, r.group) for r in report.layers][0] == (
        "stem_lif", 3, ("blocks.0.n2", "blocks.1.n2"))
    assert sf.run(model, x, num_steps=T).shape == before.shape
    assert model.stem.out_channels == model.blocks[1].conv2.out_channels == 3 and model.fc.in_features == 48


@pytest.mark.parametrize("kwargs", [{"steps": 2}, {"scope": "global"}])
def test_iterative_and_global_pruning_keep_groups_together(kwargs):
    model, data = _net("sparse"), _data()
    report = sf.prune(model, data, amount=0.5, criterion="l1", num_steps=T, progress=False, **kwargs)
    kept = report.layers[0].channels_after
    assert report.layers[0].neuron == "stem_lif" and kept < 6
    assert model.stem.out_channels == kept and model.fc.in_features == kept * 16
    for b in model.blocks:
        assert b.conv2.out_channels == b.conv1.in_channels == kept
    assert sum(6 - r.channels_after for r in report.layers) == 9  # half of 3 x 6 channels, per layer or global
    assert sf.run(model, _data()[0][0], num_steps=T).shape == (T, 4, 10)
