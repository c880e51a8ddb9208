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
from .snntorch_state import SnnTorchState
from snn_spikefit.nir.importer import NIRGraphModule

__all__ = ["SnnTorchAdapter"]

_LOOP_INSIDE, _LOOP_OUTSIDE = "inside", "outside"


def _snntorch():
    import snntorch

    return snntorch


class SnnTorchAdapter(SnnTorchLevels, SnnTorchState, Adapter):
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

    def neuron_to_nir(self, module: nn.Module, *, dt: float, shape: tuple[int, ...]) -> Any:
        from snn_spikefit.errors import UnsupportedLayerError

        snn = _snntorch()
        kind = type(module).__name__
        if isinstance(module, (snn.RLeaky, snn.RSynaptic)):
            return self._recurrent_to_nir(module, dt=dt, shape=shape)
        if not isinstance(module, (snn.Leaky, snn.Synaptic)):
            raise UnsupportedLayerError(
                f"snnTorch {kind} cannot be exported to NIR; supported: Leaky (LIF/IF), Synaptic (CubaLIF), "
                f"RLeaky, RSynaptic (all_to_all=True)")
        return self._neuron_node(module, dt=dt, shape=shape, synaptic=isinstance(module, snn.Synaptic))

    def _recurrent_to_nir(self, module: nn.Module, *, dt: float, shape: tuple[int, ...]) -> Any:
        from snn_spikefit.errors import UnsupportedLayerError
        from snn_spikefit.nir.common import RecurrentNIR, layer_for_module

        snn = _snntorch()
        kind = type(module).__name__
        if not module.all_to_all:
            raise UnsupportedLayerError(
                f"snnTorch {kind}(all_to_all=False) cannot be exported to NIR: its one-to-one recurrence V is a "
                f"per-neuron scale, not a synaptic weight matrix (NIR would need a dense diagonal Linear that "
                f"compression, pruning and chip checks would count as N*N synapses); use all_to_all=True with "
                f"linear_features=N")
        rec = module.recurrent
        if not isinstance(rec, (nn.Linear, nn.Conv2d)):
            raise UnsupportedLayerError(f"snnTorch {kind}.recurrent is {type(rec).__name__}; export supports "
                                        f"Linear (linear_features) and Conv2d (conv2d_channels) recurrence")
        reset, delay = module.reset_mechanism, module.reset_delay
        if isinstance(module, snn.RSynaptic) and not delay:
            raise UnsupportedLayerError(
                "snnTorch RSynaptic(reset_delay=False) cannot be exported exactly: in snnTorch 1.0 its forward "
                "applies the immediate reset to a local copy of the membrane (TypeError with init_hidden=True, no "
                "effect otherwise); use reset_delay=True")
        if isinstance(module, snn.RLeaky) and reset == "zero" and delay:
            raise UnsupportedLayerError(
                "snnTorch RLeaky(reset_mechanism='zero', reset_delay=True) sets the membrane to 0 one step after a "
                "spike (dropping that step's input), which neither NIR's LIF nor snnTorch's Leaky does; use "
                "reset_delay=False (the same reset as Leaky's 'zero') or reset_mechanism='subtract'")
        node = self._neuron_node(module, dt=dt, shape=shape, synaptic=isinstance(module, snn.RSynaptic))
        rec_node = layer_for_module(f"{kind}.recurrent", rec).to_nir(rec, shape, shape)
        return RecurrentNIR(neuron=node, recurrent=rec_node, recurrent_source=(rec, "weight"))

    def _neuron_node(self, module: nn.Module, *, dt: float, shape: tuple[int, ...], synaptic: bool) -> Any:
        import nir
        import numpy as np

        from snn_spikefit.errors import UnsupportedLayerError
        from snn_spikefit.nir.common import RESET_KEY, broadcast_param

        kind = type(module).__name__
        if float(module.graded_spikes_factor) != 1.0 or module.inhibition or module.state_quant:
            raise UnsupportedLayerError(
                f"snnTorch {kind} with graded_spikes_factor={float(module.graded_spikes_factor)}, "
                f"inhibition={module.inhibition}, state_quant={bool(module.state_quant)} has no NIR "
                f"equivalent (use 1.0, False, False)")
        reset, delay = module.reset_mechanism, module.reset_delay
        # snnTorch picks its state function in __init__; assigning reset_mechanism later does not change it
        runs = {"_base_sub": "subtract", "_base_zero": "zero", "_base_int": "none"}.get(
            getattr(module.state_function, "__name__", ""), reset)
        if runs != reset:
            raise UnsupportedLayerError(
                f"snnTorch {kind} reports reset_mechanism={reset!r} but runs the {runs!r} reset (snnTorch "
                f"fixes it when the neuron is built; setting it later changes only the label); rebuild the "
                f"neuron with reset_mechanism={reset!r}")
        if reset == "subtract" and not delay:
            raise UnsupportedLayerError(
                f"snnTorch {kind}(reset_mechanism='subtract', reset_delay=False) cannot be exported to NIR "
                f"exactly; use reset_delay=True or reset_mechanism='zero'")
        meta = self.level_meta(module)
        if reset in ("subtract", "none"):
            meta[RESET_KEY] = reset
        elif synaptic and delay:
            meta[RESET_KEY] = "zero_delayed"  # the step after a spike starts from 0 and drops its input
        thr = broadcast_param(module.threshold, shape, f"{kind}.threshold")
        zero = np.zeros(shape)
        beta = broadcast_param(module.beta.clamp(0, 1), shape, f"{kind}.beta")
        if not synaptic:
            if np.all(beta == 1.0):
                return nir.IF(r=np.full(shape, 1.0 / dt), v_threshold=thr, v_reset=zero, metadata=meta)
            if np.any(beta == 1.0):
                raise UnsupportedLayerError(f"snnTorch {kind} mixes beta == 1 (IF) and beta < 1 (LIF) neurons")
            tau = dt / (1.0 - beta)
            return nir.LIF(tau=tau, r=tau / dt, v_leak=zero, v_threshold=thr, v_reset=zero, metadata=meta)
        alpha = broadcast_param(module.alpha.clamp(0, 1), shape, f"{kind}.alpha")
        if np.any(alpha == 1.0) or np.any(beta == 1.0):
            raise UnsupportedLayerError(f"snnTorch {kind} with alpha == 1 or beta == 1 has no NIR CubaLIF form")
        tau_syn, tau_mem = dt / (1.0 - alpha), dt / (1.0 - beta)
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=zero, v_threshold=thr,
                           v_reset=zero, w_in=tau_syn / dt, metadata=meta)

    def neuron_from_nir(self, node: Any, *, dt: float) -> list[nn.Module]:
        import nir
        import numpy as np

        from snn_spikefit.errors import UnsupportedLayerError
        from snn_spikefit.nir.common import RESET_KEY, Gain, compact_param

        snn = _snntorch()
        kind = type(node).__name__
        reset = str(node.metadata.get(RESET_KEY, "value"))
        if reset not in ("value", "subtract", "none", "zero_delayed"):
            raise UnsupportedLayerError(
                f"NIR {kind} with {RESET_KEY}={reset!r} cannot run exactly in snnTorch (Leaky/Synaptic subtract "
                f"the threshold after the leak); import it with framework='norse'")
        if isinstance(node, nir.IF):
            a, gain, rest = np.ones_like(node.r), dt * np.asarray(node.r, np.float64), node.v_reset
        elif isinstance(node, nir.LIF):
            tau = np.asarray(node.tau, np.float64)
            a, gain, rest = 1.0 - dt / tau, dt * node.r / tau, node.v_leak
        elif isinstance(node, nir.CubaLIF):
            tau_syn, tau_mem = np.asarray(node.tau_syn, np.float64), np.asarray(node.tau_mem, np.float64)
            a, alpha = 1.0 - dt / tau_mem, 1.0 - dt / tau_syn
            gain, rest = (dt * node.r / tau_mem) * (dt * node.w_in / tau_syn), node.v_leak
        else:
            raise UnsupportedLayerError(
                f"NIR {kind} has no snnTorch neuron; supported: LIF, IF, CubaLIF (LI/CubaLI: use framework='norse')")
        if np.any(a < 0) or np.any(a > 1) or (isinstance(node, nir.CubaLIF) and (np.any(alpha < 0) or np.any(alpha > 1))):
            raise UnsupportedLayerError(f"NIR {kind}: dt={dt} is larger than a time constant (snnTorch decays must be in [0, 1])")
        # snnTorch's membrane is v - rest (it starts and resets at 0), so NIR's reset must be the rest value
        if reset == "value" and not np.array_equal(np.asarray(node.v_reset), np.asarray(rest)):
            raise UnsupportedLayerError(
                f"NIR {kind} with v_reset != v_leak cannot run in snnTorch (it resets to its rest value 0); "
                f"use framework='norse'")
        thr = compact_param(np.asarray(node.v_threshold, np.float64) - rest)
        mech = "zero" if reset in ("value", "zero_delayed") else reset
        if isinstance(node, nir.CubaLIF):
            neuron = snn.Synaptic(alpha=compact_param(alpha), beta=compact_param(a), threshold=thr,
                                  reset_mechanism=mech, reset_delay=reset != "value", init_hidden=True)
        else:
            neuron = self.leaky_from_nir(node, beta=compact_param(a), threshold=thr, reset_mechanism=mech,
                                         init_hidden=True)
        g = compact_param(gain)
        return [neuron] if bool((g == 1.0).all()) else [Gain(g), neuron]

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

    def neuron_hint(self, module: nn.Module, allowed) -> str | None:
        """A leaky neuron on a chip that runs IF neurons: a ``Leaky`` with ``beta=1`` is IF."""
        if "IF" in allowed and self.neuron_model(module) == "LIF":
            return "a Leaky neuron with beta=1 is IF"
        return None
