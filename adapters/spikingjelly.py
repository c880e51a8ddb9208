"""SpikingJelly adapter (``spikingjelly.activation_based``, version 2.0): neurons, time, NIR, pruning.

Installed as ``snn_spikefit.adapters.spikingjelly``; SpikingJelly is imported lazily (a model can
only hold SpikingJelly neurons once the user imported SpikingJelly, so :meth:`is_neuron` looks in
``sys.modules`` and never imports it). The torch backend is used throughout (SpikingJelly's cupy
and triton backends are optional and not needed).

Neurons: every ``neuron.BaseNode`` runs, is recorded and pruned; ``IFNode``, ``LIFNode`` and
``ParametricLIFNode`` map to NIR. Their equations (SpikingJelly's, ``V_r`` = ``v_reset``, or 0
with the soft reset ``v_reset=None``)::

    IF                      H[t] = V[t-1] + X[t]
    LIF, decay_input=True   H[t] = V[t-1] + (X[t] - (V[t-1] - V_r)) / tau
    LIF, decay_input=False  H[t] = V[t-1] - (V[t-1] - V_r) / tau + X[t]
    ParametricLIF           the same with 1 / tau = sigmoid(w)
    S[t] = 1(H[t] >= v_threshold);  V[t] = V_r (hard) or H[t] - S[t] * v_threshold (soft)

One NIR Euler step of ``dt`` is one step: LIF -> ``nir.LIF(tau = dt * tau, v_leak = V_r,
v_reset = V_r, r = 1)`` with ``decay_input`` (``r = tau`` without it), IF -> ``nir.IF(r = 1 / dt,
v_reset = V_r)``; the soft reset is ``spikefit.reset_mechanism="subtract_immediate"`` (the
threshold leaves before the next leak, as Norse's ``LIFBoxCell(reset_subtract)``). NIR fires on
``v > threshold``, SpikingJelly on ``>=``: they differ only when a potential equals the threshold
exactly. SpikingJelly 2.0 neurons hold scalar ``tau``/``v_threshold``/``v_reset`` (its kernels take
floats), so per-channel NIR parameters are refused by name, except ``r`` (a ``Gain`` in front).

Time: single-step models (``step_mode='s'``) are called once per step. A multi-step model
(``'m'``, time-major ``[T, B, ...]``) built from ``nn.Sequential`` chains of ``layer.*`` modules,
neurons and ``SeqToANNContainer``/``MultiStepContainer`` is stepped the same way, switched to
``'s'`` for the run (its modes are restored after), so hooks see one step per call: same
arithmetic, except that BatchNorm in training mode normalises each step's batch, not ``T*B``.
A multi-step model with its own ``forward`` is called once on the whole sequence (run, fit and
evaluate); tracing it is refused by :meth:`step_problem`.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator

from torch import Tensor, nn

from snn_spikefit.adapter import Adapter, stack_steps, step_inputs
from snn_spikefit.errors import UnsupportedLayerError

__all__ = ["SpikingJellyAdapter"]

_BASE = "spikingjelly.activation_based.neuron.base_node"
#: Where the ``forward`` of every module of a multi-step model that can be stepped comes from.
_STEPPABLE = ("torch.nn.modules.", "torch.nn.utils.parametrize", "snn_spikefit.", "spikingjelly.activation_based.layer.",
              "spikingjelly.activation_based.neuron.", "spikingjelly.activation_based.base")
_SUBTRACT = "subtract_immediate"  # the soft reset in NIR metadata (snn_spikefit.nir.common.RESET_KEY)


def _sj():
    from spikingjelly.activation_based import functional, layer, neuron

    return neuron, functional, layer


def _decay(module: nn.Module) -> float | None:
    """The membrane decay per step: ``1`` (IFNode), ``1 - sigmoid(w)`` (ParametricLIFNode),
    ``1 - 1/tau`` (LIFNode); ``None`` for another neuron."""
    neuron = _sj()[0]
    if isinstance(module, neuron.IFNode):
        return 1.0
    if isinstance(module, neuron.ParametricLIFNode):
        return 1.0 - float(module.w.detach().sigmoid())
    if isinstance(module, neuron.LIFNode):
        return 1.0 - 1.0 / float(module.tau)
    return None


def _one(value: Any, what: str) -> float:
    """A NIR parameter array that SpikingJelly can hold: all entries equal -> one float."""
    import numpy as np

    arr = np.asarray(value, np.float64).ravel()
    if arr.size == 0 or not np.all(arr == arr[0]):
        raise UnsupportedLayerError(
            f"NIR {what} varies across neurons ({arr[:4].tolist()}...): SpikingJelly 2.0 neurons hold one float "
            f"per layer (their kernels take scalar tau, v_threshold, v_reset); import it with framework='norse'")
    return float(arr[0])


class SpikingJellyAdapter(Adapter):
    """Adapter for SpikingJelly ``activation_based`` neurons (``BaseNode`` subclasses)."""

    name = "spikingjelly"
    framework = "spikingjelly"

    def available(self) -> bool:
        """SpikingJelly and loguru (the one requirement ``activation_based`` imports beyond torch) are installed."""
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in ("spikingjelly", "loguru"))

    def is_neuron(self, module: nn.Module) -> bool:
        base = sys.modules.get(_BASE)
        return base is not None and isinstance(module, (base.BaseNode, base.SimpleBaseNode))

    # -- state and time ------------------------------------------------------------------
    def reset(self, model: nn.Module) -> None:
        from snn_spikefit.nir.importer import NIRGraphModule

        if sys.modules.get(_BASE) is not None:
            _sj()[1].reset_net(model)
        for module in model.modules():  # an imported recurrent NIR graph keeps its last step's spikes
            if isinstance(module, NIRGraphModule):
                module.reset_state()

    @staticmethod
    def _multi_step(model: nn.Module) -> list[nn.Module]:
        return [m for m in model.modules() if getattr(m, "step_mode", "s") == "m"]

    def _steppable(self, model: nn.Module) -> bool:
        """Every module's ``forward`` is torch's (``nn.Sequential``, layers, parametrizations), ours, or
        one of SpikingJelly's ``layer``/``neuron`` modules (a neuron's surrogate function is its own
        business): none of them needs the time axis."""
        inside = {id(c) for m in model.modules() if self.is_neuron(m) for c in m.modules() if c is not m}
        return all(getattr(type(m).forward, "__module__", "").startswith(_STEPPABLE)
                   for m in model.modules() if id(m) not in inside)

    def step_problem(self, model: nn.Module) -> str | None:
        if not self._multi_step(model) or self._steppable(model):
            return None
        return (f"{type(model).__name__} runs SpikingJelly's multi-step mode (step_mode='m') through its own "
                f"forward, which takes the whole sequence; pruning, NIR export and chip checks watch one step "
                f"at a time: call spikingjelly.activation_based.functional.set_step_mode(model, 's') (or build "
                f"it as nn.Sequential chains); run, fit and evaluate work as it is")

    @contextmanager
    def _single_step(self, model: nn.Module) -> Iterator[None]:
        """Switch a multi-step chain to ``'s'``; multi-step-only containers call their children."""
        layer = _sj()[2]
        modes = [(m, m.step_mode) for m in self._multi_step(model)]
        wrappers = (layer.SeqToANNContainer, layer.MultiStepContainer)
        patched = [m for m in model.modules() if isinstance(m, wrappers) and "forward" not in m.__dict__]
        try:
            for m, _ in modes:
                m.step_mode = "s"
            for m in patched:
                m.forward = nn.Sequential.forward.__get__(m)
            yield
        finally:
            for m in patched:
                m.__dict__.pop("forward", None)
            for m, mode in modes:
                m.step_mode = mode

    def run(self, model: nn.Module, x: Tensor, num_steps: int | None) -> Any:
        steps = step_inputs(x, num_steps)
        if not self._multi_step(model):
            return stack_steps([model(xt) for xt in steps])
        if not self._steppable(model):  # its own forward over [T, B, ...]
            seq = x.unsqueeze(0).expand(num_steps, *x.shape) if num_steps is not None else x
            return model(seq)
        with self._single_step(model):
            return stack_steps([model(xt) for xt in steps])

    # -- reading a step ------------------------------------------------------------------
    def spikes(self, module: nn.Module, output: Any) -> Tensor:
        return output[0] if isinstance(output, (tuple, list)) else output

    def membrane(self, module: nn.Module, output: Any) -> Tensor | None:
        v = getattr(module, "v", None)
        return v if isinstance(v, Tensor) and v.ndim > 0 else None

    def pre_reset_membrane(self, module: nn.Module, inputs: tuple, output: Any) -> Tensor | None:
        """With the soft reset ``H = V + S * v_threshold``; a hard reset forgets ``H`` (``None``)."""
        v = self.membrane(module, output)
        if v is None or getattr(module, "v_reset", 0.0) is not None:
            return None
        return v + self.spikes(module, output) * module.v_threshold

    # -- NIR -------------------------------------------------------------------------------
    def neuron_to_nir(self, module: nn.Module, *, dt: float, shape: tuple[int, ...]) -> Any:
        import nir
        import numpy as np

        from snn_spikefit.nir.common import RESET_KEY

        neuron = _sj()[0]
        kind = type(module).__name__
        if type(module) not in (neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode):
            raise UnsupportedLayerError(
                f"SpikingJelly {kind} cannot be exported to NIR; supported: IFNode (IF), LIFNode and "
                f"ParametricLIFNode (LIF)")
        for name in ("v_threshold", "v_reset"):
            value = getattr(module, name)
            if isinstance(value, Tensor) and value.numel() != 1:
                raise UnsupportedLayerError(f"SpikingJelly {kind}.{name} is a tensor of shape "
                                            f"{tuple(value.shape)}; NIR export supports a float")
        soft = module.v_reset is None
        rest = 0.0 if soft else float(module.v_reset)
        full = lambda v: np.full(shape, float(v), dtype=np.float64)  # noqa: E731
        meta = {RESET_KEY: _SUBTRACT} if soft else {}
        thr = full(module.v_threshold)
        if isinstance(module, neuron.IFNode):
            return nir.IF(r=full(1.0 / dt), v_threshold=thr, v_reset=full(rest), metadata=meta)
        if isinstance(module, neuron.ParametricLIFNode):
            tau = 1.0 / float(module.w.detach().double().sigmoid())
        else:
            tau = float(module.tau)
        r = 1.0 if module.decay_input else tau
        return nir.LIF(tau=full(dt * tau), r=full(r), v_leak=full(rest), v_threshold=thr, v_reset=full(rest),
                       metadata=meta)

    def neuron_from_nir(self, node: Any, *, dt: float) -> list[nn.Module]:
        """``IF`` -> ``IFNode``, ``LIF`` -> ``LIFNode`` (``step_mode='s'``), with a ``Gain`` for ``r``.

        ``decay_input=True`` when ``r == 1`` (or ``r`` needs a Gain), ``False`` when
        ``r * dt / tau == 1``; a hard reset needs ``v_reset == v_leak``, the soft one ``v_leak == 0``.
        """
        import nir
        import numpy as np

        from snn_spikefit.nir.common import RESET_KEY, Gain, compact_param

        neuron = _sj()[0]
        kind = type(node).__name__
        reset = str(node.metadata.get(RESET_KEY, "value"))
        if reset not in ("value", _SUBTRACT):
            raise UnsupportedLayerError(
                f"NIR {kind} with {RESET_KEY}={reset!r} cannot run exactly in SpikingJelly (it resets to v_reset, "
                f"or subtracts the threshold before the next leak); import it with framework='snntorch'")
        if not isinstance(node, (nir.LIF, nir.IF)):
            raise UnsupportedLayerError(
                f"NIR {kind} has no SpikingJelly neuron; supported: LIF (LIFNode), IF (IFNode) "
                f"(CubaLIF, LI, CubaLI: use framework='norse')")
        thr = _one(node.v_threshold, f"{kind}.v_threshold")
        v_reset = _one(node.v_reset, f"{kind}.v_reset")
        rest = _one(node.v_leak, f"{kind}.v_leak") if isinstance(node, nir.LIF) else v_reset
        if reset == _SUBTRACT and (rest != 0.0 or v_reset != 0.0):
            raise UnsupportedLayerError(f"NIR {kind} with the subtract reset and v_leak={rest}, v_reset={v_reset}: "
                                        f"SpikingJelly's soft reset rests at 0; use framework='norse'")
        if reset == "value" and rest != v_reset:
            raise UnsupportedLayerError(f"NIR {kind} with v_reset={v_reset} != v_leak={rest}: SpikingJelly decays "
                                        f"towards v_reset; use framework='norse'")
        v_r = None if reset == _SUBTRACT else v_reset
        r = np.asarray(node.r, np.float64)
        if isinstance(node, nir.IF):
            cell, gain = neuron.IFNode(v_threshold=thr, v_reset=v_r), dt * r
        else:
            tau = _one(node.tau, f"{kind}.tau") / dt
            if not tau > 1.0:
                raise UnsupportedLayerError(f"NIR {kind}: tau/dt = {tau} must be > 1 for SpikingJelly's LIFNode "
                                            f"(dt={dt} is not smaller than tau)")
            plain = bool(np.all(np.float32(r * dt / _one(node.tau, kind)) == np.float32(1.0)))
            decay_input = not plain or bool(np.all(r == 1.0))
            gain = r if decay_input else np.ones_like(r)
            cell = neuron.LIFNode(tau=tau, decay_input=decay_input, v_threshold=thr, v_reset=v_r)
        g = compact_param(gain)
        return [cell] if bool((g == 1.0).all()) else [Gain(g), cell]

    # -- pruning -------------------------------------------------------------------------
    def prune_neuron(self, module: nn.Module, keep: Tensor, channel_dim: int) -> None:
        """SpikingJelly neurons share their parameters across channels: only the state goes.

        ``v`` (and every other memory) is reset so it re-initialises at the new width; a tensor
        parameter with more than one element (set by hand) is refused, not silently kept.
        """
        if not self.is_neuron(module):
            raise UnsupportedLayerError(f"{type(module).__name__} is not a SpikingJelly neuron")
        for name, value in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if value is not None and value.numel() > 1:
                raise UnsupportedLayerError(
                    f"SpikingJelly {type(module).__name__}.{name} has shape {tuple(value.shape)}; pruning keeps "
                    f"scalar neuron parameters only (pass it in ignore=[...])")
        for name in ("v_threshold", "v_reset", "tau"):
            value = getattr(module, name, None)
            if isinstance(value, Tensor) and value.numel() > 1:
                raise UnsupportedLayerError(f"SpikingJelly {type(module).__name__}.{name} has shape "
                                            f"{tuple(value.shape)}; pruning keeps scalar neuron parameters only")
        module.reset()

    def membrane_decays(self, module: nn.Module) -> tuple:
        """``(1 - 1/tau,)`` for LIFNode (``1 - sigmoid(w)`` for ParametricLIFNode), ``(1,)`` for IFNode.

        The membrane's response to its input; ``decay_input`` scales the input by ``1/tau``,
        a constant the Hessian does not need, and a ``v_reset`` leak target adds no input term.
        """
        decay = _decay(module)
        if decay is not None:
            return (decay,)
        raise UnsupportedLayerError(
            f"SpikingJelly {type(module).__name__} has no known membrane decay for post-training compression; "
            f"supported: IFNode, LIFNode, ParametricLIFNode")

    # -- hardware ------------------------------------------------------------------------
    def neuron_dynamics(self, module: nn.Module) -> dict[str, Any] | None:
        """IF/LIF/ParametricLIF resting at 0 as ``v <- (1 - 1/tau) v + x`` (``decay_input`` also scales
        ``x`` by ``1/tau``, which the weights carry); ``v_reset != 0`` (a leak towards it): ``None``.

        Chip-precision state (:meth:`attach_state_rule`) is not implemented for SpikingJelly: refused.
        """
        neuron = _sj()[0]
        if type(module) not in (neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode):
            return None
        if module.v_reset not in (None, 0.0):
            return None
        return {"model": "LIF", "reset": "subtract" if module.v_reset is None else "zero",
                "threshold": float(module.v_threshold), "membrane_decay": _decay(module)}

    def neuron_model(self, module: nn.Module) -> str:
        """``"IF"`` (IFNode), ``"LIF"`` (LIFNode, ParametricLIFNode), else ``"other:<ClassName>"``."""
        neuron = _sj()[0]
        if isinstance(module, neuron.IFNode):
            return "IF"
        if isinstance(module, (neuron.LIFNode, neuron.ParametricLIFNode)):
            return "LIF"
        return f"other:{type(module).__name__}"

    def neuron_hint(self, module: nn.Module, allowed) -> str | None:
        if "IF" in allowed and self.neuron_model(module) == "LIF":
            return "spikingjelly.activation_based.neuron.IFNode is IF"
        return None
