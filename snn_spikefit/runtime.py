"""Run any supported SNN over time through one path.

>>> import torch
>>> from torch import nn
>>> out = run(nn.Linear(3, 2), torch.ones(5, 3), num_steps=4)   # plain torch: stateless steps
>>> tuple(out.shape)
(4, 5, 2)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from torch import Tensor, nn

from .adapter import get_adapter
from .errors import SpikeFitTypeError, SpikeFitValueError

__all__ = ["run", "reset", "check_input", "check_module", "eval_mode", "train_mode", "DEFAULT_NUM_STEPS"]

#: Steps every verb over a data loader feeds a static batch ``[B, ...]`` for, unless told
#: otherwise: ``fit``, ``accuracy``, ``predict``, ``recalibrate_bn``, ``prune``, ``evaluate`` and
#: ``compress`` read the same loader the same way. ``num_steps=None`` means the batches are
#: already time-major ``[T, B, ...]`` (event data). The tensor-level ``run(model, x)`` and
#: ``count_ops(model, x)`` take ``x`` as it is: time-major unless ``num_steps`` is given.
DEFAULT_NUM_STEPS = 4


def check_module(model: Any, name: str = "model") -> nn.Module:
    """``model`` if it is an ``nn.Module``, else :class:`~snn_spikefit.errors.SpikeFitTypeError` naming it."""
    if not isinstance(model, nn.Module):
        raise SpikeFitTypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


@contextmanager
def _mode(model: nn.Module, training: bool, clear: bool) -> Iterator[nn.Module]:
    modes = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        if clear:
            reset(model)


def eval_mode(model: nn.Module, *, clear: bool = False):
    """Context: ``model.eval()`` inside, and every submodule's own mode back on exit (errors included).

    ``clear=True`` also resets the neurons' state on exit (see :func:`reset`), so no
    membrane that refers to the last autograd graph stays in the model.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()); net[1].eval()
    Dropout(p=0.5, inplace=False)
    >>> with eval_mode(net): print(net.training, net[1].training)
    False False
    >>> net.training, net[1].training      # the mixed modes the user had
    (True, False)
    """
    return _mode(model, False, clear)


def train_mode(model: nn.Module, *, clear: bool = False):
    """Context: ``model.train()`` inside, every submodule's own mode back on exit (``clear``: as :func:`eval_mode`)."""
    return _mode(model, True, clear)


def check_input(x: Any, num_steps: int | None) -> None:
    """Validate ``run``'s arguments (shared by every feature that runs models)."""
    if not isinstance(x, Tensor):
        raise SpikeFitTypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if num_steps is not None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise SpikeFitValueError(f"num_steps={num_steps!r} is not allowed; use a positive int, "
                                     f"or None when x is time-major [T, B, ...]")
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
    check_module(model)
    check_input(x, num_steps)
    adapter = get_adapter(model)
    adapter.reset(model)
    return adapter.run(model, x, num_steps)
