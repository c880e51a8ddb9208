"""export_nir / import_nir of residual SNNs: additions become summed edges, round trip exact in both frameworks."""

import copy
import warnings

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.trace import Recorder

from conftest import HAS_NORSE, HAS_SNNTORCH

T = 6
FRAMEWORKS = [pytest.param("snntorch", marks=pytest.mark.skipif(not HAS_SNNTORCH, reason="snntorch absent")),
              pytest.param("norse", marks=pytest.mark.skipif(not HAS_NORSE, reason="norse absent"))]


def _net(framework, kind, channels=6):
    import importlib

    zoo = importlib.import_module(f"snn_spikefit.zoo.{framework}")
    torch.manual_seed(0)
    model = zoo.ResidualSNN(channels=channels, kind=kind)
    gain = 3.0 if framework == "snntorch" else 6.0  # Norse's cells see (1 - beta) of their input
    with torch.no_grad():
        model.stem.weight.mul_(gain)
        for b in model.blocks:
            b.conv1.weight.mul_(gain)
            b.conv2.weight.mul_(gain)
    return model.eval()


def _spikes(model, x):
    with Recorder(model) as rec, torch.no_grad():
        out = sf.run(model, x, num_steps=T)
    return out, rec.spikes


def _same_run(model, back, x):
    """Same output and the same spikes of every neuron at every step (names: 'a.b' <-> 'layers.a_b.0')."""
    out, spikes = _spikes(model, x)
    out2, spikes2 = _spikes(back, x)
    assert torch.equal(out, out2)
    assert len(spikes) == len(spikes2)
    for name, s in spikes.items():
        key = f"layers.{name.replace('.', '_')}."  # the node's last module: 'layers.<node>.<i>'
        assert torch.equal(next(v for k, v in spikes2.items() if k.startswith(key)), s), name
    return spikes


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("kind", ["sew", "sparse"])
def test_residual_round_trip_is_exact(framework, kind, tmp_path):
    model, x = _net(framework, kind), torch.rand(5, 1, 8, 8) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stock-importer notes
        graph = sf.export_nir(model, x, tmp_path / "res.nir")
    into = {a: sorted(s for s, b in graph.edges if b == a) for a in ("pool", "blocks_1_conv1")}
    if kind == "sew":  # the sums travel as edges: the pool sees the stem and both blocks' spikes
        assert into == {"pool": ["blocks_0_n2", "blocks_1_n2", "stem_lif"],
                        "blocks_1_conv1": ["blocks_0_n2", "stem_lif"]}
    else:              # a barrier neuron after each sum
        assert into == {"pool": ["blocks_1_barrier"], "blocks_1_conv1": ["blocks_0_barrier"]}
    back = sf.import_nir(tmp_path / "res.nir", framework)
    spikes = _same_run(model, back, x)
    assert all(float(s.sum()) > 0 for n, s in spikes.items() if not n.endswith("n1"))  # not a silent net
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = sf.export_nir(back, x)
    assert sorted(again.edges) == sorted(graph.edges)
    assert sf.count_ops(back, x, num_steps=T).to_dict()["acs"] == sf.count_ops(model, x, num_steps=T).acs


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_pruned_residual_model_exports_and_imports_exactly(framework):
    model, x = _net(framework, "sew"), torch.rand(5, 1, 8, 8) * 3
    sf.prune(model, [(x, torch.arange(5))], amount=0.5, criterion="l1", num_steps=T, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = sf.import_nir(sf.export_nir(model, x), framework)
    _same_run(model, back, x)


@pytest.mark.skipif(not HAS_SNNTORCH, reason="snntorch absent")
def test_imported_residual_graph_prunes_in_groups():
    model, x = _net("snntorch", "sew"), torch.rand(5, 1, 8, 8) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = sf.import_nir(sf.export_nir(model, x), "snntorch")
    report = sf.prune(back, [(x, torch.arange(5))], amount=0.5, criterion="l1", num_steps=T, progress=False)
    assert report.layers[0].neuron == "layers.stem_lif.0" and report.layers[0].group == (
        "layers.blocks_0_n2.0", "layers.blocks_1_n2.0")
    assert sf.run(back, x, num_steps=T).shape == (T, 5, 10)


@pytest.mark.skipif(not HAS_SNNTORCH, reason="snntorch absent")
def test_adding_a_tensor_to_itself_is_refused_by_name():
    import snntorch as snn

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.lif, self.out = nn.Linear(3, 4), snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(4, 2)

        def forward(self, x):
            h = self.lif(self.fc(x))
            return self.out(h + h)

    with pytest.raises(sf.UnsupportedLayerError, match=r"addition 'add' adds the output of NIR node\(s\) \['lif'\] "
                                                       r"more than once .*scale the weights instead"):
        sf.export_nir(Twice(), torch.rand(2, 3))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_wrapped_pruned_frozen_residual_model_round_trips_with_its_codebooks(framework):
    model, x = _net(framework, "sparse"), torch.rand(5, 1, 8, 8) * 3
    sf.wrap(model, m=4, bits=4)
    sf.prune(model, [(x, torch.arange(5))], amount=0.5, criterion="fsc", num_steps=T, progress=False)
    sf.freeze(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = sf.export_nir(model, x)
    assert "spikefit.codes" in graph.nodes["blocks_1_conv2"].metadata
    back = sf.import_nir(graph, framework)
    _same_run(model, back, x)
    assert all(layer.weight.unique().numel() <= 4 for layer in sf.compressed_layers(back))


@pytest.mark.skipif(not (HAS_SNNTORCH and HAS_NORSE), reason="needs snntorch and norse")
@pytest.mark.parametrize("kind", ["sew", "sparse"])
def test_norse_residual_runs_exactly_in_snntorch_and_the_reverse_is_refused_by_name(kind):
    x = torch.rand(5, 1, 8, 8) * 3
    norse_model = _net("norse", kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = sf.import_nir(sf.export_nir(norse_model, x), "snntorch")
        _same_run(norse_model, back, x)
        graph = sf.export_nir(_net("snntorch", kind), x)
    with pytest.raises(sf.UnsupportedLayerError, match=r"node 'stem_lif': NIR LIF with "
                                                       r"spikefit.reset_mechanism='subtract' cannot run exactly in Norse"):
        sf.import_nir(graph, "norse")
