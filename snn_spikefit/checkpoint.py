"""Read a PyTorch checkpoint without running code from it (unless told to trust it).

``torch.load`` unpickles; a pickle can call any Python function (``os.system`` ...) while it
is read. :func:`load_checkpoint` therefore reads with ``torch.load(weights_only=True)``,
which only rebuilds tensors, numbers, strings and containers: a ``state_dict`` (or a dict
holding one under ``"state_dict"``) loads that way into the model ``model_factory`` builds.
A whole pickled module (``torch.save(model)``) needs ``trust=True`` (the CLI's
``--trust-checkpoint``): the file is then unpickled with ``weights_only=False`` and can run
any code on this machine, so pass it only for files you made or trust.

>>> import torch, tempfile, os
>>> from torch import nn
>>> path = os.path.join(tempfile.mkdtemp(), "net.pt")
>>> torch.save(nn.Linear(3, 2).state_dict(), path)
>>> type(load_checkpoint(path, lambda: nn.Linear(3, 2))).__name__
'Linear'
>>> torch.save(nn.Linear(3, 2), path)
>>> load_checkpoint(path)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
snn_spikefit.checkpoint.UntrustedCheckpointError: checkpoint '...net.pt' holds pickled Python objects ...
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .errors import SpikeFitTypeError, SpikeFitValueError

__all__ = ["load_checkpoint", "UntrustedCheckpointError", "TRUST_HELP"]

#: What trusting a checkpoint means, for help texts.
TRUST_HELP = ("unpickle the checkpoint with torch.load(weights_only=False) to load a whole module saved "
              "with torch.save(model): the file can then run any code on this machine; give it only for "
              "files you made or trust (a state_dict never needs it)")


class UntrustedCheckpointError(SpikeFitValueError):
    """A checkpoint holds pickled objects that only ``trust=True`` (``--trust-checkpoint``) may unpickle."""


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300] if lines else type(exc).__name__


def _refused_global(text: str) -> str:
    """What torch's weights-only unpickler refused, e.g. ``GLOBAL posix.system``, from its long message."""
    found = re.search(r"(GLOBAL [\w.]+)", text)
    return f"it asks for {found.group(1)}; " if found else ""


def _read(path: Path, trust: bool) -> Any:
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols: the refusal below says what matters
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:
        text = _first_line(exc)
        if not trust and ("weights only" in str(exc).lower() or isinstance(exc, pickle.UnpicklingError)):
            raise UntrustedCheckpointError(
                f"checkpoint {str(path)!r} holds pickled Python objects (e.g. a whole module saved with "
                f"torch.save(model)), which are refused because unpickling them can run code from the file "
                f"({_refused_global(str(exc))}nothing was run); save model.state_dict() and load it into your "
                f"model (--model-factory), or pass trust=True / --trust-checkpoint if you trust the file") from None
        raise SpikeFitValueError(f"cannot read checkpoint {str(path)!r}: {type(exc).__name__}: {text}") from None


def load_checkpoint(path: str | os.PathLike, model_factory: Callable[[], nn.Module] | None = None, *,
                    trust: bool = False, factory_name: str | None = None) -> nn.Module:
    """The model in the checkpoint ``path``: a state_dict loaded into ``model_factory()``, or a whole module.

    Args:
        path: a file written by ``torch.save``.
        model_factory: builds the model a state_dict (or a ``{"state_dict": ...}`` dict) is loaded into.
        trust: unpickle arbitrary objects (``weights_only=False``); needed only for a whole module
            saved with ``torch.save(model)``. The file can then run any code: see :data:`TRUST_HELP`.
        factory_name: what error messages call the factory (default ``model_factory 'its name'``).

    Raises:
        UntrustedCheckpointError: the file holds pickled objects and ``trust`` is not set (nothing ran).
        SpikeFitValueError / SpikeFitTypeError: an unreadable file, a state_dict without a factory, a
            factory that fails or returns no module, a state_dict that does not fit.
    """
    if not isinstance(trust, bool):
        raise SpikeFitTypeError(f"trust must be True or False, got {trust!r}")
    if model_factory is not None and not callable(model_factory):
        raise SpikeFitTypeError(f"model_factory must be callable, got {type(model_factory).__name__}")
    path = Path(path)
    if not path.is_file():
        raise SpikeFitValueError(f"checkpoint {str(path)!r} does not exist or is not a file")
    obj = _read(path, trust)
    if model_factory is None:
        if isinstance(obj, nn.Module):
            return obj
        raise SpikeFitValueError(
            f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a model saved with torch.save(model); "
            f"for a state_dict give the function that builds the model (model_factory, --model-factory)")
    name = factory_name or f"model_factory {getattr(model_factory, '__qualname__', repr(model_factory))!r}"
    try:
        model = model_factory()
    except Exception as exc:
        raise SpikeFitValueError(f"{name} failed: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise SpikeFitTypeError(f"{name} returned {type(model).__name__}, not an nn.Module")
    state = obj.state_dict() if isinstance(obj, nn.Module) else obj
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SpikeFitValueError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except Exception as exc:
        raise SpikeFitValueError(f"checkpoint {str(path)!r} does not fit the model of {name}: "
                                 f"{_first_line(exc)}") from None
    return model
