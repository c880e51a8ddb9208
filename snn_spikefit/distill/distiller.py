"""Membrane-aware distillation (MD-SNN, arXiv 2512.04443): the student matches the teacher's membranes.

A compressed student (CAT-wrapped, pruned, post-training quantized, chip-precision state)
drifts from its full-precision teacher in its membrane potentials before it drifts in its
outputs. :class:`Distiller` adds one loss term, used like ``commitment_loss``:

.. math::

    L = w_m \\frac{1}{L} \\sum_l \\frac{1}{T} \\sum_t \\mathrm{MSE}(U^s_{l,t}, U^t_{l,t}[\\mathrm{kept}_l])
        + w_z\\, \\tau^2\\, \\mathrm{KL}(\\mathrm{softmax}(z^t / \\tau) \\,\\|\\, \\mathrm{softmax}(z^s / \\tau))

with ``U`` the membrane of each matched spiking layer at each step (pre-reset where the
framework gives it, :meth:`~snn_spikefit.Adapter.distill_membrane`), ``z`` the time-averaged
outputs, ``tau`` the temperature. With ``normalize="variance"`` each layer's MSE is divided by
the teacher's membrane variance over the batch, :math:`\mathrm{MSE}_l / (\mathrm{Var}(U^t_l) + 10^{-6})`
(a relative error, the same scale in every layer). The teacher runs under ``no_grad`` in eval
mode, its state reset with the student's; its membranes are detached, so the gradient reaches
only the student.

Two defaults come from measurement (Fashion-MNIST conv SNN of ``benchmarks/distill.py``, CAT
m=2 b=4, scored on a validation split of the training set, ``benchmarks/distill_sweep.py``,
results in ``benchmarks/results/distill_sweep.md``):

* ``teacher_bn="match"``: while the student trains, the teacher's BatchNorm normalises with the
  batch's own statistics, as the student's does (its running statistics are neither used nor
  updated). With the running statistics (``"running"``, the old behaviour) a student that *is*
  the teacher already has a non-zero loss (membrane MSE 0.26 in the last layer, ``tau^2 KL`` 0.14
  on one batch, seen in exploratory runs and not kept in a results file), and the student is trained to undo that mode difference. With the FP32 teacher
  and both weights 1.0, validation accuracy fell 2.9 points below no distillation with
  ``"running"``, 1.0 point with ``"match"`` (mean of 2 seeds).
* ``membrane_weight = logit_weight = 0.1``: at 1.0 the two terms are 5-8x the cross-entropy of a
  freshly quantized m=2 student (``tau^2 KL`` 3.5, membrane MSE 0.7, CE 0.5, the same exploratory
  runs) and pull it to the
  teacher instead of the labels; 0.1 was the best of the weights, temperatures, layer choices
  and normalisations tried.

The teacher matters more than any of these: distil from the best full-precision model you
have (in the benchmark, the FP32 model fine-tuned with the same budget as the student).

What it closes depends on where the student's gap comes from (``benchmarks/distill_budget.py``,
validation split, 3 seeds). It speeds up a short fine-tune: at the suite's budget it closed 71 % of
CAT m=4's gap to the FP32 control, but only 15 % of m=2's. With four times the epochs, CAT m=2
still stays 1.6 points below the control with or without distillation. That part is the capacity
of two values per layer, and no teacher recovers it.

>>> # distiller = sf.Distiller(teacher, student, membrane_weight=1.0, logit_weight=1.0)
>>> # out = distiller.run(x, num_steps=4)          # runs both, keeps what loss() needs
>>> # loss = F.cross_entropy(sf.train.scores(out), y) + distiller.loss()

Layers are paired in order (``layers="auto"``: the i-th neuron of the student with the
i-th of the teacher; both must have as many), by ``{student neuron: teacher neuron}``,
or by a list of names both share. A pruned student maps to the teacher's kept channels
through ``prune_report`` (:class:`~snn_spikefit.PruneReport`, or ``{neuron: kept indices}``);
membranes whose shapes still differ are refused by name, never broadcast.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..adapter import get_adapter
from ..errors import SpikeFitTypeError, SpikeFitValueError
from ..runtime import check_module, eval_mode, run

__all__ = ["Distiller"]


def _number(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and value == 0):
        raise SpikeFitValueError(f"{name}={value!r} is not allowed; use a number {'> 0' if positive else '>= 0'}")
    return float(value)


def _first(output: Any) -> Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


class _Tap:
    """Records one model's per-step membranes of the chosen neurons (hooks through the adapter)."""

    def __init__(self, model: nn.Module, names: list[str], *, detach: bool) -> None:
        self.adapter = get_adapter(model)
        neurons = dict(self.adapter.neurons(model))
        self.steps: dict[str, list[Tensor]] = {n: [] for n in names}
        self.detach = detach
        self.handles = [neurons[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def fn(module, args, output):
            if not self.detach and not torch.is_grad_enabled():
                return  # the student outside training (evaluation): nothing to distil
            mem = self.adapter.distill_membrane(module, args, output)
            if mem is None:
                raise SpikeFitValueError(
                    f"neuron {name!r} ({type(module).__name__}) exposes no membrane potential through the "
                    f"{self.adapter.name} adapter; leave it out (layers=...) or use membrane_weight=0")
            self.steps[name].append(mem.detach() if self.detach else mem)
        return fn

    def clear(self) -> None:
        for v in self.steps.values():
            v.clear()

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


class Distiller:
    """Membrane and logit distillation from ``teacher`` into ``student`` (see the module docstring).

    Args:
        teacher, student: models of any adapter (they may differ); the teacher is not trained.
        layers: ``"auto"``, ``{student neuron: teacher neuron}``, a list of shared neuron names,
            or ``[]`` / ``None`` (logits only).
        membrane_weight, logit_weight: weights of the two terms (``>= 0``).
        temperature: softmax temperature of the logit term (``> 0``); the term is scaled by ``tau**2``.
        prune_report: a :class:`~snn_spikefit.PruneReport` of the student (or ``{student neuron:
            kept channel indices}``): the teacher's membranes are cut to the kept channels (axis 1).
        normalize: ``None`` (plain MSE) or ``"variance"`` (each layer's MSE over the teacher's
            membrane variance).
        teacher_bn: ``"match"`` (the teacher's BatchNorm uses batch statistics while the student
            trains BatchNorm of its own, running statistics while it evaluates or when it has none,
            e.g. folded into its weights) or ``"running"`` (always the running
            statistics). Only :meth:`run` applies it; a loop that runs the teacher itself and calls
            :meth:`record` decides for itself.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, *, layers: Any = "auto",
                 membrane_weight: float = 0.1, logit_weight: float = 0.1, temperature: float = 4.0,
                 prune_report: Any = None, normalize: str | None = None, teacher_bn: str = "match") -> None:
        self.teacher, self.student = check_module(teacher, "teacher"), check_module(student, "student")
        if teacher is student:
            raise SpikeFitValueError("teacher and student are the same module; distil from a copy "
                                     "(copy.deepcopy(model) before compressing it)")
        self.membrane_weight = _number("membrane_weight", membrane_weight)
        self.logit_weight = _number("logit_weight", logit_weight)
        self.temperature = _number("temperature", temperature, positive=True)
        if normalize not in (None, "variance"):
            raise SpikeFitValueError(f"normalize={normalize!r} is not allowed; use None or 'variance'")
        if teacher_bn not in ("match", "running"):
            raise SpikeFitValueError(f"teacher_bn={teacher_bn!r} is not allowed; use 'match' or 'running'")
        self.normalize, self.teacher_bn = normalize, teacher_bn
        self.pairs = self._pairs(layers) if self.membrane_weight > 0 else []
        self.kept = self._kept(prune_report)
        self._student_tap = _Tap(student, [s for s, _ in self.pairs], detach=False)
        self._teacher_tap = _Tap(teacher, [t for _, t in self.pairs], detach=True)
        self._outputs: tuple[Tensor, Tensor] | None = None
        self.terms: dict[str, float] = {}

    # -- configuration -----------------------------------------------------------------------
    def _pairs(self, layers: Any) -> list[tuple[str, str]]:
        s_names = [n for n, _ in get_adapter(self.student).neurons(self.student)]
        t_names = [n for n, _ in get_adapter(self.teacher).neurons(self.teacher)]
        if layers is None or (isinstance(layers, (list, tuple, dict)) and not layers):
            return []
        if isinstance(layers, str):
            if layers != "auto":
                raise SpikeFitValueError(f"layers={layers!r} is not allowed; use 'auto', a dict or a list")
            if len(s_names) != len(t_names):
                raise SpikeFitValueError(
                    f"layers='auto' pairs neurons in order, but the student has {len(s_names)} ({s_names}) and "
                    f"the teacher {len(t_names)} ({t_names}); pass layers={{student: teacher, ...}}")
            return list(zip(s_names, t_names))
        if isinstance(layers, Mapping):
            pairs = [(str(s), str(t)) for s, t in layers.items()]
        elif isinstance(layers, Iterable):
            pairs = [(str(n), str(n)) for n in layers]
        else:
            raise SpikeFitTypeError(f"layers must be 'auto', a dict, a list or None, got {type(layers).__name__}")
        for side, names, known in (("student", [s for s, _ in pairs], s_names), ("teacher", [t for _, t in pairs], t_names)):
            missing = [n for n in names if n not in known]
            if missing:
                raise SpikeFitValueError(f"layers names no {side} neuron {missing}; {side} neurons: {known}")
        return pairs

    def _kept(self, report: Any) -> dict[str, Tensor]:
        if report is None:
            return {}
        rows = getattr(report, "layers", None)
        mapping = {r.neuron: r.kept for r in rows} if rows is not None else report
        if not isinstance(mapping, Mapping):
            raise SpikeFitTypeError(f"prune_report must be a PruneReport or {{neuron: kept indices}}, got "
                                    f"{type(report).__name__}")
        students = {s for s, _ in self.pairs}
        return {n: torch.as_tensor(list(k), dtype=torch.long) for n, k in mapping.items() if n in students}

    # -- running -------------------------------------------------------------------------------
    def run(self, x: Tensor, *, num_steps: int | None = None) -> Any:
        """Run teacher (``no_grad``, eval mode) and student on ``x``; return the student's output ``[T, B, ...]``.

        Both are reset first (:func:`snn_spikefit.run`), so their states start together.
        """
        self.clear()
        with torch.no_grad(), eval_mode(self.teacher, clear=True), self._teacher_batch_stats():
            t_out = run(self.teacher, x, num_steps=num_steps)
        s_out = run(self.student, x, num_steps=num_steps)
        self._outputs = (_first(t_out).detach(), _first(s_out))
        return s_out

    @contextmanager
    def _teacher_batch_stats(self) -> Iterator[None]:
        """While the student trains its BatchNorm, the teacher's BatchNorm normalises with the batch's statistics too.

        A student without training BatchNorm (folded into the weights for a chip, or frozen) computes
        with fixed statistics, as the teacher's eval mode does: the teacher keeps its running ones.

        Its running statistics are neither used nor updated (``track_running_stats`` off for the
        call); on exit every BatchNorm has its mode and flag back.
        """
        bns = [m for m in self.teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        student_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in self.student.modules())
        if self.teacher_bn != "match" or not self.student.training or not student_bn or not bns:
            yield
            return
        saved = [(m, m.training, m.track_running_stats) for m in bns]
        try:
            for m in bns:
                m.train()
                m.track_running_stats = False
            yield
        finally:
            for m, mode, track in saved:
                m.train(mode)
                m.track_running_stats = track

    def record(self, teacher_output: Any, student_output: Any) -> None:
        """Tell the distiller the outputs of a run made by your own loop (both models ran on the same input)."""
        self._outputs = (_first(teacher_output).detach(), _first(student_output))

    def membranes(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(student, teacher)`` membranes of the last run, ``{neuron: [T, B, ...]}`` (before ``loss``)."""
        stack = lambda tap: {n: torch.stack(v) for n, v in tap.steps.items() if v}  # noqa: E731
        return stack(self._student_tap), stack(self._teacher_tap)

    def clear(self) -> None:
        """Forget what the last run recorded."""
        self._student_tap.clear()
        self._teacher_tap.clear()
        self._outputs = None

    def close(self) -> None:
        """Remove the hooks from both models (the distiller cannot be used afterwards)."""
        self.clear()
        self._student_tap.close()
        self._teacher_tap.close()

    def __enter__(self) -> "Distiller":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the loss ----------------------------------------------------------------------------
    def membrane_loss(self) -> Tensor:
        """Mean over matched layers and steps of the membranes' MSE (0 when no layer is matched)."""
        terms = []
        for s_name, t_name in self.pairs:
            s_steps, t_steps = self._student_tap.steps[s_name], self._teacher_tap.steps[t_name]
            if len(s_steps) != len(t_steps) or not s_steps:
                raise SpikeFitValueError(
                    f"student neuron {s_name!r} recorded {len(s_steps)} steps, teacher {t_name!r} {len(t_steps)}; "
                    f"run both on the same input (Distiller.run) with gradients enabled for the student")
            s, t = torch.stack(s_steps), torch.stack(t_steps).to(s_steps[0].device)
            if s_name in self.kept:
                t = t.index_select(2, self.kept[s_name].to(t.device))  # [T, B, C, ...]: channels are axis 2
            if s.shape != t.shape:
                raise SpikeFitValueError(
                    f"membranes of student {s_name!r} {tuple(s.shape[1:])} and teacher {t_name!r} "
                    f"{tuple(t.shape[1:])} differ in shape; a pruned student needs prune_report= (its PruneReport), "
                    f"other layers can be left out with layers={{...}}")
            term = F.mse_loss(s, t)
            if self.normalize == "variance":
                term = term / (t.var(unbiased=False) + 1e-6)
            terms.append(term)
        if not terms:
            return self._zero()
        return torch.stack(terms).mean()

    def logit_loss(self) -> Tensor:
        """``tau**2 * KL(teacher || student)`` of the time-averaged outputs at temperature ``tau``."""
        if self._outputs is None:
            raise SpikeFitValueError("no run recorded: call distiller.run(x, num_steps=...) (or record(...)) "
                                     "before distiller.loss()")
        t_out, s_out = self._outputs
        tau = self.temperature
        t_log = F.log_softmax(t_out.float().mean(0) / tau, dim=-1)
        s_log = F.log_softmax(s_out.float().mean(0) / tau, dim=-1)
        return tau * tau * F.kl_div(s_log, t_log, reduction="batchmean", log_target=True)

    def loss(self) -> Tensor:
        """``membrane_weight * membrane_loss() + logit_weight * logit_loss()`` of the last run; then forgets it."""
        total = self._zero()
        parts = {}
        if self.membrane_weight > 0 and self.pairs:
            parts["membrane"] = self.membrane_loss()
            total = total + self.membrane_weight * parts["membrane"]
        if self.logit_weight > 0:
            parts["logits"] = self.logit_loss()
            total = total + self.logit_weight * parts["logits"]
        self.terms = {k: float(v.detach()) for k, v in parts.items()}
        self._student_tap.clear()
        self._teacher_tap.clear()
        return total

    def _zero(self) -> Tensor:
        p = next(self.student.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)

    def __repr__(self) -> str:
        return (f"Distiller(pairs={self.pairs}, membrane_weight={self.membrane_weight}, "
                f"logit_weight={self.logit_weight}, temperature={self.temperature})")

