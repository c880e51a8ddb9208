"""Compile a NIR graph we wrote into a Xylo (SynSense Xylo Audio 2, syns61201) specification.

The chain ``Input -> (linear -> CubaLIF) * L`` becomes one Xylo core: layers ``0..L-2`` are hidden
neurons (layer 0 fed by the input synapses, layer ``k`` by the recurrent synapses from layer
``k-1``), layer ``L-1`` the readout (output synapses from layer ``L-2``). **The weights are our
integer codes** (``spikefit.codebook_int[spikefit.codes]``, int8), never rescaled; what the
codebook scale does on our side goes into the integer threshold. Xylo's neuron, per step::

    I += (W c) << shift;   I -= I >> dash_syn;   V += I - (V >> dash_mem);   while V >= thr: V -= thr

so ``I = alpha (I + W c)`` with ``alpha = 1 - 2**-dash_syn`` and ``V = beta V + I``: an snnTorch
``Synaptic`` (NIR ``CubaLIF``) with subtract reset, ``alpha``/``beta`` powers-of-two decays, is the
Xylo neuron in units of ``F / (alpha 2**shift)`` (``F`` one code step of our current), whence
``thr_xylo = round(thr * alpha * 2**shift / F)``. The shifts (rounding toward minus infinity, the
reset before the leak, up to 31 spikes a step) are Xylo's: our integer model
(:mod:`.xylo_int`) reproduces them exactly; our float simulation differs by that arithmetic.
Inputs are spike counts ``c = x / q`` (``q = 1 / 15``: 0..15 events per step and channel).

A neuron trained in Xylo's own order (``wrap(..., hardware="xylo")``: node metadata
``spikefit.chip_state = "xylo"``, :mod:`snn_spikefit.neurons.xylo_state`) already computes Xylo's
integers: its layer takes weight shift 0, the state LSB ``F`` and ``thr_xylo = floor(thr / F) + 1``
(the rule's ``theta``), so our simulation of it and xylosim agree spike for spike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np

from .lava_program import RESET_KEY, graph_chain
from ..neurons.xylo_state import CHIP_STATE_KEY, xylo_threshold
from .linear_ops import LINEAR_NODES, affine_block

__all__ = ["XyloSpec", "XyloRefusal", "compile_xylo", "LIMITS", "SOURCES"]

# Xylo Audio 2 (syns61201): rockpool devices/xylo/syns61201/xylo_mapper.py and the Xylo docs
LIMITS = dict(inputs=16, hidden=1000, outputs=8, weight_min=-128, weight_max=127, state_max=2 ** 15 - 1,
              dash_max=15, shift_max=7, max_spikes_hidden=31, max_spikes_out=1, max_input_events=15)
SOURCES = "rockpool 3.1 devices/xylo/syns61201 (xylo_mapper.py DRCs, XyloSim) and xylosim 0.1.3 (v2.XyloLayer)"
FIX = ("build the network for Xylo: snnTorch Synaptic(alpha=1 - 2**-k, beta=1 - 2**-j, "
       "reset_mechanism='subtract') after bias-free Linear layers, <= 16 inputs, <= 8 outputs, "
       "compressed and frozen (sf.wrap(..., hardware='xylo'), sf.freeze)")


class XyloRefusal(ValueError):
    """The graph holds something Xylo cannot represent (the message names it, why, and the fix)."""


@dataclass
class XyloLayer:
    name: str
    n: int
    codes: np.ndarray      # [n, n_in] int8 range: the weights programmed
    dash_syn: int
    dash_mem: int
    threshold: np.ndarray  # [n] int
    shift: int
    unit: float            # one unit of Xylo's membrane in our membrane's units
    thr: float             # our float threshold


@dataclass
class XyloSpec:
    layers: list[XyloLayer]
    in_shape: tuple[int, ...]
    input_quantum: float = 1.0 / 15
    notes: list[str] = field(default_factory=list)

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    def arrays(self) -> dict[str, np.ndarray]:
        """What the worker builds a ``xylosim.v2.XyloLayer`` from (hidden = layers[:-1])."""
        hid, out = self.layers[:-1], self.layers[-1]
        nh = sum(h.n for h in hid)
        w_in = np.zeros((self.n_in, nh), np.int64)
        w_rec = np.zeros((nh, nh), np.int64)
        w_in[:, :hid[0].n] = hid[0].codes.T
        start = 0
        for a, b in zip(hid[:-1], hid[1:]):
            w_rec[start:start + a.n, start + a.n:start + a.n + b.n] = b.codes.T
            start += a.n
        w_out = np.zeros((nh, out.n), np.int64)
        w_out[nh - hid[-1].n:, :] = out.codes.T
        rep = lambda f: np.concatenate([np.full(h.n, f(h)) for h in hid]).astype(np.int64)  # noqa: E731
        return dict(w_in=w_in, w_rec=w_rec, w_out=w_out, threshold=np.concatenate([h.threshold for h in hid]),
                    threshold_out=out.threshold, dash_mem=rep(lambda h: h.dash_mem),
                    dash_syn=rep(lambda h: h.dash_syn), dash_mem_out=np.full(out.n, out.dash_mem),
                    dash_syn_out=np.full(out.n, out.dash_syn),
                    shifts=np.array([hid[0].shift, hid[1].shift if len(hid) > 1 else 0, out.shift]))


def _dash(decay: np.ndarray, what: str, name: str, lo: int) -> int:
    d = np.unique(np.asarray(decay, np.float64))
    if d.size != 1:
        raise XyloRefusal(f"layer {name!r}: {what} differs between neurons ({d[:4]}...); one Xylo layer here "
                          f"takes one bit-shift decay; {FIX}")
    k = np.log2(1.0 / (1.0 - d[0])) if d[0] < 1 else np.inf
    if not np.isfinite(k) or abs(k - round(k)) > 1e-9 or not lo <= round(k) <= LIMITS["dash_max"]:
        raise XyloRefusal(f"layer {name!r}: {what} = {d[0]:.6g} is not 1 - 2**-k for an integer k in "
                          f"{lo}..{LIMITS['dash_max']}; Xylo decays by bit shifts (4-bit dash); {FIX}")
    return int(round(k))


def _neuron(name: str, node, dt: float) -> tuple[int, int, float]:
    """``(dash_syn, dash_mem, thr)``, or a refusal naming what Xylo cannot do."""
    kind = type(node).__name__
    if isinstance(node, (nir.LIF, nir.IF)):
        raise XyloRefusal(
            f"layer {name!r} is a NIR {kind} (snnTorch Leaky): it has no synaptic current, and Xylo always has "
            f"one (dash_syn = 0 empties the current every step: no spikes; the smallest usable dash_syn = 1 "
            f"halves every input), so the model is not representable as is; {FIX}")
    if not isinstance(node, nir.CubaLIF):
        raise XyloRefusal(f"layer {name!r} is a NIR {kind}; the Xylo target maps CubaLIF neurons; {FIX}")
    reset = str((node.metadata or {}).get(RESET_KEY, "zero"))
    if reset != "subtract":
        raise XyloRefusal(f"layer {name!r} resets by {reset!r}; Xylo neurons subtract the threshold "
                          f"(reset_mechanism='subtract'); {FIX}")
    if np.any(np.asarray(node.v_leak) != 0) or np.any(np.asarray(node.v_reset) != 0):
        raise XyloRefusal(f"layer {name!r}: v_leak / v_reset other than 0; Xylo rests and resets at 0")
    gain = (dt * np.asarray(node.r, np.float64) / np.asarray(node.tau_mem)) * \
        (dt * np.asarray(node.w_in, np.float64) / np.asarray(node.tau_syn))
    if not np.allclose(gain, 1.0, rtol=1e-6):
        raise XyloRefusal(f"layer {name!r}: input gain r * w_in * dt**2 / (tau_mem tau_syn) = "
                          f"{np.unique(gain)[:3]} is not 1 (snnTorch Synaptic's); scale the weights instead")
    thr = np.unique(np.asarray(node.v_threshold, np.float64))
    if thr.size != 1 or thr[0] <= 0:
        raise XyloRefusal(f"layer {name!r}: threshold {thr[:4]} must be one positive value")
    alpha = np.float32(1.0) - np.float32(dt) / np.asarray(node.tau_syn, np.float32)
    beta = np.float32(1.0) - np.float32(dt) / np.asarray(node.tau_mem, np.float32)
    return (_dash(alpha, "alpha (synaptic decay)", name, 1), _dash(beta, "beta (membrane decay)", name, 0),
            float(np.float32(thr[0])))


def _layer(name: str, block, node, dt: float, quantum: float, max_count: int,
           shift_cap: int = LIMITS["shift_max"]) -> XyloLayer:
    if block.codes is None:
        raise XyloRefusal(f"layer {name!r}: {block.why_not_integer}; Xylo holds int8 weights: compress and "
                          f"freeze the model (sf.wrap(..., bits=8), sf.freeze) before export")
    if np.any(block.bias != 0):
        raise XyloRefusal(f"layer {name!r} has a bias; Xylo adds its bias to the membrane, our Synaptic adds it "
                          f"to the current (it would not decay with it): use bias=False")
    codes = block.codes
    if codes.min(initial=0) < LIMITS["weight_min"] or codes.max(initial=0) > LIMITS["weight_max"]:
        raise XyloRefusal(f"layer {name!r}: codes {codes.min()}..{codes.max()} exceed Xylo's int8 weights")
    dsyn, dmem, thr = _neuron(name, node, dt)
    alpha = 1.0 - 2.0 ** -dsyn
    step = block.factor * quantum  # one code step of our current, in our membrane's units
    if (node.metadata or {}).get(CHIP_STATE_KEY) == "xylo":  # trained in Xylo's own order: its integers
        vth = int(xylo_threshold(np.float32(thr), step))
        if not 1 <= vth <= LIMITS["state_max"]:
            raise XyloRefusal(f"layer {name!r}: threshold {thr} is {vth} state LSBs ({step:.4g}); Xylo holds "
                              f"1..{LIMITS['state_max']}: change the threshold or the weight scale")
        return XyloLayer(name, codes.shape[0], codes, dsyn, dmem, np.full(codes.shape[0], vth), 0, step, thr)
    reach = float(np.abs(codes).sum(1).max(initial=1)) * max_count
    # the largest shift (finest threshold) whose threshold fits int16 and whose one-step input cannot
    # saturate; else the smallest shift whose threshold fits (saturation is Xylo's, our model has it too)
    fits = [s for s in range(shift_cap, -1, -1) if 1 <= np.rint(thr * alpha * 2 ** s / step) <= LIMITS["state_max"]]
    if not fits:
        raise XyloRefusal(f"layer {name!r}: no weight shift 0..{shift_cap} fits threshold {thr} in Xylo's 16 bits "
                          f"(one code step of the current is {step:.4g})")
    shift = next((s for s in fits if reach * 2 ** s <= LIMITS["state_max"]), fits[-1])
    unit = step / (alpha * 2 ** shift)
    vth = int(np.rint(thr / unit))
    return XyloLayer(name, codes.shape[0], codes, dsyn, dmem, np.full(codes.shape[0], vth), shift, unit, thr)


def compile_xylo(graph: nir.NIRGraph, *, input_quantum: float = 1.0 / 15) -> XyloSpec:
    """The Xylo specification of ``graph``, or :class:`XyloRefusal` saying what cannot be represented."""
    dt, in_shape, chain = graph_chain(graph, XyloRefusal, "Xylo")
    blocks, pending, shape = [], [], in_shape
    for name, node in chain:
        if isinstance(node, LINEAR_NODES):
            if isinstance(node, (nir.Conv1d, nir.Conv2d)):
                raise XyloRefusal(f"layer {name!r} is a convolution; Xylo has dense and recurrent weights only "
                                  f"(a Speck network: target 'sinabs')")
            pending.append(node)
            continue
        if not pending:
            raise XyloRefusal(f"neuron layer {name!r} follows another neuron (or the input) directly")
        block = affine_block(pending, shape)
        blocks.append((name, block, node))
        pending, shape = [], block.out_shape
    if pending or not blocks:
        raise XyloRefusal("the network must end in a spiking layer (Xylo reads the readout's spikes)")
    layers = [_layer(*blocks[0], dt, input_quantum, LIMITS["max_input_events"])]
    rec = [_layer(*b, dt, 1.0, LIMITS["max_spikes_hidden"]) for b in blocks[1:-1]]
    if rec:  # one weight_shift_rec for every recurrent block
        cap = min(r.shift for r in rec)
        rec = [_layer(*b, dt, 1.0, LIMITS["max_spikes_hidden"], cap) for b in blocks[1:-1]]
    layers += rec + [_layer(*blocks[-1], dt, 1.0, LIMITS["max_spikes_hidden"])] if len(blocks) > 1 else []
    spec = XyloSpec(layers, in_shape, input_quantum)
    _limits(spec)
    return spec


def _limits(spec: XyloSpec) -> None:
    hidden = sum(h.n for h in spec.layers[:-1])
    if len(spec.layers) < 2:
        raise XyloRefusal("one neuron layer: Xylo needs input -> hidden -> readout (at least two layers)")
    for what, n, most in (("inputs", spec.n_in, LIMITS["inputs"]), ("hidden neurons", hidden, LIMITS["hidden"]),
                          ("readout neurons", spec.layers[-1].n, LIMITS["outputs"])):
        if n > most:
            raise XyloRefusal(f"{n} {what}; Xylo Audio 2 (syns61201) has at most {most}")
