"""Producers and consumers of the interoperability matrix (tests/test_interop.py).

A producer gives ``(graph_or_path, reference)``: the NIR graph (or file) and a function that
returns the producing model's spikes for an input, one ``[T, B, ...]`` tensor per spiking layer.
A consumer turns a graph into a runnable model and returns the same spike list.
Recurrent producers (RLeaky/RSynaptic, LIFRecurrentCell, NIR graphs with cycles) are added as
more rows of PRODUCERS with ``arch="recurrent"``.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.trace import Recorder

STEPS = 60
DATA = Path(__file__).parent / "data"
F = np.float32


# -- models ------------------------------------------------------------------------------------
def snntorch_model(arch):
    import snntorch as snn

    torch.manual_seed(1)
    def leaky(beta):
        return snn.Leaky(beta=beta, threshold=1.0, reset_mechanism="zero", init_hidden=True)

    syn = snn.Synaptic(alpha=0.6, beta=0.8, threshold=1.0, reset_mechanism="zero", reset_delay=False,
                       init_hidden=True)
    if arch == "dense":
        layers = [nn.Linear(16, 24), leaky(0.7), nn.Linear(24, 12), syn, nn.Linear(12, 5), leaky(0.8)]
    elif arch == "recurrent":  # RLeaky's all-to-all recurrent Linear has a bias
        rec = snn.RLeaky(beta=0.8, linear_features=20, reset_mechanism="zero", reset_delay=False, init_hidden=True)
        layers = [nn.Linear(16, 20), rec, nn.Linear(20, 5), syn]
    else:
        layers = [nn.Conv2d(1, 6, 3, padding=1), leaky(0.6), nn.AvgPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                  leaky(0.9), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32, 5), syn]
    return _boost(nn.Sequential(*layers), 4.0)


def norse_model(arch):
    import norse.torch as norse

    torch.manual_seed(1)
    box = lambda: norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.tensor(250.0),  # noqa: E731
                                                          v_th=torch.tensor(0.5)))
    cuba = norse.LIFCell(norse.LIFParameters(tau_syn_inv=torch.tensor(200.0), tau_mem_inv=torch.tensor(300.0)))
    if arch == "dense":
        layers = [nn.Linear(16, 24), box(), nn.Linear(24, 12), cuba, nn.Linear(12, 5), box()]
    elif arch == "recurrent":  # input and recurrent weights without bias, owned by the cell
        model = norse.SequentialState(norse.LIFRecurrentCell(16, 20), nn.Linear(20, 5), norse.LIFCell())
        with torch.no_grad():
            model[0].recurrent_weights.mul_(3.0)
            model[1].weight.mul_(6.0)
        return model
    else:
        layers = [nn.Conv2d(1, 6, 3, padding=1), box(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(96, 5), cuba]
    return _boost(norse.SequentialState(*layers), 2.0)


def _boost(model, gain):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(gain)
    return model


def inputs(arch, batch=2):
    g = torch.Generator().manual_seed(3)
    shape = (STEPS, batch, 1, 8, 8) if arch == "conv" else (STEPS, batch, 16)
    return torch.rand(shape, generator=g) * 2


def recorded_spikes(model, x):
    with Recorder(model) as rec:
        sf.run(model, x)
    return list(rec.spikes.values())


# -- hand-written graphs and NIR's equations ------------------------------------------------------
def hand_graph(arch):
    """NIR graphs as a person writes them: no metadata, r = 1, rest at 0."""
    rng = np.random.default_rng(0)
    n = lambda *s: rng.normal(0, 1, s).astype(F)  # noqa: E731
    lif = lambda shape, tau: nir_mod().LIF(tau=np.full(shape, tau), r=np.ones(shape), v_leak=np.zeros(shape),  # noqa: E731
                                           v_threshold=np.full(shape, 0.3), v_reset=np.zeros(shape))
    nir = nir_mod()
    cuba = nir.CubaLIF(tau_syn=np.full(5, 5e-3), tau_mem=np.full(5, 4e-3), r=np.ones(5), v_leak=np.zeros(5),
                       v_threshold=np.full(5, 0.2), v_reset=np.zeros(5), w_in=np.ones(5))
    if arch == "dense":
        nodes = {"in": nir.Input(input_type={"input": np.array([16])}), "fc1": nir.Affine(weight=n(12, 16),
                 bias=n(12) * 0.1), "lif": lif((12,), 4e-3), "fc2": nir.Linear(weight=n(5, 12)), "cuba": cuba,
                 "out": nir.Output(output_type={"output": np.array([5])})}
    elif arch == "recurrent":  # lif <-> w_rec: an Affine, so its bias reaches lif from the first step on
        nodes = {"in": nir.Input(input_type={"input": np.array([16])}), "fc1": nir.Affine(weight=n(12, 16),
                 bias=n(12) * 0.1), "lif": lif((12,), 4e-3), "w_rec": nir.Affine(weight=n(12, 12) * 0.5,
                 bias=np.full(12, 1.0, F)), "fc2": nir.Linear(weight=n(5, 12)), "cuba": cuba,
                 "out": nir.Output(output_type={"output": np.array([5])})}
        chain = ["in", "fc1", "lif", "fc2", "cuba", "out"]
        edges = list(zip(chain[:-1], chain[1:])) + [("lif", "w_rec"), ("w_rec", "lif")]
        return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    else:
        nodes = {"in": nir.Input(input_type={"input": np.array([1, 8, 8])}),
                 "conv": nir.Conv2d(input_shape=(8, 8), weight=n(4, 1, 3, 3), stride=1, padding=1, dilation=1,
                                    groups=1, bias=n(4) * 0.1),
                 "lif": lif((4, 8, 8), 4e-3), "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]),
                                                                    stride=np.array([2, 2]), padding=np.array([0, 0])),
                 "flat": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0, end_dim=-1),
                 "fc": nir.Affine(weight=n(5, 64), bias=n(5) * 0.1), "cuba": cuba,
                 "out": nir.Output(output_type={"output": np.array([5])})}
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)


def nir_mod():
    import nir

    return nir


def euler(graph, x, dt):
    """NIR's equations for a chain graph, one forward-Euler step of dt per input step, float64."""
    nir = nir_mod()
    import torch.nn.functional as fn

    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    edges = set(graph.edges)
    rec = {a: b for a, b in edges if (b, a) in edges and isinstance(graph.nodes[b], (nir.Affine, nir.Linear))}
    nxt = {a: b for a, b in graph.edges if b not in rec.values() and a not in rec.values()}
    order, key = [], next(k for k, v in graph.nodes.items() if isinstance(v, nir.Input))
    while not isinstance(graph.nodes[nxt[key]], nir.Output):
        key = nxt[key]
        order.append(key)
    state, spikes = {}, {}
    for xt in x.double():
        h = xt
        for k in order:
            node = graph.nodes[k]
            if isinstance(node, (nir.Affine, nir.Linear)):
                h = h @ t(node.weight).T + (t(node.bias) if isinstance(node, nir.Affine) else 0)
            elif isinstance(node, nir.Conv2d):
                pair = lambda v: tuple(int(i) for i in np.broadcast_to(np.asarray(v), (2,)))  # noqa: E731
                h = fn.conv2d(h, t(node.weight), t(node.bias), stride=pair(node.stride), padding=pair(node.padding))
            elif isinstance(node, nir.AvgPool2d):
                h = fn.avg_pool2d(h, 2)
            elif isinstance(node, nir.SumPool2d):
                h = fn.avg_pool2d(h, 2) * 4
            elif isinstance(node, nir.IF):
                v = state.get(k, torch.zeros_like(h))
                v = v + dt * t(node.r) * h
                h = (v > t(node.v_threshold)).double()
                state[k] = torch.where(h > 0, t(node.v_reset), v)
                spikes.setdefault(k, []).append(h)
            elif isinstance(node, nir.Flatten):
                h = h.flatten(1)
            elif isinstance(node, nir.LIF):  # state starts at rest, v = v_leak (snn_spikefit.nir.common)
                if k in rec:  # the recurrent weight sees the previous step's spikes (zeros at the first step)
                    w = graph.nodes[rec[k]]
                    prev = spikes[k][-1] if k in spikes else torch.zeros_like(h)
                    h = h + prev @ t(w.weight).T + (t(w.bias) if isinstance(w, nir.Affine) else 0)
                v = state.get(k, torch.zeros_like(h) + t(node.v_leak))
                v = v + dt / t(node.tau) * (t(node.v_leak) - v + t(node.r) * h)
                h = (v > t(node.v_threshold)).double()
                state[k] = torch.where(h > 0, t(node.v_reset), v)
                spikes.setdefault(k, []).append(h)
            elif isinstance(node, nir.CubaLIF):
                i, v = state.get(k, (torch.zeros_like(h), torch.zeros_like(h)))
                i = i + dt / t(node.tau_syn) * (-i + t(node.w_in) * h)
                v = v + dt / t(node.tau_mem) * (t(node.v_leak) - v + t(node.r) * i)
                h = (v > t(node.v_threshold)).double()
                state[k] = (i, torch.where(h > 0, t(node.v_reset), v))
                spikes.setdefault(k, []).append(h)
    return [torch.stack(s).float() for s in spikes.values()]


# -- stock producers ----------------------------------------------------------------------------------
def snntorch_per_module(model, sample):
    """snnTorch's per-module exporter on each layer, chained (its whole-model export fails on nir 1.0.8)."""
    nir = nir_mod()
    from snntorch.export_nir import _extract_snntorch_module

    nodes = {"input": nir.Input(input_type={"input": np.array(sample.shape[1:])})}
    for i, m in enumerate(model):
        nodes[str(i)] = _extract_snntorch_module(m)
    x = sample
    with torch.no_grad():
        for m in model:
            x = m(x)
    model.apply(lambda m: m.reset_mem() if hasattr(m, "reset_mem") else None)
    nodes["output"] = nir.Output(output_type={"output": np.array(x.shape[1:])})
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)


# -- consumers -------------------------------------------------------------------------------------------
def ours(framework):
    def consume(src, x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = sf.import_nir(src, framework)
        return recorded_spikes(model, x)

    return consume


def _per_sample(run, x):
    """Stock importers' models take one sample at a time (their Flatten flattens the batch)."""
    per = [run(x[:, b:b + 1]) for b in range(x.shape[1])]
    return [torch.cat([p[i] for p in per], 1) for i in range(len(per[0]))]


def _hooked(model, is_spiking, step):
    def run(xs):
        order, spikes = [], {}
        def hook(mod, _inputs, out, name):
            spikes.setdefault(name, []).append(out[0] if isinstance(out, tuple) else out)
            if name not in order:
                order.append(name)

        hooks = [m.register_forward_hook(lambda mod, i, o, n=n: hook(mod, i, o, n))
                 for n, m in model.named_modules() if is_spiking(m)]
        try:
            step(xs)
        finally:
            for h in hooks:
                h.remove()
        return [torch.stack(spikes[n]).reshape(xs.shape[0], 1, -1) for n in order]

    return run


def _read(src):
    """A graph of its own for a stock importer (snnTorch's rewrites cycles of the graph it is given in place)."""
    nir = nir_mod()
    return copy.deepcopy(src) if isinstance(src, nir.NIRGraph) else nir.read(src)


def stock_snntorch(src, x):
    import snntorch as snn
    from snntorch.import_nir import import_from_nir

    model = import_from_nir(_read(src))

    def step(xs):  # nirtorch's GraphModule returns (output, state); the state carries recurrent edges
        model.apply(lambda m: m.reset_mem() if isinstance(m, snn.SpikingNeuron) else None)
        state = None
        for xt in xs:
            _, state = model(xt, state)

    return _per_sample(_hooked(model, lambda m: isinstance(m, snn.SpikingNeuron), step), x)


def stock_norse(src, x, **kwargs):
    import norse.torch as norse

    model = norse.from_nir(_read(src), **kwargs)

    def step(xs):
        state = None
        for xt in xs:
            _, state = model(xt, state)

    spiking = (norse.LIFBoxCell, norse.LIFCell, norse.IAFCell)
    return _per_sample(_hooked(model, lambda m: isinstance(m, spiking), step), x)


def same_spikes(got, want):
    """Same spikes in every spiking layer at every step; each layer both fires and stays silent."""
    assert len(got) == len(want) >= 2, f"{len(got)} spiking layers, expected {len(want)}"
    for g, w in zip(got, want):
        g = g.reshape(w.shape)
        assert w.shape[0] == STEPS and 0 < int(w.sum()) < w.numel(), f"reference fires {int(w.sum())} of {w.numel()}"
        assert torch.equal(g, w), f"{int((g != w).sum())} of {w.numel()} spikes differ"
