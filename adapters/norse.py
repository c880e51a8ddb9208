"""Norse adapter: neurons, running over time, NIR mapping, per-channel pruning.

Installed as ``snn_spikefit.adapters.norse``; Norse is imported lazily.

Norse neurons are stateless modules: a cell is called ``cell(x, state)`` and
returns ``(output, new_state)``. A Norse model is therefore run by handing the
state back in: :meth:`NorseAdapter.run` calls ``model(x_t, state)`` once per
step and keeps the returned ``state`` (``norse.torch.SequentialState``, a single
cell, or any module with that ``forward(x, state) -> (out, state)`` contract),
starting from ``state=None`` (the cells' own initial state). Resetting is
therefore a no-op: every ``run`` starts fresh.

NIR mapping (one NIR Euler step of ``dt`` is one Norse step; ``c = cell.dt``):

* ``LIFBoxCell`` <-> ``LIF``: ``tau = dt / (c * tau_mem_inv)``, ``r = 1``;
  ``reset_subtract`` is kept as ``spikefit.reset_mechanism="subtract_immediate"``.
* ``LIFCell`` <-> ``CubaLIF``: ``tau_syn = dt / (c * tau_syn_inv)``,
  ``tau_mem = dt / (c * tau_mem_inv)``, ``w_in = 1``, ``r = tau_syn / dt`` (Norse adds
  the input to the current as a jump; NIR integrates it with ``dt / tau_syn``).
* ``LIBoxCell`` <-> ``LI``, ``LICell`` <-> ``CubaLI``, ``IAFCell`` <-> ``IF`` (``r = 1 / dt``).

On import, an ``r`` (or ``w_in``) the cell cannot hold becomes a
:class:`~snn_spikefit.nir.common.Gain` in front of the cell. Norse cannot run
snnTorch's subtract reset (threshold subtracted after the leak) and refuses it.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from snn_spikefit.adapter import Adapter, stack_steps, step_inputs
from snn_spikefit.errors import SpikeFitTypeError, UnsupportedLayerError

from .norse_levels import NorseLevels

__all__ = ["NorseAdapter"]


def _norse():
    import norse.torch as norse

    return norse


def _f64(value: Any):
    import numpy as np

    return value.detach().cpu().double().numpy() if isinstance(value, Tensor) else np.asarray(value, np.float64)


def _no_autapse_grad(gradient: Tensor) -> Tensor:
    """Norse's autapse hook: no gradient on the diagonal of ``recurrent_weights`` (``autapses=False``)."""
    return gradient.clone().fill_diagonal_(0.0)


class NorseAdapter(NorseLevels, Adapter):
    """Adapter for Norse (``norse.torch`` cells, run through ``SequentialState``)."""

    name = "norse"
    framework = "norse"
    calls_with_state = True  # model(x, state) -> (output, state)

    def is_neuron(self, module: nn.Module) -> bool:
        from norse.torch.module.snn import SNNCell, SNNRecurrentCell

        return isinstance(module, (SNNCell, SNNRecurrentCell))

    def weight_names(self, module: nn.Module) -> list[str]:
        from norse.torch.module.snn import SNNRecurrent, SNNRecurrentCell

        if not isinstance(module, (SNNRecurrentCell, SNNRecurrent)):
            return []
        return [n for n in ("input_weights", "recurrent_weights")
                if isinstance(module._parameters.get(n), nn.Parameter)
                or n in getattr(module, "parametrizations", {})]

    def recurrent_weight_names(self, module: nn.Module) -> list[str]:
        return [n for n in self.weight_names(module) if n == "recurrent_weights"]

    def weight_inputs(self, module: nn.Module, args: tuple) -> dict[str, Tensor]:
        """A recurrent cell multiplies the step's input by ``input_weights`` and its own spikes of
        the previous step (``state.z``; zeros at the first step) by ``recurrent_weights``."""
        names = self.weight_names(module)
        if not names or not args:
            return {}
        x = args[0]
        state = args[1] if len(args) > 1 else None
        z = getattr(state, "z", None)
        if z is None:
            z = x.new_zeros((*x.shape[:-1], int(module.hidden_size)))
        return {n: v for n, v in (("input_weights", x), ("recurrent_weights", z)) if n in names}

    @staticmethod
    def sequence_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
        """Norse modules that take a whole time-major sequence per call (``norse.torch.LIF``, ``LI``,
        ``LIFRecurrent``, ...; Norse's ``SNN``/``SNNRecurrent`` classes), not one step like the cells."""
        from norse.torch.module.snn import SNN, SNNRecurrent

        return [(n, m) for n, m in model.named_modules() if isinstance(m, (SNN, SNNRecurrent))]

    def owns(self, model: nn.Module) -> bool:
        return super().owns(model) or bool(self.sequence_modules(model))

    def step_problem(self, model: nn.Module) -> str | None:
        seq = self.sequence_modules(model)
        if not seq:
            return None
        kinds = sorted({type(m).__name__ for _, m in seq})
        return (f"Norse {kinds} (layers {[n for n, _ in seq]}) take a whole sequence per call; pruning, NIR "
                f"export and chip checks watch one step at a time: build it from cells (norse.torch.LIFCell, "
                f"LICell, ...) in norse.torch.SequentialState (run, fit and evaluate work as it is)")

    # -- state and time ------------------------------------------------------------------
    def reset(self, model: nn.Module) -> None:
        return None  # state lives outside the modules; run() starts from state=None

    def _run_sequence(self, model: nn.Module, x: Tensor, num_steps: int | None) -> Tensor:
        """A model of whole-sequence modules (Norse's README style): called once on ``[T, B, ...]``."""
        cells = [n for n, m in model.named_modules() if self.is_neuron(m)]
        if cells:
            seq = [n for n, _ in self.sequence_modules(model)]
            raise SpikeFitTypeError(
                f"{type(model).__name__} mixes Norse cells {cells} (one step per call) with whole-sequence "
                f"modules {seq} (norse.torch.LIF, LI, ...); use one kind: cells (LIFCell, LICell) for every "
                f"feature of snn_spikefit, or sequence modules (with norse.torch.Lift around torch layers) for run")
        seq = x.unsqueeze(0).expand(num_steps, *x.shape) if num_steps is not None else x
        out = model(seq)
        return out[0] if isinstance(out, tuple) else out

    def run(self, model: nn.Module, x: Tensor, num_steps: int | None) -> Any:
        if self.sequence_modules(model):
            return self._run_sequence(model, x, num_steps)
        params = list(inspect.signature(model.forward).parameters)
        if len(params) < 2:
            raise SpikeFitTypeError(
                f"{type(model).__name__}.forward{tuple(params)} takes no state; a Norse model must be called "
                f"as model(x, state) -> (output, state), e.g. norse.torch.SequentialState(...)")
        state, outputs = None, []
        for xt in step_inputs(x, num_steps):
            out, state = model(xt, state)
            outputs.append(out)
        return stack_steps(outputs)

    # -- reading a step ------------------------------------------------------------------
    def spikes(self, module: nn.Module, output: Any) -> Tensor:
        return output[0] if isinstance(output, (tuple, list)) else output

    def membrane(self, module: nn.Module, output: Any) -> Tensor | None:
        if isinstance(output, (tuple, list)) and len(output) == 2:
            return getattr(output[1], "v", None)
        return None

    # -- NIR -----------------------------------------------------------------------------
    def nir_container(self, layers: list[tuple[str, nn.Module]]) -> nn.Module:
        """A ``norse.torch.SequentialState`` of the modules (it threads the cells' states)."""
        return _norse().SequentialState(*[m for _, m in layers])

    def neuron_dt(self, module: nn.Module) -> float | None:
        """The cell's own ``dt`` (Norse cells store the step they integrate with)."""
        dt = getattr(module, "dt", None)
        return float(dt) if isinstance(dt, (int, float)) and not isinstance(dt, bool) else None

    def neuron_to_nir(self, module: nn.Module, *, dt: float, shape: tuple[int, ...]) -> Any:
        import nir
        import numpy as np

        from snn_spikefit.nir.common import RESET_KEY, broadcast_param
        from norse.torch.functional.reset import reset_subtract, reset_value

        norse = _norse()
        kind, p, c = type(module).__name__, module.p, float(module.dt)
        P = lambda v, n: broadcast_param(v, shape, f"{kind}.p.{n}")  # noqa: E731
        if isinstance(module, norse.LIFRecurrentCell):
            return self._recurrent_to_nir(module, dt=dt, shape=shape)
        if isinstance(module, norse.LIFBoxCell):
            meta = {}
            if p.reset_method is reset_subtract:
                meta[RESET_KEY] = "subtract_immediate"
            elif p.reset_method is not reset_value:
                raise UnsupportedLayerError(f"Norse {kind} with reset_method={p.reset_method!r} has no NIR form")
            return nir.LIF(tau=dt / (c * P(p.tau_mem_inv, "tau_mem_inv")), r=np.ones(shape),
                           v_leak=P(p.v_leak, "v_leak"), v_threshold=P(p.v_th, "v_th"),
                           v_reset=P(p.v_reset, "v_reset"), metadata=meta)
        if isinstance(module, (norse.LIFCell, norse.LICell)):
            tau_syn = dt / (c * P(p.tau_syn_inv, "tau_syn_inv"))
            common = dict(tau_syn=tau_syn, tau_mem=dt / (c * P(p.tau_mem_inv, "tau_mem_inv")),
                          r=tau_syn / dt, v_leak=P(p.v_leak, "v_leak"), w_in=np.ones(shape))
            if isinstance(module, norse.LICell):
                return nir.CubaLI(**common)
            return nir.CubaLIF(v_threshold=P(p.v_th, "v_th"), v_reset=P(p.v_reset, "v_reset"),
                               metadata=self.cuba_meta(module), **common)
        if isinstance(module, norse.LIBoxCell):
            return nir.LI(tau=dt / (c * P(p.tau_mem_inv, "tau_mem_inv")), r=np.ones(shape),
                          v_leak=P(p.v_leak, "v_leak"))
        if isinstance(module, norse.IAFCell):
            return nir.IF(r=np.full(shape, 1.0 / dt), v_threshold=P(p.v_th, "v_th"), v_reset=P(p.v_reset, "v_reset"))
        raise UnsupportedLayerError(
            f"Norse {kind} cannot be exported to NIR; supported: LIFBoxCell (LIF), LIFCell (CubaLIF), "
            f"LIBoxCell (LI), LICell (CubaLI), IAFCell (IF), LIFRecurrentCell (Linear -> CubaLIF <-> Linear)")

    def _recurrent_to_nir(self, module: nn.Module, *, dt: float, shape: tuple[int, ...]) -> Any:
        """``LIFRecurrentCell`` -> ``Linear(input_weights)`` -> ``CubaLIF`` <-> ``Linear(recurrent_weights)``.

        The cell adds ``input_weights @ x + recurrent_weights @ z[t-1]`` to its current, as
        ``LIFCell`` adds its input: the CubaLIF node is ``LIFCell``'s, fed by both weight nodes.
        """
        import nir

        from snn_spikefit.nir.common import RecurrentNIR

        norse = _norse()
        if module.p.method == "adjoint":
            raise UnsupportedLayerError("Norse LIFRecurrentCell with p.method='adjoint' has no NIR form (use 'super')")
        proxy = norse.LIFCell(module.p, dt=float(module.dt))
        node = self.neuron_to_nir(proxy, dt=dt, shape=shape)
        weight = lambda name: getattr(module, name).detach().cpu().numpy().copy()  # noqa: E731 (quantized value)
        return RecurrentNIR(neuron=node, recurrent=nir.Linear(weight=weight("recurrent_weights")),
                            recurrent_source=(module, "recurrent_weights"),
                            input=nir.Linear(weight=weight("input_weights")), input_source=(module, "input_weights"))

    def neuron_from_nir(self, node: Any, *, dt: float) -> list[nn.Module]:
        import nir

        from snn_spikefit.nir.common import RESET_KEY, Gain, compact_param
        from norse.torch.functional.reset import reset_subtract, reset_value

        norse = _norse()
        kind = type(node).__name__
        reset = str(node.metadata.get(RESET_KEY, "value"))
        if reset not in ("value", "subtract_immediate") or (reset != "value" and not isinstance(node, nir.LIF) and not
                                                             isinstance(node, nir.CubaLIF)):
            raise UnsupportedLayerError(
                f"NIR {kind} with {RESET_KEY}={reset!r} cannot run exactly in Norse (Norse resets to v_reset, "
                f"or subtracts the threshold before the leak in LIFBoxCell); import it with framework='snntorch'")
        T = compact_param
        inv = lambda tau: T(1.0 / _f64(tau))  # noqa: E731
        if isinstance(node, nir.LIF):
            method = reset_subtract if reset == "subtract_immediate" else reset_value
            cell = norse.LIFBoxCell(norse.LIFBoxParameters(
                tau_mem_inv=inv(node.tau), v_leak=T(node.v_leak), v_th=T(node.v_threshold),
                v_reset=T(node.v_reset), reset_method=method), dt=dt)
            gain = _f64(node.r)
        elif isinstance(node, (nir.CubaLIF, nir.CubaLI)):
            extra = {} if isinstance(node, nir.CubaLI) else dict(v_th=T(node.v_threshold), v_reset=T(node.v_reset))
            params = dict(tau_syn_inv=inv(node.tau_syn), tau_mem_inv=inv(node.tau_mem), v_leak=T(node.v_leak))
            if isinstance(node, nir.CubaLI):
                cell = norse.LICell(norse.LIParameters(**params), dt=dt)
            else:
                cell = self.lif_cell_from_nir(node, reset, norse.LIFParameters(**params, **extra), dt)
            gain = _f64(node.r) * dt * _f64(node.w_in) / _f64(node.tau_syn)
        elif isinstance(node, nir.LI):
            cell = norse.LIBoxCell(norse.LIBoxParameters(tau_mem_inv=inv(node.tau), v_leak=T(node.v_leak)), dt=dt)
            gain = _f64(node.r)
        elif isinstance(node, nir.IF):
            cell = norse.IAFCell(norse.IAFParameters(v_th=T(node.v_threshold), v_reset=T(node.v_reset)), dt=dt)
            gain = dt * _f64(node.r)
        else:
            raise UnsupportedLayerError(f"NIR {kind} has no Norse neuron; supported: LIF, CubaLIF, LI, CubaLI, IF")
        g = T(gain)
        return [cell] if bool((g == 1.0).all()) else [Gain(g), cell]

    # -- hardware ------------------------------------------------------------------------
    def neuron_model(self, module: nn.Module) -> str:
        """``"LIF"`` (LIFBoxCell), ``"CUBA-LIF"`` (LIFCell, LIFRecurrentCell), ``"IF"`` (IAFCell),
        ``"AdEx"`` (LIFAdEx cells), else ``"other:<ClassName>"``."""
        norse = _norse()
        if isinstance(module, norse.LIFBoxCell):
            return "LIF"
        if isinstance(module, (norse.LIFCell, norse.LIFRecurrentCell)):
            return "CUBA-LIF"
        if isinstance(module, norse.IAFCell):
            return "IF"
        if isinstance(module, (norse.LIFAdExCell, norse.LIFAdExRecurrentCell)):
            return "AdEx"
        return f"other:{type(module).__name__}"

    def membrane_decays(self, module: nn.Module) -> tuple:
        """``1 - dt * tau_inv`` per filter: LIFBoxCell/LIBoxCell ``(mem,)``, LIFCell/LICell ``(syn, mem)``, IAFCell ``(1,)``.

        Norse integrates the synaptic current one step late (the membrane sees the current of
        the previous step); the kernel ignores that one-step delay.
        """
        norse = _norse()
        c = float(getattr(module, "dt", 1e-3))
        p = getattr(module, "p", None)
        decay = lambda inv: (1.0 - c * torch.as_tensor(inv, dtype=torch.float32)).clamp(0, 1)  # noqa: E731
        if isinstance(module, norse.IAFCell):
            return (torch.ones(()),)
        if isinstance(module, (norse.LIFBoxCell, norse.LIBoxCell)):
            return (decay(p.tau_mem_inv),)
        if isinstance(module, (norse.LIFCell, norse.LICell)):
            return (decay(p.tau_syn_inv), decay(p.tau_mem_inv))
        raise UnsupportedLayerError(
            f"Norse {type(module).__name__} has no known membrane decay for post-training compression; "
            f"supported: LIFCell, LIFBoxCell, LICell, LIBoxCell, IAFCell")

    def neuron_hint(self, module: nn.Module, allowed) -> str | None:
        """The Norse cell of an allowed model: ``LIFBoxCell`` is LIF, ``IAFCell`` is IF."""
        kind = self.neuron_model(module)
        if kind == "CUBA-LIF" and "LIF" in allowed:
            return "norse.torch.LIFBoxCell is LIF, without the synaptic current"
        if kind in ("LIF", "CUBA-LIF") and "IF" in allowed:
            return "norse.torch.IAFCell is IF"
        return None

    # -- pruning -------------------------------------------------------------------------
    def prune_neuron(self, module: nn.Module, keep: Tensor, channel_dim: int) -> None:
        """Slice every per-channel tensor of the cell's parameters ``p`` (a NamedTuple).

        A parameter of ``ndim`` dimensions broadcast against the activation is cut
        along axis ``ndim + channel_dim`` (``channel_dim`` is negative, see
        :meth:`Adapter.prune_neuron`); scalars and size-1 axes are shared and kept.
        A ``LIFRecurrentCell`` keeps the kept neurons' rows of ``input_weights`` and rows and
        columns of ``recurrent_weights`` (codebooks included): the cell is its own producer.
        """
        if not self.is_neuron(module):
            raise UnsupportedLayerError(f"{type(module).__name__} is not a Norse neuron")
        names = self.weight_names(module)
        if names:
            if set(names) != {"input_weights", "recurrent_weights"} or channel_dim != -1:
                raise UnsupportedLayerError(
                    f"Norse {type(module).__name__} with weights {names} and channel_dim={channel_dim}: pruning "
                    f"supports recurrent cells with input_weights and recurrent_weights over [B, N] activations")
            from snn_spikefit.pruning.surgery import slice_weight

            slice_weight(module, 0, keep, "input_weights")  # the kept neurons' input rows
            slice_weight(module, 0, keep, "recurrent_weights")  # their recurrent rows and columns
            slice_weight(module, 1, keep, "recurrent_weights")
            module.hidden_size = torch.as_tensor(int(keep.numel()))
            if not module.autapses:  # Norse masks the self-connections' gradient with a hook on the tensor
                latent = (module.parametrizations["recurrent_weights"].original
                          if "recurrent_weights" in getattr(module, "parametrizations", {}) else module.recurrent_weights)
                if latent.requires_grad:
                    latent.register_hook(_no_autapse_grad)
        p = module.p
        fields = {}
        for name in p._fields:
            v = getattr(p, name)
            if isinstance(v, Tensor) and v.ndim >= -channel_dim and v.shape[v.ndim + channel_dim] > 1:
                v = v.index_select(v.ndim + channel_dim, keep.to(v.device)).clone()
            fields[name] = v
        module.p = type(p)(**fields)
