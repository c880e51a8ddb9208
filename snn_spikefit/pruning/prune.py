"""Structured pruning: remove whole channels of spiking layers by importance (FSC by default).

:func:`prune` finds every spiking layer that can lose channels in the model's
real data-flow graph (:func:`snn_spikefit.trace.trace`): the Conv/Linear that
drives the neuron (through BatchNorm, pooling, Dropout), and the Conv/Linear
that consumes its spikes (through pooling, Dropout, Identity, Flatten). It
scores their channels on a few calibration batches (:mod:`snn_spikefit.pruning.importance`),
then removes the lowest-scoring ones for real (:mod:`snn_spikefit.pruning.surgery`):
the producing layer loses output channels, BatchNorm and the neuron's
per-channel parameters follow (through the adapter), and the consuming layer
loses input channels. Channels joined by an addition in ``forward`` (a residual block,
``out = out + identity``) form one group (:mod:`snn_spikefit.pruning.groups`): scored by the sum of
their neurons' normalised scores and removed from every layer that produces, carries or consumes
them; the report has one row per group (``pruned_with`` names its other neurons).

>>> import pytest, torch
>>> from torch import nn
>>> import snn_spikefit as sf
>>> snn = pytest.importorskip("snntorch")
>>> net = nn.Sequential(nn.Linear(6, 8), snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(8, 3))
>>> data = [(torch.rand(4, 6) * 3, torch.tensor([0, 1, 2, 0]))]
>>> report = sf.prune(net, data, amount=0.5, criterion="fsc", progress=False)
>>> net[0].out_features, net[2].in_features, report.params_before, report.params_after
(4, 4, 83, 43)
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn
from ..progress import progress_bar

from ..transaction import transactional
from ..adapter import get_adapter
from ..errors import SpikeFitTypeError, SpikeFitValueError
from ..distributed import all_reduce_sum, check_same, checksum, is_distributed, refuse_ddp
from .importance import Criterion, LayerBatch, get_criterion
from ..runtime import DEFAULT_NUM_STEPS, check_module, eval_mode, run
from .surgery import PrunableLayer, count_parameters, prunable_layers, remove_channels
from ..reports import Report
from ..table import Table
from ..trace import Recorder

__all__ = ["prune", "PruneReport", "LayerPrune"]

SCOPES = ("layer", "global")


@dataclass(frozen=True)
class LayerPrune:
    """One row of a :class:`PruneReport`."""

    neuron: str
    layer: str
    channels_before: int
    channels_after: int
    params_before: int           # producer + modules up to and including the neuron
    params_after: int
    score_min: float             # scores of the last step, over the channels present then
    score_mean: float
    score_max: float
    kept: tuple[int, ...]        # original indices of the channels that remain
    group: tuple[str, ...] = ()  # the other spiking layers pruned with it (channels joined by additions)


@dataclass(frozen=True)
class PruneReport(Report):
    """What :func:`prune` removed, per spiking layer; prints as a table."""

    criterion: str
    scope: str
    amount: float
    steps: int
    layers: tuple[LayerPrune, ...]
    params_before: int           # whole model (see snn_spikefit.surgery.count_parameters)
    params_after: int
    num_samples: int             # calibration samples per step (0 for data-free criteria)
    scores: dict[str, Tensor] = field(default_factory=dict, repr=False)  # last step's scores per neuron

    def table(self) -> Table:
        t = Table(["neuron", "layer", "channels_before", "channels_after", "params_before", "params_after",
                   "score_min", "score_mean", "score_max", "pruned_with"],
                  title=(f"prune: criterion={self.criterion}, scope={self.scope}, amount={self.amount}, "
                         f"steps={self.steps}; model parameters {self.params_before} -> {self.params_after}"))
        for r in self.layers:
            t.add_row([r.neuron, r.layer, r.channels_before, r.channels_after, r.params_before, r.params_after,
                       r.score_min, r.score_mean, r.score_max, ", ".join(r.group)])
        return t

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion, "scope": self.scope, "amount": self.amount, "steps": self.steps,
            "params_before": self.params_before, "params_after": self.params_after,
            "num_samples": self.num_samples,
            "layers": [dict(vars(r), kept=list(r.kept), group=list(r.group)) for r in self.layers],
        }


# -- scoring ---------------------------------------------------------------------------------------

def _default_loss(output: Any, y: Tensor) -> Tensor:
    scores = output.sum(dim=0)
    classes = scores.shape[-1] if scores.ndim >= 2 else 0
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool or y.ndim != 1 \
            or y.shape[0] != scores.shape[0] or (y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes)):
        shown = (f"labels of dtype {y.dtype}, shape {tuple(y.shape)}, in {int(y.min())}..{int(y.max())}"
                 if isinstance(y, Tensor) and y.numel() and not y.dtype.is_floating_point
                 else f"labels {type(y).__name__} {tuple(y.shape) if isinstance(y, Tensor) else ''}")
        raise SpikeFitValueError(
            f"the default loss needs class indices in 0..{classes - 1} (the model has {classes} outputs), one "
            f"per sample ({scores.shape[0]}); got {shown}. Pass loss_fn=... for other targets")
    return nn.functional.cross_entropy(scores, y, reduction="sum")


def _batches(data: Iterable, num_batches: int):
    count = 0
    for item in data:
        if count >= num_batches:
            break
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise SpikeFitTypeError(f"data must yield (x, y) pairs, got {type(item).__name__}")
        count += 1
        yield item


def _combine(parts: list[Tensor]) -> Tensor:
    """One member's scores as they are; a group's: the sum of each member's scores over their mean."""
    if len(parts) == 1:
        return parts[0]
    return sum(s / s.mean() if s.mean() > 0 else s for s in (t.double() for t in parts)).float()


def _score(model: nn.Module, layers: list[PrunableLayer], crit: Criterion, data: Iterable, *,
           num_batches: int, num_steps: int | None, loss_fn: Callable, progress: bool | None, desc: str
           ) -> tuple[dict[str, Tensor], int]:
    """Scores per layer (or group: its members' combined, :func:`_combine`), and the calibration samples."""
    modules = dict(model.named_modules())
    if not crit.needs_data:
        return {p.neuron: _combine([crit.finish(crit(LayerBatch(label, modules[prod], None, None, None,
                                                                getattr(modules[prod], p.producer_weight))), 1
                                                ).detach().cpu() for label, prod in p.weight_members])
                for p in layers}, 0
    names = list(dict.fromkeys(n for p in layers for n, _ in p.members))
    totals: dict[tuple[str, str], Tensor] = {}
    samples = 0
    with eval_mode(model, clear=True):  # no BatchNorm statistics, dropout or codebook re-seeding while scoring
        # once, not per batch: a wrapped producer's weight is its quantizer's output, unchanged while scoring
        weights = {prod: getattr(modules[prod], p.producer_weight) for p in layers for _, prod in p.members}
        with Recorder(model, names, retain_grad=crit.needs_grad, pre_reset=crit.needs_pre_reset) as rec:
            for x, y in progress_bar(_batches(data, num_batches), total=num_batches, desc=desc, leave=False,
                                     progress=progress):
                rec.clear()
                grads = _run_batch(model, rec, names, crit, x, y, num_steps, loss_fn)
                spikes, pre = rec.spikes, rec.pre_reset_membranes
                for p in layers:
                    for n, prod in p.members:
                        s = spikes[n].detach()
                        batch = LayerBatch(n, modules[prod], s, grads.get(n), pre.get(n), weights[prod])
                        value = crit(batch).detach().double()
                        key = (p.neuron, n)
                        totals[key] = totals[key] + value if key in totals else value
                samples += int(s.shape[1])
    if is_distributed():  # scores summed over every rank's batches, as if one process saw them all
        totals = {k: all_reduce_sum(t) for k, t in totals.items()}
        samples = int(all_reduce_sum(torch.tensor([samples], dtype=torch.float64)).item())
    if samples == 0:
        raise SpikeFitValueError("data yielded no batch; pass a non-empty iterable of (x, y)")
    # on the CPU: channel choice and bookkeeping do not depend on where the model lives
    return {p.neuron: _combine([crit.finish(totals[(p.neuron, n)], samples).float().cpu() for n, _ in p.members])
            for p in layers}, samples


def _run_batch(model, rec: Recorder, names: list[str], crit: Criterion, x, y, num_steps, loss_fn) -> dict[str, Tensor]:
    """Run one calibration batch; ``dL/dspikes`` per neuron ``[T, B, ...]`` when the criterion needs it."""
    grads: dict[str, Tensor] = {}
    if not crit.needs_grad:
        with torch.no_grad():
            run(model, x, num_steps=num_steps)
        return grads
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True) if x.is_floating_point() else x
        loss = loss_fn(run(model, x_in, num_steps=num_steps), y)
        steps = [t for n in names for t in rec.steps[n]]
        if not loss.requires_grad:
            raise SpikeFitValueError(
                f"criterion {type(crit).__name__} needs dL/dspikes but the loss does not depend "
                f"on the spikes differentiably (loss_fn returned a tensor without gradient)")
        got = torch.autograd.grad(loss, steps, allow_unused=True)
    i = 0
    for n in names:
        k = len(rec.steps[n])
        grads[n] = torch.stack([torch.zeros_like(s) if g is None else g for s, g in zip(rec.steps[n], got[i:i + k])])
        i += k
    return grads


# -- choosing and removing channels -------------------------------------------------------------------

def _removed_by(total: int, amount: float, step: int, steps: int) -> int:
    """Channels removed after ``step`` of ``steps``: geometric schedule, floor(total * amount) at the end."""
    fraction = 1.0 - (1.0 - amount) ** (step / steps)
    return min(total - 1, int(math.floor(total * fraction + 1e-9)))


def _choose(layers, scores, counts, originals, amount, scope, step, steps) -> dict[str, Tensor]:
    """Sorted indices (current numbering) of the channels each layer keeps."""
    keep: dict[str, Tensor] = {}
    if scope == "layer":
        for p in layers:
            n = counts[p.neuron]
            drop = _removed_by(originals[p.neuron], amount, step, steps) - (originals[p.neuron] - n)
            order = torch.sort(scores[p.neuron], stable=True).indices
            keep[p.neuron] = order[max(drop, 0):].sort().values
        return keep
    # global: each layer's scores divided by their mean, so layers of different scale compare
    normed = []
    for p in layers:
        s = scores[p.neuron].double()
        s = s / s.mean() if s.mean() > 0 else s
        s = s.clone()
        s[torch.argmax(s)] = math.inf  # every layer keeps at least one channel
        normed.append(s)
    flat = torch.cat(normed)
    total0 = sum(originals.values())
    drop = _removed_by(total0, amount, step, steps) - (total0 - sum(counts.values()))
    drop = max(0, min(drop, flat.numel() - len(layers)))
    removed = torch.zeros(flat.numel(), dtype=torch.bool)
    removed[torch.sort(flat, stable=True).indices[:drop]] = True
    start = 0
    for p in layers:
        n = counts[p.neuron]
        keep[p.neuron] = (~removed[start:start + n]).nonzero().flatten()
        start += n
    return keep


def _warn_ties(layers: list[PrunableLayer], scores: dict[str, Tensor], keep: dict[str, Tensor], crit: str) -> None:
    """Warn when a layer's cut falls inside a group of equal scores: which channels go is then arbitrary
    (their order), e.g. FSC on an untrained net whose spikes or gradients are all zero."""
    for p in layers:
        s = scores[p.neuron].detach().double().flatten()
        kept = torch.zeros(s.numel(), dtype=torch.bool)
        kept[keep[p.neuron]] = True
        if kept.all() or not kept.any():
            continue
        cut = s[~kept].max()
        if not bool((s[kept] == cut).any()):
            continue
        tied = int((s == cut).sum())
        why = (" (no spikes or no gradient reached the layer: is the model trained, and does it fire on "
               "this data?)" if float(s.abs().max()) == 0 else "")
        warnings.warn(
            f"prune: criterion {crit!r} gives {tied} of the {s.numel()} channels of layer {p.neuron!r} the same "
            f"score {float(cut):.6g}, so which of them are removed is arbitrary (channel order){why}; train the "
            f"model first, calibrate on more batches (num_batches=), or use another criterion (e.g. 'l1')",
            UserWarning, stacklevel=3)


def _group_params(model: nn.Module, layer: PrunableLayer) -> int:
    modules = dict(model.named_modules())
    return sum(count_parameters(modules[n]) for n in layer.param_modules)


def _check_args(model, amount, scope, steps, num_batches, num_steps, loss_fn, finetune, data):
    check_module(model)
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        raise SpikeFitValueError(f"amount={amount!r} is not allowed; use the fraction of channels to remove, "
                                 f"a number in [0, 1)")
    if scope not in SCOPES:
        raise SpikeFitValueError(f"scope={scope!r} is not allowed; use one of {SCOPES}")
    for name, value in (("steps", steps), ("num_batches", num_batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpikeFitValueError(f"{name}={value!r} is not allowed; use an int >= 1")
    if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1):
        raise SpikeFitValueError(f"num_steps={num_steps!r} is not allowed; use an int >= 1, or None for "
                                 f"time-major x [T, B, ...]")
    for name, fn in (("loss_fn", loss_fn), ("finetune", finetune)):
        if fn is not None and not callable(fn):
            raise SpikeFitTypeError(f"{name} must be callable or None, got {type(fn).__name__}")
    if steps > 1 and iter(data) is data:
        raise SpikeFitTypeError("data is a one-shot iterator but steps > 1 re-reads it; pass a DataLoader or a list")


@transactional
def prune(model: nn.Module, data: Iterable, *, amount: float = 0.3, criterion: str | Criterion | Callable = "fsc",
          scope: str = "layer", steps: int = 1, ignore: str | Iterable[str] | None = None, num_batches: int = 8,
          num_steps: int | None = DEFAULT_NUM_STEPS, loss_fn: Callable[[Any, Tensor], Tensor] | None = None,
          finetune: Callable[[nn.Module], Any] | None = None, progress: bool | None = None) -> PruneReport:
    """Remove the least important ``amount`` of the channels of every prunable spiking layer, in place.

    Args:
        model: snnTorch, Norse or plain PyTorch model (changed in place).
        data: re-iterable ``(x, y)`` batches (``x`` static ``[B, ...]`` with ``num_steps``, or time-major
            ``[T, B, ...]`` with ``num_steps=None``), run through :func:`snn_spikefit.run`.
        amount: fraction of channels to remove, in ``[0, 1)``: ``floor(amount * C)`` per layer
            (``scope="layer"``) or of all prunable channels (``scope="global"``, where each layer's scores
            are divided by their mean before ranking). Every layer keeps at least one channel.
        criterion: ``"fsc"``, ``"svs"``, ``"sca"``, ``"taylor"``, ``"l1"``, ``"random"`` (see
            :mod:`snn_spikefit.pruning.importance`), a ``Criterion``, or a callable ``fn(LayerBatch) -> Tensor[C]``.
        steps: prune in this many rounds, re-scoring each time; after round ``k`` a fraction
            ``1 - (1 - amount)^(k/steps)`` is gone (each round removes the same share of what is left).
        ignore: neuron or layer names / glob patterns to leave unpruned (one member of a channel group
            leaves its whole group unpruned).
        num_batches: calibration batches per round (one forward + one backward each for gradient criteria).
        loss_fn: ``(run output [T, B, ...], y) -> loss``; default cross-entropy (summed over the batch) of the
            time-summed output.
        finetune: called as ``finetune(model)`` between rounds (not after the last).
        progress: tqdm bars; ``None``: the library switch (:func:`snn_spikefit.set_progress`).

    Returns:
        A :class:`PruneReport` (prints as a table).

    The model's parameters are replaced by smaller ones: create a new optimizer after pruning. BatchNorm
    statistics, codebooks and gradients (``.grad``) are not touched while scoring (eval mode,
    ``torch.autograd.grad``). The model's output layer keeps its outputs.

    Raises:
        SpikeFitValueError / SpikeFitTypeError: bad arguments, unknown criterion, empty data.
        UnsupportedLayerError: a spiking layer that cannot be pruned (not in ``ignore``); nothing is changed.
    """
    refuse_ddp(model, "prune")
    _check_args(model, amount, scope, steps, num_batches, num_steps, loss_fn, finetune, data)
    crit = get_criterion(criterion)
    crit_name = criterion if isinstance(criterion, str) else type(crit).__name__
    loss_fn = loss_fn or _default_loss
    first = next(iter(data), None)
    if first is None:
        raise SpikeFitValueError("data yielded no batch; pass a non-empty iterable of (x, y)")
    if not isinstance(first, (tuple, list)) or len(first) != 2:
        raise SpikeFitTypeError(f"data must yield (x, y) pairs, got {type(first).__name__}")
    sample = first[0] if num_steps is not None else first[0][0]
    adapter = get_adapter(model)
    params_before = count_parameters(model)

    trace_steps = num_steps if num_steps is not None else 1
    layers = prunable_layers(model, sample, ignore=ignore, num_steps=trace_steps)
    if not layers:
        raise SpikeFitValueError("model has no spiking layer that can be pruned (the output layer never is)")
    originals = {p.neuron: p.channels for p in layers}
    kept = {p.neuron: torch.arange(p.channels) for p in layers}
    group_before = {p.neuron: _group_params(model, p) for p in layers}
    first_layers = {p.neuron: p for p in layers}
    scores: dict[str, Tensor] = {}
    samples = 0
    for step in range(1, steps + 1):
        if step > 1:
            layers = prunable_layers(model, sample, ignore=ignore, num_steps=trace_steps)
        desc = f"scoring {crit_name}" + (f" {step}/{steps}" if steps > 1 else "")
        scores, samples = _score(model, layers, crit, data, num_batches=num_batches, num_steps=num_steps,
                                 loss_fn=loss_fn, progress=progress, desc=desc)
        counts = {p.neuron: p.channels for p in layers}
        keep = _choose(layers, scores, counts, originals, amount, scope, step, steps)
        check_same(checksum(*[keep[p.neuron] for p in layers]), f"prune round {step}: the kept channels")
        _warn_ties(layers, scores, keep, crit_name)
        todo = [p for p in layers if keep[p.neuron].numel() < p.channels]
        modules = dict(model.named_modules())
        for p in todo:  # dry run on a copy: a neuron the adapter cannot shrink fails before anything changes
            for n in p.neurons:
                adapter.prune_neuron(copy.deepcopy(modules[n]), keep[p.neuron], p.channel_dim)
        for p in todo:
            remove_channels(model, adapter, p, keep[p.neuron])
            kept[p.neuron] = kept[p.neuron][keep[p.neuron]]
        adapter.reset(model)
        if finetune is not None and step < steps:
            finetune(model)

    rows = []
    for neuron, before in originals.items():
        s = scores.get(neuron, torch.zeros(1))
        p = first_layers[neuron]
        rows.append(LayerPrune(neuron, p.producer, before, int(kept[neuron].numel()), group_before[neuron],
                               _group_params(model, p), float(s.min()), float(s.mean()), float(s.max()),
                               tuple(int(i) for i in kept[neuron]), tuple(p.neurons[1:])))
    return PruneReport(crit_name, scope, float(amount), steps, tuple(rows), params_before,
                       count_parameters(model), samples, dict(scores))

