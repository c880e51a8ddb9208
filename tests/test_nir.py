"""NIR export/import: exact round trips through files, hand-written graphs, codebooks, errors."""

import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.nir.common import RESET_KEY
from snn_spikefit.trace import Recorder

from conftest import HAS_NORSE, HAS_SNNTORCH, needs_norse, needs_snntorch

nir = pytest.importorskip("nir")

STEPS = 60




# -- model builders ----------------------------------------------------------------------------
def _snntorch_neuron(kind, reset, beta, shape):
    import snntorch as snn

    b = torch.full(shape, beta) if shape else beta  # per-neuron beta when a shape is given
    if kind == "synaptic":
        return snn.Synaptic(alpha=0.6, beta=b, threshold=1.0, reset_mechanism=reset,
                            reset_delay=reset == "subtract", init_hidden=True)
    return snn.Leaky(beta=b, threshold=1.0, reset_mechanism=reset, init_hidden=True)


def snntorch_net(arch, reset, kind="leaky"):
    if arch == "dense":
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 24), _snntorch_neuron(kind, reset, 0.7, (24,)),
                             nn.Linear(24, 12), _snntorch_neuron(kind, reset, 0.8, ()), nn.Linear(12, 5))
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), _snntorch_neuron(kind, reset, 0.6, ()), nn.AvgPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), _snntorch_neuron(kind, reset, 0.9, ()), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 2 * 2, 5))


def _norse_neuron(kind, reset):
    import norse.torch as norse
    from norse.torch.functional.reset import reset_subtract, reset_value

    if kind == "cuba":
        return norse.LIFCell(norse.LIFParameters(tau_syn_inv=torch.tensor(200.0), tau_mem_inv=torch.tensor(300.0)))
    method = reset_subtract if reset == "subtract_immediate" else reset_value
    return norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.tensor(250.0), v_th=torch.tensor(0.5),
                                                   reset_method=method))


def norse_net(arch, reset="value", kind="box"):
    import norse.torch as norse

    if arch == "dense":
        return norse.SequentialState(nn.Flatten(), nn.Linear(16, 24), _norse_neuron(kind, reset), nn.Linear(24, 12),
                                     _norse_neuron(kind, reset), nn.Linear(12, 5))
    return norse.SequentialState(nn.Conv2d(1, 6, 3, padding=1), _norse_neuron(kind, reset), nn.AvgPool2d(2),
                                 nn.Conv2d(6, 8, 3, padding=1), _norse_neuron(kind, reset), nn.AvgPool2d(2),
                                 nn.Flatten(), nn.Linear(32, 5))


def _boost(model, gain=4.0):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(gain)
    return model


def _input(arch):
    torch.manual_seed(3)
    return torch.rand(STEPS, 4, 1, 4, 4) * 2 if arch == "dense" else torch.rand(STEPS, 4, 1, 8, 8) * 2


def recorded(model, x):
    with Recorder(model) as rec:
        out = sf.run(model, x)
    return out, list(rec.spikes.values())


def assert_same_spikes(a, b, x):
    out_a, spk_a = recorded(a, x)
    out_b, spk_b = recorded(b, x)
    assert len(spk_a) == len(spk_b) >= 2
    for sa, sb in zip(spk_a, spk_b):
        assert sa.shape[0] == STEPS and 0 < int(sa.sum()) < sa.numel()  # the test exercises spikes and silence
        assert torch.equal(sa, sb)
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-5)


def roundtrip(model, x, framework, tmp_path):
    path = tmp_path / "model.nir"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.export_nir(model, x[0], path)
    return sf.import_nir(path, framework)


# -- exact round trips ------------------------------------------------------------------------
@needs_snntorch
@pytest.mark.parametrize("arch", ["dense", "conv"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("kind", ["leaky", "synaptic"])
def test_snntorch_nir_snntorch(arch, reset, kind, tmp_path):
    model = _boost(snntorch_net(arch, reset, kind))
    x = _input(arch)
    back = roundtrip(model, x, "snntorch", tmp_path)
    assert_same_spikes(model, back, x)


@needs_snntorch
@needs_norse
@pytest.mark.parametrize("arch", ["dense", "conv"])
@pytest.mark.parametrize("kind", ["leaky", "synaptic"])
def test_snntorch_nir_norse(arch, kind, tmp_path):
    model = _boost(snntorch_net(arch, "zero", kind))
    x = _input(arch)
    assert_same_spikes(model, roundtrip(model, x, "norse", tmp_path), x)


@needs_norse
@pytest.mark.parametrize("arch", ["dense", "conv"])
@pytest.mark.parametrize("reset,kind", [("value", "box"), ("subtract_immediate", "box"), ("value", "cuba")])
def test_norse_nir_norse(arch, reset, kind, tmp_path):
    model = _boost(norse_net(arch, reset, kind), 2.0)
    x = _input(arch)
    back = roundtrip(model, x, "norse", tmp_path)
    assert_same_spikes(model, back, x)


@needs_snntorch
@needs_norse
@pytest.mark.parametrize("arch", ["dense", "conv"])
@pytest.mark.parametrize("kind", ["box", "cuba"])
def test_norse_nir_snntorch(arch, kind, tmp_path):
    model = _boost(norse_net(arch, "value", kind), 2.0)
    x = _input(arch)
    assert_same_spikes(model, roundtrip(model, x, "snntorch", tmp_path), x)


@needs_snntorch
def test_subtract_reset_is_recorded_warned_and_refused_by_norse(tmp_path):
    model = snntorch_net("dense", "subtract")
    with pytest.warns(UserWarning, match="resets by 'subtract'"):
        graph = sf.export_nir(model, torch.rand(1, 1, 4, 4), tmp_path / "m.nir")
    lif = [n for n in graph.nodes.values() if isinstance(n, nir.LIF)]
    assert len(lif) == 2 and all(n.metadata[RESET_KEY] == "subtract" for n in lif)
    if HAS_NORSE:
        with pytest.raises(sf.UnsupportedLayerError, match="cannot run exactly in Norse"):
            sf.import_nir(tmp_path / "m.nir", "norse")


@needs_snntorch
def test_graph_metadata_and_beta_dt_convention(tmp_path):
    model = snntorch_net("dense", "zero")
    graph = sf.export_nir(model, torch.rand(2, 1, 4, 4), dt=2e-3)
    assert graph.metadata["producer"] == "snn_spikefit" and graph.metadata["version"] == sf.__version__
    assert graph.metadata["spikefit.dt"] == 2e-3
    lif = graph.nodes["2"]
    np.testing.assert_allclose(1 - 2e-3 / lif.tau, 0.7, rtol=1e-6)  # beta = 1 - dt/tau
    np.testing.assert_allclose(lif.r, lif.tau / 2e-3)  # r = tau/dt: one Euler step is one snnTorch step
    assert graph.nodes["0"].start_dim == 0  # torch's Flatten(1) on [B, ...] is NIR's Flatten(0)


@needs_snntorch
def test_snntorch_relabelled_reset_is_refused():
    import snntorch as snn

    lif = snn.Leaky(beta=0.5, init_hidden=True)
    lif.reset_mechanism = "zero"  # snnTorch keeps running its subtract state function
    with pytest.raises(sf.UnsupportedLayerError, match="runs the 'subtract' reset"):
        sf.export_nir(nn.Sequential(nn.Linear(3, 2), lif), torch.rand(1, 3))


# -- a NIR graph written by hand ---------------------------------------------------------------
def _hand_graph():
    rng = np.random.default_rng(0)
    f = np.float32
    conv_w = rng.normal(0, 0.8, (2, 1, 3, 3)).astype(f)
    nodes = {
        "in": nir.Input(input_type={"input": np.array([1, 4, 4])}),
        "conv": nir.Conv2d(input_shape=(4, 4), weight=conv_w, stride=1, padding=1, dilation=1, groups=1,
                           bias=np.array([0.1, -0.2], f)),
        "lif": nir.LIF(tau=np.full((2, 4, 4), 0.02), r=np.full((2, 4, 4), 1.5), v_leak=np.full((2, 4, 4), 0.1),
                       v_threshold=np.full((2, 4, 4), 0.6), v_reset=np.full((2, 4, 4), 0.1)),
        "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([2, 2, 2])}, start_dim=0, end_dim=-1),
        "aff": nir.Affine(weight=rng.normal(0, 1.0, (5, 8)).astype(f), bias=rng.normal(0, 0.1, 5).astype(f)),
        "cuba": nir.CubaLIF(tau_syn=np.full(5, 0.004), tau_mem=np.full(5, 0.01), r=np.full(5, 2.0),
                            v_leak=np.full(5, -0.05), v_threshold=np.full(5, 0.3), v_reset=np.full(5, -0.05),
                            w_in=np.full(5, 3.0)),
        "lin": nir.Linear(weight=rng.normal(0, 1.0, (3, 5)).astype(f)),
        "out": nir.Output(output_type={"output": np.array([3])}),
    }
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)


def _euler_reference(g, x, dt):
    """NIR's equations, one forward-Euler step of dt per input step, states starting at rest."""
    n = g.nodes
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    lif, cuba = n["lif"], n["cuba"]
    v1 = t(lif.v_leak).expand(x.shape[1], 2, 4, 4).clone()
    cur, v2 = torch.zeros(x.shape[1], 5, dtype=torch.float64), t(cuba.v_leak).expand(x.shape[1], 5).clone()
    s1_all, s2_all, outs = [], [], []
    for xt in x.double():
        h = torch.nn.functional.conv2d(xt, t(n["conv"].weight), t(n["conv"].bias), padding=1)
        v1 = v1 + dt / t(lif.tau) * (t(lif.v_leak) - v1 + t(lif.r) * h)
        s1 = (v1 > t(lif.v_threshold)).double()
        v1 = torch.where(s1 > 0, t(lif.v_reset), v1)
        h = torch.nn.functional.avg_pool2d(s1, 2).flatten(1) @ t(n["aff"].weight).T + t(n["aff"].bias)
        cur = cur + dt / t(cuba.tau_syn) * (-cur + t(cuba.w_in) * h)
        v2 = v2 + dt / t(cuba.tau_mem) * (t(cuba.v_leak) - v2 + t(cuba.r) * cur)
        s2 = (v2 > t(cuba.v_threshold)).double()
        v2 = torch.where(s2 > 0, t(cuba.v_reset), v2)
        s1_all.append(s1), s2_all.append(s2), outs.append(s2 @ t(n["lin"].weight).T)
    return torch.stack(s1_all), torch.stack(s2_all), torch.stack(outs)


@pytest.mark.parametrize("framework", [
    pytest.param("snntorch", marks=needs_snntorch), pytest.param("norse", marks=needs_norse)])
def test_hand_written_graph_matches_euler_simulation(framework, tmp_path):
    dt = 1e-3
    nir.write(tmp_path / "hand.nir", _hand_graph())
    model = sf.import_nir(tmp_path / "hand.nir", framework, dt=dt)
    torch.manual_seed(0)
    x = torch.rand(STEPS, 3, 1, 4, 4) * 2
    s1, s2, ref_out = _euler_reference(nir.read(tmp_path / "hand.nir"), x, dt)
    out, spikes = recorded(model, x)
    assert s1.sum() > 0 and s2.sum() > 0 and (s1 == 0).any() and (s2 == 0).any()
    assert torch.equal(spikes[0].double(), s1) and torch.equal(spikes[1].double(), s2)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)


def _skip_graph():
    """input -> fc1 -> lif1 -> fc2 -> lif2 -> fc3 -> output, plus lif1 -> skip (Scale) -> lif2 (summed)."""
    rng = np.random.default_rng(1)
    f = np.float32
    lif = lambda n: nir.LIF(tau=np.full(n, 0.004), r=np.full(n, 4.0), v_leak=np.zeros(n),  # noqa: E731
                            v_threshold=np.full(n, 1.0), v_reset=np.zeros(n))
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "fc1": nir.Affine(weight=rng.normal(0, 1, (6, 4)).astype(f), bias=np.full(6, 0.2, f)),
             "lif1": lif(6), "fc2": nir.Linear(weight=rng.normal(0, 1, (6, 6)).astype(f)),
             "skip": nir.Scale(scale=np.full(6, 0.7, f)), "lif2": lif(6),
             "fc3": nir.Linear(weight=rng.normal(0, 1, (3, 6)).astype(f)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("lif1", "skip"), ("fc2", "lif2"),
             ("skip", "lif2"), ("lif2", "fc3"), ("fc3", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False, metadata={"spikefit.dt": 1e-3})


@pytest.mark.parametrize("framework", [
    pytest.param("snntorch", marks=needs_snntorch), pytest.param("norse", marks=needs_norse)])
def test_non_chain_graph_sums_inputs(framework, tmp_path):
    nir.write(tmp_path / "skip.nir", _skip_graph())
    g = nir.read(tmp_path / "skip.nir")
    model = sf.import_nir(tmp_path / "skip.nir", framework)
    assert type(model).__name__ == "NIRGraphModule"
    torch.manual_seed(0)
    x = torch.rand(STEPS, 3, 4) * 2
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    a = 1e-3 / 0.004
    v1, v2, s1_all, s2_all = torch.zeros(3, 6, dtype=torch.float64), torch.zeros(3, 6, dtype=torch.float64), [], []
    for xt in x.double():
        v1 = v1 + a * (-v1 + 4.0 * (xt @ t(g.nodes["fc1"].weight).T + t(g.nodes["fc1"].bias)))
        s1 = (v1 > 1.0).double()
        v1 = v1 * (1 - s1)
        v2 = v2 + a * (-v2 + 4.0 * (s1 @ t(g.nodes["fc2"].weight).T + 0.7 * s1))
        s2 = (v2 > 1.0).double()
        v2 = v2 * (1 - s2)
        s1_all.append(s1), s2_all.append(s2)
    out, spikes = recorded(model, x)
    assert torch.stack(s1_all).sum() > 0 and torch.stack(s2_all).sum() > 0
    assert torch.equal(spikes[0].double(), torch.stack(s1_all)) and torch.equal(spikes[1].double(), torch.stack(s2_all))
    torch.testing.assert_close(out.double(), torch.stack(s2_all) @ t(g.nodes["fc3"].weight).T)


@pytest.mark.skipif(not HAS_SNNTORCH, reason="snntorch is not installed")
def test_cycles_that_are_not_one_neurons_recurrence_are_refused():
    g = _skip_graph()  # an algebraic loop: fc2 <-> loop, no neuron to delay
    g.nodes["loop"] = nir.Scale(scale=np.full(6, 0.5, np.float32))
    g.edges += [("fc2", "loop"), ("loop", "fc2")]
    with pytest.raises(sf.UnsupportedLayerError, match=r"cycle through nodes \['fc2', 'fc3', 'lif2', 'loop'.*no spiking neuron"):
        sf.import_nir(g)
    g = _skip_graph()  # lif2 -> fc1 closes a cycle through lif1 and lif2
    g.edges.append(("lif2", "fc1"))
    with pytest.raises(sf.UnsupportedLayerError, match=r"closes a cycle through several spiking neurons"):
        sf.import_nir(g)


@pytest.mark.skipif(not (HAS_SNNTORCH or HAS_NORSE), reason="no SNN framework installed")
def test_import_without_dt_warns_and_uses_default():
    g = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((2, 3), np.float32), bias=np.zeros(2, np.float32)),
                               nir.IF(r=np.full(2, 500.0), v_threshold=np.full(2, 2.5)))
    with pytest.warns(UserWarning, match="no 'spikefit.dt' metadata"):
        net = sf.import_nir(g, "snntorch" if HAS_SNNTORCH else "norse")
    # default dt = 1e-3: the IF integrates dt * r * (W x) = 0.5 * 3 per step and fires at step 2
    out = sf.run(net, torch.ones(1, 3), num_steps=3)
    assert out[:, 0, 0].tolist() == [0.0, 1.0, 0.0]


@needs_snntorch
def test_snntorch_refuses_what_it_cannot_run():
    g = _hand_graph()
    g.nodes["lif"].v_reset = np.zeros((2, 4, 4))  # != v_leak: snnTorch resets to its rest value
    with pytest.raises(sf.UnsupportedLayerError, match="v_reset != v_leak"):
        sf.import_nir(g, "snntorch", dt=1e-3)
    li = nir.NIRGraph.from_list(nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2)))
    with pytest.raises(sf.UnsupportedLayerError, match="node 'li' .*LI"):
        sf.import_nir(li, "snntorch", dt=1e-3)


# -- compression facts ---------------------------------------------------------------------------
@needs_snntorch
@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("freeze", [False, True])
def test_wrapped_model_keeps_codebooks_through_nir(granularity, freeze, tmp_path):
    model = _boost(snntorch_net("conv", "zero"), 2.0)
    sf.wrap(model, m=4, bits=4, granularity=granularity)
    if freeze:
        sf.freeze(model)
    x = _input("conv")
    before = {c.name: c for c in sf.compressed_layers(model)}
    books = [p.detach().clone() for n, p in model.named_parameters() if n.endswith("codebook")]
    model.train()
    back = roundtrip(model, x, "snntorch", tmp_path)
    assert model.training and all(m.training for m in model.modules())  # export leaves the modes as they were
    assert all(torch.equal(a, p) for a, p in zip(books, [p for n, p in model.named_parameters() if n.endswith("codebook")]))
    layers = sf.compressed_layers(back)
    assert [c.name for c in layers] == ["0", "3", "7"] and all(c.frozen for c in layers)
    for c in layers:
        groups = c.module.weight.shape[0] if granularity == "channel" else 1
        per_group = c.module.weight.reshape(groups, -1)
        assert max(int(r.unique().numel()) for r in per_group) <= 4
        form = before[c.name].integer_form()
        assert torch.equal(c.quantizer.codes, form.codes)
        assert torch.equal(c.quantizer.codebook_int.long(), form.ints.long())
        assert torch.equal(c.module.weight, before[c.name].module.weight)
    assert_same_spikes(model, back, x)


@needs_snntorch
def test_inconsistent_codebook_metadata_is_refused(tmp_path):
    model = sf.wrap(nn.Sequential(nn.Linear(6, 4)), m=4, bits=4)
    g = sf.export_nir(model, torch.rand(1, 6))
    g.nodes["0"].metadata["spikefit.codes"] = (g.nodes["0"].metadata["spikefit.codes"] + 1) % 4
    with pytest.raises(sf.SpikeFitValueError, match="does not reproduce its weight"):
        sf.import_nir(g, "snntorch")


# -- errors -----------------------------------------------------------------------------------------
def test_maxpool_is_refused_with_alternative():
    with pytest.raises(sf.UnsupportedLayerError, match=r"layer '1' \(MaxPool2d\).*use nn.AvgPool2d"):
        sf.export_nir(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)), torch.rand(1, 1, 6, 6))


def test_functional_op_in_forward_is_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            return self.fc(torch.flatten(x, 1))

    with pytest.raises(sf.UnsupportedLayerError, match="layer 'fc' .*functional op"):
        sf.export_nir(Net(), torch.rand(1, 4, 4))


def test_not_a_nir_file(tmp_path):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"this is not HDF5")
    with pytest.raises(sf.SpikeFitValueError, match="not a readable NIR file"):
        sf.import_nir(bad)
    with pytest.raises(sf.SpikeFitValueError, match="does not exist"):
        sf.import_nir(tmp_path / "missing.nir")
    with pytest.raises(sf.SpikeFitTypeError, match="graph_or_path must be a nir.NIRGraph"):
        sf.import_nir(42)
    with pytest.raises(sf.SpikeFitValueError, match="framework='keras' is not allowed"):
        sf.import_nir(bad, "keras")


def test_import_frameworks_come_from_the_adapter_registry():
    from snn_spikefit.adapter import TorchAdapter, nir_frameworks

    names = nir_frameworks()
    expected = (["snntorch"] if HAS_SNNTORCH else []) + (["norse"] if HAS_NORSE else [])
    assert names[:len(expected)] == expected   # built-ins first, in snn_spikefit.adapters.ADAPTERS order
    assert not TorchAdapter().imports_nir()
    g = sf.export_nir(nn.Sequential(nn.Linear(3, 2)), torch.rand(1, 3))
    with pytest.raises(sf.SpikeFitValueError, match=re.escape(f"framework='keras' is not allowed; use one of {names}")):
        sf.import_nir(g, "keras")
    if names:
        default, named = sf.import_nir(g), sf.import_nir(g, names[0])
        assert type(default) is type(named) and torch.equal(default[0].weight, named[0].weight)


def _affine_graph(edges=None, out=2):
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "fc": nir.Affine(weight=np.ones((2, 3), np.float32), bias=np.zeros(2, np.float32)),
             "output": nir.Output(output_type={"output": np.array([out])})}
    return nir.NIRGraph(nodes=nodes, edges=edges or [("input", "fc"), ("fc", "output")], type_check=False,
                        metadata={"spikefit.dt": 1e-3})


@pytest.mark.skipif(not HAS_SNNTORCH, reason="snntorch is not installed")
def test_graph_structure_and_shape_errors(tmp_path):
    with pytest.raises(sf.SpikeFitValueError, match="refers to node 'fc2', which does not exist"):
        sf.import_nir(_affine_graph([("input", "fc"), ("fc", "fc2"), ("fc", "output")]))
    with pytest.raises(sf.SpikeFitValueError, match="node 'fc' has no outgoing edge"):
        sf.import_nir(_affine_graph([("input", "fc")]))
    with pytest.raises(sf.SpikeFitValueError, match=r"shape mismatch at node .output. \(Output\): it declares input \(7,\)"):
        sf.import_nir(_affine_graph(out=7))
    g = _affine_graph()
    g.nodes["input"] = nir.Input(input_type={"input": np.array([5])})
    nir.write(tmp_path / "mismatch.nir", g)
    with pytest.raises(sf.SpikeFitValueError, match=r"shape mismatch at node 'fc' \(Affine\)"):
        sf.import_nir(tmp_path / "mismatch.nir")


def test_exported_file_reads_back_with_nir(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2 * 2 * 2, 3, bias=False))
    sf.export_nir(model, torch.rand(1, 1, 6, 6), tmp_path / "plain.nir")
    g = nir.read(tmp_path / "plain.nir")  # nir's own type check passes
    assert [type(g.nodes[k]).__name__ for k in ("0", "1", "2", "3")] == ["Conv2d", "AvgPool2d", "Flatten", "Linear"]
    if HAS_SNNTORCH or HAS_NORSE:
        back = sf.import_nir(g, "snntorch" if HAS_SNNTORCH else "norse")
        x = torch.rand(2, 1, 6, 6)
        assert torch.equal(back[3](back[2](back[1](back[0](x)))), model(x))
