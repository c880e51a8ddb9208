"""Channel dependency groups: channels joined by an addition are pruned together.

A residual block adds two tensors element-wise (``out = f(x) + x``: SEW-ResNet adds
spikes, a Spiking-ResNet adds the branch's pre-activation to the shortcut), so channel
``c`` of both operands and of the sum are one channel: removing it must remove it from
every layer that produces it, every channel-wise module and spiking neuron it runs
through, and every layer that consumes it. This is the dependency-group idea of
Torch-Pruning's DepGraph (Fang et al., CVPR 2023), written here for our surgery registry
(:data:`~snn_spikefit.pruning.surgery.SURGERY`) and our traced graph
(:func:`snn_spikefit.trace.trace`, which records additions as ``"add"`` nodes).

A *channel space* is a set of traced tensors that share channel numbering. Walking the
graph in call order: a ``"layer"`` module (Conv/Linear) starts a new space at its output
and consumes the space of its input; ``"channelwise"`` modules (BatchNorm, pools,
Dropout) and spiking neurons stay in their input's space; ``Flatten`` stays in it with
features ``c*H*W .. (c+1)*H*W - 1`` for channel ``c`` (only layers and channel-wise modules
may follow); an addition merges the spaces of its operands (union-find). A space that holds
an addition, or a tensor read by more than one module, is a :class:`ChannelGroup`; other
spaces are the single-path :class:`~snn_spikefit.pruning.surgery.PrunableLayer` of before.

Scores of a group combine its members (every spiking neuron on it, or for data-free criteria
every producing layer): :math:`S_c = \\sum_m S^m_c / \\bar S^m` (each member's scores divided by
their mean over channels, so members of different scale weigh the same; a member whose scores
are all zero adds zeros). A group cannot be pruned, and is refused by name, when its channels
are added to the model input, reach a functional op other than an addition, a module without
surgery, a neuron that owns its input weights, or a spiking neuron after ``Flatten``; a group
that reaches the model output is left alone (the output keeps its outputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from ..adapter import Adapter
from ..errors import UnsupportedLayerError
from ..trace import INPUT, UNKNOWN, Graph
from .surgery import surgery_for

__all__ = ["ChannelGroup", "channel_spaces", "group_of", "select_groups", "remove_group"]


@dataclass(frozen=True)
class ChannelGroup:
    """Channels shared across additions: every module that produces, carries or consumes them."""

    neuron: str                      # the group's name: its first spiking neuron (scores, report row)
    producer: str                    # its first producing layer (the report's "layer")
    neurons: tuple[str, ...]         # every spiking neuron on the channels
    producers: tuple[str, ...]       # layers whose output channels these are
    between: tuple[str, ...]         # channel-wise modules on them (BatchNorm, pools, Dropout)
    consumers: tuple[tuple[str, tuple[str, ...], tuple[tuple[int, ...], ...]], ...]  # (layer, path, in shapes)
    adds: tuple[str, ...]            # the additions that join them
    channels: int
    channel_dim: int
    members: tuple[tuple[str, str], ...]         # (neuron, its nearest producer): scored on data
    weight_members: tuple[tuple[str, str], ...]  # (label, producer): scored without data (l1, random)
    producer_weight: str = "weight"

    @property
    def param_modules(self) -> tuple[str, ...]:
        return (*self.producers, *self.between, *self.neurons)


@dataclass
class _Space:
    producers: list[str] = field(default_factory=list)
    neurons: list[str] = field(default_factory=list)
    between: list[str] = field(default_factory=list)
    consumers: list[tuple[str, tuple[str, ...], tuple]] = field(default_factory=list)
    adds: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    input: bool = False
    output: bool = False
    branches: bool = False
    nearest: dict[str, str] = field(default_factory=dict)  # neuron -> the layer nearest before it


class _Union:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def join(self, a: str, b: str) -> str:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
        return ra


def _blocked(n, s, owns_input) -> str | None:
    """Why channels cannot pass through node ``n`` (surgery ``s``; None for a neuron), or None."""
    if n.is_neuron:
        return f"spiking layer {n.name!r} owns its input weights" if owns_input(n.module) else None
    kind = type(n.module).__name__
    if s is None:
        return f"{n.name!r} ({kind}) is not a module channel pruning can pass through"
    why = s.problem(n.module)
    return f"{n.name!r} ({kind}) has {why}" if why else None


def _walk(graph: Graph, owns_input) -> tuple[_Union, dict, dict, list]:
    """Assign every traced tensor to a space; returns the union, space per node, producers, log."""
    u = _Union()
    space: dict[str, str] = {INPUT: INPUT}
    flat: dict[str, tuple[tuple[str, ...], tuple]] = {}   # node -> (modules from Flatten on, their in shapes)
    nearest: dict[str, str] = {}                          # node -> the layer that produced its channels
    log: list[tuple[str, str, object]] = [(INPUT, "input", None)]  # (space key, event, value), resolved later
    for n in graph.nodes:
        ins = [i if i != UNKNOWN else f"?{n.name}" for i in n.inputs]
        for i in ins:
            if i.startswith("?"):
                space[i] = i
                log.append((i, "problem", f"{n.name!r} receives the result of a functional op in forward ('?': "
                                          f"only additions of two traced tensors are followed)"))
        if n.is_add:
            key = space[ins[0]]
            for i in ins[1:]:
                key = u.join(key, space[i])
            space[n.name], nearest[n.name] = key, nearest.get(ins[0], "")
            log.append((key, "add", n.name))
            if any(i in flat for i in ins):
                log.append((key, "problem", f"{n.name!r} adds flattened features"))
            continue
        key = space[ins[0]]
        for i in ins[1:]:  # a module of several inputs: none of them can be followed
            for k in {key, space[i]}:
                log.append((k, "problem", f"{n.name!r} combines inputs {n.inputs}"))
        s = None if n.is_neuron else surgery_for(n.module)
        problem = _blocked(n, s, owns_input)
        if problem:  # its input's channels and its output's both stop here
            space[n.name] = f"#{n.name}"
            log += [(key, "problem", problem), (space[n.name], "problem", problem)]
            continue
        if n.is_neuron:
            space[n.name], nearest[n.name] = key, nearest.get(ins[0], "")
            log.append((key, "neuron", n.name))
            if ins[0] in flat:
                log.append((key, "problem", f"spiking layer {n.name!r} follows a Flatten"))
            continue
        if s.role == "layer":
            path, shapes = flat.get(ins[0], ((), ()))
            log.append((key, "consumer", (n.name, path, shapes)))
            space[n.name], nearest[n.name] = f"#{n.name}", n.name
            log.append((space[n.name], "producer", n.name))
            continue
        space[n.name], nearest[n.name] = key, nearest.get(ins[0], "")
        if s.role == "flatten" or ins[0] in flat:
            path, shapes = flat.get(ins[0], ((), ()))
            flat[n.name] = ((*path, n.name), (*shapes, n.in_shape))
        else:
            log.append((key, "between", n.name))
    return u, space, nearest, log


def channel_spaces(graph: Graph, owns_input) -> list[_Space]:
    """Every channel space of ``graph`` with what it holds (``owns_input(module)``: a neuron with input weights)."""
    u, space, nearest, log = _walk(graph, owns_input)
    spaces: dict[str, _Space] = {}
    for key, event, value in log:
        sp = spaces.setdefault(u.find(key), _Space())
        if event == "input":
            sp.input = True
        elif event == "problem":
            sp.problems.append(value)
        elif event == "consumer":
            sp.consumers.append(value)
        else:
            getattr(sp, {"add": "adds", "neuron": "neurons", "producer": "producers", "between": "between"}[event]
                    ).append(value)
    for n in graph.nodes:
        sp = spaces.setdefault(u.find(space[n.name]), _Space())
        if len(graph.consumers(n.name)) > 1 or (graph.output == n.name and graph.consumers(n.name)):
            sp.branches = True
    if graph.output is not None:
        spaces[u.find(space[graph.output])].output = True
    result = list(spaces.values())
    for sp in result:
        sp.nearest = {m: nearest.get(m, "") for m in sp.neurons}
    return result


def group_of(sp: _Space, graph: Graph) -> ChannelGroup:
    """The :class:`ChannelGroup` of a space with an addition or a branch, or UnsupportedLayerError naming why not."""
    why = list(dict.fromkeys(sp.problems))
    if sp.input:
        why.insert(0, f"the additions {sp.adds} add the model input, whose channels cannot be removed" if sp.adds
                   else "they are the model input's channels")
    if not sp.producers and not sp.input:
        why.append("no Conv/Linear layer produces them")
    channels = {int(graph.node(p).module.weight.shape[0]) for p in sp.producers}
    channels |= {int(graph.node(n).out_shape[1]) for n in sp.neurons if graph.node(n).out_shape is not None}
    if len(channels) > 1:
        why.append(f"their layers disagree on the channel count ({sorted(channels)})")
    if why:
        joined = f"joined by the additions {sp.adds}" if sp.adds else "read by several modules"
        raise UnsupportedLayerError(
            f"cannot prune spiking layers {sp.neurons} together (their channels are {joined}): "
            f"{'; '.join(why)}; pass ignore={sp.neurons[:1]} to leave the group unpruned")
    shape = graph.node(sp.neurons[0]).out_shape
    return ChannelGroup(
        sp.neurons[0], sp.producers[0], tuple(sp.neurons), tuple(sp.producers), tuple(sp.between),
        tuple(sp.consumers), tuple(sp.adds), channels.pop(), 1 - len(shape),
        tuple((n, sp.nearest[n] or sp.producers[0]) for n in sp.neurons),
        tuple((sp.neurons[0] if i == 0 else f"{sp.neurons[0]}:{p}", p) for i, p in enumerate(sp.producers)))


def select_groups(graph: Graph, owns_input, ignored) -> tuple[list[ChannelGroup], set[str]]:
    """The prunable groups of ``graph`` and the names of every neuron on a grouped space.

    ``ignored(name)``: a member the user asked to leave alone (its whole group stays); a group that
    reaches the model output is not pruned (the output keeps its outputs).
    """
    out: list[ChannelGroup] = []
    grouped: set[str] = set()
    for sp in channel_spaces(graph, owns_input):
        if not sp.neurons or not (sp.adds or sp.branches):
            continue
        grouped.update(sp.neurons)
        if sp.output or any(ignored(n) for n in (*sp.neurons, *sp.producers)):
            continue
        out.append(group_of(sp, graph))
    return out, grouped


def remove_group(model: nn.Module, adapter: Adapter, group: ChannelGroup, keep: Tensor) -> None:
    """Keep channels ``keep`` (sorted indices) in every member of ``group``."""
    modules = dict(model.named_modules())
    for name in (*group.producers, *group.between):
        surgery_for(modules[name]).out(modules[name], keep)
    for name in group.neurons:
        adapter.prune_neuron(modules[name], keep, group.channel_dim)
    for consumer, path, shapes in group.consumers:
        index = keep
        for name, in_shape in zip(path, shapes):
            s = surgery_for(modules[name])
            if s.role == "flatten":
                index = s.map_keep(modules[name], index, in_shape)
            else:
                s.out(modules[name], index)
        surgery_for(modules[consumer]).inp(modules[consumer], index)
