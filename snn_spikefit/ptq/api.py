"""``compress_posttraining``: one-shot compression of a trained SNN from a few calibration samples.

Spiking Brain Compression (SBC, arXiv 2506.03996) per layer, in model order, each
layer's Hessian measured on the inputs the already-compressed layers before it give
(:mod:`~snn_spikefit.ptq.hessian`): OBS pruning with a LAMP allocation of the sparsity
over layers, then GPTQ rounding to a uniform ``b``-bit grid, or one-shot CAT
(:mod:`~snn_spikefit.ptq.codebook`) to ``m`` values. No training loop, no gradient.

The result is what ``wrap`` + ``freeze`` give: every quantized layer holds a
:class:`~snn_spikefit.quantize.codebook.FrozenCodebook` (integer codes, codebook,
integers and scale), so ``evaluate``, ``check``, ``export_nir`` and the targets take it
unchanged, and ``wrap(model, init="frozen")`` fine-tunes it with CAT. Pruning alone
(``bits`` and ``m`` None) leaves plain layers with zero weights.

>>> import torch, snn_spikefit as sf
>>> from snn_spikefit.zoo.snntorch import dense_snn
>>> net = dense_snn(16, 3, (8,))
>>> report = sf.compress_posttraining(net, torch.rand(20, 16), m=3, bits=4, progress=False)
>>> [int(c.weight.unique().numel()) <= 3 for c in sf.compressed_layers(net)]
[True, True]
"""

from __future__ import annotations

import copy
import time
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..errors import SpikeFitTypeError, SpikeFitValueError, UnsupportedLayerError
from ..quantize.codebook import FrozenCodebook
from ..quantize.layers import compressed_layers, install_frozen, remove_parametrization
from ..quantize.quantizer import distinct_per_row
from ..quantize.wrap import GRANULARITIES, check_int
from ..progress import progress_bar
from ..runtime import DEFAULT_NUM_STEPS, check_module, eval_mode, run
from ..train import recalibrate_bn
from .codebook import fit_layer
from .hessian import HessianAccumulator, damped
from .obs import hessian_error, obs_order, obs_prune, row_counts
from .plan import Plan, calibration_batches, layer_plans
from .sparsegpt import sparsegpt_prune
from .report import LayerPostTraining, PostTrainingReport

__all__ = ["compress_posttraining", "lamp_counts", "PRUNERS", "EXACT_OBS_MAX_INPUTS"]

#: ``pruner`` values: ``"auto"`` (exact OBS up to :data:`EXACT_OBS_MAX_INPUTS` inputs per row,
#: SparseGPT above), ``"sparsegpt"`` (:mod:`.sparsegpt`), ``"obs"`` (exact greedy OBS, :mod:`.obs`).
PRUNERS = ("auto", "sparsegpt", "obs")
#: Largest row length ``n`` that ``pruner="auto"`` prunes by exact OBS (``rows x n^3`` work).
EXACT_OBS_MAX_INPUTS = 256
#: Default damping (fraction of the mean of ``diag H``) for pruning and uniform grids (SBC's 1 %).
DAMPING = 0.01
#: Default damping of one-shot CAT (``m`` given). Chosen on a validation split of the training
#: images (Fashion-MNIST conv SNN, seeds 1 and 2, m = 3 and 4): a calibration Hessian of a wide
#: layer has rank below its width (160 samples x T = 4 rows for 1568 inputs), and with only m
#: values the error feedback moves weights along directions the calibration never saw; 100 % of
#: the mean diagonal pulls it toward plain weight error there.
CODEBOOK_DAMPING = 1.0
#: One-shot CAT's codebook starts (:data:`snn_spikefit.ptq.codebook.STARTS`), each alternated, the best kept.
CAT_STARTS: tuple[str, ...] = ("kmeans",)

def _check_args(model, sparsity, bits, m, granularity, num_steps, damping, iterations, pruner, flags) -> None:
    check_module(model)
    for key, flag in flags.items():
        if not isinstance(flag, bool):
            raise SpikeFitTypeError(f"{key}={flag!r} is not allowed; use True or False")
    if not isinstance(pruner, str) or pruner not in PRUNERS:
        raise SpikeFitValueError(f"pruner={pruner!r} is not allowed; use one of {PRUNERS}")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise SpikeFitValueError(f"sparsity={sparsity!r} is not allowed; use the fraction of weights to set to "
                                 f"zero, a number in [0, 1)")
    if bits is not None:
        check_int("bits", bits, 2, 8, "weights are quantized to 2..8-bit signed integers")
    if m is not None:
        check_int("m", m, 2, None, "a codebook needs at least 2 values")
        if bits is not None and m > 2**bits - 1:
            raise SpikeFitValueError(
                f"m={m} is not allowed with bits={bits}: a {bits}-bit signed codebook holds at most "
                f"2**bits - 1 = {2**bits - 1} distinct values (use m <= {2**bits - 1} or more bits)")
    if granularity not in GRANULARITIES:
        raise SpikeFitValueError(f"granularity={granularity!r} is not allowed; use one of {GRANULARITIES}")
    if num_steps is not None:
        check_int("num_steps", num_steps, 1, None, "steps a static input is fed for (None: time-major data)")
    if damping is not None and (isinstance(damping, bool) or not isinstance(damping, (int, float))
                                or not 0 <= damping < 1e3):
        raise SpikeFitValueError(f"damping={damping!r} is not allowed; use a number >= 0 (0.01: 1 % of the "
                                 f"mean Hessian diagonal; None: the default)")
    check_int("iterations", iterations, 1, None, "one-shot CAT alternates assignment and refit")
    if compressed_layers(model):
        raise SpikeFitValueError("model already carries quantizers (wrap/freeze/a baseline); "
                                 "compress_posttraining takes a plain trained model (call strip(model) first)")


def lamp_counts(weights: Sequence[Tensor], sparsity: float) -> list[int]:
    """Weights to remove per layer for a global ``sparsity`` by LAMP scores (Lee et al., ICLR 2021).

    A weight's score is ``w^2 / sum of w'^2 over the layer's weights at least as large``;
    the ``floor(sparsity * total)`` lowest scores of all layers go. Every layer keeps its
    largest weight (score 1).
    """
    scores = []
    for w in weights:
        sq = w.detach().double().flatten() ** 2
        srt = sq.sort().values
        scores.append(srt / srt.flip(0).cumsum(0).flip(0).clamp_min(1e-300))
    total = sum(s.numel() for s in scores)
    k = int(sparsity * total)
    if k == 0:
        return [0] * len(weights)
    flat = torch.cat(scores)
    owner = torch.cat([torch.full((s.numel(),), i) for i, s in enumerate(scores)])
    chosen = owner[torch.sort(flat, stable=True).indices[:k]]
    return [int(c) for c in torch.bincount(chosen, minlength=len(weights))]


@torch.no_grad()
def _inputs(model: nn.Module, module: nn.Module, name: str, x: Tensor, num_steps) -> Tensor:
    """The inputs ``module`` receives at every step of a run of ``model`` on ``x``: ``[T, B, ...]``."""
    seen: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, args, _o: seen.append(args[0].detach()))
    try:
        with eval_mode(model, clear=True):
            run(model, x, num_steps=num_steps)
    finally:
        handle.remove()
    steps = num_steps if num_steps is not None else x.shape[0]
    if len(seen) != steps:
        raise UnsupportedLayerError(
            f"layer {name!r} was called {len(seen)} times in a run of {steps} steps; "
            f"post-training compression needs one call per step (no shared layers)")
    return torch.stack(seen)


@torch.no_grad()
def _hessian(model: nn.Module, plan: Plan, batches: list[Tensor], num_steps,
             reference: nn.Module | None = None) -> HessianAccumulator:
    acc = HessianAccumulator(plan.module, plan.decays)
    ref_module = reference.get_submodule(plan.name) if reference is not None else None
    for x in batches:
        ref = _inputs(reference, ref_module, plan.name, x, num_steps) if reference is not None else None
        acc.add(_inputs(model, plan.module, plan.name, x, num_steps), ref)
    return acc


def _prune(rows: Tensor, hd: Tensor, k: int, gain2: Tensor | None, pruner: str) -> tuple[Tensor, Tensor]:
    """``k`` weights of ``rows`` removed by exact OBS or SparseGPT (``pruner``, see :data:`PRUNERS`)."""
    if pruner == "obs" or (pruner == "auto" and rows.shape[1] <= EXACT_OBS_MAX_INPUTS):
        hinv = torch.cholesky_inverse(torch.linalg.cholesky(hd))
        order, cost = obs_order(rows, hinv)
        return obs_prune(rows, hinv, order, row_counts(cost, k, gain2))
    return sparsegpt_prune(rows, hd, k, gain2=gain2)


def _compress_layer(plan: Plan, acc: HessianAccumulator, k: int, *, m, bits, granularity, damping, iterations,
                    pruner="auto", bias_correction=False):
    w0 = plan.module.weight.detach()
    absorb = bias_correction and getattr(plan.module, "bias", None) is not None
    h = acc.hessian(absorb_bias=absorb)
    hd = damped(h, damping)
    rows = acc.target(w0.reshape(w0.shape[0], -1).double().cpu(), hd, absorb_bias=absorb)
    gain2 = plan.gain2.expand(rows.shape[0]).clone() if plan.gain2 is not None else None
    mask = None
    work = rows
    if k > 0:
        work, mask = _prune(rows, hd, k, gain2, pruner)
    fit = None
    final = work.float()
    if m is not None or bits is not None:
        groups = rows.shape[0] if granularity == "channel" else 1
        fit = fit_layer(final, hd, m=m, bits=bits, groups=groups, mask=mask, gain2=gain2,
                        iterations=iterations, starts=CAT_STARTS)
        final = fit.quantized
    base = hessian_error(rows, h, gain2)
    err = hessian_error(final.double() - rows, h, gain2) / base if base > 0 else 0.0
    return final, fit, mask, err


def _apply_layer(model: nn.Module, plan: Plan, k: int, batches: list[Tensor], num_steps, options: dict,
                 reference: nn.Module | None = None):
    """Measure the layer's Hessian on the model as it is now, compress it, write the weight (and bias) back."""
    acc = _hessian(model, plan, batches, num_steps, reference)
    final, fit, mask, err = _compress_layer(plan, acc, k, **options)
    w = plan.module.weight
    if options.get("bias_correction") and getattr(plan.module, "bias", None) is not None:
        shift = acc.bias_shift(final, w.detach().reshape(w.shape[0], -1).cpu())
        plan.module.bias.data.add_(shift.to(device=w.device, dtype=w.dtype))
    w.data.copy_(final.reshape(w.shape).to(device=w.device, dtype=w.dtype))  # next layers see it compressed
    return final, fit, mask, err


def _defaults(m, damping, asymmetric, bias_correction):
    """``None`` settings resolved: one-shot CAT (``m`` given) or SBC as published."""
    cat = m is not None
    return ((CODEBOOK_DAMPING if cat else DAMPING) if damping is None else damping,
            cat if asymmetric is None else asymmetric, cat if bias_correction is None else bias_correction)


def _run_layers(model, plans, ks, batches, num_steps, options, rows, *, quantize, asymmetric, recalibrate,
                progress) -> list:
    """Compress every layer in model order (each one's Hessian on the model as compressed so far).

    With ``asymmetric`` the original model's inputs come from a copy, run only once a layer has been
    written (until then the model is the original and its inputs are the reference's)."""
    results, written = [], False
    reference = copy.deepcopy(model).eval() if asymmetric and len(plans) > 1 else None
    for plan, k in _progress(list(zip(plans, ks)), progress):
        t0 = time.perf_counter()
        final, fit, mask, err = (None, None, None, 0.0) if k == 0 and not quantize else _apply_layer(
            model, plan, k, batches, num_steps, options, reference if written else None)
        written = written or final is not None
        results.append(fit)
        rows.append(_row(plan, final, fit, mask, err, time.perf_counter() - t0))
        if recalibrate and final is not None:  # the next layer's Hessian sees outputs with fitting statistics
            recalibrate_bn(model, [(x, None) for x in batches], num_steps=num_steps, progress=False)
    return results


def compress_posttraining(
    model: nn.Module,
    calib_data: Any,
    *,
    sparsity: float = 0.0,
    bits: int | None = None,
    m: int | None = None,
    granularity: str = "layer",
    num_steps: int | None = DEFAULT_NUM_STEPS,
    damping: float | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    iterations: int = 6,
    recalibrate: bool = False,
    pruner: str = "auto",
    asymmetric: bool | None = None,
    bias_correction: bool | None = None,
    progress: bool | None = None,
) -> PostTrainingReport:
    """Prune and quantize ``model`` in place from calibration inputs alone (no training).

    Args:
        model: a trained snnTorch, Norse or imported NIR model (changed in place).
        calib_data: calibration inputs: a tensor ``[N, ...]`` (or ``[T, N, ...]`` with
            ``num_steps=None``), or an iterable of batches / ``(x, y)`` pairs (labels unused).
        sparsity: fraction of the compressed weights set to 0, in ``[0, 1)`` (OBS, LAMP allocation).
        bits: ``None``, or signed integer bits (2..8): with ``m`` the codebook's integers, without it a
            uniform grid of ``2**bits - 1`` values.
        m: values per codebook (one-shot CAT), ``None`` for none.
        granularity: ``"layer"`` or ``"channel"`` (one codebook / scale per output channel).
        num_steps: steps a static input is fed for; ``None``: ``calib_data`` is time-major.
        damping: added to ``H``'s diagonal, as a fraction of its mean; ``None``: :data:`DAMPING`
            (1 %) for pruning and uniform grids, :data:`CODEBOOK_DAMPING` (100 %) with ``m``.
        include, exclude: layer names or glob patterns, as in :func:`snn_spikefit.wrap`.
        iterations: one-shot CAT's assignment/refit rounds at most.
        recalibrate: after each compressed layer, re-estimate BatchNorm running statistics on the
            calibration inputs (no gradient; the clustered baselines do it once, on training batches).
        pruner: ``"auto"``: exact greedy OBS for rows of up to :data:`EXACT_OBS_MAX_INPUTS` inputs,
            SparseGPT (:mod:`.sparsegpt`) for longer ones; ``"sparsegpt"`` or ``"obs"``: every layer.
        asymmetric: each layer approaches the original output on the original inputs (``min |K S_q w'
            - K S w|^2``, ``S_q``: inputs after the earlier layers were compressed; a second forward pass).
        bias_correction: biases re-fitted in closed form to each weight change, the weights compressed
            against the Hessian left after that (Schur complement). Both ``None``: on with ``m``, else off.
        progress: a tqdm bar over layers (``None``: the library switch, :func:`snn_spikefit.set_progress`).

    Returns:
        A :class:`PostTrainingReport` (per layer: neuron and decays used, pruned weights, error).

    Raises:
        SpikeFitValueError / SpikeFitTypeError: bad arguments, empty calibration data.
        UnsupportedLayerError: a layer it cannot handle (named); ``exclude`` it.
        On any error the model is left as it was.
    """
    damping, asymmetric, bias_correction = _defaults(m, damping, asymmetric, bias_correction)
    _check_args(model, sparsity, bits, m, granularity, num_steps, damping, iterations, pruner,
                dict(asymmetric=asymmetric, bias_correction=bias_correction, recalibrate=recalibrate))
    batches = calibration_batches(calib_data, num_steps)
    start = time.perf_counter()
    plans = layer_plans(model, batches, num_steps, include, exclude)
    ks = lamp_counts([p.module.weight for p in plans], float(sparsity))
    quantize = m is not None or bits is not None
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    installed: list[nn.Module] = []
    rows: list[LayerPostTraining] = []
    try:
        options = dict(m=m, bits=bits, granularity=granularity, damping=float(damping), iterations=iterations,
                       pruner=pruner, bias_correction=bias_correction)
        results = _run_layers(model, plans, ks, batches, num_steps, options, rows, quantize=quantize,
                              asymmetric=asymmetric, recalibrate=recalibrate, progress=progress)
        if quantize:
            _install(plans, results, m, bits, granularity, installed)
    except BaseException:
        for module in installed:
            remove_parametrization(module, leave_parametrized=True)
        model.load_state_dict(snapshot)
        raise
    return PostTrainingReport(float(sparsity), bits, m, granularity, num_steps, float(damping),
                              sum(int(b.shape[0 if num_steps is not None else 1]) for b in batches),
                              tuple(rows), time.perf_counter() - start)


def _install(plans: list[Plan], results: list, m, bits, granularity: str, installed: list[nn.Module]) -> None:
    """Every layer's fit as a ``FrozenCodebook`` (appended to ``installed`` as it goes, for the rollback)."""
    store_m = m if m is not None else 2**bits - 1
    for plan, fit in zip(plans, results):
        form = fit.form(plan.module.weight.shape, store_m, bits)
        frozen = FrozenCodebook.from_form(form, m=store_m, bits=bits, granularity=granularity)
        frozen.to(plan.module.weight.device)
        install_frozen(plan.module, frozen)
        installed.append(plan.module)


def _row(plan: Plan, final: Tensor | None, fit, mask: Tensor | None, err: float, seconds: float
         ) -> LayerPostTraining:
    w = plan.module.weight
    rows = final if final is not None else w.detach().reshape(w.shape[0], -1)
    m_eff = None
    if fit is not None:
        groups = fit.values.shape[0]
        m_eff = int(distinct_per_row(fit.quantized.reshape(groups, -1)).max())
    return LayerPostTraining(plan.name, type(plan.module).__name__, plan.neuron, plan.decays, plan.gain2 is not None,
                             int(rows.shape[1]), int(rows.numel()), int(mask.sum()) if mask is not None else 0,
                             int((rows == 0).sum()), m_eff, float(err), float(seconds))


def _progress(items: list, progress: bool | None):
    return progress_bar(items, progress=progress, desc="compress_posttraining", unit="layer")
