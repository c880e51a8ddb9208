"""Run any supported SNN over time through one path.

>>> import torch
>>> from torch import nn
>>> out = run(nn.Linear(3, 2), torch.ones(5, 3), num_steps=4)   # plain torch: stateless steps
>>> tuple(out.shape)
(4, 5, 2)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from torch import Tensor, nn

from .adapter import get_adapter
from .distributed import is_distributed, local_neuron_state
from .errors import InputMismatchError, SpikeFitTypeError, SpikeFitValueError

__all__ = ["run", "record", "RunRecord", "reset", "release_state", "check_input", "check_module", "eval_mode",
           "train_mode", "DEFAULT_NUM_STEPS"]

#: Steps every verb over a data loader feeds a static batch ``[B, ...]`` for, unless told
#: otherwise: ``fit``, ``accuracy``, ``predict``, ``recalibrate_bn``, ``prune``, ``evaluate`` and
#: ``compress`` read the same loader the same way. ``num_steps=None`` means the batches are
#: already time-major ``[T, B, ...]`` (event data). The tensor-level ``run(model, x)`` and
#: ``count_ops(model, x)`` take ``x`` as it is: time-major unless ``num_steps`` is given.
DEFAULT_NUM_STEPS = 4


def check_module(model: Any, name: str = "model") -> nn.Module:
    """``model`` if it is an ``nn.Module``, else :class:`~snn_spikefit.errors.SpikeFitTypeError` naming it."""
    if not isinstance(model, nn.Module):
        raise SpikeFitTypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


@contextmanager
def _mode(model: nn.Module, training: bool, clear: bool) -> Iterator[nn.Module]:
    modes = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        if clear:
            reset(model)


def eval_mode(model: nn.Module, *, clear: bool = False):
    """Context: ``model.eval()`` inside, and every submodule's own mode back on exit (errors included).

    ``clear=True`` also resets the neurons' state on exit (see :func:`reset`), so no
    membrane that refers to the last autograd graph stays in the model.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()); net[1].eval()
    Dropout(p=0.5, inplace=False)
    >>> with eval_mode(net): print(net.training, net[1].training)
    False False
    >>> net.training, net[1].training      # the mixed modes the user had
    (True, False)
    """
    return _mode(model, False, clear)


def train_mode(model: nn.Module, *, clear: bool = False):
    """Context: ``model.train()`` inside, every submodule's own mode back on exit (``clear``: as :func:`eval_mode`)."""
    return _mode(model, True, clear)


def check_input(x: Any, num_steps: int | None) -> None:
    """Validate ``run``'s arguments (shared by every feature that runs models)."""
    if not isinstance(x, Tensor):
        raise SpikeFitTypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if num_steps is not None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise SpikeFitValueError(f"num_steps={num_steps!r} is not allowed; use a positive int, "
                                     f"or None when x is time-major [T, B, ...]")
        if x.ndim < 2:
            raise SpikeFitValueError(
                f"x has shape {tuple(x.shape)}; with num_steps={num_steps} x must be a batch [B, ...] "
                f"(add the batch dimension: x.unsqueeze(0))")
    elif x.ndim < 2:
        raise SpikeFitValueError(
            f"x has shape {tuple(x.shape)}; with num_steps=None x must be time-major [T, B, ...] "
            f"(pass num_steps=T to repeat a static [B, ...] input T times)"
        )
    if x.is_floating_point() and not bool(x.isfinite().all()):
        raise SpikeFitValueError("x contains NaN or inf values; inputs must be finite")


def reset(model: nn.Module) -> None:
    """Clear the state of every spiking neuron in ``model``."""
    get_adapter(model).reset(model)


def release_state(model: nn.Module) -> None:
    """Detach every tensor the spiking neurons of ``model`` keep from the autograd graph, in place.

    snnTorch neurons with ``init_hidden=True`` (or snnTorch >= 1.0's stored ``mem``) keep the
    last step's membrane as a buffer; after a run that tensor is part of the graph and
    ``copy.deepcopy(model)`` refuses it ("Only Tensors created explicitly by the user (graph
    leaves) support the deepcopy protocol"). The values stay as they are; outputs already
    returned keep their graph (``backward`` still works). Every library call that runs a model
    leaves it this way, so the model can always be deep-copied.
    """
    neurons = [m for _, n in get_adapter(model).neurons(model) for m in n.modules()]
    for module in neurons:  # only neuron state: other modules' tensors are the user's business
        for store in (module._buffers, module.__dict__):
            for name, value in list(store.items()):
                if isinstance(value, Tensor) and value.grad_fn is not None:
                    store[name] = value.detach()


def _first(out: Any) -> Tensor:
    """The spikes in a stacked output: the tensor itself, or the first element of a tuple."""
    while isinstance(out, (tuple, list)):
        if not out:
            raise SpikeFitTypeError("the model returned an empty tuple; run() needs a tensor per step")
        out = out[0]
    if not isinstance(out, Tensor):
        raise SpikeFitTypeError(f"the model returned {type(out).__name__}; run() needs a tensor per step")
    return out


def _run(model: nn.Module, x: Tensor, num_steps: int | None) -> Any:
    check_module(model)
    check_input(x, num_steps)
    adapter = get_adapter(model)
    adapter.reset(model)
    if is_distributed():  # DDP must not copy rank 0's membranes into the other ranks at every step
        local_neuron_state(model, [m for _, n in adapter.neurons(model) for m in n.modules()])
    try:
        return adapter.run(model, x, num_steps)
    except RuntimeError as exc:  # a shape or dtype the model cannot take: name the layer
        raise _layer_error(model, x, exc) from exc
    finally:
        release_state(model)


def run(model: nn.Module, x: Tensor, *, num_steps: int | None = None) -> Tensor:
    """Reset ``model``, run it over time and return its output spikes time-major ``[T, B, ...]``.

    Args:
        model: an snnTorch, Norse or plain PyTorch model. For snnTorch, the time
            loop may be outside ``forward`` (neurons with ``init_hidden=True``, or
            stateful calls) or inside it (``forward`` loops and returns stacked
            recordings): the adapter tells them apart by counting neuron calls.
        x: static input ``[B, ...]`` repeated ``num_steps`` times (direct encoding),
            or time-major ``[T, B, ...]`` with ``num_steps=None``.
        num_steps: number of steps for a static input; ``None`` (default) when ``x`` is
            time-major.

    Returns:
        Always one tensor ``[T, B, ...]``: what the model returns at each step (its output
        spikes, or a read-out layer's values). A model that returns a tuple per step (snnTorch's
        ``Leaky(..., output=True)`` gives ``(spk, mem)``; tutorial nets return
        ``(spk_rec, mem_rec)``) gives its first element. For the membranes use :func:`record`.
        The model is left without autograd history in its stored state (:func:`release_state`),
        so it can be deep-copied.
    """
    return _first(_run(model, x, num_steps))


@dataclass(frozen=True)
class RunRecord:
    """What :func:`record` saw: the output as :func:`run` returns it, and the membranes.

    Attributes:
        output: ``[T, B, ...]``, exactly what :func:`run` returns (with its gradient).
        membrane: ``[T, B, ...]`` output membrane, with its gradient, when the model returns it
            (the last element of a per-step tuple: snnTorch ``output=True``, tutorial nets that
            return ``(spk_rec, mem_rec)``); else ``None``.
        spikes: per spiking neuron (qualified name), its spikes ``[T, B, ...]`` (detached).
        membranes: per spiking neuron, the membrane the adapter reads after each step
            ``[T, B, ...]`` (detached; absent for neurons that do not expose one).
    """

    output: Tensor
    membrane: Tensor | None = None
    spikes: dict[str, Tensor] = field(default_factory=dict)
    membranes: dict[str, Tensor] = field(default_factory=dict)


def record(model: nn.Module, x: Tensor, *, num_steps: int | None = None) -> RunRecord:
    """Run ``model`` like :func:`run` and also return membranes and every neuron's spikes.

    >>> import torch
    >>> from torch import nn
    >>> rec = record(nn.Linear(3, 2), torch.ones(5, 3), num_steps=4)
    >>> tuple(rec.output.shape), rec.membrane, rec.spikes
    ((4, 5, 2), None, {})
    """
    from .trace import Recorder

    check_module(model)
    with Recorder(model, membrane=True) as rec:
        out = _run(model, x, num_steps)
    membrane = None
    if isinstance(out, (tuple, list)) and len(out) > 1 and isinstance(out[-1], Tensor):
        membrane = out[-1]
    return RunRecord(_first(out), membrane, rec.spikes, rec.membranes)


def _expects(module: nn.Module) -> str:
    """What input a layer takes, for error messages."""
    weight = getattr(module, "weight", None)
    dtype = f" of {weight.dtype}" if isinstance(weight, Tensor) else ""
    if isinstance(module, nn.Linear):
        return f"takes inputs [..., {module.in_features}]{dtype}"
    if isinstance(module, nn.modules.conv._ConvNd):
        dims = len(module.kernel_size)
        return f"takes inputs [B, {module.in_channels}, {', '.join(['...'] * dims)}]{dtype}"
    return f"is a {type(module).__name__}"


def _layer_error(model: nn.Module, x: Tensor, exc: RuntimeError) -> Exception:
    """An :class:`~snn_spikefit.errors.InputMismatchError` naming the innermost layer of ``model`` the error came from.

    The layer is found in the traceback (no hooks, so running costs nothing extra); when no
    layer of ``model`` is on it, the error is only rephrased with the input's shape and dtype.
    """
    names = {id(m): n for n, m in model.named_modules()}
    layer, got = None, None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            layer = owner
            code = frame.f_code
            args = [frame.f_locals.get(v) for v in code.co_varnames[:code.co_argcount]]
            got = next((a for a in args if isinstance(a, Tensor)), None)
        tb = tb.tb_next
    first = " ".join(str(exc).split())[:200]
    given = f"x of shape {tuple(x.shape)} ({x.dtype})"
    if layer is None:
        return InputMismatchError(f"{type(model).__name__} cannot run on {given}: {first}")
    name = names[id(layer)] or type(model).__name__
    seen = f"gets {tuple(got.shape)} ({got.dtype})" if got is not None else "fails"
    return InputMismatchError(f"layer {name!r} ({type(layer).__name__}) {_expects(layer)} but {seen} from "
                              f"{given}: {first}")
