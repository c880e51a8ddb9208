"""snnTorch neurons at chip precision: ``SnnTorchAdapter``'s part of the state protocol.

:class:`SnnTorchState` is mixed into :class:`~snn_spikefit.adapters.snntorch.SnnTorchAdapter`:
it describes ``Leaky``/``Synaptic`` dynamics in the core's terms and swaps a neuron's
``state_function`` (snnTorch's per-step update, an instance attribute) for a core rule; a rule that
also fires its own way (a ``fire(dynamics, mem)`` method: Xylo's spike counts) replaces the
neuron's ``fire`` and ``mem_reset`` too (instance attributes; the class is unchanged).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["SnnTorchState"]


def _snntorch():
    import snntorch

    return snntorch


def _dynamics(module: nn.Module) -> dict[str, Any] | None:
    snn = _snntorch()
    if not isinstance(module, (snn.Leaky, snn.Synaptic)) or isinstance(module, (snn.RLeaky, snn.RSynaptic)):
        return None
    out = {"model": "LIF", "reset": module.reset_mechanism, "threshold": module.threshold,
           "membrane_decay": module.beta.clamp(0, 1)}
    if isinstance(module, snn.Synaptic):
        out.update(model="CUBA-LIF", current_decay=module.alpha.clamp(0, 1))
    return out


class SnnTorchState:
    """Chip-precision state for snnTorch ``Leaky`` and ``Synaptic`` (not the recurrent ones)."""

    def neuron_dynamics(self, module: nn.Module) -> dict[str, Any] | None:
        """Leaky -> ``"LIF"``, Synaptic -> ``"CUBA-LIF"`` (not the recurrent ones); decays clamped as snnTorch does."""
        return _dynamics(module)

    def attach_state_rule(self, module: nn.Module, rule: Any) -> None:
        """Replace the neuron's ``state_function`` (snnTorch's per-step update) by ``rule``."""
        from snn_spikefit.errors import UnsupportedLayerError

        kind = type(module).__name__
        if self.neuron_dynamics(module) is None:
            raise UnsupportedLayerError(f"chip-precision state supports snnTorch Leaky and Synaptic, not {kind}")
        if not module.reset_delay or module.inhibition or module.state_quant or \
                float(module.graded_spikes_factor) != 1.0:
            raise UnsupportedLayerError(
                f"chip-precision state needs snnTorch {kind} with reset_delay=True, inhibition=False, "
                f"state_quant=False, graded_spikes_factor=1.0")
        self.detach_state_rule(module)
        module.state_function = _StateStep(module, rule, module.state_function)
        if hasattr(rule, "fire"):  # the rule also says how the neuron fires (a spike count: Xylo)
            module.fire = _Fire(module, rule, detach=False)
            module.mem_reset = _Fire(module, rule, detach=True)

    def state_rule(self, module: nn.Module) -> Any:
        step = module.__dict__.get("state_function")
        return step.rule if isinstance(step, _StateStep) else None

    def detach_state_rule(self, module: nn.Module) -> bool:
        step = module.__dict__.get("state_function")
        if not isinstance(step, _StateStep):
            return False
        module.state_function = step.original
        for attr in ("fire", "mem_reset"):
            if isinstance(module.__dict__.get(attr), _Fire):
                del module.__dict__[attr]
        return True


class _StateStep:
    """An snnTorch neuron's ``state_function`` computed by a core state rule (a callable object, so
    ``copy.deepcopy`` of the model copies it with the model)."""

    def __init__(self, module: nn.Module, rule: Any, original: Any) -> None:
        self.module, self.rule, self.original = module, rule, original

    def __call__(self, input_: Tensor):
        m = self.module
        synaptic = hasattr(m, "syn")
        state = {"membrane": m.mem, "current": m.syn} if synaptic else {"membrane": m.mem}
        new = self.rule(_dynamics(m), state, input_, m.reset)
        return (new["current"], new["membrane"]) if synaptic else new["membrane"]


class _Fire:
    """An snnTorch neuron's ``fire`` (``detach``: ``mem_reset``) computed by the rule's ``fire``."""

    def __init__(self, module: nn.Module, rule: Any, detach: bool) -> None:
        self.module, self.rule, self.detach = module, rule, detach

    def __call__(self, mem: Tensor) -> Tensor:
        out = self.rule.fire(_dynamics(self.module), mem)
        return out.detach() if self.detach else out
