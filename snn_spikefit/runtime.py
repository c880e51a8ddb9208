"""Run any supported SNN over time through one path.

>>> import torch
>>> from torch import nn
>>> out = run(nn.Linear(3, 2), torch.ones(5, 3), num_steps=4)   # plain torch: stateless steps
>>> tuple(out.shape)
(4, 5, 2)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .adapter import get_adapter
from .errors import InputMismatchError, SpikeFitTypeError, SpikeFitValueError

__all__ = ["run", "reset", "check_input", "DEFAULT_NUM_STEPS"]

#: Steps every verb over a data loader feeds a static batch ``[B, ...]`` for, unless told
#: otherwise: ``fit``, ``accuracy``, ``predict``, ``recalibrate_bn``, ``prune``, ``evaluate`` and
#: ``compress`` read the same loader the same way. ``num_steps=None`` means the batches are
#: already time-major ``[T, B, ...]`` (event data). The tensor-level ``run(model, x)`` and
#: ``count_ops(model, x)`` take ``x`` as it is: time-major unless ``num_steps`` is given.
DEFAULT_NUM_STEPS = 4


def check_input(x: Any, num_steps: int | None) -> None:
    """Validate ``run``'s arguments (shared by every feature that runs models)."""
    if not isinstance(x, Tensor):
        raise SpikeFitTypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if num_steps is not None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise SpikeFitValueError(f"num_steps={num_steps!r} is not allowed; use a positive int, "
                                     f"or None when x is time-major [T, B, ...]")
        if x.ndim < 2:
            raise SpikeFitValueError(
                f"x has shape {tuple(x.shape)}; with num_steps={num_steps} x must be a batch [B, ...] "
                f"(add the batch dimension: x.unsqueeze(0))")
    elif x.ndim < 2:
        raise SpikeFitValueError(
            f"x has shape {tuple(x.shape)}; with num_steps=None x must be time-major [T, B, ...] "
            f"(pass num_steps=T to repeat a static [B, ...] input T times)"
        )
    if x.is_floating_point() and not bool(x.isfinite().all()):
        raise SpikeFitValueError("x contains NaN or inf values; inputs must be finite")


def reset(model: nn.Module) -> None:
    """Clear the state of every spiking neuron in ``model``."""
    get_adapter(model).reset(model)


def run(model: nn.Module, x: Tensor, *, num_steps: int | None = None) -> Any:
    """Reset ``model``, run it over time and return per-step outputs time-major ``[T, B, ...]``.

    Args:
        model: an snnTorch, Norse or plain PyTorch model. For snnTorch, the time
            loop may be outside ``forward`` (neurons with ``init_hidden=True``, or
            stateful calls) or inside it (``forward`` loops and returns stacked
            recordings): the adapter tells them apart by counting neuron calls.
        x: static input ``[B, ...]`` repeated ``num_steps`` times (direct encoding),
            or time-major ``[T, B, ...]`` with ``num_steps=None``.
        num_steps: number of steps for a static input; ``None`` (default) when ``x`` is
            time-major.

    Returns:
        A tensor ``[T, B, ...]``, or a tuple of them when each step returns a tuple
        (for example ``(spikes, membrane)``).
    """
    if not isinstance(model, nn.Module):
        raise SpikeFitTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_input(x, num_steps)
    adapter = get_adapter(model)
    adapter.reset(model)
    try:
        return adapter.run(model, x, num_steps)
    except RuntimeError as exc:  # a shape or dtype the model cannot take: name the layer
        raise _layer_error(model, x, exc) from exc


def _expects(module: nn.Module) -> str:
    """What input a layer takes, for error messages."""
    weight = getattr(module, "weight", None)
    dtype = f" of {weight.dtype}" if isinstance(weight, Tensor) else ""
    if isinstance(module, nn.Linear):
        return f"takes inputs [..., {module.in_features}]{dtype}"
    if isinstance(module, nn.modules.conv._ConvNd):
        dims = len(module.kernel_size)
        return f"takes inputs [B, {module.in_channels}, {', '.join(['...'] * dims)}]{dtype}"
    return f"is a {type(module).__name__}"


def _layer_error(model: nn.Module, x: Tensor, exc: RuntimeError) -> Exception:
    """An :class:`~snn_spikefit.errors.InputMismatchError` naming the innermost layer of ``model`` the error came from.

    The layer is found in the traceback (no hooks, so running costs nothing extra); when no
    layer of ``model`` is on it, the error is only rephrased with the input's shape and dtype.
    """
    names = {id(m): n for n, m in model.named_modules()}
    layer, got = None, None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            layer = owner
            code = frame.f_code
            args = [frame.f_locals.get(v) for v in code.co_varnames[:code.co_argcount]]
            got = next((a for a in args if isinstance(a, Tensor)), None)
        tb = tb.tb_next
    first = " ".join(str(exc).split())[:200]
    given = f"x of shape {tuple(x.shape)} ({x.dtype})"
    if layer is None:
        return InputMismatchError(f"{type(model).__name__} cannot run on {given}: {first}")
    name = names[id(layer)] or type(model).__name__
    seen = f"gets {tuple(got.shape)} ({got.dtype})" if got is not None else "fails"
    return InputMismatchError(f"layer {name!r} ({type(layer).__name__}) {_expects(layer)} but {seen} from "
                              f"{given}: {first}")
