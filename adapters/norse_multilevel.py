"""Norse ``MultiLevelLIFCell``: a ``LIFCell`` whose spike carries one of ``L`` levels.

Drop it in where a model had ``norse.torch.LIFCell``; it takes the same arguments plus ``levels``
(and ``reset``)::

    from snn_spikefit.adapters.norse_multilevel import MultiLevelLIFCell
    cell = MultiLevelLIFCell(norse.LIFParameters(...), levels=4)

Per step, Norse's own order (``lif_feed_forward_step``): ``i <- i + x``, ``v <- v + dt tau_mem_inv
(v_leak - v + i)``, ``i <- i - dt tau_syn_inv i``; then the level ``z`` of ``U = v - v_reset`` with
threshold ``theta = v_th - v_reset`` (:func:`snn_spikefit.neurons.multilevel.levels`: ``z = #{k <
L : v > v_reset + k theta}``, the first step at ``v_th``), and the reset in the same step:

* ``reset="subtract"`` (default, the paper's): ``v <- v - z * theta``;
* ``reset="value"``: ``v <- v_reset`` after any spike (Norse's own reset; ``levels=2`` is then
  ``LIFCell``, spike for spike).

The surrogate is the level function's (a sum of arctangent steps), not Norse's ``p.method``.
"""

from __future__ import annotations

from functools import partial

import norse.torch as norse
from norse.torch.functional.lif import LIFFeedForwardState
from torch import Tensor

from snn_spikefit.errors import SpikeFitValueError, UnsupportedLayerError
from snn_spikefit.neurons.multilevel import MultiLevelNeuron, check_levels, levels as level_fn

__all__ = ["MultiLevelLIFCell", "from_lif_cell", "RESETS"]

RESETS = ("subtract", "value")


def _step(num_levels: int, reset: str, x: Tensor, state: LIFFeedForwardState, p, dt: float):
    i_new = state.i + x
    v = state.v + dt * p.tau_mem_inv * ((p.v_leak - state.v) + i_new)
    i_decayed = i_new - dt * p.tau_syn_inv * i_new
    theta = p.v_th - p.v_reset
    z = level_fn(v - p.v_reset, theta, num_levels)
    if reset == "subtract":
        v = v - z.detach() * theta
    else:
        fired = (z.detach() > 0).to(v.dtype)
        v = (1 - fired) * v + fired * p.v_reset
    return z, LIFFeedForwardState(v=v, i=i_decayed)


class MultiLevelLIFCell(MultiLevelNeuron, norse.LIFCell):
    """``norse.torch.LIFCell`` emitting levels ``0 .. levels - 1``."""

    def __init__(self, p: norse.LIFParameters = norse.LIFParameters(), *, levels: int, reset: str = "subtract",
                 **kwargs) -> None:
        if p.method == "adjoint":
            raise UnsupportedLayerError("MultiLevelLIFCell with p.method='adjoint' is not supported; use 'super'")
        if reset not in RESETS:
            raise SpikeFitValueError(f"MultiLevelLIFCell reset={reset!r} is not allowed; use one of {RESETS}")
        super().__init__(p, **kwargs)
        self.spike_levels = check_levels(levels)
        self.reset = reset
        self.activation = partial(_step, self.spike_levels, reset)
        self.activation_sparse = None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, levels={self.spike_levels}, reset={self.reset!r}"


def from_lif_cell(module: norse.LIFCell, levels: int, reset: str = "subtract") -> MultiLevelLIFCell:
    """The multi-level twin of a ``LIFCell`` (same parameters and ``dt``)."""
    if type(module) not in (norse.LIFCell, MultiLevelLIFCell):
        raise UnsupportedLayerError(
            f"Norse {type(module).__name__} has no multi-level twin; supported: LIFCell (pass it in ignore=[...])")
    return MultiLevelLIFCell(module.p, levels=levels, reset=reset, dt=module.dt)
