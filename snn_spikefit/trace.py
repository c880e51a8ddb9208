"""What a model really does: its data-flow graph and its neurons' activity over time.

:func:`trace` runs one step of a model with hooks on every leaf module and
links a module to the module whose output tensor it received, so the graph is
the real data flow (not the order of definition). An addition of two traced tensors in ``forward`` (``out = out + identity``,
``out += x``, ``torch.add(a, b)``: a residual connection) becomes a node of its
own, ``op="add"``, named after the module whose ``forward`` did it
(``"block1.add"``; ``"add"`` at the top level, ``"<name>.add_1"`` for the second one), with
both operands as inputs; it is watched with a ``TorchFunctionMode`` outside the leaf
modules only, during the first step. Any other input a module got from a
functional op (``x * 2``, ``torch.flatten``, ``torch.cat`` in ``forward``, an add with
``alpha`` or of different shapes) has no producing module: it is marked ``"?"`` and tools
that need the exact graph (pruning, NIR export) refuse such a model with a message naming the layer.

:class:`Recorder` collects, per spiking neuron and per step, what the adapter
reads from the neuron's output (spikes, membrane potential) during any run.

>>> import torch
>>> from torch import nn
>>> g = trace(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), torch.rand(1, 4))
>>> [(n.name, n.inputs) for n in g.nodes]
[('0', ['input']), ('1', ['0']), ('2', ['1'])]
>>> g.output
'2'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from torch.overrides import TorchFunctionMode

from .adapter import Adapter, get_adapter
from .errors import SpikeFitValueError, UnsupportedLayerError
from .runtime import eval_mode, run

__all__ = ["trace", "Graph", "TraceNode", "Recorder", "leaf_modules", "AddOp", "ADD"]

INPUT = "input"
UNKNOWN = "?"
ADD = "add"

#: The ways ``forward`` adds two tensors that :func:`trace` records as an ``"add"`` node.
ADD_FUNCTIONS = frozenset({torch.add, Tensor.add, Tensor.add_, Tensor.__add__, Tensor.__radd__, Tensor.__iadd__})


def plain_add(func, args: tuple, kwargs, out: Any) -> bool:
    """``out = func(*args, **kwargs)`` added two tensors: one of :data:`ADD_FUNCTIONS`, no ``alpha`` or ``out=``."""
    return (func in ADD_FUNCTIONS and len(args) == 2 and not kwargs and isinstance(out, Tensor)
            and all(isinstance(a, Tensor) for a in args))


class AddOp(nn.Module):
    """Stands for an addition traced in ``forward`` (the :attr:`TraceNode.module` of an ``"add"`` node)."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b


@dataclass
class TraceNode:
    """One module call in the traced step."""

    name: str
    module: nn.Module
    is_neuron: bool
    inputs: list[str]  # producer names, "input" for the model input, "?" for a functional op
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None
    op: str | None = None  # "add": an addition in forward (module is an AddOp, inputs its operands)

    @property
    def is_add(self) -> bool:
        return self.op == ADD


@dataclass
class Graph:
    """Data flow of one step: nodes in call order, and the node whose output the model returns."""

    nodes: list[TraceNode]
    output: str | None
    adapter: Adapter = field(repr=False, default=None)

    def node(self, name: str) -> TraceNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise SpikeFitValueError(f"no module named {name!r} in the traced graph; modules: {[n.name for n in self.nodes]}")

    def consumers(self, name: str) -> list[TraceNode]:
        return [n for n in self.nodes if name in n.inputs]

    def producers(self, name: str) -> list[str]:
        return self.node(name).inputs

    def is_chain(self) -> bool:
        """Each node takes exactly the previous node's output (a Sequential-like net)."""
        prev = INPUT
        for n in self.nodes:
            if n.inputs != [prev]:
                return False
            prev = n.name
        return self.output == prev


def leaf_modules(model: nn.Module, adapter: Adapter) -> list[tuple[str, nn.Module]]:
    """Modules that do the work: neurons (as a whole) and modules without children.

    Parametrization modules (``parametrizations.*``) are not leaves: the layer
    that owns them is.
    """
    out: list[tuple[str, nn.Module]] = []
    skip: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(s + ".") for s in skip) or ".parametrizations" in f".{name}":
            continue
        if adapter.is_neuron(module):
            out.append((name, module))
            skip.append(name)
        elif not any(True for n, _ in module.named_children() if n != "parametrizations") and name != "":
            out.append((name, module))
    if not out and not any(True for _ in model.children()):
        out.append(("", model))
    return out


def _tensors(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


class _AddWatch(TorchFunctionMode):
    """Records ``a + b`` of two tensors done in ``forward`` outside every leaf module, as "add" nodes."""

    def __init__(self, producers: dict[int, str], on_add) -> None:
        super().__init__()
        self.producers, self.on_add = producers, on_add
        self.depth = 0          # > 0 while a leaf module runs (its inner additions are its own business)
        self.scopes: list[str] = [""]  # the containers whose forward is running, innermost last
        self.done = False       # the first step is over

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if (not self.done and self.depth == 0 and plain_add(func, args, kwargs, out)
                and args[0].shape == args[1].shape == out.shape):
            self.on_add(self.scopes[-1], [self.producers.get(id(a), UNKNOWN) for a in args], args[0], out)
        return out


def _add_node(nodes: dict, order: list, producers: dict, keep: list):
    def on_add(scope: str, inputs: list[str], a: Tensor, out: Tensor) -> None:
        base = f"{scope}.{ADD}" if scope else ADD
        name, i = base, 0
        while name in nodes:
            i += 1
            name = f"{base}_{i}"
        nodes[name] = TraceNode(name, AddOp(), False, inputs, tuple(a.shape), tuple(out.shape), ADD)
        order.append(name)
        producers[id(out)] = name
        keep.append(out)
    return on_add


def _hooks(model: nn.Module, adapter: Adapter, watch: _AddWatch, nodes: dict, order: list, producers: dict,
           keep: list, returned: list) -> list:
    """Hooks that record each leaf module's first call as a node, and the scope and step ``watch`` needs."""
    def pre(name: str):
        def fn(module, args):
            watch.depth += 1
            if name in nodes:  # a second call: the first step is over
                watch.done = True
        return fn

    def hook(name: str, is_neuron: bool):
        def fn(module, args, output):
            watch.depth -= 1
            if name in nodes:
                return
            # a neuron's data input is its first argument; the rest is state (snnTorch's ``mem``
            # passed back in, Norse's ``state``), which no module produced
            ins = _tensors(args[:1] if is_neuron else args)
            inputs = [producers.get(id(t), UNKNOWN) for t in ins] or [UNKNOWN]
            out = adapter.spikes(module, output) if is_neuron else output
            outs = _tensors(out)
            for t in outs:
                producers[id(t)] = name
            keep.extend(ins + outs)
            nodes[name] = TraceNode(
                name, module, is_neuron, inputs,
                tuple(ins[0].shape) if ins else None, tuple(outs[0].shape) if outs else None,
            )
            order.append(name)
        return fn

    def enter(name: str):
        return lambda _m, _a: watch.scopes.append(name)

    def leave(_m, _a, _o):
        watch.scopes.pop()

    def finish(_m, _a, out):
        watch.done = True
        if not returned:
            returned.append(out)

    leaves = leaf_modules(model, adapter)
    leaf_ids = {id(m) for _, m in leaves}
    inside = [n for n, m in leaves if adapter.is_neuron(m)]
    handles = [model.register_forward_hook(finish)]
    for name, module in model.named_modules():
        if name and id(module) not in leaf_ids and ".parametrizations" not in f".{name}" and not any(
                name.startswith(n + ".") for n in inside):
            handles += [module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave)]
    for name, module in leaves:
        handles += [module.register_forward_pre_hook(pre(name)),
                    module.register_forward_hook(hook(name, adapter.is_neuron(module)))]
    return handles


@torch.no_grad()
def trace(model: nn.Module, sample: Tensor, *, num_steps: int | None = 1) -> Graph:
    """Trace the data flow of one step of ``model`` on ``sample`` (a static ``[B, ...]`` input).

    The model's state is reset before and after, and it runs in eval mode (its
    modules' modes are restored), so tracing changes nothing. Only the first call of each
    module is recorded (a model that loops over time inside ``forward`` calls
    its modules once per step), and the additions of the first step.
    """
    adapter = get_adapter(model)
    problem = adapter.step_problem(model)
    if problem is not None:
        raise UnsupportedLayerError(f"{type(model).__name__} cannot be traced: {problem}")
    producers: dict[int, str] = {}
    keep: list[Tensor] = []  # keep traced tensors alive so their ids stay unique
    nodes: dict[str, TraceNode] = {}
    order: list[str] = []
    watch = _AddWatch(producers, _add_node(nodes, order, producers, keep))
    returned: list[Any] = []
    handles = _hooks(model, adapter, watch, nodes, order, producers, keep, returned)
    x = sample[:1] if sample.ndim > 0 and sample.shape[0] > 1 else sample
    producers[id(x)] = INPUT
    keep.append(x)
    try:
        with eval_mode(model, clear=True), watch:  # no side effects: no BN statistics, no codeword re-seeding
            out = run(model, x, num_steps=num_steps)
    finally:
        for h in handles:
            h.remove()
    # The node whose output tensor the model's forward returned (a step model);
    # a model with its time loop inside forward returns a new stacked tensor:
    # then the last node with the matching shape.
    step_out = _tensors(returned[0]) if returned else []
    output_name = producers.get(id(step_out[0])) if step_out else None
    if output_name in (None, INPUT):
        first = out
        output_name = order[-1] if order else None
        for name in reversed(order):
            n = nodes[name]
            if n.out_shape is not None and tuple(first.shape[1:]) == n.out_shape:
                output_name = name
                break
    return Graph([nodes[n] for n in order], output_name, adapter)


class Recorder:
    """Collect what every spiking neuron emits at every step while a model runs.

    >>> # with Recorder(model) as rec: sf.run(model, x, num_steps=4)
    >>> # rec.spikes["1"]  -> tensor [T, B, ...]

    Args:
        model: the model.
        names: record only these neurons (default all).
        membrane: also record membrane potentials (what the adapter exposes).
        pre_reset: also record pre-reset membrane potentials (for SCA).
        retain_grad: keep the spike tensors in the graph and call ``retain_grad``
            on them, so ``.grad`` holds ``dL/dy`` after ``backward`` (for FSC).
    """

    def __init__(self, model: nn.Module, names: Iterable[str] | None = None, *, membrane: bool = False,
                 pre_reset: bool = False, retain_grad: bool = False) -> None:
        self.model = model
        self.adapter = get_adapter(model)
        neurons = dict(self.adapter.neurons(model))
        if names is not None:
            names = list(names)
            missing = [n for n in names if n not in neurons]
            if missing:
                raise SpikeFitValueError(f"no spiking neuron named {missing}; neurons: {list(neurons)}")
            neurons = {n: neurons[n] for n in names}
        self.neurons = neurons
        self.want_membrane, self.want_pre_reset, self.retain_grad = membrane, pre_reset, retain_grad
        self.steps: dict[str, list[Tensor]] = {n: [] for n in neurons}
        self.membrane_steps: dict[str, list[Tensor]] = {n: [] for n in neurons}
        self.pre_reset_steps: dict[str, list[Tensor]] = {n: [] for n in neurons}
        self._handles: list[Any] = []

    def __enter__(self) -> "Recorder":
        for name, module in self.neurons.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def fn(module, args, output):
            spk = self.adapter.spikes(module, output)
            if self.retain_grad and spk.requires_grad:
                spk.retain_grad()
            self.steps[name].append(spk if self.retain_grad else spk.detach())
            if self.want_membrane:
                mem = self.adapter.membrane(module, output)
                if mem is not None:
                    self.membrane_steps[name].append(mem.detach())
            if self.want_pre_reset:
                pre = self.adapter.pre_reset_membrane(module, args, output)
                if pre is not None:
                    self.pre_reset_steps[name].append(pre.detach())
        return fn

    def clear(self) -> None:
        for d in (self.steps, self.membrane_steps, self.pre_reset_steps):
            for v in d.values():
                v.clear()

    @property
    def spikes(self) -> dict[str, Tensor]:
        """Per neuron, spikes stacked time-major ``[T, B, ...]`` (detached unless ``retain_grad``)."""
        return {n: torch.stack(v) for n, v in self.steps.items() if v}

    @property
    def membranes(self) -> dict[str, Tensor]:
        return {n: torch.stack(v) for n, v in self.membrane_steps.items() if v}

    @property
    def pre_reset_membranes(self) -> dict[str, Tensor]:
        return {n: torch.stack(v) for n, v in self.pre_reset_steps.items() if v}
