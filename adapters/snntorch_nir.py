"""snnTorch neurons in NIR: ``SnnTorchAdapter``'s part of the NIR protocol.

:class:`SnnTorchNIR` is mixed into :class:`~snn_spikefit.adapters.snntorch.SnnTorchAdapter`:
``Leaky``/``Synaptic`` (and the recurrent ``RLeaky``/``RSynaptic``) to NIR ``LIF``/``CubaLIF``/``IF``
nodes and back, with snnTorch's conventions (``beta = 1 - dt / tau``, resets) made exact or refused.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["SnnTorchNIR"]


def _snntorch():
    import snntorch

    return snntorch


class SnnTorchNIR:
    """NIR export and import of snnTorch neurons (a mixin of the snnTorch adapter)."""

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
        meta = self.level_meta(module)  # multi-level neurons: their levels (SnnTorchLevels)
        meta.update(getattr(self.state_rule(module), "nir_meta", {}))  # a chip's own update (Xylo)
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
