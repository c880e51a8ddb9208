"""Hardware targets: a chip toolchain's own model of a NIR graph we wrote, run in its simulator.

A target is an object with ``name``, ``modes`` and ``build(graph, *, mode) -> network``; the network
has ``layers`` (the NIR neuron node names, in order) and ``run(inputs) -> list of spikes``: inputs
``[N, T, *in_shape]`` (what the network is given at each step), one ``[N, T, n]`` array per layer,
aligned with our simulation's steps (any lag the toolchain adds is taken out by the target).
:func:`snn_spikefit.targets.verify.verify` runs the same inputs through a target and through our
simulation. Targets register by name (:func:`register_target`, ``replace=True`` to override) and
import only numpy and nir, plus their toolchain in the toolchain's own Python.

>>> from snn_spikefit.targets import list_targets
>>> "lava" in list_targets()
True
"""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import SpikeFitError, SpikeFitValueError, refuse_duplicate

__all__ = ["Target", "TargetError", "register_target", "get_target", "list_targets"]


class TargetError(SpikeFitError, RuntimeError):
    """A target's toolchain is missing, cannot be installed, or failed to run."""


class Target(Protocol):
    name: str
    modes: tuple[str, ...]

    def build(self, graph: Any, *, mode: str) -> Any: ...


_TARGETS: dict[str, Any] = {}


def register_target(target: Any, *, replace: bool = False) -> Any:
    """Register ``target`` under ``target.name``; a second one by that name needs ``replace=True``."""
    name = getattr(target, "name", None)
    if not isinstance(name, str) or not callable(getattr(target, "build", None)):
        raise SpikeFitValueError(f"target {target!r} needs a str .name and a .build(graph, *, mode) method")
    refuse_duplicate("a target named", name, _TARGETS, replace=replace)
    _TARGETS[name] = target
    return target


def get_target(name: str) -> Any:
    if name not in _TARGETS:
        raise SpikeFitValueError(f"target {name!r} does not exist; targets: {sorted(_TARGETS)}")
    return _TARGETS[name]


def list_targets() -> list[str]:
    return sorted(_TARGETS)


def _register_builtin() -> None:
    from .lava import LavaTarget
    from .sinabs import SinabsTarget
    from .xylo import XyloTarget

    register_target(LavaTarget())
    register_target(SinabsTarget())
    register_target(XyloTarget())


_register_builtin()
