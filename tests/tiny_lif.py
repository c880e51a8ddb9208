"""A spiking neuron in plain torch and its adapter: a third framework, for tests/test_boundary.py.

``TinyLIF`` keeps its membrane in the module (``init_hidden`` style):
``v <- beta * v + x``; spike ``s = v > threshold``; ``v <- 0`` after a spike, with a
sigmoid surrogate gradient (the forward value is exactly the step function).
``TinyAdapter`` implements the :class:`snn_spikefit.Adapter` protocol for it using only
the core's public API, and maps it exactly to NIR ``LIF`` (``tau = dt / (1 - beta)``,
``r = tau / dt``, ``v_leak = v_reset = 0``). Nothing here imports a framework.
"""

from __future__ import annotations

import nir
import numpy as np
import torch
from torch import Tensor, nn

from snn_spikefit import Adapter, UnsupportedLayerError
from snn_spikefit.adapter import stack_steps, step_inputs
from snn_spikefit.nir.common import Gain, broadcast_param, compact_param


class TinyLIF(nn.Module):
    """Leaky integrate-and-fire with per-channel (or shared) ``beta`` and ``threshold``, reset to zero."""

    def __init__(self, beta, threshold) -> None:
        super().__init__()
        self.register_buffer("beta", torch.as_tensor(beta, dtype=torch.float32).clone())
        self.register_buffer("threshold", torch.as_tensor(threshold, dtype=torch.float32).clone())
        self.mem: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        v = x if self.mem is None else self.beta * self.mem + x
        surrogate = torch.sigmoid(4.0 * (v - self.threshold))
        spikes = (v > self.threshold).to(v.dtype) + (surrogate - surrogate.detach())
        self.mem = v * (1.0 - spikes.detach())
        return spikes


class TinyAdapter(Adapter):
    """The adapter of :class:`TinyLIF` (framework ``None``: plain torch, always available)."""

    name = "tiny"
    framework = None

    def is_neuron(self, module: nn.Module) -> bool:
        return isinstance(module, TinyLIF)

    def reset(self, model: nn.Module) -> None:
        for _, neuron in self.neurons(model):
            neuron.mem = None

    def run(self, model: nn.Module, x: Tensor, num_steps: int | None):
        return stack_steps([model(xt) for xt in step_inputs(x, num_steps)])

    def spikes(self, module: nn.Module, output) -> Tensor:
        return output

    def membrane(self, module: nn.Module, output) -> Tensor | None:
        return module.mem

    def neuron_model(self, module: nn.Module) -> str:
        return "LIF"

    def neuron_hint(self, module: nn.Module, allowed) -> str | None:
        return "a TinyLIF with beta=1 never leaks" if "IF" in allowed else None

    def prune_neuron(self, module: nn.Module, keep: Tensor, channel_dim: int) -> None:
        for name in ("beta", "threshold"):
            t = module._buffers[name]
            if t.ndim >= -channel_dim and t.shape[channel_dim] > 1:
                module._buffers[name] = t.index_select(t.ndim + channel_dim, keep.to(t.device)).clone()
        module.mem = None

    def neuron_to_nir(self, module: nn.Module, *, dt: float, shape: tuple[int, ...]):
        beta = broadcast_param(module.beta, shape, "TinyLIF.beta")
        if np.any(beta >= 1.0) or np.any(beta < 0.0):
            raise UnsupportedLayerError("TinyLIF with beta outside [0, 1) has no NIR LIF form")
        tau = dt / (1.0 - beta)
        zero = np.zeros(shape)
        return nir.LIF(tau=tau, r=tau / dt, v_leak=zero, v_reset=zero,
                       v_threshold=broadcast_param(module.threshold, shape, "TinyLIF.threshold"))

    def neuron_from_nir(self, node, *, dt: float) -> list[nn.Module]:
        if not isinstance(node, nir.LIF):
            raise UnsupportedLayerError(f"NIR {type(node).__name__} has no TinyLIF form; supported: LIF")
        if np.any(np.asarray(node.v_leak) != 0) or np.any(np.asarray(node.v_reset) != 0):
            raise UnsupportedLayerError("NIR LIF with v_leak or v_reset != 0 has no TinyLIF form")
        tau = np.asarray(node.tau, np.float64)
        neuron = TinyLIF(compact_param(1.0 - dt / tau), compact_param(node.v_threshold))
        gain = compact_param(dt * np.asarray(node.r, np.float64) / tau)
        return [neuron] if bool((gain == 1.0).all()) else [Gain(gain), neuron]
