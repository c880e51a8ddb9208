"""Which tensors are sums of spike maps while :class:`~snn_spikefit.deploy.ops.OpCounter` counts.

A residual block adds neuron outputs in ``forward`` (``out = n2(...) + x``); the sum holds ``k`` where
``k`` spikes meet. :class:`SpikeSums` (a ``TorchFunctionMode``) marks the result of every addition
(:data:`~snn_spikefit.trace.ADD_FUNCTIONS`) of two tensors that are neuron outputs or such sums, keyed
by storage, so a layer fed one (or a view of one, e.g. through ``Flatten``) counts it as spike counts.
It is only switched on for models in which some container's own ``forward`` could add (:func:`may_add`):
chains of layers (``nn.Sequential``, Norse's ``SequentialState``) pay nothing for it.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..adapter import get_adapter
from ..trace import plain_add

__all__ = ["SpikeSums", "may_add", "storage"]


def storage(t: Tensor) -> int | None:
    """The data pointer of the storage under ``t`` (views share it), or None."""
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # no storage (meta, sparse)
        return None


def may_add(model: nn.Module) -> bool:
    """A container's own ``forward`` (not torch's, a neuron's or Norse's chain) may add tensors: watch."""
    is_neuron = get_adapter(model).is_neuron
    return any(any(True for _ in m.children()) and not type(m).forward.__module__.startswith("torch.nn")
               and type(m).__name__ != "SequentialState" and not is_neuron(m) for m in model.modules())


class SpikeSums(TorchFunctionMode):
    """Marks the sum of two neuron outputs (or sums of them) as spike counts, by storage."""

    def __init__(self, emitted: dict[int, Tensor]) -> None:
        super().__init__()
        self.emitted = emitted

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if plain_add(func, args, kwargs, out):
            key = storage(out)
            if key and all(self.emitted.get(storage(a)) is not None for a in args):
                self.emitted[key] = out
        return out
