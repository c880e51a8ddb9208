"""The ``check`` rules about neuron state: decays, thresholds and membrane ranges a chip cannot hold.

Registered with :func:`snn_spikefit.deploy.rules.register_check_rule` on import (``import
snn_spikefit`` does it). They apply to profiles that publish state precision
(``membrane_bits``, ``threshold_bits``, ``decay``):

* ``decay``: a neuron's membrane (or current) decay is not one the chip expresses (Loihi:
  ``c / 4096``; Xylo: ``1 - 2**-k``); the hint names the nearest one.
* ``threshold``: the threshold in state units (``theta``, see
  :mod:`snn_spikefit.neurons.state`) is below one LSB or needs more than ``threshold_bits``.
* ``membrane_range``: with ``sample``, the membrane reaches beyond ``membrane_bits`` (or, with
  chip-precision state attached, saturates) during a run of ``check``'s ``num_steps`` (when 1:
  ``DEFAULT_NUM_STEPS``) steps.

The state LSB is that of the attached rule, else the input layer's integer weight LSB
(:func:`~snn_spikefit.neurons.state.default_scales`); without either, thresholds and ranges are
listed as not checked.
"""

from __future__ import annotations

import torch

from ..deploy.rules import CheckContext, register_check_rule
from ..errors import SpikeFitError
from ..runtime import DEFAULT_NUM_STEPS, eval_mode, run
from ..trace import Recorder
from .state import StateFormat, StateRule, default_scales, state_rules

__all__ = ["state_format_of"]

_ALLOWED = {"fraction": "c / 2**{b} with an integer c", "shift": "1 - 2**-k with k in 0..{b}"}


def state_format_of(profile) -> StateFormat | None:
    """The profile's state precision for checking (``None`` when it publishes none)."""
    p = profile
    if p.membrane_bits is None and p.threshold_bits is None and p.decay is None:
        return None
    decay = p.decay if p.decay_bits is not None else None
    return StateFormat(p.membrane_bits, p.current_bits, decay, p.decay_bits if decay else None,
                       p.threshold_bits, p.state_fraction_bits or 0, p.current_overflow or "saturate", p.name)


def _decays(ctx: CheckContext, fmt: StateFormat, name: str, dyn: dict) -> None:
    for key, which in (("membrane_decay", "membrane"), ("current_decay", "current")):
        if key not in dyn:
            continue
        beta = torch.as_tensor(dyn[key]).detach().double()
        near = fmt.restrict(beta, which)
        off = (beta - near).abs()
        if bool((off > 1e-6).any()):
            worst = int(off.reshape(-1).argmax())
            value, chip = float(beta.reshape(-1)[worst]), float(near.reshape(-1)[worst])
            ctx.add("decay", "decay_bits", name, _ALLOWED[fmt.decay].format(b=fmt.decay_bits), round(value, 6),
                    f"{ctx.chip} cannot hold the {which} decay {value:.6g}; the nearest it holds is {chip:.6g}: "
                    f"set it, or wrap(model, hardware={ctx.profile.name!r}) to train with it")


def _threshold(ctx: CheckContext, fmt: StateFormat, name: str, dyn: dict, scale) -> None:
    theta = StateRule(fmt, scale).threshold_int(torch.as_tensor(dyn["threshold"]))
    if bool((theta < 1).any()):
        ctx.add("threshold", "threshold_bits", name, ">= 1 state LSB", int(theta.min()),
                f"a threshold of {name} is below one state LSB ({float(StateRule(fmt, scale).scale.min()):.3g}): "
                f"raise it, or use finer weights (more bits)")
    if fmt.threshold_bits is not None:
        top = 2 ** fmt.threshold_bits - 1
        mantissa = int(theta.max()) >> fmt.fraction_bits
        if mantissa > top:
            ctx.add("threshold", "threshold_bits", name, top, mantissa,
                    f"the threshold of {name} is {mantissa} weight LSBs, {ctx.chip} holds {fmt.threshold_bits} "
                    f"bits: lower it, or use coarser weights (fewer bits)")


def _membrane_range(ctx: CheckContext, fmt: StateFormat, scales: dict) -> None:
    if fmt.membrane_bits is None:
        return
    if ctx.sample is None:
        ctx.skip("membrane_range", "(model)", "the membrane range needs sample=<an input batch>")
        return
    top = 2 ** (fmt.membrane_bits - 1) - 1
    attached = state_rules(ctx.model)
    steps = ctx.num_steps if ctx.num_steps > 1 else DEFAULT_NUM_STEPS
    try:
        with Recorder(ctx.model, list(scales), membrane=True) as rec, eval_mode(ctx.model, clear=True):
            run(ctx.model, ctx.sample, num_steps=steps)
    except SpikeFitError as exc:  # e.g. a model that runs its own number of steps inside forward
        ctx.skip("membrane_range", "(model)", f"the sample did not run for {steps} steps: {exc}")
        return
    for name, mem in rec.membranes.items():
        peak = int(torch.round(mem.double().abs() / StateRule(fmt, scales[name]).scale).max())
        if peak > top or (name in attached and peak >= top):
            ctx.add("membrane_range", "membrane_bits", name, top, peak,
                    f"the membrane of {name} reaches {peak} LSBs, {ctx.chip} holds +-{top}: lower the "
                    f"input weights or the threshold")


def _neuron_state(ctx: CheckContext) -> None:
    fmt = state_format_of(ctx.profile)
    if fmt is None:
        return
    rules, scales = state_rules(ctx.model), default_scales(ctx.model, fmt, grounded=True)
    scales.update({n: r.scale for n, r in rules.items()})
    described = {}
    for name, module in ctx.adapter.neurons(ctx.model):
        dyn = ctx.adapter.neuron_dynamics(module)
        if dyn is None:
            ctx.skip("neuron_state", name, f"the {ctx.adapter.name} adapter does not describe its dynamics")
            continue
        if fmt.decay is not None:
            _decays(ctx, fmt, name, dyn)
        if name not in scales:
            ctx.skip("neuron_state", name, "threshold and membrane range need the state LSB: integer weights "
                                           "into the neuron (wrap(..., bits=...)) or chip-precision state")
            continue
        described[name] = scales[name]
        _threshold(ctx, fmt, name, dyn, scales[name])
    if described:
        _membrane_range(ctx, fmt, described)


register_check_rule("neuron_state", _neuron_state, replace=True)
