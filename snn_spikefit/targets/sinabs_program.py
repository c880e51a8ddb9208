"""Compile a NIR graph we wrote into sinabs layers for Speck (SynSense DYNAP-CNN), as plain arrays.

The chain ``Input -> (Conv2d | Linear | AvgPool2d | SumPool2d | Flatten | Scale)* -> IF`` repeated
becomes ``torch.nn.Conv2d`` / ``Linear`` **with our integer codes as the weights**, sinabs
``SumPool2d`` for either pooling, ``Flatten``, and sinabs ``IAFSqueeze`` neurons configured to
be ours exactly: one spike a step (``SingleSpike``; ``from_nir`` would give ``MultiSpike``), no
membrane clip (``min_v_mem=None``; ``from_nir`` clips at ``-thr``), reset by subtraction
(``MembraneSubtract``, snnTorch's ``subtract``) or to zero (``MembraneReset``, snnTorch's
``zero``). What our side multiplies by (the codebook scale, ``1 / k**2`` of an average pool, a
uniform Scale, the IF gain) is folded into the threshold and the bias: the device's membrane is
ours divided by that factor; the biases must then be integers (Speck's biases are integers in the
weight scale: ``sf.round_biases`` puts a frozen model's biases on its weight grid; others are
refused). snnTorch spikes when ``mem > thr``, sinabs when ``v >= thr``: the
device threshold is the next float above ``thr / factor``. Speck has no leak: a LIF (beta < 1)
is refused. numpy and nir only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import nir
import numpy as np

from .lava_program import RESET_KEY, graph_chain
from .linear_ops import LINEAR_NODES, _apply, _pair, affine_block, integer_weights

__all__ = ["SinabsProgram", "SinabsRefusal", "compile_sinabs"]

FIX = ("build the network for Speck: snnTorch Leaky(beta=1.0) (IF) neurons after Conv2d / Linear / "
       "AvgPool2d layers, compressed and frozen with one scale per layer (sf.wrap(..., hardware='speck'), "
       "sf.freeze)")


#: a device bias is an integer number of weight LSBs; float32 biases ``k * scale`` miss by <= |k| 2**-24.
#: sinabs 3.1.3 backend/dynapcnn/discretize.py discretizes biases to DYNAPCNN_WEIGHT_PRECISION_BITS (8).
BIAS_SLACK, BIAS_MAX = 1e-2, 127


class SinabsRefusal(ValueError):
    """The graph holds something Speck / sinabs cannot run exactly (the message says why and the fix)."""


@dataclass
class SinabsProgram:
    ops: list[dict]                          # JSON-able: kind and its settings
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    layers: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)   # neuron name, shape
    in_shape: tuple[int, ...] = ()

    def npz(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {"meta": np.array(json.dumps(self.ops)), "input": np.asarray(inputs, np.float64), **self.arrays}


def _integer_bias(name: str, bias: np.ndarray, cf: float) -> np.ndarray:
    """The bias in weight LSBs, ``bias / cf``: integers (within float32 rounding of ``k * cf``), or a refusal."""
    b = bias / cf
    k = np.rint(b)
    off = np.abs(b - k)
    if off.max(initial=0) > BIAS_SLACK:
        i = int(off.argmax())
        raise SinabsRefusal(f"layer {name!r}: bias {bias.reshape(-1)[i]:.6g} is {b.reshape(-1)[i]:.6g} weight LSBs "
                            f"({cf:.6g}), not an integer; Speck holds integer biases in the weight scale: round "
                            f"them to the weight grid (sf.round_biases(model, bits=8) after sf.freeze) or use bias=False")
    if np.abs(k).max(initial=0) > BIAS_MAX:
        raise SinabsRefusal(f"layer {name!r}: a bias of {int(np.abs(k).max())} weight LSBs exceeds Speck's 8-bit "
                            f"biases (|b| <= {BIAS_MAX} LSBs, sinabs' discretization): lower the bias or use "
                            f"finer weights (more bits)")
    return k


def _op(prog: SinabsProgram, name: str, node, cf: float) -> None:
    """Append the device op of linear ``node``; ``cf``: the factor of our state over the device's after it."""
    k = len(prog.ops)
    if isinstance(node, nir.Conv1d):
        raise SinabsRefusal(f"layer {name!r} is a Conv1d; Speck convolves 2-d inputs; {FIX}")
    if isinstance(node, (nir.Conv2d, nir.Affine, nir.Linear)):
        w = integer_weights(node)
        prog.arrays[f"W{k}"] = w.astype(np.int64)
        bias = getattr(node, "bias", None)
        if bias is not None and np.any(np.asarray(bias) != 0):
            prog.arrays[f"B{k}"] = _integer_bias(name, np.asarray(bias, np.float64), cf)
        if isinstance(node, nir.Conv2d):
            if isinstance(node.padding, str):
                raise SinabsRefusal(f"layer {name!r}: padding={node.padding!r}; give the padding in pixels")
            prog.ops.append(dict(kind="conv", name=name, stride=_pair(node.stride), padding=_pair(node.padding),
                                 dilation=_pair(node.dilation), groups=int(node.groups), bias=f"B{k}" in prog.arrays))
        else:
            prog.ops.append(dict(kind="linear", name=name, bias=f"B{k}" in prog.arrays))
    elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        if any(_pair(node.padding)):
            raise SinabsRefusal(f"layer {name!r}: pooling with padding {node.padding}; Speck pools without padding")
        prog.ops.append(dict(kind="sumpool", name=name, kernel=_pair(node.kernel_size), stride=_pair(node.stride)))
    elif isinstance(node, nir.Flatten):
        prog.ops.append(dict(kind="flatten", name=name))
    # a uniform Scale is only a factor (cf)


def _neuron_kind(name: str, node) -> None:
    kind = type(node).__name__
    if isinstance(node, (nir.LIF, nir.CubaLIF)):
        raise SinabsRefusal(f"layer {name!r} is a NIR {kind} (a leak{' and a synaptic current' if kind == 'CubaLIF' else ''}); "
                            f"Speck's neurons are integrate-and-fire (sinabs DynapcnnNetwork takes IAF only); {FIX}")
    if not isinstance(node, nir.IF):
        raise SinabsRefusal(f"layer {name!r} is a NIR {kind}; the sinabs target maps IF neurons; {FIX}")


def _neuron(prog: SinabsProgram, name: str, node, dt: float, factor: float, shape) -> None:
    """The IF layer ``node`` (its kind already checked by :func:`_neuron_kind`) as a sinabs IAF op."""
    reset = str((node.metadata or {}).get(RESET_KEY, "value"))
    if reset not in ("subtract", "value"):
        raise SinabsRefusal(f"layer {name!r} resets by {reset!r}; Speck subtracts the threshold or returns to zero")
    if np.any(np.asarray(node.v_reset) != 0):
        raise SinabsRefusal(f"layer {name!r}: v_reset other than 0; Speck resets to 0 or subtracts")
    gain = np.unique(np.asarray(node.r, np.float64) * dt)
    thr = np.unique(np.asarray(node.v_threshold, np.float64))
    if gain.size != 1 or thr.size != 1 or thr[0] <= 0:
        raise SinabsRefusal(f"layer {name!r}: one positive threshold and one gain per layer on Speck "
                            f"(got thresholds {thr[:4]}, gains {gain[:4]})")
    f = factor * float(np.float32(gain[0]))
    thr_dev = float(np.nextafter(float(np.float32(thr[0])) / f, np.inf))  # ours: mem > thr; sinabs: v >= thr
    prog.ops.append(dict(kind="iaf", name=name, threshold=thr_dev, reset=reset, factor=f))
    prog.layers.append((name, tuple(shape)))


def compile_sinabs(graph: nir.NIRGraph) -> SinabsProgram:
    dt, in_shape, chain = graph_chain(graph, SinabsRefusal, "sinabs")
    prog, pending, shape = SinabsProgram([], in_shape=in_shape), [], in_shape
    for name, node in chain:
        if isinstance(node, LINEAR_NODES):
            pending.append((name, node))
            continue
        if not pending:
            raise SinabsRefusal(f"neuron layer {name!r} follows another neuron (or the input) directly")
        block = affine_block([n for _, n in pending], shape)
        if block.codes is None:
            raise SinabsRefusal(f"layer {name!r}: {block.why_not_integer}; Speck holds int8 weights: compress and "
                                f"freeze the model (sf.wrap(..., bits=8), sf.freeze) before export")
        if np.abs(block.codes).max(initial=0) > 127:
            raise SinabsRefusal(f"layer {name!r}: codes up to {np.abs(block.codes).max()} exceed Speck's int8 weights")
        _neuron_kind(name, node)  # what the neuron is comes before what its input layers hold
        cf, probe = 1.0, np.zeros((1,) + tuple(shape))
        for pname, pnode in pending:
            probe, f = _apply(pnode, probe, integer=True)
            cf *= f
            _op(prog, pname, pnode, cf)
        _neuron(prog, name, node, dt, block.factor, block.out_shape)
        pending, shape = [], block.out_shape
    if pending or not prog.layers:
        raise SinabsRefusal("the network must end in a spiking layer (Speck reads spikes)")
    return prog
