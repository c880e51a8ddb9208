"""Chip-precision neuron state: train and evaluate the integer states a chip holds.

A chip keeps a neuron's membrane potential (and synaptic current) as a few-bit integer,
decays it with the arithmetic it has, and saturates (or wraps) it. :func:`quantize_state`
makes every neuron of a model do the same in training and evaluation. With ``s`` the
state's least significant bit (its *scale*), each step computes, in integers,

.. math::

    x_k = \\mathrm{round}(x / s), \\quad
    i' = \\mathrm{lim}_i(D_\\alpha(i) + x_k), \\quad
    v' = \\mathrm{sat}_v(D_\\beta(v) + i' - r\\,\\theta) \\qquad (\\text{LIF: } i' = x_k)

with the neuron's own reset (``r`` the framework's reset signal, ``theta`` the chip
threshold, the largest integer with ``theta * s <= threshold``, so the framework's own
``v > threshold`` fires exactly where the chip's ``v_int > theta`` does). The decays ``D``
are the chip's (:class:`StateFormat`): Loihi's ``sign(x) * (|x| * c >> 12)`` with a 12-bit
``c`` (Lava ``PyLifModelBitAcc``), Xylo's bit shift ``x - max(|x >> k|, 1) * sign(x)``
(xylosim ``XyloIAFNeuron``), or, for a bare ``state_bits=``, ``round(beta * x)``. The state
the neuron stores is ``s * v'`` exactly, with a straight-through gradient from the float
update ``beta_q * v + x - r * theta * s`` (``beta_q``: the nearest decay the chip expresses).
The update follows the neuron's own equations (snnTorch's reset-delay and zero-reset
conventions included): only precision, rounding, decays and range are the chip's.

A format of ``order="xylo"`` (the Xylo profile) gives current-based subtract-reset neurons Xylo's
own update instead (:mod:`.xylo_state`: the reset before the leak, the current decaying after its
input, several spikes a step), so a network trained with it is Xylo's program exactly.

The neuron keeps its class and its constants; :func:`strip_state` (and
:func:`snn_spikefit.strip`) gives back the plain neuron. Neuron access goes through the
adapter (:meth:`~snn_spikefit.Adapter.attach_state_rule`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..adapter import get_adapter
from ..deploy.hardware import HardwareProfile, as_profile
from ..errors import SpikeFitTypeError, SpikeFitValueError, UnsupportedLayerError
from ..quantize.layers import COMPRESSIBLE_TYPES, compressed_layers
from ..runtime import check_module

__all__ = ["StateFormat", "StateRule", "quantize_state", "strip_state", "state_rules", "DECAYS",
           "default_scales"]

#: Decay arithmetics: ``"fraction"`` (multiply by ``c / 2**decay_bits``, truncate toward zero),
#: ``"shift"`` (subtract ``x >> k``, at least one LSB), ``None`` (``round(beta * x)``).
DECAYS = ("fraction", "shift", None)
#: Update orders: the framework's own equations at chip precision, or Xylo's (reset before the leak,
#: the current decaying after its input, several spikes a step: :mod:`.xylo_state`).
ORDERS = ("framework", "xylo")
#: A membrane that holds this many thresholds sets the scale when no integer weight gives it.
_HEADROOM = 8


def _bits(name: str, value: Any, low: int = 2) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 32):
        raise SpikeFitValueError(f"{name}={value!r} is not allowed; use an int in {low}..32 or None")


@dataclass(frozen=True)
class StateFormat:
    """How a chip holds neuron state (``None``: that part is not limited)."""

    membrane_bits: int | None = None     # signed bits of the membrane potential
    current_bits: int | None = None      # signed bits of the synaptic current
    decay: str | None = None             # one of DECAYS
    decay_bits: int | None = None        # "fraction": bits of c (Loihi 12); "shift": largest shift k
    threshold_bits: int | None = None    # magnitude bits of a (positive) threshold, in weight units
    fraction_bits: int = 0               # state LSBs per weight LSB = 2**fraction_bits (Loihi 6)
    current_overflow: str = "saturate"   # or "wrap" (Loihi's current wraps modulo 2**24)
    name: str = "custom"
    order: str = "framework"             # or "xylo": Xylo's own update (snn_spikefit.neurons.xylo_state)

    def __post_init__(self) -> None:
        for f in ("membrane_bits", "current_bits", "threshold_bits"):
            _bits(f, getattr(self, f))
        if self.decay not in DECAYS:
            raise SpikeFitValueError(f"decay={self.decay!r} is not allowed; use one of {DECAYS}")
        if self.decay is not None and self.decay_bits is None:
            raise SpikeFitValueError(f"decay={self.decay!r} needs decay_bits (fraction bits, or the largest shift)")
        _bits("decay_bits", self.decay_bits, low=1)
        if isinstance(self.fraction_bits, bool) or not isinstance(self.fraction_bits, int) or self.fraction_bits < 0:
            raise SpikeFitValueError(f"fraction_bits={self.fraction_bits!r} is not allowed; use an int >= 0")
        if self.current_overflow not in ("saturate", "wrap"):
            raise SpikeFitValueError(f"current_overflow={self.current_overflow!r} is not allowed; "
                                     f"use 'saturate' or 'wrap'")
        if self.order not in ORDERS:
            raise SpikeFitValueError(f"order={self.order!r} is not allowed; use one of {ORDERS}")

    @classmethod
    def from_profile(cls, profile: str | HardwareProfile) -> "StateFormat | None":
        """The profile's state precision, or ``None`` when it publishes no membrane width and decay rule."""
        p = as_profile(profile)
        if p.membrane_bits is None or p.decay is None:
            return None
        return cls(p.membrane_bits, p.current_bits, p.decay, p.decay_bits, p.threshold_bits,
                   p.state_fraction_bits or 0, p.current_overflow or "saturate", p.name,
                   p.state_order or "framework")

    # -- decays -------------------------------------------------------------------------------
    def decay_code(self, beta: Tensor, which: str = "membrane") -> Tensor:
        """The chip's integer decay setting nearest ``beta`` (``c`` of ``c / 2**bits``, or the shift ``k``)."""
        beta = beta.detach().double().clamp(0, 1)
        if self.decay == "fraction":
            one = 2 ** self.decay_bits
            # Lava/Loihi: the current's effective decay is du + 1 (1..4096), the voltage's dv (0..4095)
            low, high = (0, one - 1) if which == "current" else (1, one)
            return torch.round(beta * one).clamp(low, high)
        if self.decay == "shift":
            k = torch.round(-torch.log2((1 - beta).clamp_min(2.0 ** -64)))
            return k.clamp(0, self.decay_bits)
        return beta

    def decay_value(self, code: Tensor) -> Tensor:
        """The decay factor the chip's setting ``code`` stands for."""
        if self.decay == "fraction":
            return code / 2 ** self.decay_bits
        if self.decay == "shift":
            return 1 - torch.pow(2.0, -code)
        return code

    def restrict(self, beta: Tensor, which: str = "membrane") -> Tensor:
        """The nearest decay the chip expresses (float64)."""
        return self.decay_value(self.decay_code(beta, which))

    def decay_int(self, x: Tensor, code: Tensor) -> Tensor:
        """Decay the integer state ``x`` (``int64``) the chip's way."""
        if self.decay == "fraction":
            c = code.to(torch.int64)
            return torch.sign(x) * torch.bitwise_right_shift(x.abs() * c, self.decay_bits)
        if self.decay == "shift":
            return shift_decay(x, code)
        return torch.round(x.double() * code).to(torch.int64)

    # -- range -----------------------------------------------------------------------------
    def limit(self, x: Tensor, which: str) -> Tensor:
        """Saturate (or, for a wrapping current, wrap) the integer state to the chip's width."""
        bits = self.membrane_bits if which == "membrane" else self.current_bits
        if bits is None:
            return x
        top = 2 ** (bits - 1)
        if which == "current" and self.current_overflow == "wrap":  # as Lava's bit-accurate LIF
            w = torch.where(x > top, x - 2 * top, x)
            return torch.where(w <= -top, x + 2 * top, w)
        return x.clamp(-(top - 1), top - 1)


def shift_decay(x: Tensor, code: Tensor) -> Tensor:
    """``x - d`` with ``d = x >> code`` (arithmetic shift), or ``sign(x)`` where that is 0 and ``x != 0``."""
    dx = torch.bitwise_right_shift(x, code.to(torch.int64))
    return x - torch.where((dx == 0) & (x != 0), torch.sign(x), dx)


def grid_threshold(threshold: Tensor | float, s: Tensor | float) -> Tensor:
    """The largest integer ``k`` with ``float32(k s) <= threshold`` (the framework's compare, float32)."""
    thr = torch.as_tensor(threshold).detach().to(torch.float32)
    s = torch.as_tensor(s, dtype=torch.float64).to(thr.device)
    k = torch.floor(thr.double() / s)
    k = torch.where((k + 1) * s <= thr.double(), k + 1, k)  # float rounding of the division
    k = torch.where((k * s).float() > thr, k - 1, k)
    return k.to(torch.int64)


def _to_int(t: Tensor, scale: Tensor) -> Tensor:
    return torch.round(t.detach().double() / scale).to(torch.int64)


class StateRule:
    """One neuron's chip-precision update (see the module docstring); ``scale``: the state LSB."""

    def __init__(self, fmt: StateFormat, scale: float | Tensor) -> None:
        scale = torch.as_tensor(scale, dtype=torch.float64).detach().clone()
        if scale.numel() == 0 or not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
            raise SpikeFitValueError(f"state scale={scale.tolist()} is not allowed; use finite values > 0")
        self.fmt, self.scale = fmt, scale

    def __repr__(self) -> str:
        return f"StateRule({self.fmt.name}, scale={self.scale.tolist()})"

    def threshold_int(self, threshold: Tensor) -> Tensor:
        """``theta``: the largest integer with ``float32(theta * s) <= threshold`` (the framework's compare)."""
        return grid_threshold(threshold, self.scale)

    def __call__(self, dyn: dict[str, Any], state: dict[str, Tensor], x: Tensor, reset: Tensor) -> dict[str, Tensor]:
        fmt, s = self.fmt, self.scale.to(x.device)
        thr = torch.as_tensor(dyn["threshold"], device=x.device)
        theta = self.threshold_int(thr)
        r = torch.as_tensor(reset, device=x.device).detach()
        r_int = (r > 0).to(torch.int64)
        r_lvl = torch.where(r > 0, torch.round(r).clamp(min=1), 0).to(torch.int64)  # a level-k spike subtracts k theta
        mode = dyn["reset"]
        x_int = _to_int(x, s)
        code_v = fmt.decay_code(torch.as_tensor(dyn["membrane_decay"], device=x.device))
        beta_q = fmt.decay_value(code_v).to(x.dtype)
        v, v_int = state["membrane"], _to_int(state["membrane"], s)
        out: dict[str, Tensor] = {}
        if dyn["model"] == "CUBA-LIF":
            code_i = fmt.decay_code(torch.as_tensor(dyn["current_decay"], device=x.device), "current")
            alpha_q = fmt.decay_value(code_i).to(x.dtype)
            i = state["current"]
            i_new = fmt.limit(fmt.decay_int(_to_int(i, s), code_i) + x_int, "current")
            i_float = alpha_q * i + x
            out["current"] = _exact(i_new, s, i_float)
            drive, drive_float = i_new, i_float
        else:
            drive, drive_float = x_int, x
        if mode == "zero" and dyn["model"] == "LIF":  # snnTorch Leaky zeroes the state before the step
            v_int, v = v_int * (1 - r_int), v * (1 - r)
        v_new = fmt.decay_int(v_int, code_v) + drive
        v_float = beta_q * v + drive_float
        if mode == "subtract":
            v_new = v_new - r_lvl * theta
            v_float = v_float - r * (theta.double() * s).to(x.dtype)
        elif mode == "zero" and dyn["model"] == "CUBA-LIF":  # snnTorch Synaptic zeroes the new membrane
            v_new, v_float = v_new * (1 - r_int), v_float * (1 - r)
        out["membrane"] = _exact(fmt.limit(v_new, "membrane"), s, v_float)
        return out


def _exact(ints: Tensor, scale: Tensor, surrogate: Tensor) -> Tensor:
    """``scale * ints`` in value, the gradient of ``surrogate`` (bit-exact straight-through)."""
    value = (ints.double() * scale).to(surrogate.dtype)
    return value + (surrogate - surrogate.detach())


# -- the scale -------------------------------------------------------------------------------------

def default_scales(model: nn.Module, fmt: StateFormat, *, grounded: bool = False) -> dict[str, float]:
    """The state LSB of every neuron: its input layer's weight LSB / ``2**fraction_bits``.

    The input layer is the nearest Linear/Conv layer before the neuron in definition order, if it
    has integer weights (the finest scale when it has one per channel), as a chip accumulates integer
    weights. A neuron with no such layer gets a power of two that lets the membrane hold
    ``8 x`` its largest threshold within ``membrane_bits`` (left out with ``grounded=True``).
    """
    adapter = get_adapter(model)
    weight_lsb = {}
    for layer in compressed_layers(model):
        form = layer.integer_form()
        if form.scale is not None:
            weight_lsb[id(layer.module)] = float(form.scale.min())
    out, last = {}, None
    for name, module in model.named_modules():
        if isinstance(module, COMPRESSIBLE_TYPES):
            last = weight_lsb.get(id(module))  # a float layer in between: no integer input scale
        elif adapter.is_neuron(module):
            if last is not None:
                out[name] = last / 2 ** fmt.fraction_bits
            elif not grounded:
                dyn = adapter.neuron_dynamics(module) or {}
                thr = float(torch.as_tensor(dyn.get("threshold", 1.0)).abs().max())
                levels = 2 ** ((fmt.membrane_bits or 16) - 1) - 1
                out[name] = 2.0 ** math.floor(math.log2(max(thr, 1e-30) * _HEADROOM / levels))
    return out


# -- attach and remove -----------------------------------------------------------------------------

def quantize_state(model: nn.Module, *, hardware: str | HardwareProfile | None = None,
                   state_bits: int | None = None, fmt: StateFormat | None = None,
                   scale: float | dict[str, float] | None = None) -> nn.Module:
    """Make every spiking neuron of ``model`` hold its state at a chip's precision, in place.

    Args:
        hardware: a profile whose state precision is published (``membrane_bits`` and ``decay``).
        state_bits: instead, signed bits of membrane and current, decays as they are.
        fmt: instead, a :class:`StateFormat`.
        scale: the state LSB: one float for every neuron, or ``{neuron name: float}``; default
            :func:`default_scales`. For a format of ``order="xylo"`` (``hardware="xylo"``) and no
            ``scale``, current-based subtract-reset neurons get Xylo's own update
            (:class:`~snn_spikefit.neurons.xylo_state.XyloRule`, the live LSB of their input layer).

    Raises ``UnsupportedLayerError`` (a neuron the adapter cannot do this for) and
    ``SpikeFitValueError``; on any error the model is left as it was.
    """
    check_module(model)
    given = [n for n, v in (("hardware", hardware), ("state_bits", state_bits), ("fmt", fmt)) if v is not None]
    if len(given) != 1:
        raise SpikeFitTypeError(f"quantize_state needs exactly one of hardware=, state_bits=, fmt=; got {given}")
    if hardware is not None:
        fmt = StateFormat.from_profile(hardware)
        if fmt is None:
            raise SpikeFitValueError(f"hardware={as_profile(hardware).name!r} publishes no state precision "
                                     f"(membrane_bits and decay); use state_bits=")
    elif state_bits is not None:
        _bits("state_bits", state_bits)
        fmt = StateFormat(state_bits, state_bits, name=f"{state_bits}-bit state")
    adapter = get_adapter(model)
    neurons = adapter.neurons(model)
    if not neurons:
        raise SpikeFitValueError(f"{type(model).__name__} has no spiking neuron ({adapter.name} adapter) to "
                                 f"give chip-precision state")
    scales = default_scales(model, fmt) if not isinstance(scale, (int, float)) else {}
    if isinstance(scale, dict):
        unknown = sorted(set(scale) - {n for n, _ in neurons})
        if unknown:
            raise SpikeFitValueError(f"scale names no neuron {unknown}; neurons: {[n for n, _ in neurons]}")
        scales.update(scale)
    from .xylo_state import xylo_rules  # it builds on this module

    xylo = xylo_rules(model, fmt, neurons) if fmt.order == "xylo" and scale is None else {}
    plans = [(name, m, xylo.get(name) or StateRule(fmt, scale if isinstance(scale, (int, float)) else scales[name]))
             for name, m in neurons]
    done = []
    try:
        for name, module, rule in plans:
            adapter.attach_state_rule(module, rule)
            done.append(module)
    except UnsupportedLayerError as exc:
        for module in done:
            adapter.detach_state_rule(module)
        raise UnsupportedLayerError(f"neuron {name!r}: {exc}") from None
    return model


def state_rules(model: nn.Module) -> dict[str, StateRule]:
    """``{neuron name: rule}`` of the neurons that hold chip-precision state."""
    adapter = get_adapter(model)
    return {n: r for n, m in adapter.neurons(model) if (r := adapter.state_rule(m)) is not None}


def strip_state(model: nn.Module) -> int:
    """Give every neuron back its own state update (class and constants were never changed)."""
    adapter = get_adapter(model)
    return sum(adapter.detach_state_rule(m) for _, m in adapter.neurons(model))
