"""What the zoo's residual networks share, framework-free: the block kinds and the two named builders.

Each framework's module (:mod:`snn_spikefit.zoo.snntorch`, ``zoo.norse``) defines its own
``ResidualBlock`` / ``ResidualSNN`` with its own neurons; this module imports no framework.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["BLOCKS", "check_kind", "kind_builders"]

#: The residual block kinds: ``"sew"`` adds spikes on the shortcut, ``"sparse"`` re-spikes the sum.
BLOCKS = ("sew", "sparse")


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`BLOCKS`, else ValueError naming it."""
    if kind not in BLOCKS:
        raise ValueError(f"kind={kind!r} is not allowed; use one of {BLOCKS}")
    return kind


def kind_builders(cls: type, what: str) -> tuple[Callable, Callable]:
    """``sew_resnet`` and ``sparse_resnet`` for ``cls`` (a ``ResidualSNN``; ``what`` names it in the docstrings)."""
    docs = {"sew": f"A small SEW-ResNet-style {what} (spikes added on the shortcut).",
            "sparse": f"A small Sparse-ResNet-style {what} (a barrier neuron re-spikes each block's sum)."}

    def builder(kind: str) -> Callable:
        def build(in_channels: int = 1, num_classes: int = 10, image_size: int = 8, channels: int = 8,
                  blocks: int = 2, **kw):
            return cls(in_channels, num_classes, image_size, channels, blocks, kind, **kw)

        build.__name__ = build.__qualname__ = f"{kind}_resnet"
        build.__module__, build.__doc__ = cls.__module__, docs[kind]
        return build

    return builder("sew"), builder("sparse")
