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
