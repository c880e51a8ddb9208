"""Exceptions raised by snn_spikefit.

Every error the library raises for bad input is a :class:`SpikeFitError`; the
subclasses also derive from the matching built-in (``ValueError``,
``TypeError``, ``KeyError``) so code that already catches those keeps working.
Messages name the argument, its value and what is allowed.
"""

from __future__ import annotations

__all__ = [
    "SpikeFitError",
    "SpikeFitValueError",
    "SpikeFitTypeError",
    "UnsupportedLayerError",
    "NotWrappedError",
    "InputMismatchError",
    "refuse_duplicate",
]


class SpikeFitError(Exception):
    """Base class of every error raised by snn_spikefit."""


class SpikeFitValueError(SpikeFitError, ValueError):
    """An argument has the right type but a value that is not allowed."""


class SpikeFitTypeError(SpikeFitError, TypeError):
    """An argument (or a layer of a model) has a type that is not supported."""


class UnsupportedLayerError(SpikeFitTypeError):
    """A model contains a layer the requested operation cannot handle."""


class NotWrappedError(SpikeFitValueError):
    """An operation needs a model prepared by :func:`snn_spikefit.wrap`."""


class InputMismatchError(SpikeFitValueError):
    """A layer of a model cannot take the input it is given (shape or dtype); the message names the layer."""


def refuse_duplicate(kind: str, key, taken, *, replace: bool, label: str | None = None) -> None:
    """The one rule every registry follows: a key already in ``taken`` needs ``replace=True``.

    ``kind`` names what is registered ("a check rule named", "surgery for"), ``label`` how the key
    is shown (default ``repr(key)``). The message lists what is registered, so a typo is visible.
    """
    if replace or key not in taken:
        return
    shown = label if label is not None else repr(key)
    names = [getattr(k, "__name__", k) for k in taken]
    raise SpikeFitValueError(f"{kind} {shown} is already registered; pass replace=True to replace it "
                             f"(registered: {names})")
