"""The part of the :class:`~snn_spikefit.Adapter` protocol that distillation and chip-precision state use.

:class:`~snn_spikefit.Adapter` inherits these methods; their defaults are safe (``None``, ``False``
or a refusal naming the adapter), so an adapter that does not implement them still loads.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..errors import UnsupportedLayerError

__all__ = ["NeuronStateAccess"]


class NeuronStateAccess:
    """Membrane access for :class:`~snn_spikefit.Distiller`, state rules for chip-precision state."""

    name: str  # the adapter's name (set by Adapter)

    def distill_membrane(self, module: nn.Module, inputs: tuple, output: Any) -> Tensor | None:
        """The membrane :class:`~snn_spikefit.Distiller` matches (gradient kept): pre-reset if known, else post."""
        mem = self.pre_reset_membrane(module, inputs, output)
        return self.membrane(module, output) if mem is None else mem

    # -- neuron state at chip precision ----------------------------------------------------
    def neuron_dynamics(self, module: nn.Module) -> dict[str, Any] | None:
        """The neuron's update in the core's terms (chip-precision state, ``check``); ``None``: unknown.

        ``"model"`` (``"LIF"``/``"CUBA-LIF"``), ``"reset"`` (``"subtract"``/``"zero"``/``"none"``),
        ``"threshold"``, ``"membrane_decay"`` (and ``"current_decay"``), broadcast against one step.
        """
        return None

    def attach_state_rule(self, module: nn.Module, rule: Any) -> None:
        """Make the neuron compute each step's state as ``rule(dynamics, state, x, reset) -> state``.

        ``state``: the previous ``{"membrane", "current"}``; ``reset``: the framework's reset signal.
        The neuron keeps its class and fires from the returned state; refuses what it cannot do.
        """
        raise UnsupportedLayerError(
            f"adapter {self.name!r} cannot simulate chip-precision state for {type(module).__name__}")

    def state_rule(self, module: nn.Module) -> Any:
        """The rule attached by :meth:`attach_state_rule`, or ``None``."""
        return None

    def detach_state_rule(self, module: nn.Module) -> bool:
        """Remove the attached rule (the neuron computes its own update again); ``False`` if none."""
        return False
