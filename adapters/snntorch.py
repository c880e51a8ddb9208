"""snnTorch adapter: neurons, state, running over time.

Installed as ``snn_spikefit.adapters.snntorch`` and registered under the entry
point group ``snn_spikefit.adapters``. snnTorch is imported lazily, so this
module imports without it.

snnTorch models come in two shapes, and :meth:`SnnTorchAdapter.run` handles both:

* the time loop outside ``forward``: ``forward`` does one step, neurons keep
  their state (``init_hidden=True``, or snnTorch >= 1.0's stored ``mem``);
* the time loop inside ``forward``: ``forward`` loops over steps and returns
  stacked recordings ``[T, B, ...]``.

The adapter tells them apart the first time it runs a model, by counting how
often each neuron is called during one ``forward`` call.
"""

from __future__ import annotations

import weakref
from typing import Any

from torch import Tensor, nn

from snn_spikefit.adapter import Adapter, _step_inputs, stack_steps
from snn_spikefit.errors import SpikeFitValueError

__all__ = ["SnnTorchAdapter"]

_LOOP_INSIDE = "inside"
_LOOP_OUTSIDE = "outside"


def _snntorch():
    import snntorch

    return snntorch


class SnnTorchAdapter(Adapter):
    """Adapter for snnTorch (``snntorch.SpikingNeuron`` subclasses)."""

    name = "snntorch"
    framework = "snntorch"

    def __init__(self) -> None:
        self._loop_style: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()

    def is_neuron(self, module: nn.Module) -> bool:
        return isinstance(module, _snntorch().SpikingNeuron)

    # -- state ------------------------------------------------------------------------------
    def reset(self, model: nn.Module) -> None:
        for _, neuron in self.neurons(model):
            if hasattr(neuron, "reset_mem"):
                neuron.reset_mem()

    # -- time ----------------------------------------------------------------------------------
    def loop_style(self, model: nn.Module) -> str | None:
        """``"inside"`` or ``"outside"`` once known for ``model``, else ``None``."""
        return self._loop_style.get(model)

    def run(self, model: nn.Module, x: Tensor, num_steps: int | None) -> Any:
        style = self._loop_style.get(model)
        if style == _LOOP_INSIDE:
            return self._run_inside(model, x, num_steps)
        steps = _step_inputs(x, num_steps)
        if style is None:
            first, calls = self._probe(model, steps[0])
            if calls > 1:
                self._loop_style[model] = _LOOP_INSIDE
                if num_steps is None:  # forward owns the loop: give it the whole sequence
                    self.reset(model)
                    return self._run_inside(model, x, num_steps)
                return self._check_inside(first, num_steps)
            self._loop_style[model] = _LOOP_OUTSIDE
            outputs = [first] + [model(xt) for xt in steps[1:]]
        else:
            outputs = [model(xt) for xt in steps]
        return stack_steps(outputs)

    def _probe(self, model: nn.Module, x0: Tensor) -> tuple[Any, int]:
        counts: dict[int, int] = {}

        def count(module, _inp, _out):
            counts[id(module)] = counts.get(id(module), 0) + 1

        handles = [m.register_forward_hook(count) for _, m in self.neurons(model)]
        try:
            out = model(x0)
        finally:
            for h in handles:
                h.remove()
        return out, max(counts.values(), default=0)

    def _run_inside(self, model: nn.Module, x: Tensor, num_steps: int | None) -> Any:
        return self._check_inside(model(x), num_steps)

    @staticmethod
    def _check_inside(out: Any, num_steps: int | None) -> Any:
        first = out[0] if isinstance(out, (tuple, list)) else out
        if num_steps is not None and isinstance(first, Tensor) and first.shape[0] != num_steps:
            raise SpikeFitValueError(
                f"num_steps={num_steps} but the model runs its own time loop inside forward and "
                f"returned {first.shape[0]} steps; pass num_steps={first.shape[0]} or change the model"
            )
        return tuple(out) if isinstance(out, list) else out

    # -- reading a step ----------------------------------------------------------------------
    def spikes(self, module: nn.Module, output: Any) -> Tensor:
        return output[0] if isinstance(output, (tuple, list)) else output

    def membrane(self, module: nn.Module, output: Any) -> Tensor | None:
        if isinstance(output, (tuple, list)):
            return output[-1]
        return getattr(module, "mem", None)

    def pre_reset_membrane(self, module: nn.Module, inputs: tuple, output: Any) -> Tensor | None:
        # snnTorch applies the reset of step t at step t+1 (reset_delay=True, the
        # default), so the membrane it reports after a step is the pre-reset one.
        if getattr(module, "reset_delay", True):
            return self.membrane(module, output)
        return None

    # -- pruning -------------------------------------------------------------------------------
    def prune_neuron(self, module: nn.Module, keep: Tensor, channel_dim: int) -> None:
        """Slice per-channel ``beta``/``threshold``/... (Parameter or buffer); clear stored state.

        A tensor is per-channel when, aligned to the end of the activation, its
        size along ``channel_dim`` is the channel count (``[C, 1, 1]`` for a conv
        layer, ``[C]`` for a dense one); scalars and broadcast size-1 axes stay.
        snnTorch keeps state (``mem``, ``syn``, ...) in non-persistent buffers:
        they are emptied so the next step re-initialises them at the new size.
        """
        import torch

        from snn_spikefit.errors import UnsupportedLayerError

        owned = [n for n, p in module.named_parameters() if "." in n]
        if owned:
            raise UnsupportedLayerError(
                f"cannot prune channels of {type(module).__name__}: it owns weights {owned} "
                f"(recurrent connections); pass it in ignore=[...] to leave it unpruned"
            )
        if channel_dim >= 0:
            raise UnsupportedLayerError(f"channel_dim={channel_dim} must be negative (counted from the end)")
        state = set(module._non_persistent_buffers_set)
        channels = None
        plan = []
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if tensor is None or name in state:
                continue
            if tensor.ndim >= -channel_dim and tensor.shape[channel_dim] > 1:
                plan.append((name, tensor))
                channels = channels or tensor.shape[channel_dim]
                if tensor.shape[channel_dim] != channels:
                    raise UnsupportedLayerError(
                        f"{type(module).__name__}.{name} has shape {tuple(tensor.shape)}: its size along "
                        f"channel_dim={channel_dim} does not match the other per-channel tensors ({channels})"
                    )
        for name, tensor in plan:
            sliced = tensor.detach().index_select(tensor.ndim + channel_dim, keep.to(tensor.device)).clone()
            if isinstance(tensor, nn.Parameter):
                setattr(module, name, nn.Parameter(sliced, requires_grad=tensor.requires_grad))
            else:
                module._buffers[name] = sliced
        for name in state:
            buf = module._buffers.get(name)
            if buf is not None:
                module._buffers[name] = torch.zeros(0, dtype=buf.dtype, device=buf.device)

    # -- hardware ------------------------------------------------------------------------------
    def neuron_model(self, module: nn.Module) -> str:
        """``"IF"`` for Leaky/RLeaky with ``beta == 1``, ``"LIF"`` for leaky ones (and
        Lapicque), ``"CUBA-LIF"`` for Synaptic/RSynaptic, else ``"other:<ClassName>"``."""
        import torch

        snn = _snntorch()
        if isinstance(module, (snn.Synaptic, snn.RSynaptic)):
            return "CUBA-LIF"
        if isinstance(module, (snn.Leaky, snn.RLeaky, snn.Lapicque)):
            beta = getattr(module, "beta", None)
            if beta is not None and bool((torch.as_tensor(beta) == 1).all()):
                return "IF"
            return "LIF"
        return f"other:{type(module).__name__}"
