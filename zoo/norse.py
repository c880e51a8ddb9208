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

from ._residual import check_kind, kind_builders

__all__ = ["lif_box", "conv_snn", "dense_snn", "ResidualBlock", "ResidualSNN", "sew_resnet", "sparse_resnet"]


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


class ResidualBlock(nn.Module):
    """The Norse twin of :class:`snn_spikefit.zoo.snntorch.ResidualBlock` (``LIFBoxCell`` neurons).

    ``forward(x, state) -> (out, state)``: ``state`` is a dict of the cells' states, as
    ``norse.torch.SequentialState`` threads them. ``kind="sew"``: ``out = n2(conv2(n1(conv1(x)))) + x``;
    ``kind="sparse"``: a barrier cell after the addition, with threshold ``(1 - beta) * threshold``: Norse's
    Euler step scales its input by ``1 - beta`` (``v <- beta v + (1 - beta) I``) and no weight in front
    of it absorbs that, so it fires where snnTorch's ``Leaky`` (``u <- beta u + I``) would on the same sum.
    """

    def __init__(self, channels: int, kind: str = "sew", *, beta: float = 0.5, threshold: float = 1.0,
                 dt: float = 1e-3) -> None:
        super().__init__()
        self.kind = check_kind(kind)
        self.conv1, self.n1 = nn.Conv2d(channels, channels, 3, padding=1), lif_box(beta, threshold, dt=dt)
        self.conv2, self.n2 = nn.Conv2d(channels, channels, 3, padding=1), lif_box(beta, threshold, dt=dt)
        if kind == "sparse":
            self.barrier = lif_box(beta, (1.0 - beta) * threshold, dt=dt)

    def forward(self, x, state=None):
        state = {} if state is None else state
        h, s1 = self.n1(self.conv1(x), state.get("n1"))
        out, s2 = self.n2(self.conv2(h), state.get("n2"))
        out = out + x
        new = {"n1": s1, "n2": s2}
        if self.kind == "sparse":
            out, new["barrier"] = self.barrier(out, state.get("barrier"))
        return out, new


class ResidualSNN(nn.Module):
    """Conv3x3 stem -> LIFBoxCell, ``blocks`` x :class:`ResidualBlock`, AvgPool(2) -> Flatten -> Linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 8, channels: int = 8,
                 blocks: int = 2, kind: str = "sew", *, beta: float = 0.5, threshold: float = 1.0,
                 dt: float = 1e-3) -> None:
        super().__init__()
        self.stem, self.stem_lif = nn.Conv2d(in_channels, channels, 3, padding=1), lif_box(beta, threshold, dt=dt)
        self.blocks = nn.ModuleList([ResidualBlock(channels, kind, beta=beta, threshold=threshold, dt=dt)
                                     for _ in range(blocks)])
        self.pool, self.flat = nn.AvgPool2d(2), nn.Flatten()
        self.fc = nn.Linear(channels * (image_size // 2) ** 2, num_classes)

    def forward(self, x, state=None):
        state = {} if state is None else state
        h, s = self.stem_lif(self.stem(x), state.get("stem"))
        new = {"stem": s}
        for i, block in enumerate(self.blocks):
            h, new[i] = block(h, state.get(i))
        return self.fc(self.flat(self.pool(h))), new


sew_resnet, sparse_resnet = kind_builders(ResidualSNN, "Norse SNN")
