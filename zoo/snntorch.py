"""Ready-made snnTorch networks used by the demo, the examples and the benchmarks.

They follow the SpikeFit paper's neuron settings: ``Leaky(beta=0.5,
threshold=1.0)`` with the arctan surrogate, subtract reset, direct encoding
(the static input is fed at every step), and a non-spiking linear read-out
whose outputs are averaged over time. Pooling comes before the neuron that
follows it, so every layer after the first receives binary spikes: on a chip
those are accumulates, not multiply-accumulates (pooled spikes are not binary).
"""

from __future__ import annotations

from typing import Sequence, Union

from torch import nn

from ._residual import check_kind, kind_builders

__all__ = ["conv_snn", "dense_snn", "vgg_snn", "recurrent_snn", "xylo_snn", "ResidualBlock", "ResidualSNN",
           "sew_resnet", "sparse_resnet"]


def _leaky(beta: float, threshold: float, learn_threshold: bool = False) -> nn.Module:
    import snntorch as snn

    return snn.Leaky(beta=beta, threshold=threshold, init_hidden=True, learn_threshold=learn_threshold)


def conv_snn(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 8,
    channels: Sequence[int] = (16, 32),
    *,
    beta: float = 0.5,
    threshold: float = 1.0,
    batch_norm: bool = False,
    bias: bool = True,
    learn_threshold: bool = False,
) -> nn.Sequential:
    """Conv -> [BN] -> AvgPool(2) -> Leaky blocks, then Flatten -> Linear read-out.

    ``learn_threshold=True`` makes each neuron layer's threshold one trained scalar (snnTorch's
    ``learn_threshold``).
    """
    layers: list[nn.Module] = []
    c_in, size = in_channels, image_size
    for c in channels:
        layers.append(nn.Conv2d(c_in, c, 3, padding=1, bias=bias))
        if batch_norm:
            layers.append(nn.BatchNorm2d(c))
        layers += [nn.AvgPool2d(2), _leaky(beta, threshold, learn_threshold)]
        c_in, size = c, size // 2
    layers += [nn.Flatten(), nn.Linear(c_in * size * size, num_classes)]
    return nn.Sequential(*layers)


def dense_snn(
    in_features: int = 64,
    num_classes: int = 10,
    hidden: Sequence[int] = (128,),
    *,
    beta: float = 0.5,
    threshold: float = 1.0,
    bias: bool = True,
) -> nn.Sequential:
    """Flatten -> (Linear -> Leaky) x len(hidden) -> Linear read-out."""
    layers: list[nn.Module] = [nn.Flatten()]
    f = in_features
    for h in hidden:
        layers += [nn.Linear(f, h, bias=bias), _leaky(beta, threshold)]
        f = h
    layers.append(nn.Linear(f, num_classes, bias=bias))
    return nn.Sequential(*layers)


def vgg_snn(
    cfg: Sequence[Union[int, str]] = (64, "A", 128, "A", 256, 256, "A"),
    in_channels: int = 3,
    image_size: int = 32,
    num_classes: int = 10,
    *,
    beta: float = 0.5,
    threshold: float = 1.0,
) -> nn.Sequential:
    """VGG-style SNN: ``cfg`` ints are Conv3x3 -> BN -> Leaky, ``"A"`` is AvgPool(2).

    A pool that follows a conv goes between its BN and its neuron (binary spikes
    into the next conv).
    """
    layers: list[nn.Module] = []
    c_in, size = in_channels, image_size
    neuron_due = False  # a conv's neuron waits until a pool that follows it is placed
    for item in cfg:
        if item == "A":
            layers.append(nn.AvgPool2d(2))
            size //= 2
            continue
        if neuron_due:
            layers.append(_leaky(beta, threshold))
        layers += [nn.Conv2d(c_in, int(item), 3, padding=1, bias=False), nn.BatchNorm2d(int(item))]
        c_in, neuron_due = int(item), True
    if neuron_due:
        layers.append(_leaky(beta, threshold))
    layers += [nn.Flatten(), nn.Linear(c_in * size * size, num_classes)]
    return nn.Sequential(*layers)


def recurrent_snn(
    in_features: int = 64,
    hidden: int = 64,
    num_classes: int = 10,
    *,
    beta: float = 0.5,
    threshold: float = 1.0,
) -> nn.Sequential:
    """Flatten -> Linear -> RLeaky (all-to-all recurrent Linear) -> Linear read-out."""
    import snntorch as snn

    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden),
        snn.RLeaky(beta=beta, threshold=threshold, linear_features=hidden, init_hidden=True),
        nn.Linear(hidden, num_classes),
    )


def xylo_snn(
    in_features: int = 16,
    num_classes: int = 8,
    hidden: Sequence[int] = (40,),
    *,
    alpha: float = 0.5,
    beta: float = 0.875,
    threshold: float = 1.0,
) -> nn.Sequential:
    """A network Xylo Audio 2 can run as it is: (bias-free Linear -> Synaptic) per layer, spiking read-out.

    ``Synaptic(alpha, beta, reset_mechanism="subtract")`` with power-of-two decays (``1 - 2**-k``: 0.5 is
    ``dash_syn = 1``, 0.875 ``dash_mem = 3``); <= 16 inputs, <= 1000 hidden and <= 8 read-out neurons.
    Train it with ``wrap(net, hardware="xylo")``: its neurons then compute Xylo's own integers
    (:mod:`snn_spikefit.neurons.xylo_state`), and the frozen network runs the same spikes in xylosim.
    """
    import snntorch as snn

    layers: list[nn.Module] = []
    f = in_features
    for h in (*hidden, num_classes):
        layers += [nn.Linear(f, h, bias=False), snn.Synaptic(alpha=alpha, beta=beta, threshold=threshold,
                                                             init_hidden=True, reset_mechanism="subtract")]
        f = h
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Two Conv3x3 -> Leaky stages with an identity shortcut, written the way snnTorch users write one.

    ``kind="sew"`` (SEW-ResNet, Fang et al. 2021, ``ADD``): ``out = n2(conv2(n1(conv1(x)))) + x``, the
    shortcut adds spikes, so the block's output counts 0, 1, 2, ...: each SEW block stacked on another adds
    one more possible spike per position (the "spike avalanche" of Castagnetti et al., arXiv 2510.24637).
    ``kind="sparse"`` (Sparse-ResNet style, after that paper's description): a "barrier" spiking neuron
    after the addition, ``out = barrier(n2(conv2(n1(conv1(x)))) + x)``, so the residual path carries
    binary spikes again.
    """

    def __init__(self, channels: int, kind: str = "sew", *, beta: float = 0.5, threshold: float = 1.0) -> None:
        super().__init__()
        self.kind = check_kind(kind)
        self.conv1, self.n1 = nn.Conv2d(channels, channels, 3, padding=1), _leaky(beta, threshold)
        self.conv2, self.n2 = nn.Conv2d(channels, channels, 3, padding=1), _leaky(beta, threshold)
        if kind == "sparse":
            self.barrier = _leaky(beta, threshold)

    def forward(self, x):
        out = self.n2(self.conv2(self.n1(self.conv1(x))))
        out = out + x
        return self.barrier(out) if self.kind == "sparse" else out


class ResidualSNN(nn.Module):
    """Conv3x3 stem -> Leaky, ``blocks`` x :class:`ResidualBlock`, AvgPool(2) -> Flatten -> Linear read-out."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 8, channels: int = 8,
                 blocks: int = 2, kind: str = "sew", *, beta: float = 0.5, threshold: float = 1.0) -> None:
        super().__init__()
        self.stem, self.stem_lif = nn.Conv2d(in_channels, channels, 3, padding=1), _leaky(beta, threshold)
        self.blocks = nn.Sequential(*[ResidualBlock(channels, kind, beta=beta, threshold=threshold)
                                      for _ in range(blocks)])
        self.pool, self.flat = nn.AvgPool2d(2), nn.Flatten()
        self.fc = nn.Linear(channels * (image_size // 2) ** 2, num_classes)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.blocks(self.stem_lif(self.stem(x))))))


sew_resnet, sparse_resnet = kind_builders(ResidualSNN, "SNN")
