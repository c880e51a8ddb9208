"""Multi-level (graded) spiking neurons: one spike carries one of ``L`` levels ("All in one timestep",
arXiv 2510.24637), so a network can run at ``num_steps=1``.

The level a neuron emits at step ``t`` from its membrane ``U_t`` and threshold ``theta``::

    s_t = #{k in 1 .. L-1 : U_t > k * theta}        = clip(ceil(U_t / theta) - 1, 0, L - 1)

which is the paper's ``clip(floor(U / theta), 0, L - 1)`` everywhere except exactly on a multiple of
``theta`` (``U = k * theta`` gives ``k - 1``, not ``k``): the comparison is strict, like the binary
neurons of snnTorch and Norse (spike when ``U > theta``), so ``L = 2`` *is* the binary neuron, spike for
spike. The reset subtracts the emitted level times the threshold (``U <- U - s * theta``), applied
where the framework applies its own subtractive reset (snnTorch: at the start of the next step).

Surrogate gradient: ``s`` is a sum of ``L - 1`` Heaviside steps at ``k * theta``; each step's gradient
is snnTorch's default arctangent surrogate, ``(alpha / 2) / (1 + (pi / 2 * alpha * (U - k theta))^2)``,
``alpha = 2``, so ``L = 2`` also has the binary neuron's gradient (and the threshold receives
``-k`` times each term). The paper trains with a surrogate too; which one was not checked here
(no access to the paper's text in this environment).

The framework modules (snnTorch ``MultiLevelLeaky``, Norse ``MultiLevelLIFCell``) live in the
adapters; the core only knows :class:`MultiLevelNeuron` (their common base) and :func:`spike_levels`.
:func:`to_multilevel` converts an existing model's neurons in place.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import SpikeFitTypeError, SpikeFitValueError, UnsupportedLayerError

__all__ = ["MultiLevelNeuron", "levels", "spike_levels", "graded_neurons", "to_multilevel", "LEVELS_KEY",
           "check_levels"]

#: NIR node metadata key of a multi-level neuron's level count (the node itself is its LIF/IF).
LEVELS_KEY = "spikefit.spike_levels"


def check_levels(value: object, what: str = "levels") -> int:
    """``value`` as a level count (an int >= 2), or a :class:`SpikeFitValueError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise SpikeFitValueError(f"{what}={value!r} is not allowed; use an int >= 2 (2 = binary spikes)")
    return value


class _Step(torch.autograd.Function):
    """Heaviside ``x > 0`` forward, arctangent surrogate backward (snnTorch's ``ATan``, ``alpha = 2``)."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        (x,) = ctx.saved_tensors
        a = ctx.alpha
        return a / 2 / (1 + (math.pi / 2 * a * x).pow(2)) * grad, None


def levels(mem: Tensor, threshold: Tensor | float, num_levels: int, *, alpha: float = 2.0) -> Tensor:
    """The level ``0 .. num_levels - 1`` each neuron emits (see the module text), with its surrogate."""
    out = _Step.apply(mem - threshold, alpha)
    for k in range(2, num_levels):  # L - 1 thresholds; L is small, the loop is not over neurons or steps
        out = out + _Step.apply(mem - k * threshold, alpha)
    return out


class MultiLevelNeuron:
    """Mixin of the framework neurons that emit levels; ``spike_levels`` is ``L``."""

    spike_levels: int = 2


def spike_levels(module: nn.Module) -> int:
    """Levels ``module`` emits: ``L`` for a :class:`MultiLevelNeuron`, else 2 (binary spikes)."""
    return int(module.spike_levels) if isinstance(module, MultiLevelNeuron) else 2


def graded_neurons(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, neuron)`` of the neurons of ``model`` that emit more than two levels."""
    return [(n, m) for n, m in model.named_modules() if spike_levels(m) > 2]


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, leaf = name.split(".")
    parent = model
    for part in path:
        parent = getattr(parent, part)
    return parent, leaf


def to_multilevel(model: nn.Module, *, levels: int, adapter: str | None = None,
                  ignore: list[str] | tuple[str, ...] = ()) -> nn.Module:
    """Replace every spiking neuron of ``model`` (in place) by its multi-level twin emitting ``levels`` levels.

    The twin keeps the neuron's parameters (``beta``, ``threshold``, ... under the same state_dict
    names, learnable or not) and its call convention, so a trained model keeps its weights and
    the user's loop runs unchanged. Neurons the framework has no multi-level twin for are refused
    by name (pass them in ``ignore``); the model is left as it was on any failure. Returns ``model``.
    """
    from ..adapter import get_adapter
    from ..runtime import check_module

    check_module(model)
    check_levels(levels)
    if isinstance(ignore, str) or not all(isinstance(n, str) for n in ignore):
        raise SpikeFitTypeError(f"ignore={ignore!r} is not allowed; use a list of neuron names")
    ad = get_adapter(model, adapter)
    neurons = dict(ad.neurons(model))
    unknown = sorted(set(ignore) - set(neurons))
    if unknown:
        raise SpikeFitValueError(f"ignore names {unknown} that are not spiking neurons of the model; "
                                 f"neurons: {sorted(neurons)}")
    if not hasattr(ad, "to_multilevel_neuron"):
        raise UnsupportedLayerError(f"adapter {ad.name!r} has no multi-level neurons (to_multilevel_neuron)")
    if "" in neurons:
        raise UnsupportedLayerError("the model is itself a neuron; build the multi-level neuron directly")
    twins = {n: ad.to_multilevel_neuron(m, levels) for n, m in neurons.items() if n not in ignore}
    for name, twin in twins.items():  # every twin built before any is swapped in: all or nothing
        parent, leaf = _parent(model, name)
        setattr(parent, leaf, twin)
    ad.reset(model)
    return model


def _graded_rule(ctx) -> None:
    """Check rule ``graded_spikes``: multi-level neurons on a chip whose spikes are binary events."""
    from ..deploy.hardware import get_profile, list_profiles

    graded = ctx.profile.graded_spikes
    if graded:
        return
    chips = [p for p in list_profiles() if get_profile(p).graded_spikes]
    for name, module in graded_neurons(ctx.model):
        levels = spike_levels(module)
        if graded is None:
            ctx.skip("graded_spikes", name, f"the profile does not say whether spikes may carry levels ({levels})")
            continue
        hint = (f"{ctx.chip} has binary spikes only: "
                f"turn the {levels} levels into binary events over more steps (binary neurons, e.g. "
                f"sf.to_multilevel(model, levels=2), at about {levels - 1}x the steps, then fine-tune), "
                f"or use a chip with graded spikes ({', '.join(chips) or 'none registered'})")
        ctx.add("graded_spikes", "graded_spikes", name, "binary spikes (2 levels)", f"{levels} levels", hint)


def _register() -> None:
    from ..deploy.rules import check_rules, register_check_rule

    if "graded_spikes" not in check_rules():
        register_check_rule("graded_spikes", _graded_rule)


_register()
