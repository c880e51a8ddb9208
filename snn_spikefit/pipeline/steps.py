"""The whole path as one call: :func:`compress` (what ``spikefit compress`` runs).

    copy -> strip an old codebook, fold BatchNorm -> can NIR hold it? -> wrap (m, bits, granularity
    from the chip) -> measure the original -> fine-tune -> prune -> fine-tune -> freeze -> measure
    -> check against the chip -> NIR graph

With ``method="posttraining"`` the wrap/fine-tune/prune stages are one call of
:func:`~snn_spikefit.compress_posttraining` on ``calib`` training samples (no epochs).

Every argument is checked, and the model's fit to the data, NIR export and ``wrap`` are tried,
before any training or evaluation starts.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..transaction import transactional
from .._version import __version__
from ..data.sources import DataOptions, LoadedData, load_data
from ..deploy.check import ConstraintViolationError, check
from ..deploy.hardware import HardwareProfile, as_profile
from ..deploy.metrics import evaluate
from ..errors import InputMismatchError, SpikeFitError, SpikeFitTypeError, SpikeFitValueError, UnsupportedLayerError
from ..nir.exporter import export_nir
from ..pruning.importance import get_criterion
from ..pruning.prune import prune as prune_model
from ..ptq.api import compress_posttraining
from ..quantize.bias import round_biases_for
from ..quantize.fold import fold_batchnorm
from ..quantize.layers import is_wrapped
from ..quantize.wrap import codebook_summary, freeze, strip, wrap
from ..runtime import check_module, eval_mode, run
from ..train import fit, scores
from .report import codebook_records, layer_stats
from .result import CompressResult

__all__ = ["compress", "check_fits", "DEFAULT_EPOCHS", "DEFAULT_CALIB", "METHODS"]

DEFAULT_EPOCHS = 2
#: Calibration samples ``method="posttraining"`` reads from the training split.
DEFAULT_CALIB = 256
METHODS = ("cat", "posttraining")


@transactional
def compress(
    model: nn.Module,
    data: LoadedData | str | Sequence[Any],
    *,
    hardware: str | HardwareProfile,
    m: int | None = None,
    bits: int | None = None,
    granularity: str | None = None,
    init: str = "kmeans",
    exclude: str | Sequence[str] | None = None,
    prune: float = 0.0,
    criterion: str | Callable = "fsc",
    epochs: int = DEFAULT_EPOCHS,
    lr: float = 1e-3,
    num_steps: int | None = None,
    seed: int | None = 0,
    source: str | None = None,
    progress: bool | None = None,
    log: Callable[[str], Any] | None = None,
    method: str = "cat",
    calib: int = DEFAULT_CALIB,
    sparsity: float = 0.0,
) -> CompressResult:
    """Compress a copy of ``model`` for the chip ``hardware``, measure it before and after, check it.

    ``model`` itself is not changed: the pipeline runs on a deep copy, returned as ``result.model``
    (frozen: integer codes, integer codebook and scale per layer). A model already wrapped starts
    again from its quantized weights; BatchNorm is folded into the preceding layers (chips have none).

    Args:
        model: any model :func:`~snn_spikefit.run` can run (snnTorch, Norse, NIR-imported, plain torch).
        data: a :class:`~snn_spikefit.data.LoadedData` (:func:`snn_spikefit.data.load_data`), a data
            source name for ``load_data`` (e.g. ``"digits"``), or ``(train, test)`` datasets or loaders.
        hardware: a profile name (``sf.list_profiles()``) or a :class:`~snn_spikefit.HardwareProfile`.
        m, bits, granularity: as for :func:`~snn_spikefit.wrap`; what is not given comes from the chip.
        init, exclude: as for ``wrap``.
        prune: fraction of the channels of every spiking layer to remove, in ``[0, 1)`` (0: no pruning),
            scored by ``criterion`` (as for :func:`~snn_spikefit.prune`), then fine-tuned again.
        epochs, lr: each fine-tune (after wrapping, after pruning); ``epochs=0`` skips training.
        num_steps: timesteps; ``None``: the data's (``LoadedData.num_steps``), else 4.
        seed: seeds torch's random generator for the run (the caller's generator state is restored
            afterwards); ``None``: use it as it is.
        source: what the record calls the model (default its class name).
        progress: tqdm bars (``None``: the library switch, :func:`snn_spikefit.set_progress`); ``log``: called with one line per stage (e.g. ``print``).
        method: ``"cat"`` (wrap + fine-tune) or ``"posttraining"`` (one-shot, from ``calib`` training
            samples, ``sparsity`` of the weights set to 0 by OBS; ``prune`` and ``epochs`` are not used:
            on a chip with a weight table (``m`` from the chip) one-shot CAT, else a uniform ``bits`` grid).

    Returns:
        :class:`~snn_spikefit.pipeline.CompressResult`; ``result.save("out.nir")`` writes the NIR
        file, the JSON record, the report and the plots.

    Raises:
        SpikeFitError (ValueError/TypeError) for a bad argument, data the model cannot take, or a
        model NIR cannot hold (:class:`~snn_spikefit.UnsupportedLayerError`); nothing has run then.

    >>> from torch import nn
    >>> from snn_spikefit.data import load_data
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    >>> result = compress(net, load_data("digits", limit=64), hardware="truenorth", epochs=0, progress=False)
    >>> result.check_before.ok, result.ok, [r["distinct_per_neuron_after"] for r in result.layers]
    (False, True, [4])
    >>> is_wrapped(net), is_wrapped(result.model)
    (False, True)
    """
    start = time.perf_counter()
    profile, data, settings = _check_arguments(model, data, locals())
    say = log or (lambda text: None)
    clock = _Clock()
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        with clock("prepare"):
            original, work, sample, check_before = _prepare(model, data, settings, say, profile)
        stats_before = layer_stats(original)
        with clock("evaluate_before"):
            say("evaluating the original model")
            before = evaluate(original, data.test, hardware=profile, num_steps=data.num_steps, progress=progress)
        del original
        if method == "posttraining":
            prune_report, losses = None, {}
            with clock("posttraining"):
                ptq = _posttraining(work, data, settings, progress, say)
        else:
            books = codebook_summary(work).records()
            say(f"wrapped {len(books)} layers: m={books[0]['m']}, bits={books[0]['bits']}, "
                f"granularity={books[0]['granularity']}; fine-tuning {epochs} epochs")
            prune_report, losses, ptq = *_train(work, data, settings, clock, progress, say), None
        books = codebook_summary(work).records()
        with clock("freeze"):
            freeze(work)
            round_biases_for(work, profile)
        with clock("evaluate_after"):
            say("evaluating the compressed model")
            after = evaluate(work, data.test, hardware=profile, num_steps=data.num_steps, progress=progress)
            check_after = check(work, profile, sample=sample, num_steps=_trace_steps(data))
        with clock("export"):
            graph = export_nir(work, sample, num_steps=_trace_steps(data))
    summary = codebook_summary(work)
    layers = _join_layers(stats_before, layer_stats(work))
    record: dict[str, Any] = {
        "command": "compress", "version": __version__, "model": source or type(model).__name__,
        "hardware": profile.name, "data": data.name, "num_steps": data.timesteps,
        "settings": {"m": books[0]["m"], "bits": books[0]["bits"], "granularity": books[0]["granularity"],
                     "init": init, "exclude": [exclude] if isinstance(exclude, str) else
                     None if exclude is None else list(exclude), "prune": prune,
                     "criterion": settings["criterion_name"], "epochs": epochs if method == "cat" else None,
                     "lr": lr if method == "cat" else None, "seed": seed, "method": method, "calib": calib if method == "posttraining" else None, "sparsity": sparsity,
                     "limit": data.options.limit if data.options is not None else None},
        "limit_per_neuron": profile.distinct_weights_per_neuron or profile.distinct_weights_per_layer,
        "output": None, "layers": layers, "codebooks": codebook_records(work),
        "codebook_summary": summary.records(),
        "prune": prune_report.to_dict() if prune_report is not None else None, "losses": losses,
        "posttraining": ptq.to_dict() if ptq is not None else None,
        "before": before.to_dict(), "after": after.to_dict(),
        "check_before": check_before.to_dict(), "check_after": check_after.to_dict(),
        "timings": dict(clock.seconds), "seconds": round(time.perf_counter() - start, 2), "files": [],
    }
    return CompressResult(work, profile, before, after, check_before, check_after, summary, layers, prune_report,
                          losses, clock.seconds, graph, sample, record)


class _Clock:
    """Seconds per named stage: ``with clock("fit"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - t0, 3)


def _check_arguments(model: Any, data: Any, args: dict[str, Any]) -> tuple[HardwareProfile, LoadedData, dict]:
    """Refuse bad arguments (naming each) before anything runs; ``(profile, data, settings)``."""
    check_module(model)
    profile = as_profile(args["hardware"])
    m, bits, granularity = profile.wrap_arguments(m=args["m"], bits=args["bits"], granularity=args["granularity"])
    amount = args["prune"]
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        raise SpikeFitValueError(f"prune={amount!r} is not allowed; use the fraction of channels to remove, "
                                 f"a number in [0, 1)")
    epochs, lr = args["epochs"], args["lr"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise SpikeFitValueError(f"epochs={epochs!r} is not allowed; use an int >= 0")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise SpikeFitValueError(f"lr={lr!r} is not allowed; use a number > 0")
    criterion = args["criterion"]
    get_criterion(criterion)  # a name it knows, or a callable
    _check_method(args, profile, amount)
    if args["method"] == "posttraining" and m is not None and profile.distinct_weights_per_neuron is None \
            and profile.distinct_weights_per_layer is None and args["m"] is None:
        m = None  # per-synapse weights: a uniform bits grid (GPTQ), not a 2**bits - 1 value codebook
    elif args["method"] == "posttraining" and m is None and bits is None:
        m = 4  # wrap's default
    seed = args["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise SpikeFitTypeError(f"seed={seed!r} is not allowed; use an int or None")
    for name in ("source", "log"):
        value = args[name]
        if value is not None and not (callable(value) if name == "log" else isinstance(value, str)):
            raise SpikeFitTypeError(f"{name}={value!r} is not allowed; use {'a callable' if name == 'log' else 'a str'}"
                                    f" or None")
    settings = {"m": m, "bits": bits, "granularity": granularity, "init": args["init"],
                "exclude": args["exclude"], "prune": float(amount),
                "criterion": criterion, "criterion_name": criterion if isinstance(criterion, str) else
                getattr(criterion, "__name__", type(criterion).__name__), "epochs": epochs, "lr": float(lr),
                "method": args["method"], "calib": args["calib"], "sparsity": float(args["sparsity"])}
    return profile, _as_data(data, args["num_steps"], 0 if seed is None else seed), settings


def _as_data(data: Any, num_steps: int | None, seed: int) -> LoadedData:
    if isinstance(data, LoadedData):
        if num_steps is not None and num_steps != data.num_steps:
            raise SpikeFitValueError(f"num_steps={num_steps!r} is not allowed with data {data.name!r}, loaded "
                                     f"with num_steps={data.num_steps!r}; leave num_steps=None")
        return data
    steps = 4 if num_steps is None else num_steps
    if isinstance(data, str):
        return load_data(data, num_steps=steps, seed=seed)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return LoadedData.from_splits(data[0], data[1], options=DataOptions(num_steps=steps, seed=seed))
    raise SpikeFitTypeError(f"data must be a LoadedData (snn_spikefit.data.load_data), a data source name or "
                            f"(train, test) datasets or loaders, got {type(data).__name__}")


def _trace_steps(data: LoadedData) -> int:
    """Steps ``check``/``export_nir`` trace the one-sample input for (a model's own loop needs its count)."""
    return data.num_steps if data.num_steps is not None else 1


def _refuse_structural(model: nn.Module, profile: HardwareProfile, sample: Any, steps: int):
    """``check``'s report of ``model``; refuses, before any training, rules that no training can fix."""
    report = check(model, profile, sample=sample, num_steps=steps)
    found = report.structural
    if found:
        lines = "; ".join(f"layer {v.layer}: {v.hint}" for v in found)
        raise ConstraintViolationError(
            f"the model breaks {len(found)} {profile.name} rule(s) that no training, codebook or pruning can "
            f"fix, so nothing was done: {lines}")
    return report


def _prepare(model: nn.Module, data: LoadedData, s: dict[str, Any], say, profile: HardwareProfile
             ) -> tuple[nn.Module, nn.Module, Any, Any]:
    """``(original, wrapped copy, sample, check of the original)``: the copies ready, every failure that
    needs no training found."""
    original = copy.deepcopy(model)
    check_fits(original, data)
    if is_wrapped(original):
        say("model is already compressed: starting again from its quantized weights")
        strip(original)
    if any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in original.modules()):
        say("folding BatchNorm into the preceding layers (chips have no BatchNorm)")
        original.eval()
        fold_batchnorm(original)
    sample = data.sample(1)
    try:  # find what NIR cannot hold before spending time on training
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_nir(copy.deepcopy(original), sample, num_steps=_trace_steps(data))
    except UnsupportedLayerError as exc:
        raise UnsupportedLayerError(f"the compressed model could not be exported, so nothing was done: {exc}") \
            from None
    checked = _refuse_structural(original, profile, sample, _trace_steps(data))
    if s.get("method") == "posttraining":  # other callers (chipfit) pass settings without a method
        return original, copy.deepcopy(original), sample, checked
    work = wrap(copy.deepcopy(original), m=s["m"], bits=s["bits"], granularity=s["granularity"], init=s["init"],
                exclude=s["exclude"])
    return original, work, sample, checked


def _check_method(args: dict[str, Any], profile: HardwareProfile, prune: float) -> None:
    method, calib, sparsity = args["method"], args["calib"], args["sparsity"]
    if method not in METHODS:
        raise SpikeFitValueError(f"method={method!r} is not allowed; use one of {METHODS}")
    if isinstance(calib, bool) or not isinstance(calib, int) or calib < 1:
        raise SpikeFitValueError(f"calib={calib!r} is not allowed; use the number of calibration samples, an int >= 1")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise SpikeFitValueError(f"sparsity={sparsity!r} is not allowed; use a fraction of the weights in [0, 1)")
    if method == "cat" and sparsity > 0:
        raise SpikeFitValueError("sparsity is for method='posttraining' (OBS); with method='cat' use prune= "
                                 "(channels)")
    if method == "posttraining" and prune > 0:
        raise SpikeFitValueError("prune (channel pruning, then fine-tuning) is not allowed with "
                                 "method='posttraining'; use sparsity= (OBS weight pruning, no training)")


def _posttraining(model: nn.Module, data: LoadedData, s: dict[str, Any], progress: bool | None, say):
    """One-shot compression of ``model`` on the first ``calib`` training samples."""
    xs, count = [], 0
    dim = 0 if data.num_steps is not None else 1  # event data is time-major [T, B, ...]
    for x, _ in data.train:
        take = min(x.shape[dim], s["calib"] - count)
        xs.append(x.narrow(dim, 0, take))
        count += take
        if count >= s["calib"]:
            break
    say(f"post-training compression on {count} calibration samples: m={s['m']}, bits={s['bits']}, "
        f"granularity={s['granularity']}, sparsity={s['sparsity']:g}")
    return compress_posttraining(model, xs, sparsity=s["sparsity"], bits=s["bits"], m=s["m"],
                                 granularity=s["granularity"], num_steps=data.num_steps, exclude=s["exclude"],
                                 progress=progress)


def _train(model: nn.Module, data: LoadedData, s: dict[str, Any], clock: _Clock, progress: bool | None, say
           ) -> tuple[Any, dict[str, list[float]]]:
    """Fine-tune, prune and fine-tune again; ``(prune report or None, losses per fine-tune)``."""
    common = {"epochs": s["epochs"], "num_steps": data.num_steps, "lr": s["lr"], "progress": progress}
    with clock("finetune"):
        losses = {"finetune": fit(model, data.train, desc="fine-tune", **common)}
    report = None
    if s["prune"] > 0:
        say(f"pruning {s['prune']:g} of the channels by {s['criterion_name']}")
        with clock("prune"):
            report = prune_model(model, data.train, amount=s["prune"], criterion=s["criterion"], num_steps=data.num_steps,
                                 progress=progress)
        with clock("finetune_after_prune"):
            losses["after_prune"] = fit(model, data.train, desc="fine-tune after pruning", **common)
    return report, losses


def _join_layers(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    after_by_name = {r["layer"]: r for r in after}
    rows = []
    for b in before:
        a = after_by_name.get(b["layer"], b)
        rows.append({"layer": b["layer"], "type": b["type"], "channels_before": b["channels"],
                     "channels_after": a["channels"], "distinct_per_neuron_before": b["distinct_per_neuron"],
                     "distinct_per_neuron_after": a["distinct_per_neuron"], "distinct_before": b["distinct"],
                     "distinct_after": a["distinct"]})
    return rows


@torch.no_grad()
def check_fits(model: nn.Module, data: LoadedData, *, model_name: str = "model", data_name: str | None = None) -> None:
    """Refuse, naming both shapes, when ``model`` cannot take the data's inputs or has too few outputs."""
    data_name = data_name or f"data {data.name!r}"
    x = data.sample(2)
    try:
        with eval_mode(model, clear=True):
            out = scores(run(model, x, num_steps=_trace_steps(data)))
    except Exception as exc:
        if isinstance(exc, SpikeFitError) and not isinstance(exc, InputMismatchError):
            raise
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise SpikeFitValueError(f"{model_name} cannot take {data_name} inputs of shape {data.sample_shape}: "
                                 f"{' '.join(lines[:3]) or type(exc).__name__}") from None
    if out.ndim != 2 or out.shape[1] < data.classes:
        raise SpikeFitValueError(
            f"{model_name} gives outputs of shape {tuple(out.shape[1:])} per sample; {data_name} has "
            f"{data.classes} classes (labels 0..{data.classes - 1})")
