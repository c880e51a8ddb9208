"""Ready-made SpikingJelly networks (mirrors :mod:`snn_spikefit.zoo.snntorch` and ``zoo.norse``).

Same shapes as the other builders: direct encoding (the static input is fed at every step),
``LIFNode(tau=2, decay_input=False)`` neurons, ``v <- v / 2 + x`` (the SpikeFit paper's
``beta = 0.5``; SpikingJelly's default ``decay_input=True`` would halve the input too), hard reset
to 0, the arctan surrogate, pooling before the neuron (so later layers receive binary
spikes) and a non-spiking linear read-out. Layers are SpikingJelly's ``layer.*`` modules, which
are ``nn.Conv2d``/``nn.Linear``/... subclasses, so ``step_mode='m'`` gives the same network in
multi-step mode (time-major ``[T, B, ...]``), which :func:`snn_spikefit.run` steps as well.

SEW-ResNet (``spikingjelly.activation_based.model.sew_resnet``, single-step) runs, is recorded and
takes codebooks through the adapter (tried by hand on ``sew_resnet18``); channel pruning groups the
channels joined by residual adds (``pruning/groups.py``; not tried on it) and NIR export was not tried
past its BatchNorm: not in the zoo yet.

>>> net = dense_snn(64, 10, hidden=(32,))
>>> [type(m).__name__ for m in net]
['Flatten', 'Linear', 'LIFNode', 'Linear']
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

__all__ = ["lif", "conv_snn", "dense_snn"]


def lif(tau: float = 2.0, threshold: float = 1.0, *, decay_input: bool = False, soft_reset: bool = False,
        step_mode: str = "s") -> nn.Module:
    """A ``LIFNode`` with the arctan surrogate; ``soft_reset`` subtracts the threshold (``v_reset=None``)."""
    from spikingjelly.activation_based import neuron, surrogate

    return neuron.LIFNode(tau=float(tau), decay_input=decay_input, v_threshold=threshold,
                          v_reset=None if soft_reset else 0.0, surrogate_function=surrogate.ATan(),
                          step_mode=step_mode)


def conv_snn(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 8,
    channels: Sequence[int] = (16, 32),
    *,
    tau: float = 2.0,
    threshold: float = 1.0,
    decay_input: bool = False,
    step_mode: str = "s",
) -> nn.Sequential:
    """Conv -> AvgPool(2) -> LIFNode blocks, then Flatten -> Linear read-out."""
    from spikingjelly.activation_based import layer

    layers: list[nn.Module] = []
    c_in, size = in_channels, image_size
    for c in channels:
        layers += [layer.Conv2d(c_in, c, 3, padding=1, step_mode=step_mode), layer.AvgPool2d(2, step_mode=step_mode),
                   lif(tau, threshold, decay_input=decay_input, step_mode=step_mode)]
        c_in, size = c, size // 2
    layers += [layer.Flatten(step_mode=step_mode), layer.Linear(c_in * size * size, num_classes, step_mode=step_mode)]
    return nn.Sequential(*layers)


def dense_snn(
    in_features: int = 64,
    num_classes: int = 10,
    hidden: Sequence[int] = (128,),
    *,
    tau: float = 2.0,
    threshold: float = 1.0,
    decay_input: bool = False,
    step_mode: str = "s",
) -> nn.Sequential:
    """Flatten -> (Linear -> LIFNode) x len(hidden) -> Linear read-out."""
    from spikingjelly.activation_based import layer

    layers: list[nn.Module] = [layer.Flatten(step_mode=step_mode)]
    f = in_features
    for h in hidden:
        layers += [layer.Linear(f, h, step_mode=step_mode), lif(tau, threshold, decay_input=decay_input,
                                                                step_mode=step_mode)]
        f = h
    layers.append(layer.Linear(f, num_classes, step_mode=step_mode))
    return nn.Sequential(*layers)
