"""Attach, train, freeze and strip learnable codebooks (CAT); freeze and strip serve every quantizer.

>>> import torch
>>> from torch import nn
>>> import snn_spikefit as sf
>>> net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
>>> _ = sf.wrap(net, m=4, bits=4)
>>> [int(l.weight.unique().numel()) <= 4 for l in (net[0], net[2])]
[True, True]
>>> loss = net(torch.randn(5, 16)).sum() + 0.25 * sf.commitment_loss(net)
>>> loss.backward()
>>> _ = sf.freeze(net)
>>> net[0].parametrizations.weight[0].codes.dtype
torch.uint8
"""

from __future__ import annotations

import fnmatch
import warnings
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..transaction import transactional
from ..adapter import get_adapter
from ..deploy.hardware import HardwareProfile, as_profile
from ..errors import NotWrappedError, SpikeFitTypeError, SpikeFitValueError, UnsupportedLayerError
from ..distributed import refuse_ddp
from ..neurons.state import StateFormat, quantize_state, strip_state
from ..runtime import check_module
from ..table import Table
from .codebook import CodebookWeight
from .init import INITS, init_codebook
from .layers import (COMPRESSIBLE_TYPES, CompressedLayer, candidates, compressed_layers, install_frozen,
                     is_wrapped, remove_parametrization)
from .quantizer import distinct_per_row
from .thaw import thaw

__all__ = ["wrap", "commitment_loss", "freeze", "strip", "codebook_summary", "GRANULARITIES"]

GRANULARITIES = ("layer", "channel")
#: Most values one codebook may hold (its codes are at most 16-bit integers).
MAX_M = 2**16


def check_int(name: str, value: object, low: int, high: int | None, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpikeFitTypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in {low}..{high}"
        raise SpikeFitValueError(f"{name}={value} is not allowed: {what} ({name} must be {allowed})")
    return value


def as_patterns(name: str, value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    try:
        pats = list(value)
    except TypeError:
        raise SpikeFitTypeError(
            f"{name} must be a layer name, a glob pattern or a list of them, got {value!r}"
        ) from None
    for p in pats:
        if not isinstance(p, str):
            raise SpikeFitTypeError(f"{name} must contain layer names (str), got {p!r}")
    return pats


def select_layers(
    model: nn.Module, include: list[str] | None, exclude: list[str] | None
) -> list[tuple[str, nn.Module, str]]:
    found = candidates(model)
    names = [n for n, _, _ in found]
    for arg, pats in (("include", include), ("exclude", exclude)):
        for p in pats or []:
            if not any(fnmatch.fnmatchcase(n, p) for n in names):
                raise SpikeFitValueError(
                    f"{arg}={p!r} matches no compressible layer; compressible layers "
                    f"({', '.join(t.__name__ for t in COMPRESSIBLE_TYPES)}) are: {names}"
                )
    chosen = []
    for n, m, param in found:
        if include is not None and not any(fnmatch.fnmatchcase(n, p) for p in include):
            continue
        if exclude is not None and any(fnmatch.fnmatchcase(n, p) for p in exclude):
            continue
        chosen.append((n, m, param))
    return chosen


@transactional
def wrap(
    model: nn.Module,
    *,
    m: int | None = None,
    bits: int | None = None,
    granularity: str | None = None,
    init: str = "kmeans",
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    reseed: bool = True,
    hardware: str | HardwareProfile | None = None,
    state_bits: int | None = None,
    state: bool | None = None,
) -> nn.Module:
    """Give every compressible layer of ``model`` a learnable ``m``-value codebook.

    Changes ``model`` in place (through ``torch.nn.utils.parametrize``) and
    returns it. Layers keep their class; their latent weight and the new
    ``codebook`` are ordinary parameters, so optimizers and checkpoints work.

    Args:
        model: any ``nn.Module``; its ``Linear``/``Conv1d``/``Conv2d``/``Conv3d``
            layers are compressed (the ``weight``; biases stay as they are), and the
            weights a neuron owns (``Adapter.weight_names``: Norse ``LIFRecurrentCell``'s
            ``input_weights`` and ``recurrent_weights``); snnTorch ``RLeaky.recurrent``
            is a ``Linear`` and compressed as one.
        m: values per codebook, at least 2 (default 4, or the profile's).
        bits: quantize the codebook to signed integers of this width (2..8) times
            one scale per codebook; then ``m <= 2**bits - 1``. ``None`` keeps float.
        granularity: ``"layer"`` (one codebook per layer) or ``"channel"`` (one per
            output channel / neuron, as in TrueNorth's per-neuron weight tables).
        init: codebook initialisation: ``"kmeans"`` (exact 1-D k-means of the
            weights), ``"linear"`` (evenly spaced over the weight range) or
            ``"quantile"`` (equal-count bins); ``"frozen"``: make the model's frozen codebook
            layers (``freeze``, ``compress_posttraining``) trainable again with the same
            weights, so CAT fine-tunes a post-training result.
        include, exclude: layer names or glob patterns (``"fc*"``), as in
            ``model.named_modules()``; default all compressible layers.
        reseed: re-seed codewords that no weight uses (training mode only).
        hardware: name of a hardware profile; takes ``m``, ``bits`` and
            ``granularity`` from it where not given, and, where it publishes its state
            precision (Loihi, Xylo), gives the neurons chip-precision state
            (:func:`snn_spikefit.neurons.state.quantize_state`) unless ``state=False``.
        state_bits: give the neurons chip-precision state of this many signed bits instead.
        state: ``None`` (default): chip-precision state when ``hardware``/``state_bits`` give it
            and the neurons support it (else a warning); ``True``: required; ``False``: never.

    Raises:
        SpikeFitValueError / SpikeFitTypeError: bad arguments, a model with no
            compressible layer, a model already wrapped, NaN/inf weights. The model
            is left exactly as it was.
    """
    check_module(model)
    if init == "frozen":
        if (m, bits, granularity, hardware, include, exclude) != (None,) * 6:
            raise SpikeFitValueError("init='frozen' takes m, bits and granularity from the frozen layers; "
                                     "leave m, bits, granularity, hardware, include and exclude unset")
        return thaw(model, reseed=reseed)
    if hardware is not None:
        m, bits, granularity = _from_profile(hardware, m, bits, granularity)
    refuse_ddp(model, "wrap")  # wrap first: DDP then broadcasts rank 0's codebooks to every rank
    m = 4 if m is None else m
    granularity = "layer" if granularity is None else granularity
    check_int("m", m, 2, MAX_M, "a codebook needs at least 2 values, and its codes are stored in at most 16 "
                                 "bits")
    if bits is not None:
        check_int("bits", bits, 2, 8, "codebooks are quantized to 2..8-bit signed integers")
        if m > 2**bits - 1:
            raise SpikeFitValueError(
                f"m={m} is not allowed with bits={bits}: a {bits}-bit signed codebook holds "
                f"at most 2**bits - 1 = {2**bits - 1} distinct values (use m <= {2**bits - 1} "
                f"or more bits)"
            )
    if granularity not in GRANULARITIES:
        raise SpikeFitValueError(f"granularity={granularity!r} is not allowed; use one of {GRANULARITIES}")
    if init not in INITS:
        raise SpikeFitValueError(f"init={init!r} is not allowed; use one of {tuple(INITS) + ('frozen',)}")
    if is_wrapped(model):
        names = [c.name for c in compressed_layers(model)]
        raise SpikeFitValueError(
            f"model is already wrapped (layers with quantizers: {names}); wrap it once, or "
            f"call snn_spikefit.strip(model) first"
        )
    fmt = _state_format(hardware, state_bits, state)
    layers = select_layers(model, as_patterns("include", include), as_patterns("exclude", exclude))
    if not layers:
        raise SpikeFitValueError(
            f"model has no compressible layer to wrap (types "
            f"{[t.__name__ for t in COMPRESSIBLE_TYPES]}, after include={include!r}, exclude={exclude!r})"
        )

    # Compute every codebook before touching the model, so a failure changes nothing.
    plans = []
    for name, module, param in layers:
        weight = getattr(module, param).detach()
        bad = int((~torch.isfinite(weight)).sum())
        if bad:
            raise SpikeFitValueError(
                f"layer {name!r} ({type(module).__name__}) has {bad} NaN/inf weights; "
                f"all weights must be finite to build a codebook"
            )
        groups = weight.shape[0] if granularity == "channel" else 1
        codebook = init_codebook(weight.reshape(groups, -1), m, init)
        plans.append((module, param, codebook.to(weight.device)))

    # a failure from here on is rolled back by @transactional (modules, parameters and their class)
    for module, param, codebook in plans:
        q = CodebookWeight(codebook, bits=bits, granularity=granularity, reseed=reseed)
        parametrize.register_parametrization(module, param, q)
    if fmt is not None:
        _attach_state(model, fmt, required=bool(state) or state_bits is not None)
    return model


def _state_format(hardware, state_bits, state) -> StateFormat | None:
    if state not in (None, True, False):
        raise SpikeFitTypeError(f"state must be None, True or False, got {state!r}")
    if state is False:
        return None
    if state_bits is not None:
        check_int("state_bits", state_bits, 2, 32, "neuron state is held in 2..32-bit signed integers")
        return StateFormat(state_bits, state_bits, name=f"{state_bits}-bit state")
    fmt = StateFormat.from_profile(hardware) if hardware is not None else None
    if fmt is None and state:
        raise SpikeFitValueError(f"state=True needs state_bits= or a hardware profile that publishes its state "
                                 f"precision (hardware={hardware!r} does not)")
    return fmt


def _attach_state(model: nn.Module, fmt: StateFormat, *, required: bool) -> None:
    if not required and not get_adapter(model).neurons(model):
        return  # no spiking neuron: nothing holds state
    try:
        quantize_state(model, fmt=fmt)
    except (UnsupportedLayerError, SpikeFitValueError) as exc:
        if required:
            raise
        warnings.warn(f"wrap: the neurons keep float state ({exc}); pass state=False to silence this",
                      RuntimeWarning, stacklevel=3)


def _from_profile(hardware: str | HardwareProfile, m, bits, granularity):
    profile = as_profile(hardware)
    return profile.wrap_arguments(m=m, bits=bits, granularity=granularity)


def _require_wrapped(model: nn.Module, what: str) -> list[CompressedLayer]:
    check_module(model)
    layers = compressed_layers(model)
    if not layers:
        raise NotWrappedError(f"{what} needs a model prepared by snn_spikefit.wrap(model, m=...); "
                              f"{type(model).__name__} has no codebook layer")
    return layers


def commitment_loss(model: nn.Module) -> Tensor:
    """Sum over layers of Eq. 7, ``mean((w_q - sg(w))^2)``: pulls codebooks to the weights.

    Add it to your loss: ``loss = task_loss + beta * commitment_loss(model)``.
    Only trainable codebooks contribute (frozen layers and baseline quantizers add nothing).
    """
    layers = _require_wrapped(model, "commitment_loss")
    terms = [layer.quantizer.commitment(layer.latent) for layer in layers
             if isinstance(layer.quantizer, CodebookWeight)]
    if not terms:
        p = next(model.parameters())
        return torch.zeros((), device=p.device, dtype=p.dtype)
    return torch.stack(terms).sum()


@transactional
@torch.no_grad()
def freeze(model: nn.Module) -> nn.Module:
    """Replace every quantizer (CAT codebook or baseline) by its frozen integer form, in place.

    Each compressed layer then holds a :class:`~snn_spikefit.quantize.codebook.FrozenCodebook`:
    buffers ``codes`` (smallest unsigned dtype that fits ``m``), ``values`` and,
    when the quantizer has ``bits``, ``codebook_int`` and ``scale``; its weight is
    exactly ``scale * codebook_int[codes]``. Outputs do not change. Already
    frozen layers are left alone. Every layer is checked and frozen before any
    is replaced, so a refusal leaves the model as it was.
    """
    plans = []
    for layer in _require_wrapped(model, "freeze"):
        if layer.frozen:
            continue
        plist = layer.module.parametrizations[layer.param]
        if len(plist) != 1:
            raise SpikeFitValueError(
                f"layer {layer.name!r} has {len(plist)} parametrizations on its weight; freeze "
                f"supports the quantizer alone (remove the others first)"
            )
        plans.append((layer, layer.quantizer.freeze(layer.latent)))
    for layer, frozen in plans:
        remove_parametrization(layer.module, layer.param, leave_parametrized=False)
        install_frozen(layer.module, frozen, layer.param)
    return model


@transactional
@torch.no_grad()
def strip(model: nn.Module) -> nn.Module:
    """Turn every codebook layer back into a plain layer holding its quantized weight.

    In place; returns ``model``. Outputs do not change; the weight keeps at most
    ``m`` distinct values per codebook but is no longer tied to a codebook. Neurons with
    chip-precision state get their own update back (:func:`~snn_spikefit.neurons.state.strip_state`).
    """
    check_module(model)
    if strip_state(model) and not compressed_layers(model):
        return model
    for layer in _require_wrapped(model, "strip"):
        remove_parametrization(layer.module, layer.param, leave_parametrized=True)
        getattr(layer.module, layer.param).requires_grad_(True)
    return model


def codebook_summary(model: nn.Module) -> Table:
    """Per compressed layer: M asked, effective M, bits, scale, integer codebook, weights.

    ``m_effective`` is the largest number of distinct values a codebook of the
    layer actually gives its weights (codewords that merge after rounding, or
    that no weight uses, do not count). ``codebook`` shows the integers when
    ``bits`` is set (first group), else the float values.
    """
    table = Table(
        ["layer", "type", "granularity", "groups", "m", "m_effective", "bits", "scale",
         "codebook", "weights", "size_bits", "fp32_bits"],
        title="codebook summary",
    )
    for layer in _require_wrapped(model, "codebook_summary"):
        q = layer.quantizer
        weight = layer.weight
        groups = q.groups
        m_eff = int(distinct_per_row(weight.reshape(groups, -1)).max())
        form = layer.integer_form()
        if form.ints is not None:
            book = sorted(int(v) for v in form.ints[0].tolist())
            scale_shown = float(form.scale[0]) if groups == 1 else f"{groups} scales"
        else:
            book = sorted(round(float(v), 5) for v in form.values[0].tolist())
            scale_shown = None
        n = weight.numel()
        table.add_row([
            layer.name, parametrize.type_before_parametrizations(layer.module).__name__, q.granularity, groups, q.m, m_eff,
            q.bits, scale_shown, book, n, q.size_bits(n), 32 * n,
        ])
    return table
