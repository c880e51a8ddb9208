"""run(): one path for every model, both snnTorch loop styles, input checks."""

import pytest
import torch
from torch import nn

import snn_spikefit as sf

from conftest import needs_snntorch


def test_plain_torch_model_static_and_time_major():
    lin = nn.Linear(3, 2)
    x = torch.rand(5, 3)
    out = sf.run(lin, x, num_steps=4)
    assert out.shape == (4, 5, 2) and torch.equal(out[2], lin(x))
    seq = torch.rand(6, 5, 3)
    out = sf.run(lin, seq)
    assert out.shape == (6, 5, 2) and torch.equal(out[4], lin(seq[4]))


@pytest.mark.parametrize(
    "x,num_steps,match",
    [
        ("notatensor", 4, "x must be a torch.Tensor"),
        (torch.rand(5, 3), 0, r"num_steps=0 is not allowed"),
        (torch.rand(5, 3), 2.0, r"num_steps=2.0 is not allowed"),
        (torch.rand(3), None, r"time-major \[T, B, \.\.\.\]"),
        (torch.tensor([[float("nan"), 0, 0]]), 2, "NaN or inf"),
    ],
)
def test_bad_input(x, num_steps, match):
    with pytest.raises(sf.SpikeFitError, match=match):
        sf.run(nn.Linear(3, 2), x, num_steps=num_steps)


def _manual_leaky(cur, beta, thr):
    """snnTorch Leaky (subtract reset, reset applied at the next step) by hand."""
    mem = torch.zeros_like(cur[0])
    spikes = []
    for t in range(cur.shape[0]):
        reset = (mem > thr).float()
        mem = beta * mem + cur[t] - reset * thr
        spikes.append((mem > thr).float())
    return torch.stack(spikes)


@needs_snntorch
def test_snntorch_outside_loop_matches_manual_simulation():
    import snntorch as snn

    torch.manual_seed(1)
    fc = nn.Linear(4, 3)
    model = nn.Sequential(fc, snn.Leaky(beta=0.5, init_hidden=True))
    x = torch.rand(6, 2, 4) * 3
    out = sf.run(model, x)
    assert torch.equal(out, _manual_leaky(fc(x), 0.5, 1.0))
    again = sf.run(model, x)  # state is reset between runs
    assert torch.equal(again, out)


@needs_snntorch
def test_snntorch_inside_loop_model():
    import snntorch as snn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.lif = snn.Leaky(beta=0.5)

        def forward(self, x, steps=5):
            mem = self.lif.reset_mem()
            spk_rec, mem_rec = [], []
            for _ in range(steps):
                spk, mem = self.lif(self.fc(x), mem)
                spk_rec.append(spk)
                mem_rec.append(mem)
            return torch.stack(spk_rec), torch.stack(mem_rec)

    net = Net()
    x = torch.rand(2, 4) * 3
    spk = sf.run(net, x, num_steps=5)  # one type: the spikes, not the (spk, mem) tuple forward returns
    assert isinstance(spk, torch.Tensor) and spk.shape == (5, 2, 3)
    assert torch.equal(spk, _manual_leaky(net.fc(x).expand(5, 2, 3), 0.5, 1.0))
    rec = sf.record(net, x, num_steps=5)
    assert torch.equal(rec.output, spk) and rec.membrane.shape == (5, 2, 3)
    assert torch.equal(rec.membrane, net(x)[1])
    with pytest.raises(sf.SpikeFitValueError, match="runs its own time loop.*returned 5 steps"):
        sf.run(net, x, num_steps=3)


@needs_snntorch
def test_output_true_gives_spikes_and_record_gives_membranes():
    import snntorch as snn

    torch.manual_seed(0)
    fc = nn.Linear(4, 3)
    model = nn.Sequential(fc, snn.Leaky(beta=0.5, init_hidden=True, output=True))
    x = torch.rand(2, 4) * 3
    spk = sf.run(model, x, num_steps=7)
    assert isinstance(spk, torch.Tensor) and torch.equal(spk, _manual_leaky(fc(x).expand(7, 2, 3), 0.5, 1.0))
    rec = sf.record(model, x, num_steps=7)
    assert torch.equal(rec.output, spk) and rec.membrane.shape == (7, 2, 3)
    assert torch.equal(rec.spikes["1"], spk) and torch.equal(rec.membranes["1"], rec.membrane)
    assert rec.membrane.requires_grad  # a membrane loss (snnTorch tutorial 5) can train through it
    assert (rec.membrane[spk == 1] > 1.0).all()  # snnTorch reports the pre-reset membrane


@needs_snntorch
def test_adapter_found_and_neurons_listed():
    from snn_spikefit.zoo.snntorch import conv_snn

    model = conv_snn(1, 10, 8, (4, 8))
    adapter = sf.get_adapter(model)
    assert adapter.name == "snntorch"
    assert [n for n, _ in adapter.neurons(model)] == ["2", "5"]
    assert "snntorch" in sf.list_adapters()
    assert sf.get_adapter(nn.Linear(2, 2)).name == "torch"


def test_broken_plugin_warns_not_raises(monkeypatch):
    import snn_spikefit.adapter as ad
    import snn_spikefit.adapters as builtin

    monkeypatch.setattr(ad, "_DISCOVERED", False)
    monkeypatch.setattr(ad, "_REGISTRY", {})
    monkeypatch.setitem(builtin.ADAPTERS, "broken", "no_such_module_xyz:Adapter")
    with pytest.warns(RuntimeWarning, match="adapter plugin 'broken'.*failed to load"):
        names = ad.list_adapters()
    assert "broken" not in names


@needs_snntorch
def test_trace_conv_snn_is_a_chain_with_shapes():
    from snn_spikefit.zoo.snntorch import conv_snn
    from snn_spikefit.trace import trace

    model = conv_snn(1, 10, 8, (4, 8))
    g = trace(model, torch.rand(5, 1, 8, 8))
    assert g.is_chain()
    assert [n.name for n in g.nodes if n.is_neuron] == ["2", "5"]
    assert g.node("3").in_shape == (1, 4, 4, 4) and g.node("3").out_shape == (1, 8, 4, 4)
    assert g.node("6").out_shape == (1, 32) and g.output == "7"


def test_trace_marks_functional_inputs():
    from snn_spikefit.trace import trace

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.b(self.a(x) * 2.0 + x)

    g = trace(Skip(), torch.rand(2, 3))  # the addition is a node; its operand a(x) * 2 a functional op
    assert g.node("a").inputs == ["input"] and g.node("b").inputs == ["add"]
    assert g.node("add").is_add and g.node("add").inputs == ["?", "input"]


def test_trace_records_additions_in_forward_as_nodes_named_by_scope():
    from snn_spikefit.trace import trace

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            out = self.fc(x)
            out += x
            return torch.add(out, x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.block, self.head = nn.Linear(3, 3), Block(), nn.Linear(3, 2)

        def forward(self, x):
            h = self.stem(x)
            return self.head(self.block(h) + h)

    g = trace(Net(), torch.rand(2, 3), num_steps=3)  # three steps, the additions of the first only
    adds = [(n.name, n.inputs) for n in g.nodes if n.is_add]
    assert adds == [("block.add", ["block.fc", "stem"]), ("block.add_1", ["block.add", "stem"]),
                    ("add", ["block.add_1", "stem"])]
    assert g.node("head").inputs == ["add"] and g.output == "head"
    assert not g.is_chain()


@needs_snntorch
def test_recorder_collects_spikes_and_gradients():
    from snn_spikefit.zoo.snntorch import dense_snn
    from snn_spikefit.trace import Recorder

    model = dense_snn(4, 3, (6,))
    x = torch.rand(2, 4) * 4
    with Recorder(model, retain_grad=True, membrane=True) as rec:
        out = sf.run(model, x, num_steps=5)
    spk = rec.spikes["2"]
    assert spk.shape == (5, 2, 6) and set(spk.unique().tolist()) <= {0.0, 1.0}
    assert rec.membranes["2"].shape == (5, 2, 6)
    out.sum().backward()
    assert all(s.grad is not None for s in rec.steps["2"])
    with pytest.raises(sf.SpikeFitValueError, match="no spiking neuron named"):
        Recorder(model, names=["nope"])


@needs_snntorch
def test_trace_changes_nothing():
    from snn_spikefit.zoo.snntorch import conv_snn
    from snn_spikefit.trace import trace

    model = conv_snn(1, 10, 8, (4, 8), batch_norm=True)
    sf.wrap(model, m=4)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace(model, torch.rand(3, 1, 8, 8) * 5)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in model.modules())


def test_trace_output_is_the_returned_module_not_a_same_shape_one():
    from snn_spikefit.trace import trace

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            out = self.a(x)
            self.b(x)  # same shape, computed later, not returned
            return out

    assert trace(TwoHeads(), torch.rand(2, 3)).output == "a"
