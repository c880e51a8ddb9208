"""Deployment metrics: accuracy, macro-F1, latency, operations, energy, size and DeployRatio.

.. math::

    DR_x = \\frac{Perf_x}{L \\cdot E \\cdot S}, \\quad x \\in \\{acc, f1\\}

with ``Perf`` = accuracy/100 or macro-F1/100, ``L`` the mean wall-clock seconds
per input, ``E`` the energy per inference in mJ under a hardware profile
(``E_MAC * MACs + E_AC * ACs [+ E_neuron * neuron updates]``, operations counted
as in NeuroBench, see :mod:`snn_spikefit.deploy.ops`) and ``S = P * b / 8e6`` MB (on a
profile whose ``synapse_memory`` is ``"nonzero"`` zero weights free their storage, see
:func:`model_size_bits`; on ``"dense"`` and unknown ones they do not). DR has
units: compare it only under one profile, one machine and one T, and read it
with its components (the report prints them side by side).

>>> import torch
>>> from torch import nn
>>> from torch.utils.data import TensorDataset, DataLoader
>>> net = nn.Sequential(nn.Linear(4, 3))
>>> data = DataLoader(TensorDataset(torch.rand(8, 4), torch.arange(8) % 3), batch_size=4)
>>> r = evaluate(net, data, num_steps=2, progress=False)
>>> r.macs, r.size_mb       # 2 steps x 12 synapses per sample; (12 + 3) x 32 bits
(24.0, 6e-05)
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..distributed import all_gather_cat, real_samples
from ..progress import progress_bar
from ..errors import SpikeFitTypeError, SpikeFitValueError
from .hardware import HardwareProfile, as_profile
from .ops import LayerOps, NeuronActivity, OpCounter, OpCounts
from ..runtime import DEFAULT_NUM_STEPS, check_module, eval_mode, run
from ..reports import Report
from ..table import Table
from ..train import scores
from ..quantize.layers import COMPRESSIBLE_TYPES, compressed_layers

__all__ = ["evaluate", "DeployReport", "model_size_bits", "macro_f1", "deploy_ratio"]


def macro_f1(pred: Tensor, target: Tensor) -> float:
    """Macro-averaged F1 in [0, 1] over the classes present in ``target`` or ``pred`` (as scikit-learn).

    >>> macro_f1(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]))
    0.7777777777777777
    """
    n = int(max(int(pred.max()), int(target.max()))) + 1
    tp = torch.bincount(target[pred == target], minlength=n).double()
    n_pred = torch.bincount(pred, minlength=n).double()
    n_true = torch.bincount(target, minlength=n).double()
    denom = n_pred + n_true
    present = denom > 0
    f1 = torch.where(present, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    return float(f1[present].mean())


def _sparse_bits(weight: Tensor, dense_bits: int) -> int:
    """Storage of ``weight`` when only its non-zero synapses are kept, each with its input index.

    ``nnz * (value bits + ceil(log2 inputs))``, or the dense storage when that is less (a
    toolchain keeps the cheaper format).
    """
    rows = weight.detach().reshape(weight.shape[0], -1)
    n = rows.numel()
    if n == 0:
        return dense_bits
    index = max(1, math.ceil(math.log2(max(2, rows.shape[1]))))
    return min(dense_bits, math.ceil(int((rows != 0).sum()) * (dense_bits / n + index)))


def model_size_bits(model: nn.Module, *, sparse: bool = False) -> tuple[int, int]:
    """``(parameters P, storage bits)``: quantized weights at their real bits, every other parameter as stored.

    A quantized weight (any parameter carrying a quantizer: CAT or a baseline)
    costs its quantizer's ``size_bits`` (by default
    :func:`snn_spikefit.quantize.quantizer.compressed_bits`: index bits per
    weight + the codebook + its scales); every other parameter
    (biases, plain layers, BatchNorm affine, learnable neuron constants) costs
    its dtype's width (32 for float32). Buffers (BatchNorm running statistics,
    neuron state and constants) are not parameters and are not counted.

    ``sparse=True`` (a chip whose ``synapse_memory`` is ``"nonzero"``): the weights of
    Linear/Conv layers keep only their non-zero synapses, each with its input index
    (the per-weight bits; a codebook's values and scales still count whole).
    """
    params, bits = 0, 0
    skip: set[int] = set()
    for layer in compressed_layers(model):
        n = int(layer.weight.numel())
        params += n
        size = layer.quantizer.size_bits(n)
        if sparse:
            book = layer.quantizer.size_bits(0)  # codebooks and scales
            size = book + _sparse_bits(layer.weight, size - book)
        bits += size
        plist = layer.module.parametrizations[layer.param]
        skip.update(id(p) for p in plist.parameters())
        skip.add(id(plist.original))
    weights = {id(m.weight) for m in model.modules() if isinstance(m, COMPRESSIBLE_TYPES)
               and not parametrize.is_parametrized(m, "weight")} if sparse else set()
    for p in model.parameters():
        if id(p) in skip:
            continue
        params += p.numel()
        size = p.numel() * p.element_size() * 8
        bits += _sparse_bits(p, size) if id(p) in weights else size
    return params, bits


def deploy_ratio(perf_pct: float, latency_s: float, energy_mj: float | None, size_mb: float) -> float | None:
    """``(perf/100) / (L * E * S)``; ``None`` when the energy is unknown or a factor is zero."""
    if energy_mj is None or latency_s <= 0 or energy_mj <= 0 or size_mb <= 0:
        return None
    return (perf_pct / 100.0) / (latency_s * energy_mj * size_mb)


@dataclass(frozen=True)
class DeployReport(Report):
    """Everything :func:`evaluate` measured. Operation counts and energy are per inference (one sample)."""

    profile: str
    samples: int
    num_steps: int | None
    accuracy: float            # percent
    f1: float                  # macro-F1, percent
    latency_s: float           # mean wall-clock seconds per input (warm-up excluded)
    acs: float                 # effective accumulates per inference
    macs: float                # effective multiply-accumulates per inference
    dense_ops: float           # dense synaptic operations per inference
    neuron_updates: float      # neuron updates per inference
    energy_mj: float | None    # None: the profile does not price an operation the model needs
    energy_note: str
    parameters: int
    bits_per_weight: float     # storage bits / parameters
    size_mb: float             # P * b / 8e6
    dr_acc: float | None
    dr_f1: float | None
    activation_sparsity: float | None
    layers: tuple[LayerOps, ...]
    neurons: tuple[NeuronActivity, ...]

    @property
    def effective_ops(self) -> float:
        return self.acs + self.macs

    @property
    def firing_rates(self) -> dict[str, float]:
        return {n.name: n.firing_rate for n in self.neurons}

    def table(self) -> Table:
        """DR next to each of its components."""
        t = Table(["metric", "value", "unit"], title=f"deployment report (profile {self.profile}, "
                  f"{self.samples} samples, T={self.num_steps if self.num_steps is not None else 'from data'})")
        rows = [
            ("DR_acc", self.dr_acc, "1/(s*mJ*MB)"), ("DR_f1", self.dr_f1, "1/(s*mJ*MB)"),
            ("accuracy", self.accuracy, "%"), ("macro_f1", self.f1, "%"),
            ("latency", self.latency_s, "s/input"), ("energy", self.energy_mj, "mJ/inference"),
            ("size", self.size_mb, "MB"), ("parameters", self.parameters, ""),
            ("bits_per_weight", self.bits_per_weight, "bits"), ("effective_acs", self.acs, "ops/inference"),
            ("effective_macs", self.macs, "ops/inference"), ("dense_ops", self.dense_ops, "ops/inference"),
            ("neuron_updates", self.neuron_updates, "updates/inference"),
            ("activation_sparsity", self.activation_sparsity, ""),
        ]
        for r in rows:
            t.add_row(list(r))
        return t

    def layer_table(self) -> Table:
        ops = OpCounts(self.samples, self.layers, self.neurons, self.activation_sparsity)
        t = ops.table()
        t.title = "per layer, per inference"
        return t

    def __str__(self) -> str:
        text = f"{self.table()}\n\n{self.layer_table()}"
        return f"{text}\n\nenergy: {self.energy_note}" if self.energy_note else text

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = [asdict(layer) for layer in self.layers]
        out["neurons"] = [asdict(n) for n in self.neurons]
        return out



def _energy(profile: HardwareProfile, acs: float, macs: float, updates: float,
            graded_acs: float | None = None) -> tuple[float | None, str]:
    """Energy in mJ and how it was priced. On a chip with graded spikes (``profile.graded_spikes``) the
    ACs are ``graded_acs`` (one event per non-zero level) at ``e_graded_pj`` (else ``e_ac_pj``)."""
    graded = bool(profile.graded_spikes) and graded_acs is not None
    e_ac = profile.e_graded_pj if graded and profile.e_graded_pj is not None else profile.e_ac_pj
    if graded:
        acs = graded_acs
    missing = []
    if acs > 0 and e_ac is None:
        missing.append(f"{acs:.4g} ACs but no E_AC")
    if macs > 0 and profile.e_mac_pj is None:
        missing.append(f"{macs:.4g} MACs but no E_MAC")
    if missing:
        return None, f"unavailable under {profile.name}: {', '.join(missing)} published for this chip"
    pj = (e_ac or 0.0) * acs + (profile.e_mac_pj or 0.0) * macs
    note = f"E_AC={e_ac} pJ x ACs + E_MAC={profile.e_mac_pj} pJ x MACs"
    if graded:
        note += " (graded spikes: one AC per non-zero level)"
    if profile.e_neuron_pj is not None:
        pj += profile.e_neuron_pj * updates
        note += f" + E_neuron={profile.e_neuron_pj} pJ x neuron updates"
    else:
        note += " (neuron updates not priced by this profile)"
    uncertain = [f for f in ("e_ac_pj", "e_mac_pj", "e_neuron_pj") if f in profile.uncertain]
    if uncertain:
        note += f"; uncertain constants: {uncertain}"
    return pj * 1e-9, note


def _batches(data: Iterable) -> Iterable[tuple[Tensor, Tensor]]:
    for i, batch in enumerate(data):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise SpikeFitTypeError(f"data must yield (x, y) pairs; batch {i} is {type(batch).__name__}")
        yield batch[0], batch[1]


def _predict(model, x, y, num_steps, forward_fn, index: int) -> Tensor:
    out = forward_fn(model, x) if forward_fn is not None else scores(run(model, x, num_steps=num_steps))
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != y.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise SpikeFitValueError(
            f"batch {index}: model output gives class scores of shape {shape}, labels have shape "
            f"{tuple(y.shape)}; evaluate needs scores [B, classes] with B == len(y) (pass forward_fn="
            f"lambda model, x: <scores [B, C]> for other outputs)")
    if y.ndim != 1 or y.is_floating_point() or (y.numel() and (int(y.min()) < 0 or int(y.max()) >= out.shape[1])):
        raise SpikeFitValueError(
            f"batch {index}: labels must be class indices in 0..{out.shape[1] - 1} (the model has "
            f"{out.shape[1]} outputs), got labels of dtype {y.dtype} in "
            f"{(int(y.min()), int(y.max())) if y.numel() else ()}")
    return out.argmax(dim=1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Iterable,
    *,
    hardware: str | HardwareProfile = "generic-45nm",
    profile: str | HardwareProfile | None = None,
    num_steps: int | None = DEFAULT_NUM_STEPS,
    forward_fn: Callable[[nn.Module, Tensor], Tensor] | None = None,
    warmup: int = 1,
    progress: bool | None = None,
) -> DeployReport:
    """Measure what a model costs to deploy on ``hardware`` and how well it does on ``data``.

    Args:
        model: an snnTorch, Norse or plain PyTorch classifier (put in eval mode for
            the measurement; its modes are restored afterwards).
        data: an iterable of ``(x, y)`` batches (a DataLoader); ``y`` class indices.
        hardware: a profile name (see :func:`snn_spikefit.list_profiles`) or a
            :class:`~snn_spikefit.deploy.hardware.HardwareProfile` (the name
            ``wrap(hardware=)`` and the CLI's ``--hardware`` use).
        profile: the former name of ``hardware`` (warns ``FutureWarning``).
        num_steps: steps for static inputs; ``None`` when ``x`` is time-major.
        forward_fn: ``(model, x) -> scores [B, classes]``; default: run over time,
            average the output over steps.
        warmup: untimed runs of the first batch before timing (not counted).
        progress: tqdm bars; ``None``: the library switch (:func:`snn_spikefit.set_progress`; by
            default bars on a terminal only).

    Two passes over ``data``: one timed without hooks (accuracy, F1, latency),
    one with counting hooks (operations, neuron updates, firing rates).
    """
    check_module(model)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise SpikeFitValueError(f"warmup={warmup!r} is not allowed; use an int >= 0")
    if forward_fn is not None and not callable(forward_fn):
        raise SpikeFitTypeError(f"forward_fn must be callable (model, x) -> scores, got {forward_fn!r}")
    if profile is not None:  # the name before 0.2; wrap and the CLI say `hardware`
        warnings.warn("evaluate(profile=...) is renamed evaluate(hardware=...)", FutureWarning, stacklevel=2)
        hardware = profile
    prof = as_profile(hardware)
    try:
        one_shot = iter(data) is data
    except TypeError:
        raise SpikeFitTypeError(f"data must be an iterable of (x, y) batches, got {type(data).__name__}") from None
    if one_shot:  # a one-shot iterator: keep its batches for the second pass
        data = list(data)
    with eval_mode(model):
        preds, labels, seconds = [], [], 0.0
        for i, (x, y) in enumerate(progress_bar(_batches(data), desc="evaluate", leave=False, progress=progress)):
            if i == 0:
                for _ in range(warmup):
                    _predict(model, x, y, num_steps, forward_fn, i)
            start = time.perf_counter()
            pred = _predict(model, x, y, num_steps, forward_fn, i)
            seconds += time.perf_counter() - start
            preds.append(pred)
            labels.append(y)
        if not labels or sum(len(y) for y in labels) == 0:
            raise SpikeFitValueError("data yielded no samples; pass a non-empty iterable of (x, y) batches")
        with OpCounter(model) as counter:
            for i, (x, y) in enumerate(progress_bar(_batches(data), desc="count ops", leave=False, progress=progress)):
                _predict(model, x, y, num_steps, forward_fn, i)
                counter.add_samples(int(y.shape[0]))
        ops = counter.result()
    # over every rank's share of the test set (a DistributedSampler); ops and latency stay this rank's
    # without the samples a DistributedSampler repeats to pad the last ranks
    local_samples, keep = sum(int(y.numel()) for y in labels), real_samples(data)
    pred = all_gather_cat(torch.cat(preds).cpu()[:keep])
    target = all_gather_cat(torch.cat(labels).cpu()[:keep])
    samples = int(target.numel())
    accuracy = 100.0 * float((pred == target).double().mean())
    f1 = 100.0 * macro_f1(pred, target)
    latency = seconds / local_samples
    energy, note = _energy(prof, ops.acs, ops.macs, ops.neuron_updates, ops.graded_acs)
    params, bits = model_size_bits(model, sparse=prof.synapse_memory == "nonzero")
    size = bits / 8e6
    return DeployReport(
        profile=prof.name, samples=samples, num_steps=num_steps, accuracy=accuracy, f1=f1, latency_s=latency,
        acs=ops.acs, macs=ops.macs, dense_ops=ops.dense, neuron_updates=ops.neuron_updates, energy_mj=energy,
        energy_note=note, parameters=params, bits_per_weight=bits / params if params else 0.0, size_mb=size,
        dr_acc=deploy_ratio(accuracy, latency, energy, size), dr_f1=deploy_ratio(f1, latency, energy, size),
        activation_sparsity=ops.activation_sparsity, layers=ops.layers, neurons=ops.neurons,
    )
