"""The per-forward cache of derived weights, and the watch that makes every write visible.

A quantized weight is a function of the latent weight and the codebook. A model
called once per timestep would recompute it ``T`` times per forward pass; the
cache keeps it while its inputs are unchanged. "Unchanged" is decided from the
key of every input: its identity, its version counter, and a count of
``.data = ...`` assignments. Version counters miss two kinds of write, which
the watch below closes:

* ``p.data`` normally returns an alias with a *separate* version counter, so
  ``p.data.mul_(2)`` (or a reference to ``p.data`` held and written later) is
  invisible. A watched tensor's ``.data`` returns ``p.detach()`` instead: the
  same storage, the same version counter, so the write is counted. The latent
  weight and the codebook are never saved for backward (the graph saves the
  quantized weight and the codes), so this cannot raise autograd's in-place
  error where plain ``.data`` would not.
* ``p.data = t`` (what ``torch.nn.utils.vector_to_parameters`` and
  ``module.to(...)`` do) swaps the storage without a version bump; a watched
  tensor counts these assignments in ``_spikefit_writes``.

``load_state_dict`` and ``p.copy_(...)`` under ``no_grad`` bump the version
counter and need nothing extra. Watching is a class swap (``__class__``) of the
parameter or buffer in place: identity, storage, optimizer references and
``isinstance(p, nn.Parameter)`` stay as they were, and it costs nothing per call.
Writes that bypass torch altogether (through ``p.detach().numpy()``) are not seen;
call ``invalidate()`` on the quantizer after them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["VersionCache", "watch", "unwatch"]

_DATA = torch.Tensor.data  # the C-level descriptor


class _WatchedData:
    """``.data`` aliases with a shared version counter; ``.data = t`` is counted."""

    @property
    def data(self) -> Tensor:
        return self.detach()

    @data.setter
    def data(self, value: Tensor) -> None:
        _DATA.__set__(self, value)
        self._spikefit_writes = getattr(self, "_spikefit_writes", 0) + 1


class _WatchedParameter(_WatchedData, nn.Parameter):
    """An ``nn.Parameter`` whose writes through ``.data`` the quantizer cache sees."""

    def __repr__(self) -> str:
        return "Parameter containing:\n" + repr(self.detach().requires_grad_(self.requires_grad))


class _WatchedBuffer(_WatchedData, torch.Tensor):
    """A buffer whose writes through ``.data`` the quantizer cache sees (results are plain tensors)."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self) -> str:
        return repr(self.detach())

    def __deepcopy__(self, memo: dict) -> Tensor:
        out = memo[id(self)] = self.detach().clone()  # a plain tensor, watched again on first use
        return out

    def __reduce_ex__(self, protocol: int):
        return self.detach().__reduce_ex__(protocol)  # pickles (and weights_only-loads) as a plain tensor


def unwatch(t: Tensor) -> Tensor:
    """Undo :func:`watch` (when a parametrization is removed, the weight is ordinary again)."""
    if type(t) is _WatchedParameter:
        t.__class__ = nn.Parameter
    elif type(t) is _WatchedBuffer:
        t.__class__ = torch.Tensor
    return t


def watch(t: Tensor) -> Tensor:
    """Make writes to ``t`` through ``.data`` visible to :class:`VersionCache` (in place; returns ``t``)."""
    cls = type(t)
    if cls is nn.Parameter:
        t.__class__ = _WatchedParameter
    elif cls is torch.Tensor:
        t.__class__ = _WatchedBuffer
    return t


class VersionCache:
    """Caches a derived tensor until its inputs change or gradient flows through it.

    The key holds the identity, version counter and ``.data`` assignment count of
    every input (each is watched on first use) plus the autograd mode. A result
    that carries a graph is dropped as soon as a backward pass reaches it (its
    graph is freed then), so gradient accumulation and truncated BPTT recompute
    as they must.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: Any = None

    @staticmethod
    def make_key(*tensors: Tensor) -> tuple:
        parts: list[Any] = [torch.is_grad_enabled(), torch.is_inference_mode_enabled()]
        for t in tensors:
            if type(t) is nn.Parameter or type(t) is torch.Tensor:
                watch(t)
            parts += [id(t), t._version, getattr(t, "_spikefit_writes", 0), t.device, t.dtype]
        return tuple(parts)

    def get(self, key: tuple) -> Any:
        return self.value if self.key == key else None

    def put(self, key: tuple, value: Any, hook_on: Tensor | None = None) -> None:
        self.key, self.value = key, value
        if hook_on is not None and hook_on.requires_grad:
            hook_on.register_hook(self._on_backward)

    def _on_backward(self, grad: Tensor) -> None:
        self.clear()

    def clear(self) -> None:
        self.key, self.value = None, None
