"""Xylo's own neuron, trained directly: chip-precision state in Xylo Audio 2's order (xylosim ``v2``).

``quantize_state(model, hardware="xylo")`` (and ``wrap(model, hardware="xylo")``) gives every current-based
neuron with subtract reset (snnTorch ``Synaptic``) this rule: the neuron computes, in int16 integers,
exactly what xylosim computes for it, so the network trained with CAT *is* the Xylo program. With ``s``
the state LSB (the live weight LSB of the neuron's input layer, times ``q = 1/15`` for the layer fed by
the input events: Xylo reads 0..15 events per step and channel, ``x = c / 15``), ``sat`` the clip to
``[-2**15, 2**15 - 1]``, ``D_k(y) = y - d`` with ``d = y >> k`` (arithmetic shift), or ``sign(y)`` where
that is 0 and ``y != 0``, each step::

    x_k = round(x / s)                           (integers when weights and inputs are on the grid)
    I'  = D_ks(sat(I + x_k))                     the current decays after this step's input
    U   = V - n theta                            last step's spikes subtract before the leak
    V'  = sat(U + sat(I' - (U - D_km(U))))       Xylo's dv = sat(I' - decay), V = sat(V + dv)
    n'  = min(floor(V' / theta), N)  if V' >= theta  else 0      N = 31 (hidden), 1 (readout)

``theta = floor(threshold / s) + 1`` (the smallest integer above ``threshold / s``, computed as
:func:`~snn_spikefit.neurons.state.grid_threshold` + 1, the grid threshold
:meth:`~snn_spikefit.neurons.state.StateRule.threshold_int` also gives: snnTorch's strict
``v > threshold`` and Xylo's ``V >= theta`` fire on the same grid points).
``k_s, k_m`` are the nearest shifts of the neuron's ``alpha, beta`` (``1 - 2**-k``; ``k_s >= 1``, since
``dash_syn = 0`` empties the current). The neuron stores ``s V'`` (pre-reset, so its own ``fire`` sees it) and
``s I'`` and emits the count ``n'`` (several spikes a step, as Xylo's hidden neurons). Gradients are
straight-through from the float update ``I' = alpha (I + x)``, ``V' = beta (V - n theta s) + I'``; the count's
surrogate is the sum over the levels ``k = 1..N`` of snnTorch's arctangent surrogate at ``k theta s``
(``alpha = 2``).

The one arithmetic left out: Xylo saturates after every single synaptic add, in presynaptic order; the
rule saturates the step's sum. They agree whenever no partial sum leaves int16 (xylo_int's note).
Neurons this order does not describe (``Leaky``, zero reset) keep the generic
:class:`~snn_spikefit.neurons.state.StateRule` with Xylo's precision and decays.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpikeFitValueError, UnsupportedLayerError
from .state import _exact, _to_int, grid_threshold, quantize_state, shift_decay, state_rules

__all__ = ["XyloRule", "xylo_threshold", "grid_threshold", "weight_lsb", "xylo_rules", "restore_chip_state",
           "refuse_chip_state", "LO", "HI", "INPUT_QUANTUM", "MAX_SPIKES_HIDDEN", "MAX_SPIKES_OUT", "CHIP_STATE_KEY"]

LO, HI = -(2 ** 15), 2 ** 15 - 1
INPUT_QUANTUM = 1.0 / 15
MAX_SPIKES_HIDDEN, MAX_SPIKES_OUT = 31, 1
#: NIR node metadata key of a neuron trained with this rule (value ``"xylo"``; :mod:`..targets.xylo_spec`)
CHIP_STATE_KEY = "spikefit.chip_state"


def xylo_threshold(threshold: Tensor | float, s: Tensor | float) -> Tensor:
    """``theta = floor(threshold / s) + 1``: :func:`grid_threshold` + 1 (Xylo fires at ``V >= theta``)."""
    return grid_threshold(threshold, s) + 1


def weight_lsb(module: nn.Module) -> Tensor | None:
    """The integer weight LSB (codebook scale, ``[groups]``) of ``module.weight`` now, or ``None``."""
    from ..quantize.layers import quantizer_of

    q = quantizer_of(module, "weight")
    return _lsb(q, _lsb_source(q))


def _lsb(q: Any, src: Tensor | None) -> Tensor | None:
    """:func:`weight_lsb` of quantizer ``q`` whose :func:`_lsb_source` is ``src``."""
    from ..quantize.codebook import FrozenCodebook, quantize_codebook

    if src is None or isinstance(q, FrozenCodebook):
        return None if src is None else src.detach()
    return quantize_codebook(src.detach(), q.bits)[2]


class _Count(torch.autograd.Function):
    """The spike count (exact, from the integers); backward: arctangent surrogates at ``k thr``, k = 1..N."""

    @staticmethod
    def forward(ctx, mem: Tensor, count: Tensor, thr: Tensor, most: int) -> Tensor:  # noqa: D102
        ctx.save_for_backward(mem, thr)
        ctx.most = most
        return count.to(mem.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        mem, thr = ctx.saved_tensors
        total = torch.zeros_like(mem)
        if torch.is_grad_enabled():  # create_graph=True: out-of-place, so the sum can be differentiated
            for k in range(1, ctx.most + 1):  # N <= 31 levels, not a loop over neurons or steps
                total = total + 1.0 / (1 + (math.pi * (mem - k * thr)) ** 2)  # snnTorch ATan, alpha = 2
            return total * grad, None, None, None
        d = torch.empty_like(mem)  # the same operations in place: equal to the bit, 0.66x the time
        for k in range(1, ctx.most + 1):
            torch.sub(mem, k * thr, out=d)
            total.add_(d.mul_(math.pi).square_().add_(1).reciprocal_())
        return total.mul_(grad), None, None, None


class XyloRule:
    """One neuron's Xylo update (module text). ``source``: its input layer; ``quantum``: 1/15 for the first."""

    def __init__(self, fmt: Any, source: nn.Module, *, quantum: float = 1.0, most: int = MAX_SPIKES_HIDDEN) -> None:
        if most not in (MAX_SPIKES_HIDDEN, MAX_SPIKES_OUT):
            raise SpikeFitValueError(f"most={most!r} is not allowed; Xylo neurons fire at most "
                                     f"{MAX_SPIKES_HIDDEN} (hidden) or {MAX_SPIKES_OUT} (readout) spikes a step")
        self.fmt, self.source, self.quantum, self.most = fmt, source, float(quantum), most
        lsb = weight_lsb(source)
        if lsb is None:
            raise UnsupportedLayerError(f"Xylo state needs integer weights into the neuron ({type(source).__name__} "
                                        f"has no integer codebook): wrap(..., bits=8) first")
        self._scale = lsb.double() * self.quantum  # a new tensor: the product
        self._seen: tuple[Any, Any, Tensor] | None = None  # (quantizer, its bits, the tensor its LSB came from)
        self._theta: tuple[Tensor, Tensor, Tensor] | None = None  # (scale, threshold, theta)

    def __repr__(self) -> str:
        return f"XyloRule(scale={self.scale.tolist()}, most={self.most})"

    nir_meta = {CHIP_STATE_KEY: "xylo"}

    @property
    def scale(self) -> Tensor:
        """The state LSB now: the input layer's weight LSB times ``quantum`` (float64).

        Recomputed only when the codebook it comes from has other values or bits (a step calls this
        three times; the codebook changes once per optimizer step); the last one is kept for a layer
        whose codebook was stripped.
        """
        from ..quantize.layers import quantizer_of

        q = quantizer_of(self.source, "weight")
        src = _lsb_source(q)
        seen = self._seen
        if src is not None and not (seen is not None and seen[0] is q and seen[1] == q.bits
                                    and _same(seen[2], src)):
            self._scale = _lsb(q, src).double() * self.quantum
            self._seen = (q, q.bits, src.detach().clone())
        return self._scale

    def theta(self, dyn: dict[str, Any], s: Tensor) -> Tensor:
        """``theta`` for the threshold in ``dyn`` at state LSB ``s`` (kept while both stay the same)."""
        thr = torch.as_tensor(dyn["threshold"]).detach()
        c = self._theta
        if c is None or not (_same(c[0], s) and _same(c[1], thr)):
            c = self._theta = (s.detach().clone(), thr.clone(), xylo_threshold(thr, s).clamp(1, HI))
        return c[2]

    def fire(self, dyn: dict[str, Any], mem: Tensor) -> Tensor:
        """``n' = min(floor(V' / theta), N)`` for ``V' >= theta`` (the count, with its surrogate)."""
        s = self.scale.to(mem.device)
        theta = self.theta(dyn, s)
        v = torch.round(mem.detach().double() / s).to(torch.int64)
        count = torch.div(v, theta, rounding_mode="floor").clamp(0, self.most)
        return _Count.apply(mem, count, (theta.double() * s).to(mem.dtype), self.most)

    def __call__(self, dyn: dict[str, Any], state: dict[str, Tensor], x: Tensor, reset: Tensor) -> dict[str, Tensor]:
        fmt, s = self.fmt, self.scale.to(x.device)
        theta = self.theta(dyn, s)
        n = torch.round(torch.as_tensor(reset, device=x.device).detach()).to(torch.int64)
        k_m = fmt.decay_code(torch.as_tensor(dyn["membrane_decay"], device=x.device))
        k_s = fmt.decay_code(torch.as_tensor(dyn["current_decay"], device=x.device), "current").clamp(min=1)
        alpha, beta = fmt.decay_value(k_s).to(x.dtype), fmt.decay_value(k_m).to(x.dtype)
        i, v = state["current"], state["membrane"]
        i_new = shift_decay((_to_int(i, s) + _to_int(x, s)).clamp(LO, HI), k_s)
        u = _to_int(v, s) - n * theta
        v_new = (u + (i_new - (u - shift_decay(u, k_m))).clamp(LO, HI)).clamp(LO, HI)
        i_float = alpha * (i + x)
        v_float = beta * (v - n.to(x.dtype) * (theta.double() * s).to(x.dtype)) + i_float
        return {"current": _exact(i_new, s, i_float), "membrane": _exact(v_new, s, v_float)}


def _lsb_source(q: Any) -> Tensor | None:
    """The tensor :func:`weight_lsb` computes from: a codebook's values, a frozen codebook's scale, or None."""
    from ..quantize.codebook import CodebookWeight, FrozenCodebook

    if isinstance(q, FrozenCodebook):
        return q.scale
    if isinstance(q, CodebookWeight) and q.bits is not None:
        return q.codebook
    return None


def _same(kept: Tensor, now: Tensor) -> bool:
    """``kept`` (a copy taken earlier) still equals ``now``: same shape, dtype, device and values."""
    return (kept.shape == now.shape and kept.dtype == now.dtype and kept.device == now.device
            and torch.equal(kept, now.detach()))


def xylo_rules(model: nn.Module, fmt: Any, neurons: list[tuple[str, nn.Module]]) -> dict[str, XyloRule]:
    """``{neuron name: XyloRule}`` for the current-based, subtract-reset neurons of ``model``.

    Each gets the nearest compressible layer before it (definition order) as its input (neurons whose
    input layer has no integer codebook get none: they keep the generic rule); the one fed
    by the model's first compressible layer reads input events (``quantum = 1/15``), the last neuron
    is the readout (one spike a step at most).
    """
    from ..adapter import get_adapter
    from ..quantize.layers import COMPRESSIBLE_TYPES

    adapter = get_adapter(model)
    wanted = {id(m) for _, m in neurons}
    inputs, last, first = {}, None, None
    for name, module in model.named_modules():
        if isinstance(module, COMPRESSIBLE_TYPES):
            last = module
            first = module if first is None else first
        elif id(module) in wanted and last is not None:
            dyn = adapter.neuron_dynamics(module) or {}
            if dyn.get("model") == "CUBA-LIF" and dyn.get("reset") == "subtract" and weight_lsb(last) is not None:
                inputs[name] = last
    readout = neurons[-1][0] if neurons else None
    return {name: XyloRule(fmt, src, quantum=INPUT_QUANTUM if src is first else 1.0,
                           most=MAX_SPIKES_OUT if name == readout else MAX_SPIKES_HIDDEN)
            for name, src in inputs.items()}


def _marked(graph: Any) -> list[str]:
    return sorted(k for k, n in graph.nodes.items() if (getattr(n, "metadata", None) or {}).get(CHIP_STATE_KEY))


def refuse_chip_state(graph: Any, why: str) -> None:
    """Refuse a graph with nodes marked ``spikefit.chip_state`` that the importer cannot give Xylo's update."""
    marked = _marked(graph)
    if marked:
        raise UnsupportedLayerError(f"NIR nodes {marked} carry {CHIP_STATE_KEY}='xylo', but {why}: Xylo's update "
                                    f"is restored only in a chain, and these neurons would run a different update")


def restore_chip_state(graph: Any, model: nn.Module) -> nn.Module:
    """After import: neurons exported with ``spikefit.chip_state = "xylo"`` get Xylo's update back.

    ``quantize_state(model, hardware="xylo")`` gives the same neurons the same rules as before export
    (the current-based subtract-reset neurons behind integer weights); a model where that set differs
    from the marked nodes is refused by name, so an imported model never runs a different neuron.
    """
    marked = _marked(graph)
    if not marked:
        return model
    quantize_state(model, hardware="xylo")
    got = sorted(n for n, r in state_rules(model).items() if isinstance(r, XyloRule))
    if got != sorted(k.replace(".", "_") for k in marked):  # the importer's module names (nir.importer._named)
        raise UnsupportedLayerError(f"NIR nodes {marked} carry {CHIP_STATE_KEY}='xylo' but Xylo's update fits "
                                    f"the imported neurons {got}; export the model again")
    return model
