"""All or nothing: a verb that changes a model either completes or leaves it exactly as it was.

:class:`ModelSnapshot` records, for every module of a model, its class (parametrizations
swap it), its attribute dictionary and the dictionaries of parameters, buffers, submodules
and hooks, plus a copy of every parameter's and buffer's values (and its ``.grad`` and class).
:meth:`ModelSnapshot.restore` puts all of that back on the *same* objects, so references a
caller holds (``net[0]``, an optimizer's parameters) stay valid. :func:`transactional`
applies it to a verb whose first argument is the model: ``wrap``, ``prune``, ``freeze``,
``strip``, ``fold_batchnorm`` and ``compress`` use it.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(2, 2))
>>> before = {k: v.clone() for k, v in net.state_dict().items()}
>>> snap = ModelSnapshot(net)
>>> with torch.no_grad():
...     _ = net[0].weight.mul_(0)
>>> net[0] = nn.Identity()
>>> snap.restore()
>>> type(net[0]).__name__, all(torch.equal(before[k], v) for k, v in net.state_dict().items())
('Linear', True)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["ModelSnapshot", "transactional", "unchanged_on_error"]

F = TypeVar("F", bound=Callable[..., Any])

#: Per-module dictionaries that verbs add to or remove from (copied, not shared, by a snapshot).
_DICTS = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "_forward_hooks",
          "_forward_pre_hooks", "_backward_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks",
          "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


class ModelSnapshot:
    """Everything about ``model`` a transforming verb can change, to put back with :meth:`restore`."""

    def __init__(self, model: nn.Module) -> None:
        self.modules: list[tuple[nn.Module, type, dict, dict]] = []
        self.tensors: dict[int, tuple[Tensor, type, Tensor, Tensor | None, bool]] = {}
        for module in model.modules():
            state = module.__dict__
            copies = {k: (type(state[k]), list(state[k]) if isinstance(state[k], set) else dict(state[k]))
                      for k in _DICTS if k in state}
            self.modules.append((module, module.__class__, dict(state), copies))
            for t in list(module._parameters.values()) + list(module._buffers.values()):
                if isinstance(t, Tensor) and id(t) not in self.tensors:
                    self.tensors[id(t)] = (t, type(t), t.detach().clone(), t.grad, t.requires_grad)

    @torch.no_grad()
    def restore(self) -> None:
        """Put every module, parameter and buffer back as it was when the snapshot was taken."""
        for module, cls, state, copies in self.modules:
            if module.__class__ is not cls:
                module.__class__ = cls
            module.__dict__.clear()
            module.__dict__.update(state)
            for key, (kind, content) in copies.items():
                module.__dict__[key] = kind(content)
        for t, kind, saved, grad, requires_grad in self.tensors.values():
            if type(t) is not kind:  # the quantizer cache's watch swaps it (quantize/cache.py)
                t.__class__ = kind
            if t.shape != saved.shape or t.dtype != saved.dtype or t.device != saved.device:
                t.data = saved
            elif not torch.equal(t, saved):
                t.copy_(saved)  # bumps the version counter, so caches keyed on it recompute
            if t.grad is not grad:
                _set_grad(t, grad)
            if t.is_leaf:
                t.requires_grad_(requires_grad)


def _set_grad(t: Tensor, grad: Tensor | None) -> None:
    """``t.grad = grad``, also when the snapshot caught ``grad`` with another shape than ``t``'s data."""
    if grad is not None and (grad.shape != t.shape or grad.dtype != t.dtype or grad.device != t.device):
        data = t.data
        t.data = torch.empty_like(grad)
        t.grad = grad
        t.data = data
    else:
        t.grad = grad


class unchanged_on_error:
    """Context manager: on an exception inside, restore ``model`` (:class:`ModelSnapshot`) and re-raise."""

    def __init__(self, model: nn.Module) -> None:
        self.snapshot = ModelSnapshot(model) if isinstance(model, nn.Module) else None

    def __enter__(self) -> "unchanged_on_error":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is not None and self.snapshot is not None:
            self.snapshot.restore()
        return False


def transactional(fn: F) -> F:
    """Decorate a verb ``fn(model, ...)``: when it raises (even ``KeyboardInterrupt``), ``model`` is restored."""

    @functools.wraps(fn)
    def verb(model, *args, **kwargs):
        with unchanged_on_error(model):
            return fn(model, *args, **kwargs)

    return verb  # type: ignore[return-value]
