"""Compile a NIR graph we wrote into a Lava program: what each Dense and LIF process is given.

The graph must be a chain ``Input -> (linear nodes -> neuron) * L -> Output``; each run of linear
nodes becomes one ``Dense`` (convolutions and pooling unrolled into the synapses a chip holds, see
:mod:`.linear_ops`), each neuron a ``LIFReset``. Equations (snnTorch's, as our importer runs a NIR
LIF/IF/CubaLIF; ``g`` the input gain ``dt r / tau``, ``a = 1 - dt / tau``)::

    u[t] = (1 - du) u[t-1] + g (W x[t] + b)   du = 1 (LIF, IF) or dt / tau_syn (CubaLIF)
    v[t] = a v[t-1] + u[t]                      Lava: v (1 - dv) + u + bias, dv = 1 - a
    s[t] = v[t] > thr; v[t] = 0 where s[t]      (subtract reset: v[t+1] -= thr)

**float** programs these numbers. **fixed** programs Loihi's integers: weights ``2 * code`` (Lava's
bit-accurate Dense drops the last bit of mixed-sign weights) with exponent ``we``, graded inputs
``x / q`` (``q = 2**-input_bits``), so one unit of a Dense output is ``factor * q / 2**(we + 1)``;
``vth = round(thr / unit)``, ``bias_mant << bias_exp = round(64 b / unit)``,
``dv = round(4096 dt / tau)``, ``du = 4095`` (no current memory) or ``round(4096 dt/tau_syn) - 1``.
``we`` is the largest in -8..7 that keeps ``|u| = |a| << 6`` under 2**23 and ``vth`` under 2**17.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import nir
import numpy as np

from .linear_ops import LINEAR_NODES, affine_block

__all__ = ["LavaProgram", "LavaLayer", "compile_graph", "LavaRefusal", "NEURON_NODES"]

NEURON_NODES = (nir.LIF, nir.IF, nir.CubaLIF)
RESET_KEY = "spikefit.reset_mechanism"
DT_KEY = "spikefit.dt"
V_MAX, VTH_MAX, BIAS_MANT_MAX = 2 ** 23, 2 ** 17 - 1, 4095


class LavaRefusal(ValueError):
    """The graph holds something Lava cannot run exactly (the message names it and why)."""


@dataclass
class LavaLayer:
    """One ``Dense -> LIFReset`` pair, in float and (when possible) fixed point."""

    name: str                      # the NIR neuron node
    shape: tuple[int, ...]         # the neuron node's shape
    reset: str                     # "zero" or "subtract"
    weight: np.ndarray             # float [n_out, n_in]: g * W
    bias: np.ndarray               # float [n_out]: g * b
    du: float
    dv: float
    thr: float
    codes: np.ndarray | None = None
    factor: float | None = None    # float weight == factor * codes (g folded in)
    why_not_fixed: str | None = None
    fixed: dict = field(default_factory=dict)   # weights, weight_exp, du, dv, vth, bias_mant, bias_exp


@dataclass
class LavaProgram:
    layers: list[LavaLayer]
    in_shape: tuple[int, ...]
    dt: float
    input_bits: int = 8

    def arrays(self, mode: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The ``.npz`` content for :mod:`.lava_worker`: ``inputs [N, T, n_in]`` (ints for fixed)."""
        n, t = inputs.shape[:2]
        data = inputs.reshape(n * t, -1).T
        out, layers = {"input": data.astype(np.int32 if mode == "fixed" else np.float64)}, []
        graded = not np.isin(inputs, (0, 1)).all()
        for k, layer in enumerate(self.layers):
            bits = (24 if graded else 0) if k == 0 else 0
            if mode == "fixed":
                f = layer.fixed
                out[f"L{k}.weights"], out[f"L{k}.bias_mant"] = f["weights"], f["bias_mant"]
                out[f"L{k}.bias_exp"] = f["bias_exp"]
                layers.append(dict(weight_exp=f["weight_exp"], num_message_bits=bits, du=f["du"], dv=f["dv"],
                                   vth=f["vth"], reset=layer.reset))
            else:
                out[f"L{k}.weights"], out[f"L{k}.bias_mant"] = layer.weight, layer.bias
                out[f"L{k}.bias_exp"] = np.zeros_like(layer.bias)
                layers.append(dict(weight_exp=0, num_message_bits=bits, du=layer.du, dv=layer.dv, vth=layer.thr,
                                   reset=layer.reset))
        steps = n * t + len(self.layers) + 1
        out["meta"] = np.array(json.dumps(dict(mode=mode, period=t, steps=steps, layers=layers)))
        return out

    def why_not_fixed(self) -> str | None:
        for layer in self.layers:
            if layer.why_not_fixed:
                return f"layer {layer.name!r}: {layer.why_not_fixed}"
        return None


def _uniform(value, what: str, name: str) -> float:
    arr = np.asarray(value, np.float64).reshape(-1)
    if arr.size == 0 or not np.all(arr == arr[0]):
        raise LavaRefusal(f"layer {name!r}: {what} differs between neurons ({np.unique(arr)[:4]}...); Lava's "
                          f"LIF takes one value per process")
    return float(arr[0])


def _neuron(name: str, node, dt: float) -> tuple[float, float, float, float, str]:
    """``(gain, du, dv, thr, reset)`` of a NIR neuron, float32 like our importer."""
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    reset = str((node.metadata or {}).get(RESET_KEY, "zero"))
    if reset not in ("zero", "subtract"):
        raise LavaRefusal(f"layer {name!r} ({type(node).__name__}) resets by {reset!r}; Lava's LIF resets v to 0 "
                          f"(and our subtract-reset process subtracts the threshold); no Lava process runs {reset!r}")
    rest = np.asarray(getattr(node, "v_leak", 0.0))
    if np.any(rest != 0) or np.any(np.asarray(node.v_reset) != 0):
        raise LavaRefusal(f"layer {name!r}: v_leak / v_reset other than 0; Lava's LIF rests and resets at 0 "
                          f"(a constant bias would express v_leak, not done here)")
    thr = f32(_uniform(node.v_threshold, "v_threshold", name))
    if isinstance(node, nir.IF):
        return f32(_uniform(np.asarray(node.r) * dt, "r", name)), 1.0, 0.0, thr, reset
    if isinstance(node, nir.LIF):
        tau = _uniform(node.tau, "tau", name)
        gain = f32(_uniform(dt * np.asarray(node.r, np.float64) / tau, "r", name))
        return gain, 1.0, 1.0 - f32(1.0 - dt / tau), thr, reset
    tau_syn, tau_mem = _uniform(node.tau_syn, "tau_syn", name), _uniform(node.tau_mem, "tau_mem", name)
    g = (dt * np.asarray(node.r, np.float64) / tau_mem) * (dt * np.asarray(node.w_in, np.float64) / tau_syn)
    return (f32(_uniform(g, "r * w_in", name)), 1.0 - f32(1.0 - dt / tau_syn), 1.0 - f32(1.0 - dt / tau_mem),
            thr, reset)


def _chain(graph: nir.NIRGraph) -> list[tuple[str, object]]:
    """The nodes from Input to Output in order; refuses anything but a chain."""
    nodes, succ = graph.nodes, {}
    for a, b in graph.edges:
        if a in succ:
            raise LavaRefusal(f"node {a!r} feeds {succ[a]!r} and {b!r}; the Lava target runs chains only")
        succ[a] = b
    start = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    if len(start) != 1:
        raise LavaRefusal(f"the graph has {len(start)} Input nodes; the Lava target needs one")
    order, key = [], start[0]
    while key in succ:
        key = succ[key]
        if len(order) > len(nodes):
            raise LavaRefusal("the graph has a cycle; the Lava target runs feed-forward chains only")
        order.append((key, nodes[key]))
    if not order or not isinstance(order[-1][1], nir.Output):
        raise LavaRefusal("the chain from Input does not end in the Output node")
    return order[:-1]


def graph_dt(graph: nir.NIRGraph) -> float:
    """The time step ``graph`` was exported with (metadata ``spikefit.dt``; 1 ms when absent)."""
    return float((graph.metadata or {}).get(DT_KEY, 1e-3))


def graph_chain(graph: nir.NIRGraph, refusal: type[Exception], target: str) -> tuple[float, tuple[int, ...], list]:
    """``(dt, input shape, chain)`` of ``graph`` for a target: its refusals are ``refusal`` naming ``target``."""
    dt = graph_dt(graph)
    start = next((n for n in graph.nodes.values() if isinstance(n, nir.Input)), None)
    if start is None:
        raise refusal("the graph has no Input node")
    in_shape = tuple(int(s) for s in next(iter(start.input_type.values())))
    try:
        chain = _chain(graph)
    except LavaRefusal as exc:
        raise refusal(str(exc).replace("Lava", target)) from None
    return dt, in_shape, chain


def compile_graph(graph: nir.NIRGraph, *, input_bits: int = 8) -> LavaProgram:
    """The Lava program of ``graph`` (float always; fixed point where every layer allows it)."""
    dt, in_shape, chain = graph_chain(graph, LavaRefusal, "Lava")
    layers, pending, shape = [], [], in_shape
    for name, node in chain:
        if isinstance(node, LINEAR_NODES):
            pending.append(node)
            continue
        if not isinstance(node, NEURON_NODES):
            raise LavaRefusal(f"layer {name!r} is a NIR {type(node).__name__}; the Lava target maps "
                              f"{[c.__name__ for c in LINEAR_NODES + NEURON_NODES]}")
        if not pending:
            raise LavaRefusal(f"neuron layer {name!r} follows another neuron directly; put a layer between")
        block = affine_block(pending, shape)
        gain, du, dv, thr, reset = _neuron(name, node, dt)
        if isinstance(node, nir.CubaLIF) and np.any(block.bias != 0):
            raise LavaRefusal(f"layer {name!r}: a bias before a CubaLIF enters its current; Lava's LIF adds "
                              f"its bias to v, so it would not decay with the current")
        layer = LavaLayer(name, block.out_shape, reset, gain * block.weight, gain * block.bias, du, dv, thr)
        if block.codes is not None:
            layer.codes, layer.factor = block.codes, block.factor * gain
        layer.why_not_fixed = block.why_not_integer
        layers.append(layer)
        pending, shape = [], block.out_shape
    if pending:
        raise LavaRefusal(f"the graph ends in {type(pending[-1]).__name__} after the last neuron layer; Lava "
                          f"reads spikes: end the network with a spiking layer")
    if not layers:
        raise LavaRefusal("the graph has no neuron layer")
    program = LavaProgram(layers, in_shape, dt, input_bits)
    for k, layer in enumerate(layers):
        if layer.codes is not None:
            _fixed_point(layer, 2.0 ** -input_bits if k == 0 else 1.0, 2 ** input_bits if k == 0 else 1)
    return program


def _fixed_point(layer: LavaLayer, quantum: float, max_in: int) -> None:
    """Fill ``layer.fixed`` (or ``why_not_fixed``) with Loihi's integers for this layer."""
    w2 = 2 * layer.codes
    if np.abs(w2).max(initial=0) > 254:
        layer.why_not_fixed = f"codes up to {np.abs(layer.codes).max()} exceed Loihi's 8-bit weights (|code| <= 127)"
        return
    # the largest |u|: one step's input, summed over the current's memory (1 / du steps) for a CubaLIF
    reach = float(np.abs(w2).sum(1).max(initial=1)) * max_in * 64 / layer.du
    bias_v = lambda unit: np.rint(layer.bias / unit * 64)  # noqa: E731
    for we in range(7, -9, -1):
        unit = layer.factor * quantum / 2.0 ** (we + 1)
        vth = int(np.rint(layer.thr / unit))
        bv = bias_v(unit)
        if reach * 2.0 ** we < V_MAX and 0 <= vth <= VTH_MAX and np.abs(bv).max(initial=0) < BIAS_MANT_MAX * 2 ** 7:
            break
    else:
        layer.why_not_fixed = f"no weight exponent in -8..7 fits threshold {layer.thr} in 17 bits and |u| in 24 bits"
        return
    exp = np.zeros(bv.shape, np.int64)
    while np.any(np.abs(np.rint(bv / 2.0 ** exp)) > BIAS_MANT_MAX):
        exp += np.abs(np.rint(bv / 2.0 ** exp)) > BIAS_MANT_MAX
    dv = int(np.rint(layer.dv * 4096))
    du = 4095 if layer.du == 1.0 else int(np.rint(layer.du * 4096)) - 1
    if not (0 <= dv <= 4095 and 0 <= du <= 4095):
        layer.why_not_fixed = f"decays du={du}, dv={dv} outside Loihi's 12 bits"
        return
    layer.fixed = dict(weights=w2.astype(np.int32), weight_exp=we, du=du, dv=dv, vth=vth,
                       bias_mant=np.rint(bv / 2.0 ** exp).astype(np.int32), bias_exp=exp.astype(np.int32),
                       unit=unit)
