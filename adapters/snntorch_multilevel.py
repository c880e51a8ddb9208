"""snnTorch ``MultiLevelLeaky``: a ``Leaky`` whose spike carries one of ``L`` levels.

Drop it in where a model had ``snn.Leaky``; it takes the same arguments plus ``levels``::

    from snn_spikefit.adapters.snntorch_multilevel import MultiLevelLeaky
    lif = MultiLevelLeaky(beta=0.9, levels=4, init_hidden=True)

Per step (snnTorch's own order, ``reset_delay=True``): ``reset = levels(U_{t-1})`` (detached),
``U_t = beta * U_{t-1} + x_t - reset * threshold``, ``s_t = levels(U_t)`` with the level function and
surrogate of :mod:`snn_spikefit.neurons.multilevel`. ``levels=2`` is ``snn.Leaky`` (subtract reset),
spike for spike. Only the subtractive reset with ``reset_delay=True`` is offered: it is the paper's
(levels times threshold subtracted), and the one snnTorch exports to NIR exactly.
"""

from __future__ import annotations

import snntorch as snn
from torch import Tensor, nn

from snn_spikefit.errors import SpikeFitValueError, UnsupportedLayerError
from snn_spikefit.neurons.multilevel import MultiLevelNeuron, check_levels, levels as level_fn

__all__ = ["MultiLevelLeaky", "from_leaky"]


class MultiLevelLeaky(MultiLevelNeuron, snn.Leaky):
    """``snn.Leaky`` emitting levels ``0 .. levels - 1`` (``levels`` times threshold subtracted on reset)."""

    def __init__(self, beta, threshold=1.0, *, levels: int, init_hidden: bool = False, learn_beta: bool = False,
                 learn_threshold: bool = False, output: bool = False, reset_mechanism: str = "subtract",
                 reset_delay: bool = True, surrogate_alpha: float = 2.0) -> None:
        if reset_mechanism != "subtract" or reset_delay is not True:
            raise SpikeFitValueError(
                f"MultiLevelLeaky reset_mechanism={reset_mechanism!r}, reset_delay={reset_delay!r} is not allowed; "
                f"a multi-level neuron subtracts level x threshold (reset_mechanism='subtract', reset_delay=True)")
        super().__init__(beta, threshold=threshold, init_hidden=init_hidden, learn_beta=learn_beta,
                         learn_threshold=learn_threshold, output=output, reset_mechanism="subtract")
        self.spike_levels = check_levels(levels)
        self.surrogate_alpha = float(surrogate_alpha)

    def fire(self, mem: Tensor) -> Tensor:
        return level_fn(mem, self.threshold, self.spike_levels, alpha=self.surrogate_alpha)

    def mem_reset(self, mem: Tensor) -> Tensor:
        return level_fn(mem, self.threshold, self.spike_levels, alpha=self.surrogate_alpha).detach()

    def extra_repr(self) -> str:
        return f"levels={self.spike_levels}"


def from_leaky(module: snn.Leaky, levels: int) -> MultiLevelLeaky:
    """The multi-level twin of a ``Leaky`` (same parameters, learnable or not, same call convention)."""
    kind = type(module).__name__
    if type(module) not in (snn.Leaky, MultiLevelLeaky):
        raise UnsupportedLayerError(
            f"snnTorch {kind} has no multi-level twin; supported: Leaky (pass it in ignore=[...] to keep it)")
    if module.reset_mechanism != "subtract" or not module.reset_delay or module.inhibition or module.state_quant \
            or float(module.graded_spikes_factor) != 1.0:
        raise UnsupportedLayerError(
            f"snnTorch {kind}(reset_mechanism={module.reset_mechanism!r}, reset_delay={module.reset_delay}, "
            f"inhibition={module.inhibition}, state_quant={bool(module.state_quant)}, graded_spikes_factor="
            f"{float(module.graded_spikes_factor)}) cannot become multi-level; a multi-level neuron subtracts "
            f"level x threshold: use reset_mechanism='subtract', reset_delay=True and the defaults otherwise")
    twin = MultiLevelLeaky(module.beta.detach().clone(), module.threshold.detach().clone(), levels=levels,
                           init_hidden=module.init_hidden, output=module.output,
                           learn_beta=isinstance(module.beta, nn.Parameter),
                           learn_threshold=isinstance(module.threshold, nn.Parameter))
    return twin.to(module.beta.device)
