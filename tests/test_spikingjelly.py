"""SpikingJelly through the adapter boundary alone: NIR round trips with snnTorch and Norse in all six
directions (dense and conv, 60 steps, same spikes in every layer at every step), a hand-written NIR
graph against NIR's equations, single- and multi-step models, and the pipeline on SpikingJelly models."""

from __future__ import annotations

import io
import json
import warnings
from contextlib import redirect_stdout
from importlib.metadata import entry_points

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.errors import UnsupportedLayerError
from snn_spikefit.nir.common import Gain
from snn_spikefit.trace import Recorder, trace

import interop_parts as P
from conftest import HAS_NORSE, HAS_SNNTORCH

pytest.importorskip("spikingjelly.activation_based.neuron")
from spikingjelly.activation_based import functional, layer, neuron  # noqa: E402

needs_snntorch = pytest.mark.skipif(not HAS_SNNTORCH, reason="snntorch is not installed")
needs_norse = pytest.mark.skipif(not HAS_NORSE, reason="norse is not installed")


# -- models of the three frameworks ----------------------------------------------------------------
def jelly_model(arch, soft=False, decay_input=True):
    vr = None if soft else 0.0
    lif = lambda tau: neuron.LIFNode(tau=tau, decay_input=decay_input, v_threshold=1.0, v_reset=vr)  # noqa: E731
    torch.manual_seed(1)
    if arch == "dense":
        layers = [nn.Linear(16, 24), lif(2.0), nn.Linear(24, 12), neuron.IFNode(v_threshold=1.0, v_reset=vr),
                  nn.Linear(12, 5), neuron.ParametricLIFNode(init_tau=3.0, decay_input=decay_input, v_reset=vr)]
    else:
        layers = [nn.Conv2d(1, 6, 3, padding=1), lif(2.0), nn.AvgPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                  lif(4.0), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32, 5), lif(3.0)]
    if soft:  # Norse runs the soft reset in LIFBoxCell only: no IFNode
        layers = [neuron.LIFNode(tau=2.5, decay_input=decay_input, v_reset=None) if isinstance(m, neuron.IFNode)
                  else m for m in layers]
    return P._boost(nn.Sequential(*layers), 8.0 if decay_input else 3.0)


def snntorch_model(arch):
    import snntorch as snn

    torch.manual_seed(1)
    leaky = lambda beta: snn.Leaky(beta=beta, threshold=1.0, reset_mechanism="zero", init_hidden=True)  # noqa: E731
    if arch == "dense":
        layers = [nn.Linear(16, 24), leaky(0.7), nn.Linear(24, 12), leaky(1.0), nn.Linear(12, 5), leaky(0.8)]
    else:
        layers = [nn.Conv2d(1, 6, 3, padding=1), leaky(0.6), nn.AvgPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                  leaky(0.9), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32, 5), leaky(0.5)]
    return P._boost(nn.Sequential(*layers), 4.0)


def norse_model(arch, soft=False):
    import norse.torch as norse
    from norse.torch.functional.reset import reset_subtract, reset_value

    torch.manual_seed(1)
    box = lambda inv: norse.LIFBoxCell(norse.LIFBoxParameters(  # noqa: E731
        tau_mem_inv=torch.tensor(inv), v_th=torch.tensor(0.5), reset_method=reset_subtract if soft else reset_value))
    if arch == "dense":
        third = box(300.0) if soft else norse.IAFCell(norse.IAFParameters(v_th=torch.tensor(0.8)))
        layers = [nn.Linear(16, 24), box(250.0), nn.Linear(24, 12), third, nn.Linear(12, 5), box(200.0)]
    else:
        layers = [nn.Conv2d(1, 6, 3, padding=1), box(250.0), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(96, 5),
                  box(400.0)]
    return P._boost(norse.SequentialState(*layers), 6.0)


MAKERS = {"spikingjelly": jelly_model, "snntorch": snntorch_model, "norse": norse_model}
DIRECTIONS = [(a, b) for a in MAKERS for b in MAKERS if a != b]


def roundtrip(model, target, arch, tmp_path):
    x = P.inputs(arch)
    want = P.recorded_spikes(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.export_nir(model, x[0], tmp_path / "m.nir")
        back = sf.import_nir(tmp_path / "m.nir", framework=target)
    return P.recorded_spikes(back, x), want, back


# -- NIR: six directions, dense and conv ---------------------------------------------------------------
@pytest.mark.parametrize("arch", ["dense", "conv"])
@pytest.mark.parametrize("source,target", DIRECTIONS, ids=[f"{a}->{b}" for a, b in DIRECTIONS])
def test_nir_round_trip_same_spikes(source, target, arch, tmp_path):
    for name in (source, target):
        if not {"snntorch": HAS_SNNTORCH, "norse": HAS_NORSE}.get(name, True):
            pytest.skip(f"{name} is not installed")
    got, want, back = roundtrip(MAKERS[source](arch), target, arch, tmp_path)
    P.same_spikes(got, want)
    assert sf.get_adapter(back).name == target


@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("arch", ["dense", "conv"])
def test_both_resets_and_decay_input_round_trip_through_spikingjelly(arch, decay_input, tmp_path):
    for soft in (False, True):
        model = jelly_model(arch, soft=soft, decay_input=decay_input)
        got, want, back = roundtrip(model, "spikingjelly", arch, tmp_path)
        P.same_spikes(got, want)
        lifs = [m for m in back.modules() if isinstance(m, neuron.LIFNode)]
        assert lifs and all((m.v_reset is None) == soft for m in lifs)
        assert all(m.decay_input == decay_input for m in lifs)  # r = tau without decay_input: no Gain needed
        assert not any(isinstance(m, Gain) for m in back.modules())


@needs_norse
@pytest.mark.parametrize("arch", ["dense", "conv"])
def test_soft_reset_round_trips_with_norse_both_ways(arch, tmp_path):
    got, want, back = roundtrip(jelly_model(arch, soft=True), "norse", arch, tmp_path)
    P.same_spikes(got, want)
    got, want, back = roundtrip(norse_model(arch, soft=True), "spikingjelly", arch, tmp_path)
    P.same_spikes(got, want)
    assert all(m.v_reset is None for m in back.modules() if isinstance(m, neuron.LIFNode))


@needs_snntorch
def test_resets_the_target_cannot_run_are_refused_by_name(tmp_path):
    x = P.inputs("dense")
    graph = sf.export_nir(jelly_model("dense", soft=True), x[0])
    with pytest.raises(UnsupportedLayerError, match="subtract_immediate.*cannot run exactly in snnTorch"):
        sf.import_nir(graph, framework="snntorch")
    import snntorch as snn

    sub = nn.Sequential(nn.Linear(16, 4), snn.Leaky(beta=0.5, reset_mechanism="subtract", init_hidden=True))
    with pytest.raises(UnsupportedLayerError, match="'subtract' cannot run exactly in SpikingJelly"):
        sf.import_nir(sf.export_nir(sub, x[0]), framework="spikingjelly")


def test_hand_written_graph_runs_nir_equations_in_spikingjelly():
    nir = P.nir_mod()
    import numpy as np

    rng = np.random.default_rng(0)
    dt = 1e-3
    nodes = {"in": nir.Input(input_type={"input": np.array([16])}),
             "fc1": nir.Affine(weight=rng.normal(0, 1, (12, 16)).astype(np.float32),
                               bias=(rng.normal(0, 1, 12) * 0.1).astype(np.float32)),
             "lif": nir.LIF(tau=np.full(12, 4e-3), r=np.full(12, 1.5), v_leak=np.full(12, 0.1),
                            v_threshold=np.full(12, 0.4), v_reset=np.full(12, 0.1)),
             "fc2": nir.Linear(weight=rng.normal(0, 1, (5, 12)).astype(np.float32)),
             "if": nir.IF(r=np.full(5, 1.0 / dt), v_threshold=np.full(5, 0.9), v_reset=np.zeros(5)),
             "out": nir.Output(output_type={"output": np.array([5])})}
    order = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)
    model = sf.import_nir(graph, framework="spikingjelly", dt=dt)
    lif = next(m for m in model.modules() if isinstance(m, neuron.LIFNode))
    assert lif.tau == pytest.approx(4.0) and lif.v_reset == pytest.approx(0.1) and lif.decay_input
    x = P.inputs("dense")
    P.same_spikes(P.recorded_spikes(model, x), P.euler(graph, x, dt))


def test_per_neuron_parameters_spikingjelly_cannot_hold_are_refused():
    nir = P.nir_mod()
    import numpy as np

    node = nir.LIF(tau=np.array([2e-3, 3e-3]), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2),
                   v_reset=np.zeros(2))
    with pytest.raises(UnsupportedLayerError, match=r"LIF.tau varies across neurons.*framework='norse'"):
        sf.get_adapter(nn.Module(), "spikingjelly").neuron_from_nir(node, dt=1e-3)
    cuba = nir.CubaLIF(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2),
                       v_threshold=np.ones(2), v_reset=np.zeros(2), w_in=np.ones(2))
    with pytest.raises(UnsupportedLayerError, match="NIR CubaLIF has no SpikingJelly neuron"):
        sf.get_adapter(nn.Module(), "spikingjelly").neuron_from_nir(cuba, dt=1e-3)


# -- single- and multi-step models -------------------------------------------------------------------
def multi_step_model():
    torch.manual_seed(2)
    net = nn.Sequential(
        layer.SeqToANNContainer(nn.Conv2d(1, 6, 3, padding=1)), neuron.LIFNode(tau=2.0, step_mode="m"),
        layer.AvgPool2d(2, step_mode="m"), layer.Flatten(step_mode="m"), layer.Linear(96, 5, step_mode="m"),
        neuron.IFNode(step_mode="m"))
    return P._boost(net, 3.0)


def test_multi_step_model_is_stepped_with_its_own_spikes_and_modes_restored(tmp_path):
    net = multi_step_model()
    x = P.inputs("conv")
    functional.reset_net(net)
    with torch.no_grad():
        own = net(x)  # SpikingJelly's multi-step forward over [T, B, ...]
    functional.reset_net(net)
    out = sf.run(net, x)
    assert torch.equal(out, own) and 0 < int(own.sum()) < own.numel()
    assert [m.step_mode for m in net.modules() if hasattr(m, "step_mode")] == ["m"] * 5
    assert "forward" not in net[0].__dict__
    got, want, back = roundtrip(net, "spikingjelly", "conv", tmp_path)  # traced one step at a time
    P.same_spikes(got, want)
    assert [tuple(s.shape) for s in want] == [(60, 2, 6, 8, 8), (60, 2, 5)]


class OwnForward(nn.Module):
    """A multi-step model with its own forward (the time-mean readout of SpikingJelly's examples)."""

    def __init__(self):
        super().__init__()
        self.fc = layer.Linear(16, 5, step_mode="m")
        self.lif = neuron.LIFNode(tau=2.0, step_mode="m")

    def forward(self, x_seq):
        return self.lif(self.fc(x_seq))


def test_multi_step_model_with_own_forward_runs_and_tracing_says_what_to_do():
    net = OwnForward()
    x = torch.rand(8, 3, 16)
    out = sf.run(net, x)
    assert out.shape == (8, 3, 5)
    with pytest.raises(UnsupportedLayerError, match=r"OwnForward cannot be traced.*set_step_mode\(model, 's'\)"):
        trace(net, x[0])


# -- the pipeline on SpikingJelly models ---------------------------------------------------------------
def _data():
    g = torch.Generator().manual_seed(4)
    return [(torch.rand(16, 16, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(3)]


def test_pipeline_wrap_fit_prune_freeze_evaluate_check_export_import(tmp_path):
    model = jelly_model("dense")
    data, T = _data(), 8
    sf.wrap(model, m=4, bits=4)
    sf.fit(model, data, epochs=1, num_steps=T, progress=False)
    sf.prune(model, data, amount=0.25, num_steps=T, progress=False)
    assert model[0].out_features == 18 and model[2].in_features == 18
    sf.freeze(model)
    assert all(layer.weight.unique().numel() <= 4 for layer in sf.compressed_layers(model))
    report = sf.evaluate(model, data, num_steps=T, progress=False)
    assert report.samples == 48 and {n.name for n in report.neurons} == {"1", "3", "5"}
    chip = sf.HardwareProfile("if-chip", distinct_weights_per_neuron=4, weight_bits=4, neuron_models=("IF",))
    checked = sf.check(model, chip, sample=data[0][0][:1])
    assert [(v.rule, v.layer) for v in checked.violations] == [("neuron_model", "1"), ("neuron_model", "5")]
    assert "IFNode is IF" in checked.violations[0].hint
    x = P.inputs("dense")
    want = P.recorded_spikes(model, x)
    sf.export_nir(model, x[0], tmp_path / "c.nir")
    back = sf.import_nir(tmp_path / "c.nir", framework="spikingjelly")
    assert all(layer.frozen for layer in sf.compressed_layers(back))
    assert all(torch.equal(a, b) for a, b in zip(P.recorded_spikes(back, x), want))


def test_prune_keeps_shared_parameters_and_the_network_runs():
    model = jelly_model("conv")
    data = [(torch.rand(8, 1, 8, 8) * 2, torch.randint(0, 5, (8,))) for _ in range(2)]
    sf.prune(model, data, amount=0.5, num_steps=6, progress=False)
    assert model[0].out_channels == 3 and model[3].in_channels == 3 and model[1].tau == 2.0
    rates = [float(s.mean()) for s in P.recorded_spikes(model, P.inputs("conv"))]
    assert len(rates) == 3 and any(r > 0 for r in rates)


def test_pre_reset_membrane_with_the_soft_reset_only():
    model = jelly_model("dense", soft=True)
    with Recorder(model, pre_reset=True, membrane=True) as rec:
        sf.run(model, torch.rand(5, 2, 16))
    pre, post, spk = rec.pre_reset_membranes["1"], rec.membranes["1"], rec.spikes["1"]
    assert torch.equal(pre, post + spk * 1.0) and bool((pre[spk > 0] >= 1.0).all())
    with Recorder(jelly_model("dense"), pre_reset=True) as rec:
        sf.run(rec.model, torch.rand(5, 2, 16))
    assert rec.pre_reset_membranes == {}


def test_registered_by_entry_point_and_offered_to_import_nir_and_the_cli(tmp_path):
    eps = {ep.name: ep.value for ep in entry_points(group="snn_spikefit.adapters")}
    assert eps.get("spikingjelly") == "snn_spikefit.adapters.spikingjelly:SpikingJellyAdapter"
    from snn_spikefit.adapter import nir_frameworks
    from snn_spikefit.cli import main

    assert "spikingjelly" in nir_frameworks()
    model = jelly_model("dense")
    sf.export_nir(model, torch.rand(1, 16), tmp_path / "m.nir")
    with redirect_stdout(io.StringIO()) as out:
        rc = main(["check", str(tmp_path / "m.nir"), "--framework", "spikingjelly", "--hardware", "loihi", "--json"])
    assert rc in (0, 1) and "violations" in json.loads(out.getvalue())
    with redirect_stdout(io.StringIO()):
        rc = main(["export", str(tmp_path / "m.nir"), "--framework", "spikingjelly", "--out",
                   str(tmp_path / "again.nir"), "--input-shape", "16"])
    assert rc == 0
    x = P.inputs("dense")
    again = sf.import_nir(tmp_path / "again.nir", framework="spikingjelly")
    assert all(torch.equal(a, b) for a, b in zip(P.recorded_spikes(again, x), P.recorded_spikes(model, x)))


@pytest.mark.slow  # a fresh interpreter
def test_spikingjelly_is_imported_only_by_models_that_use_it():
    import subprocess
    import sys

    script = ("import sys, torch\nimport snn_spikefit as sf\nfrom torch import nn\n"
              "assert 'spikingjelly' in sf.list_adapters()\n"
              "assert sf.get_adapter(nn.Sequential(nn.Linear(2, 2))).name == 'torch'\n"
              "sf.run(nn.Sequential(nn.Linear(2, 2)), torch.rand(3, 1, 2))\n"
              "print(sorted(m for m in sys.modules if m.startswith('spikingjelly')))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]"]


# -- the model zoo, compressed end to end --------------------------------------------------------------
def _compress_zoo_conv(step_mode):
    from snn_spikefit.data import load_data
    from snn_spikefit.data.datasets import digits, make_loader
    from snn_spikefit.zoo.spikingjelly import conv_snn

    torch.manual_seed(0)
    model = conv_snn(1, 10, 8, (8, 16), threshold=0.5, step_mode=step_mode)
    train, _ = digits()
    sf.fit(model, make_loader(torch.utils.data.Subset(train, range(768)), 32, shuffle=True), epochs=6,
           num_steps=4, lr=5e-3, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sf.compress(model, load_data("digits", limit=192), hardware="loihi", m=4, bits=4, epochs=1,
                           prune=0.25, progress=False)


@pytest.mark.slow
def test_zoo_conv_snn_compresses_end_to_end_in_both_step_modes():
    single, multi = _compress_zoo_conv("s"), _compress_zoo_conv("m")
    for result in (single, multi):
        assert [(r["channels_before"], r["channels_after"]) for r in result.layers] == [(8, 6), (16, 12), (10, 10)]
        layers = sf.compressed_layers(result.model)
        assert all(layer.frozen and layer.weight.unique().numel() <= 4 for layer in layers)
        # digits: 10 classes, chance is 10 %
        assert result.before.accuracy > 60.0 and result.after.accuracy > 60.0, (result.before, result.after)
        back = sf.import_nir(result.graph, framework="spikingjelly")
        x = result.sample.unsqueeze(0).expand(6, *result.sample.shape)
        assert torch.equal(sf.run(back, x), sf.run(result.model, x))
    # a multi-step model is stepped: the same arithmetic, so the same training and the same integers
    assert multi.after.accuracy == single.after.accuracy
    one, other = single.model.state_dict(), multi.model.state_dict()
    assert one.keys() == other.keys() and all(torch.equal(one[k], other[k]) for k in one)
    assert [m.step_mode for m in multi.model.modules() if hasattr(m, "step_mode")][:3] == ["m"] * 3


def test_distillation_reads_spikingjelly_membranes():
    from snn_spikefit import Distiller
    from snn_spikefit.zoo.spikingjelly import dense_snn

    teacher, student = dense_snn(16, 5, hidden=(12,)), dense_snn(16, 5, hidden=(12,))
    data = [(torch.rand(8, 16) * 3, torch.randint(0, 5, (8,))) for _ in range(2)]
    before = student[1].weight.detach().clone()
    losses = sf.fit(student, data, teacher=teacher, epochs=1, num_steps=4, progress=False)
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses)).all()
    assert not torch.equal(before, student[1].weight)
    assert [pair[0] for pair in Distiller(teacher, student).pairs] == ["2"]  # the LIFNode's membrane


def test_chip_checks_read_spikingjelly_dynamics():
    from snn_spikefit.zoo.spikingjelly import dense_snn

    adapter = sf.get_adapter(nn.Module(), "spikingjelly")
    assert adapter.neuron_dynamics(neuron.LIFNode(tau=4.0, v_reset=None)) == {
        "model": "LIF", "reset": "subtract", "threshold": 1.0, "membrane_decay": 0.75}
    assert adapter.neuron_dynamics(neuron.IFNode())["membrane_decay"] == 1.0
    assert adapter.neuron_dynamics(neuron.LIFNode(v_reset=-0.2)) is None  # leaks towards -0.2: not the core's form
    model = dense_snn(16, 5, hidden=(12,))
    sf.wrap(model, m=4, bits=4)
    assert sf.check(model, "loihi", sample=torch.rand(1, 16)).skipped == ()  # neuron_state checked, not skipped
    with pytest.raises(UnsupportedLayerError, match="'spikingjelly' cannot simulate chip-precision state"):
        adapter.attach_state_rule(model[2], None)


def test_post_training_compression_on_a_spikingjelly_model(tmp_path):
    model = jelly_model("dense")
    data, T = _data(), 8
    calib = torch.cat([x for x, _ in data])
    report = sf.compress_posttraining(model, calib, m=4, bits=4, sparsity=0.25, num_steps=T, progress=False)
    layers = sf.compressed_layers(model)
    assert layers and all(layer.frozen for layer in layers)
    assert all(layer.weight.unique().numel() <= 4 for layer in layers)  # zeros are one of the m values
    assert json.loads(report.to_json())
    x = P.inputs("dense")
    want = P.recorded_spikes(model, x)
    sf.export_nir(model, x[0], tmp_path / "p.nir")
    back = sf.import_nir(tmp_path / "p.nir", framework="spikingjelly")
    assert all(torch.equal(a, b) for a, b in zip(P.recorded_spikes(back, x), want))
