"""Norse adapter: running over time with explicit state, recording, tracing, wrap, pruning."""

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.trace import Recorder, trace

from conftest import needs_norse

pytestmark = needs_norse




def _manual_lif_box(cur, tau_mem_inv, v_th, dt, v_leak=0.0, v_reset=0.0):
    """Norse LIFBoxCell by hand: v += dt/tau (v_leak - v + I); spike if v > v_th; v <- v_reset."""
    v = torch.full_like(cur[0], v_leak)
    spikes, membranes = [], []
    for t in range(cur.shape[0]):
        v = v + dt * tau_mem_inv * (cur[t] + v_leak - v)
        z = (v > v_th).float()
        v = (1 - z) * v + z * v_reset
        spikes.append(z), membranes.append(v)
    return torch.stack(spikes), torch.stack(membranes)


def _net():
    from snn_spikefit.zoo.norse import dense_snn

    torch.manual_seed(1)
    net = dense_snn(6, 3, hidden=(5,), beta=0.6, threshold=0.4)
    with torch.no_grad():
        net[1].weight.mul_(4)
    return net


def test_adapter_is_registered_and_owns_norse_models():
    from snn_spikefit.adapters.norse import NorseAdapter

    assert "norse" in sf.list_adapters()
    assert isinstance(sf.get_adapter(_net()), NorseAdapter)
    assert sf.get_adapter(nn.Linear(2, 2)).name == "torch"


def test_run_carries_state_and_matches_manual_simulation():
    net = _net()
    x = torch.rand(12, 2, 6)
    out = sf.run(net, x)
    cur = net[1](net[0](x.reshape(-1, 6))).reshape(12, 2, 5)
    spikes, _ = _manual_lif_box(cur.detach(), 0.4 / 1e-3, 0.4, 1e-3)
    assert 0 < spikes.sum() < spikes.numel()
    torch.testing.assert_close(out, net[3](spikes), rtol=0, atol=1e-6)
    assert torch.equal(sf.run(net, x), out)  # every run starts from a fresh state


def test_recorder_reads_spikes_and_membranes_and_static_input():
    net = _net()
    x = torch.rand(2, 6)
    with Recorder(net, membrane=True) as rec:
        sf.run(net, x, num_steps=7)
    cur = net[1](net[0](x)).detach().expand(7, 2, 5)
    spikes, membranes = _manual_lif_box(cur, 0.4 / 1e-3, 0.4, 1e-3)
    assert list(rec.spikes) == ["2"] and torch.equal(rec.spikes["2"], spikes)
    torch.testing.assert_close(rec.membranes["2"], membranes)


def test_trace_sees_the_chain():
    g = trace(_net(), torch.rand(4, 6))
    assert [(n.name, n.inputs, n.is_neuron) for n in g.nodes] == [
        ("0", ["input"], False), ("1", ["0"], False), ("2", ["1"], True), ("3", ["2"], False)]
    assert g.is_chain() and g.node("2").out_shape == (1, 5)


def test_model_without_state_argument_is_refused():
    import norse.torch as norse

    with pytest.raises(sf.SpikeFitTypeError, match=r"takes no state; a Norse model must be called as model\(x, state\)"):
        sf.run(nn.Sequential(nn.Linear(3, 2), norse.LIFBoxCell()), torch.rand(2, 3), num_steps=3)


def test_wrap_and_train_a_norse_model():
    net = _net()
    sf.wrap(net, m=4, bits=4)
    assert [c.name for c in sf.compressed_layers(net)] == ["1", "3"]
    assert all(int(c.module.weight.unique().numel()) <= 4 for c in sf.compressed_layers(net))
    out = sf.run(net, torch.rand(3, 6), num_steps=5)
    loss = out.mean(0).sum() + 0.25 * sf.commitment_loss(net)
    loss.backward()
    latent = net[3].parametrizations.weight.original
    assert latent.grad is not None and latent.grad.abs().sum() > 0


def test_prune_neuron_slices_per_channel_parameters():
    import norse.torch as norse

    cell = norse.LIFBoxCell(norse.LIFBoxParameters(
        tau_mem_inv=torch.arange(4.0).reshape(4, 1, 1) + 100, v_th=torch.tensor(0.5), v_leak=torch.arange(4.0)))
    adapter = sf.get_adapter(norse.SequentialState(cell))
    keep = torch.tensor([0, 2])
    adapter.prune_neuron(cell, keep, channel_dim=-3)
    assert cell.p.tau_mem_inv.flatten().tolist() == [100.0, 102.0]
    assert cell.p.v_th.ndim == 0 and float(cell.p.v_th) == 0.5  # shared scalars stay
    assert cell.p.v_leak.tolist() == [0.0, 1.0, 2.0, 3.0]  # [4] aligns with the last axis (W), not channels
    z, _ = cell(torch.rand(1, 2, 3, 4))
    assert z.shape == (1, 2, 3, 4)
    rec = norse.LIFRecurrentCell(3, 4)  # a neuron that owns weights keeps its rows and columns
    w_in, w_rec = rec.input_weights.detach().clone(), rec.recurrent_weights.detach().clone()
    adapter.prune_neuron(rec, keep, channel_dim=-1)
    assert torch.equal(rec.input_weights, w_in[keep]) and torch.equal(rec.recurrent_weights, w_rec[keep][:, keep])
    assert int(rec.hidden_size) == 2 and rec(torch.rand(5, 3))[0].shape == (5, 2)
    with pytest.raises(sf.UnsupportedLayerError, match="channel_dim=-3"):
        adapter.prune_neuron(rec, torch.tensor([0]), channel_dim=-3)


def test_neuron_model_names():
    import norse.torch as norse

    adapter = sf.get_adapter(_net())
    assert [adapter.neuron_model(m) for m in (norse.LIFBoxCell(), norse.LIFCell(), norse.IAFCell(), norse.LICell())] \
        == ["LIF", "CUBA-LIF", "IF", "other:LICell"]


def test_check_hint_names_the_norse_cell_of_an_allowed_model():
    import norse.torch as norse

    net = norse.SequentialState(nn.Linear(4, 3), norse.LIFBoxCell(), nn.Linear(3, 2), norse.LIFCell())
    hints = {v.layer: v.hint for v in sf.check(net, "speck").violations if v.rule == "neuron_model"}
    assert hints == {"1": "SynSense Speck runs ['IF'] neurons (norse.torch.IAFCell is IF)",
                     "3": "SynSense Speck runs ['IF'] neurons (norse.torch.IAFCell is IF)"}
    lif_chip = sf.HardwareProfile("lif-chip", neuron_models=("LIF",))
    v = [v for v in sf.check(net, lif_chip).violations if v.rule == "neuron_model"]
    assert [(x.layer, x.actual, x.hint) for x in v] == [
        ("3", "CUBA-LIF", "lif-chip runs ['LIF'] neurons (norse.torch.LIFBoxCell is LIF, without the synaptic current)")]


def test_nir_frameworks_and_export_dt_come_from_the_adapter():
    import norse.torch as norse

    assert "norse" in sf.adapter.nir_frameworks()
    net = norse.SequentialState(nn.Linear(4, 3), norse.LIFBoxCell(dt=2e-3))
    assert sf.get_adapter(net).neuron_dt(net[1]) == 2e-3
    g = sf.export_nir(net, torch.rand(1, 4))
    assert g.metadata["spikefit.dt"] == 2e-3
    mixed = norse.SequentialState(nn.Linear(4, 3), norse.LIFBoxCell(dt=2e-3), nn.Linear(3, 3), norse.LIFBoxCell())
    assert sf.export_nir(mixed, torch.rand(1, 4)).metadata["spikefit.dt"] == sf.Adapter.default_dt
    back = sf.import_nir(g, "norse")
    assert type(back).__name__ == "SequentialState" and float(back[1].dt) == 2e-3


def test_conv_builder_runs_over_time():
    from snn_spikefit.zoo.norse import conv_snn

    net = conv_snn(1, 10, image_size=8, channels=(4, 8))
    out = sf.run(net, torch.rand(2, 1, 8, 8), num_steps=3)
    assert out.shape == (3, 2, 10)
    assert [n.name for n in trace(net, torch.rand(1, 1, 8, 8)).nodes if n.is_neuron] == ["2", "5"]
