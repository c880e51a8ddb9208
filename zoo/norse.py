"""Ready-made Norse networks for tests and examples (mirrors :mod:`snn_spikefit.zoo.snntorch`).

Same shapes as the snnTorch builders: direct encoding (the static input is fed
at every step), ``LIFBoxCell`` neurons whose leak equals snnTorch's ``beta``
(``tau_mem_inv = (1 - beta) / dt``), reset to zero, and a non-spiking linear
read-out. Each returns a ``norse.torch.SequentialState``, which
:func:`snn_spikefit.run` runs step by step, handing the state back in.

>>> net = dense_snn(64, 10, hidden=(32,))
>>> type(net).__name__, [type(m).__name__ for m in net]
('SequentialState', ['Flatten', 'Linear', 'LIFBoxCell', 'Linear'])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["lif_box", "conv_snn", "dense_snn"]


def lif_box(beta: float = 0.5, threshold: float = 1.0, *, dt: float = 1e-3, subtract: bool = False) -> nn.Module:
    """A ``LIFBoxCell`` with ``v <- beta * v + I`` per step (``tau_mem_inv = (1 - beta) / dt``).

    Its input enters scaled by ``dt * tau_mem_inv = 1 - beta`` (Norse's Euler
    step); the builders below leave that to the preceding layer's weights.
    ``subtract=True`` uses Norse's subtract reset (the threshold is subtracted
    right after the spike, then the membrane leaks).
    """
    import norse.torch as norse
    from norse.torch.functional.reset import reset_subtract, reset_value

    p = norse.LIFBoxParameters(tau_mem_inv=torch.tensor((1.0 - beta) / dt), v_th=torch.tensor(threshold),
                               reset_method=reset_subtract if subtract else reset_value)
    return norse.LIFBoxCell(p, dt=dt)


def conv_snn(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 8,
    channels: Sequence[int] = (16, 32),
    *,
    beta: float = 0.5,
    threshold: float = 1.0,
    dt: float = 1e-3,
) -> nn.Module:
    """Conv -> AvgPool(2) -> LIFBoxCell blocks, then Flatten -> Linear read-out.

    Pooling comes before the neuron, so every layer after the first receives
    binary spikes (accumulates, not multiply-accumulates, on a chip).
    """
    import norse.torch as norse

    layers: list[nn.Module] = []
    c_in, size = in_channels, image_size
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.AvgPool2d(2), lif_box(beta, threshold, dt=dt)]
        c_in, size = c, size // 2
    layers += [nn.Flatten(), nn.Linear(c_in * size * size, num_classes)]
    return norse.SequentialState(*layers)


def dense_snn(
    in_features: int = 64,
    num_classes: int = 10,
    hidden: Sequence[int] = (128,),
    *,
    beta: float = 0.5,
    threshold: float = 1.0,
    dt: float = 1e-3,
) -> nn.Module:
    """Flatten -> (Linear -> LIFBoxCell) x len(hidden) -> Linear read-out."""
    import norse.torch as norse

    layers: list[nn.Module] = [nn.Flatten()]
    f = in_features
    for h in hidden:
        layers += [nn.Linear(f, h), lif_box(beta, threshold, dt=dt)]
        f = h
    layers.append(nn.Linear(f, num_classes))
    return norse.SequentialState(*layers)
