"""How many channels each prunable layer keeps so every allocation budget holds.

The cuts go where the importance scores (FSC by default) say they cost least: the scores of each
layer are divided by their mean (so layers of different scale compare), and channel by channel the
cheapest one of a layer that lowers a broken budget is removed, until no budget is broken. With the
``"energy"`` or ``"deploy_ratio"`` objective a channel's score is further divided by what it costs
(its synapses), so expensive channels go first.

Then packing: on a chip with ``neurons_per_core``, a layer just over a multiple of it (130 on a
128-per-core chip) takes a core for a few neurons; when dropping those neurons costs at most
``slack`` of the layer's channels, the layer is cut to the multiple (128) and the allocation says so.

>>> from types import SimpleNamespace as NS
>>> import torch
>>> layout = NS(channels={"h": 4}, over=lambda keep, lim: {"neurons": (keep["h"], "(model)")} if keep["h"] > 2 else {},
...             helps=lambda g, r, w: True, profile=NS(neurons_per_core=None), conns=[])
>>> allocate(layout, {"h": torch.tensor([4.0, 1.0, 3.0, 2.0])}, {"neurons": 2}).keep
{'h': 2}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import SpikeFitValueError

__all__ = ["Allocation", "allocate", "lower_bound"]


@dataclass(frozen=True)
class Allocation:
    """Channels kept per group, and what packing changed (one line per layer it cut)."""

    keep: dict[str, int]
    packing: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())


def _normed(scores: Tensor) -> Tensor:
    s = scores.double().flatten().clamp_min(0)
    return s / s.mean() if float(s.mean()) > 0 else s


def allocate(layout, scores: dict[str, Tensor], limits: dict[str, float], *, objective: str = "accuracy",
             cost: dict[str, float] | None = None, slack: float = 0.0625) -> Allocation:
    """The channels each group keeps so ``layout.over(keep, limits)`` is empty (see the module text).

    ``cost``: per group, what one channel costs (synapses) for the ``"energy"``/``"deploy_ratio"``
    objectives. Raises :class:`SpikeFitValueError` when even one channel per group breaks a budget.
    """
    keep = dict(layout.channels)
    order = {g: torch.sort(_normed(s), stable=True).values.tolist() for g, s in scores.items()}
    weight = {g: 1.0 for g in keep}
    if objective != "accuracy" and cost:
        mean = sum(cost.values()) / len(cost)
        weight = {g: (cost.get(g, mean) / mean if mean > 0 else 1.0) for g in keep}
    removed = {g: 0 for g in keep}
    while True:
        broken = layout.over(keep, limits)
        if not broken:
            break
        choices = [g for g in keep if keep[g] > 1 and any(layout.helps(g, r, w) for r, (_, w) in broken.items())]
        if not choices:
            rule, (used, where) = next(iter(broken.items()))
            raise SpikeFitValueError(
                f"no channel allocation meets the {rule} budget: {where} needs {used} even with one channel "
                f"kept per prunable layer, the chip allows {limits[rule]:g} (over by {used - limits[rule]:g})")
        g = min(choices, key=lambda c: (order[c][removed[c]] / weight[c], -keep[c]))  # ties: the larger layer
        removed[g] += 1
        keep[g] -= 1
    packing = _pack(layout, keep, limits, slack)
    return Allocation(keep, packing)


def _pack(layout, keep: dict[str, int], limits: dict[str, float], slack: float) -> tuple[str, ...]:
    """Cut layers just over a multiple of ``neurons_per_core`` down to it when that saves a core."""
    npc = getattr(layout.profile, "neurons_per_core", None)
    if npc is None or getattr(layout.profile, "layer_fits_one_core", False):
        return ()
    lines = []
    for c in layout.conns:
        g = c.out_group
        if g is None:
            continue
        per = c.neurons // c.out_channels  # neurons per channel (positions of a conv map)
        n = per * keep[g]
        if n <= npc or n % npc == 0:
            continue
        target = (n // npc) * npc // per  # channels that fill whole cores
        if target >= 1 and keep[g] - target <= max(1, math.floor(slack * keep[g])):
            lines.append(f"{c.name}: {n} neurons would take {math.ceil(n / npc)} cores of {npc}; kept "
                         f"{target * per} neurons ({target} channels) on {math.ceil(target * per / npc)}")
            keep[g] = target
        else:
            lines.append(f"{c.name}: {n} neurons take {math.ceil(n / npc)} cores of {npc} (the last one "
                         f"holds {n % npc}); cutting to {(n // npc) * npc} would remove too many channels")
    return tuple(lines)


def lower_bound(layout, limits: dict[str, float]) -> dict[str, tuple[int, str]]:
    """The allocation budgets broken even with one channel kept per group: ``rule -> (used, where)``."""
    return layout.over({g: 1 for g in layout.channels}, limits)
