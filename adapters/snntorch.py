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

from snn_spikefit.adapter import Adapter, stack_steps, step_inputs
from snn_spikefit.errors import SpikeFitValueError

from .snntorch_levels import SnnTorchLevels
from .snntorch_nir import SnnTorchNIR
from .snntorch_state import SnnTorchState
from snn_spikefit.nir.importer import NIRGraphModule

__all__ = ["SnnTorchAdapter"]

_LOOP_INSIDE = "inside"
_LOOP_OUTSIDE = "outside"


def _snntorch():
    import snntorch

    return snntorch


class SnnTorchAdapter(SnnTorchLevels, SnnTorchNIR, SnnTorchState, Adapter):
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
        for module in model.modules():  # an imported recurrent NIR graph keeps its last step's spikes
            if isinstance(module, NIRGraphModule):
                module.reset_state()

    # -- time ----------------------------------------------------------------------------------
    def run(self, model: nn.Module, x: Tensor, num_steps: int | None) -> Any:
        style = self._loop_style.get(model)
        if style == _LOOP_INSIDE:
            return self._run_inside(model, x, num_steps)
        if style is None and num_steps is None and self._loops_over(model, x):
            self._loop_style[model] = _LOOP_INSIDE  # forward takes the whole time-major sequence
            self.reset(model)
            return self._run_inside(model, x, num_steps)
        steps = step_inputs(x, num_steps)
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

    def _loops_over(self, model: nn.Module, x: Tensor) -> bool:
        """``forward`` called once on the time-major ``x`` calls a neuron more than once.

        Tried quietly (eval mode, no gradient, state reset after; a model that cannot take the
        whole sequence, i.e. one step per call, is not an inside-loop model), so that a
        ``forward`` looping over ``data.size(0)`` (snnTorch tutorial 7) is never fed one step.
        """
        from collections import OrderedDict

        import torch

        modes = [(m, m.training) for m in model.modules()]
        hooks = [(m, m._forward_hooks) for m in model.modules()]  # a Recorder must not see this run
        model.eval()
        for m, _ in hooks:
            m._forward_hooks = OrderedDict()
        try:
            with torch.no_grad():
                _, calls = self._probe(model, x)
        except Exception:  # noqa: BLE001 - a step model fed [T, B, ...]: the step path reports real errors
            calls = 0
        finally:
            for m, mode in modes:
                m.training = mode
            for m, saved in hooks:
                m._forward_hooks = saved
            self.reset(model)
        return calls > 1

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
                f"returned {first.shape[0]} steps; pass num_steps={first.shape[0]} (on the command line: "
                f"--num-steps {first.shape[0]}) or change the model"
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

        ``RLeaky``/``RSynaptic`` keep the rows and the columns of the kept neurons in their
        all-to-all ``recurrent`` Linear/Conv2d (bias and codebook included), or their
        one-to-one ``V``.

        A tensor is per-channel when, aligned to the end of the activation, its
        size along ``channel_dim`` is the channel count (``[C, 1, 1]`` for a conv
        layer, ``[C]`` for a dense one); scalars and broadcast size-1 axes stay.
        snnTorch keeps state (``mem``, ``syn``, ...) in non-persistent buffers:
        they are emptied so the next step re-initialises them at the new size.
        """
        import torch

        from snn_spikefit.errors import UnsupportedLayerError

        snn = _snntorch()
        rec = getattr(module, "recurrent", None) if isinstance(module, (snn.RLeaky, snn.RSynaptic)) else None
        owned = [n for n, p in module.named_parameters() if "." in n and not n.startswith("recurrent.")]
        one_to_one = rec is not None and not module.all_to_all
        if owned or (rec is not None and not one_to_one and not isinstance(rec, (nn.Linear, nn.Conv2d))):
            raise UnsupportedLayerError(
                f"cannot prune channels of {type(module).__name__}: it owns weights {owned or [type(rec).__name__]} "
                f"that are not a recurrent Linear/Conv2d; pass it in ignore=[...] to leave it unpruned")
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
        if isinstance(rec, (nn.Linear, nn.Conv2d)):  # all-to-all recurrence: the kept neurons' rows and columns
            from snn_spikefit.pruning.surgery import surgery_for

            surgery = surgery_for(rec)
            problem = surgery.problem(rec)
            if problem:
                raise UnsupportedLayerError(f"cannot prune channels of {type(module).__name__}: its recurrent "
                                            f"{type(rec).__name__} has {problem}")
            surgery.out(rec, keep)
            surgery.inp(rec, keep)
            if isinstance(rec, nn.Linear):
                module.linear_features = int(keep.numel())
            else:
                module.conv2d_channels = int(keep.numel())
        for name, tensor in plan:
            sliced = tensor.detach().index_select(tensor.ndim + channel_dim, keep.to(tensor.device)).clone()
            if isinstance(tensor, nn.Parameter):
                setattr(module, name, nn.Parameter(sliced, requires_grad=tensor.requires_grad))
            else:
                module._buffers[name] = sliced
            if name == "V" and one_to_one:  # the one-to-one recurrence holds the same V
                rec.V = getattr(module, name)
        for name in state:
            buf = module._buffers.get(name)
            if buf is not None:
                module._buffers[name] = torch.zeros(0, dtype=buf.dtype, device=buf.device)

    # -- NIR ---------------------------------------------------------------------------------
    # Leaky -> LIF (IF when beta == 1), Synaptic -> CubaLIF, with beta = 1 - dt/tau,
    # r = tau/dt (and w_in = tau_syn/dt) so one NIR Euler step is one snnTorch step.
    # RLeaky / RSynaptic (all-to-all recurrence) -> the same node plus their recurrent Linear
    # (or Conv2d) as a weight node in a cycle (snn_spikefit.nir.common.RecurrentNIR).
    # Resets NIR cannot express are kept in node metadata (see snn_spikefit.nir.common).
    def neuron_dt(self, module: nn.Module) -> float | None:
        """snnTorch's own convention, ``1e-4`` s (its ``export_nir`` and ``import_nir`` fix it).

        snnTorch neurons store no step; a NIR file exported with this step is what the stock
        ``snntorch.import_nir`` runs (its ``beta = 1 - 1e-4 / tau``).
        """
        return 1e-4 if self.is_neuron(module) else None

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

    def membrane_decays(self, module: nn.Module) -> tuple:
        """``(beta,)`` for Leaky (IF when ``beta == 1``), ``(alpha, beta)`` for Synaptic (clamped to [0, 1]).

        snnTorch's Leaky computes ``mem = beta * mem + input`` (then the reset), Synaptic
        ``syn = alpha * syn + input; mem = beta * mem + syn``.
        """
        from snn_spikefit.errors import UnsupportedLayerError

        dyn = self.neuron_dynamics(module)  # Leaky/Synaptic, decays clamped (snntorch_state)
        if dyn is None:
            raise UnsupportedLayerError(
                f"snnTorch {type(module).__name__} has no known membrane decay for post-training compression; "
                f"supported: Leaky, Synaptic")
        return tuple(dyn[k].detach() for k in ("current_decay", "membrane_decay") if k in dyn)

    def neuron_hint(self, module: nn.Module, allowed) -> str | None:
        """A leaky neuron on a chip that runs IF neurons: a ``Leaky`` with ``beta=1`` is IF."""
        if "IF" in allowed and self.neuron_model(module) == "LIF":
            return "a Leaky neuron with beta=1 is IF"
        return None
