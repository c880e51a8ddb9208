"""The framework boundary: what the core asks of snnTorch, Norse, or any other SNN library.

An adapter answers only the questions that depend on the framework (which
modules are spiking neurons, how to read their spikes and membrane potential,
how to reset and run a model over time, how a neuron maps to NIR, how to shrink
a neuron's per-channel parameters). Everything else lives once in the core.

Adapters are found through the entry-point group ``snn_spikefit.adapters``.
The built-in ones ship in the package ``snn_spikefit.adapters``, whose
``ADAPTERS`` table lists them (so they are found from a source tree too, in
that order); the core names no framework. Without that package (a core-only
install) there are no built-in adapters, and its entry points are skipped
quietly. A plugin that fails to load is skipped with a warning; it never breaks
``import snn_spikefit``. Registration order is discovery order (built-ins,
then entry points), then :func:`register_adapter` calls.

A third-party adapter subclasses :class:`Adapter` and is registered with
:func:`register_adapter` or an entry point::

    [project.entry-points."snn_spikefit.adapters"]
    myframework = "my_package.spikefit_adapter:MyAdapter"
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections import OrderedDict
from importlib.metadata import entry_points
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .errors import SpikeFitTypeError, SpikeFitValueError, UnsupportedLayerError, refuse_duplicate
from .neurons.access import NeuronStateAccess

__all__ = [
    "Adapter",
    "TorchAdapter",
    "register_adapter",
    "get_adapter",
    "list_adapters",
    "nir_frameworks",
    "ENTRY_POINT_GROUP",
    "BUILTIN_PACKAGE",
    "stack_steps",
    "step_inputs",
]

ENTRY_POINT_GROUP = "snn_spikefit.adapters"
#: The package that ships the built-in adapters; its ``ADAPTERS`` maps name -> ``"module:Class"``.
BUILTIN_PACKAGE = "snn_spikefit.adapters"


class Adapter(NeuronStateAccess):
    """Base class and protocol of a framework adapter.

    Subclasses set :attr:`name` and :attr:`framework` (the import name of the
    framework) and implement the methods below. Methods a framework cannot
    support raise :class:`~snn_spikefit.errors.UnsupportedLayerError`.
    """

    name: str = "base"
    framework: str | None = None  # module that must be importable for the adapter to work
    #: The step in seconds neuron time constants refer to when neither the caller nor the
    #: neurons (:meth:`neuron_dt`) say otherwise (NIR export and import).
    default_dt: float = 1e-3
    #: Models of this framework are called ``model(x, state) -> (output, state)`` (state handed
    #: back in by :meth:`run`); a NIR graph imported into it follows the same convention.
    calls_with_state: bool = False

    # -- discovery -----------------------------------------------------------------------
    def available(self) -> bool:
        """The framework is installed."""
        return self.framework is None or importlib.util.find_spec(self.framework) is not None

    def is_neuron(self, module: nn.Module) -> bool:
        """``module`` is a spiking neuron of this framework."""
        raise NotImplementedError

    def owns(self, model: nn.Module) -> bool:
        """``model`` contains at least one neuron of this framework."""
        return any(self.is_neuron(m) for m in model.modules())

    def weight_names(self, module: nn.Module) -> list[str]:
        """Synaptic weight parameters of ``module`` that are not a Linear/Conv ``weight``.

        ``wrap`` compresses these too (e.g. a recurrent cell's ``input_weights`` and
        ``recurrent_weights``); the first dimension is the output neuron.
        """
        return []

    def recurrent_weight_names(self, module: nn.Module) -> list[str]:
        """Those of :meth:`weight_names` that carry the neuron's own spikes back to it (``[N, N]``).

        Chip checks add their synapses to the neurons' fan-in; pruning slices their rows and
        columns together. Default: none.
        """
        return []

    def weight_inputs(self, module: nn.Module, args: tuple) -> dict[str, Tensor]:
        """What each of :meth:`weight_names` multiplies in this call of neuron ``module`` (``args``).

        ``{parameter: x}`` with ``x`` ``[B, inputs]``, the operand of ``x @ weight.T`` (the step's
        input for input weights, the previous step's spikes for recurrent ones), so operation
        counting sees synapses that live inside a neuron. Default: none.
        """
        return {}

    def neurons(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """``(qualified name, module)`` of every spiking neuron, in definition order."""
        return [(n, m) for n, m in model.named_modules() if self.is_neuron(m)]

    # -- state and time -------------------------------------------------------------------
    def reset(self, model: nn.Module) -> None:
        """Clear every neuron's state (membrane, synaptic current, last spikes)."""
        raise NotImplementedError

    def run(self, model: nn.Module, x: Tensor, num_steps: int | None) -> Any:
        """Run ``model`` over time; return per-step outputs stacked time-major ``[T, B, ...]``.

        ``num_steps`` given: ``x`` is static ``[B, ...]`` and is fed at every step.
        ``num_steps`` is ``None``: ``x`` is time-major ``[T, B, ...]``.
        The state has been reset by the caller.
        """
        raise NotImplementedError

    def step_problem(self, model: nn.Module) -> str | None:
        """Why ``model`` cannot be run one step per call, if it cannot (else ``None``).

        Tracing (``check``'s conv counts, ``prune``, ``export_nir``) watches one step; a model
        built from modules that each take a whole sequence is refused with this sentence.
        """
        return None

    def spikes(self, module: nn.Module, output: Any) -> Tensor:
        """The spike tensor in what the neuron ``module`` returned for one step."""
        raise NotImplementedError

    def membrane(self, module: nn.Module, output: Any) -> Tensor | None:
        """The membrane potential after the step (post-reset), if the neuron exposes it."""
        return None

    def pre_reset_membrane(self, module: nn.Module, inputs: tuple, output: Any) -> Tensor | None:
        """The membrane potential before the reset of this step (for SCA), if known.

        Same shape as the step's spikes (``[B, C, ...]``); ``None`` when the
        framework does not expose it (criteria that need it then refuse).
        """
        return None

    # -- NIR -------------------------------------------------------------------------------
    def neuron_to_nir(self, module: nn.Module, *, dt: float, shape: tuple[int, ...]) -> Any:
        """The NIR node (``LIF``, ``CubaLIF``, ``LI``, ``IF``, ...) of neuron ``module``.

        ``dt``: the graph's step; ``shape``: one sample's neuron shape (no batch),
        to which parameters are broadcast. Dynamics NIR cannot express are put
        in ``node.metadata["spikefit.reset_mechanism"]`` (the exporter warns);
        conventions in :mod:`snn_spikefit.nir.common`.
        """
        raise UnsupportedLayerError(f"adapter {self.name!r} cannot export {type(module).__name__} to NIR")

    def neuron_from_nir(self, node: Any, *, dt: float) -> list[nn.Module]:
        """Modules that run the NIR neuron ``node`` exactly, in order (e.g. ``[Gain, neuron]``).

        Honours ``spikefit.*`` metadata; refuses (``UnsupportedLayerError``) what
        the framework cannot run exactly.
        """
        raise UnsupportedLayerError(f"adapter {self.name!r} cannot import NIR node {type(node).__name__}")

    def imports_nir(self) -> bool:
        """:func:`~snn_spikefit.import_nir` can build models of this framework.

        Default: the adapter overrides :meth:`neuron_from_nir`.
        """
        return type(self).neuron_from_nir is not Adapter.neuron_from_nir

    def nir_container(self, layers: list[tuple[str, nn.Module]]) -> nn.Module:
        """The runnable model of an imported NIR chain: ``layers`` are ``(name, module)`` in order.

        Default: ``nn.Sequential`` with those names (one step per call). A framework whose
        models take a state argument returns its own sequential container.
        """
        return nn.Sequential(OrderedDict(layers))

    def neuron_dt(self, module: nn.Module) -> float | None:
        """The step in seconds the neuron ``module`` is discretised with, if it stores one.

        NIR export uses it as the graph's ``dt`` when every neuron agrees (else :attr:`default_dt`).
        """
        return None

    # -- pruning --------------------------------------------------------------------------
    def prune_neuron(self, module: nn.Module, keep: Tensor, channel_dim: int) -> None:
        """Keep only the channels ``keep`` of the neuron's per-channel parameters, in place.

        ``keep``: sorted ``int64`` indices of the channels that stay.
        ``channel_dim``: the channel axis of one step's activation, counted from
        the end (negative: ``-3`` for ``[B, C, H, W]``, ``-1`` for ``[B, C]``), so
        a per-channel parameter broadcast against the activation (``[C, 1, 1]``
        or ``[C]``) is sliced along the same axis. Parameters stay Parameters,
        buffers stay buffers; scalar (shared) parameters are left as they are;
        stored state (membrane, synaptic current) is cleared so it re-initialises
        with the new shape. A neuron that owns weights keeps the rows (and, for
        a recurrent weight, the columns) of the kept neurons, codebooks included
        (:func:`snn_spikefit.pruning.surgery.slice_weight`); one whose data cannot be
        sliced raises ``UnsupportedLayerError``.
        """
        raise UnsupportedLayerError(
            f"adapter {self.name!r} cannot prune channels of {type(module).__name__}"
        )

    # -- hardware -------------------------------------------------------------------------
    def neuron_model(self, module: nn.Module) -> str:
        """The neuron model of ``module`` for hardware checks (``snn_spikefit.check``).

        One of ``"IF"`` (no leak), ``"LIF"``, ``"CUBA-LIF"`` (current-based, with a
        synaptic-current decay), ``"AdEx"``, or ``"other:<ClassName>"``.
        """
        return f"other:{type(module).__name__}"

    def membrane_decays(self, module: nn.Module) -> tuple[Tensor, ...]:
        """Per-step decay factors of the neuron's response to its input, innermost filter first.

        The membrane of ``module``, below threshold, is its input filtered by first-order filters
        ``y[t] = a * y[t-1] + x[t]`` in series: ``(beta,)`` for a LIF neuron, ``(alpha, beta)`` for a
        current-based one (synaptic current, then membrane), ``(1.0,)`` for IF (no leak). Each
        factor is a scalar tensor or one value per neuron. Post-training compression
        (:func:`snn_spikefit.compress_posttraining`) builds its leak kernel from them.
        """
        raise UnsupportedLayerError(
            f"adapter {self.name!r} does not know the membrane decay of {type(module).__name__}")

    def neuron_hint(self, module: nn.Module, allowed: Sequence[str]) -> str | None:
        """How to make ``module`` one of the ``allowed`` neuron models, if the framework knows a way.

        :func:`~snn_spikefit.check` appends it, in parentheses, to the ``neuron_model`` hint.
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def stack_steps(outputs: Sequence[Any]) -> Any:
    """Stack per-step outputs time-major: tensors -> ``[T, ...]``; tuples element-wise."""
    if not outputs:
        raise SpikeFitValueError("cannot stack zero timesteps (num_steps or x.shape[0] is 0)")
    first = outputs[0]
    if isinstance(first, Tensor):
        return torch.stack(list(outputs))
    if isinstance(first, (tuple, list)):
        return tuple(stack_steps([o[i] for o in outputs]) for i in range(len(first)))
    if first is None:
        return None
    raise SpikeFitTypeError(
        f"a model step returned {type(first).__name__}; run() stacks tensors or tuples of tensors"
    )


def step_inputs(x: Tensor, num_steps: int | None) -> list[Tensor]:
    """The per-step inputs of :meth:`Adapter.run`: ``x`` repeated ``num_steps`` times, or ``x[t]``.

    >>> [tuple(t.shape) for t in step_inputs(torch.zeros(2, 3), 2)]
    [(2, 3), (2, 3)]
    >>> len(step_inputs(torch.zeros(5, 2, 3), None))
    5
    """
    if num_steps is None:
        return [x[t] for t in range(x.shape[0])]
    return [x] * num_steps


class TorchAdapter(Adapter):
    """Plain PyTorch models with no spiking neurons (ANNs, baselines): stateless steps."""

    name = "torch"
    framework = None

    def is_neuron(self, module: nn.Module) -> bool:
        return False

    def owns(self, model: nn.Module) -> bool:
        return True

    def reset(self, model: nn.Module) -> None:
        return None

    def run(self, model: nn.Module, x: Tensor, num_steps: int | None) -> Any:
        return stack_steps([model(xt) for xt in step_inputs(x, num_steps)])


_REGISTRY: dict[str, Adapter] = {}
_DISCOVERED = False


def register_adapter(adapter: Adapter, *, replace: bool = False) -> Adapter:
    """Make ``adapter`` known to :func:`get_adapter` (after the discovered ones, before the fallback).

    A name already taken (a built-in, a plugin, an earlier call) is refused unless ``replace=True``.
    """
    if not isinstance(adapter, Adapter):
        raise SpikeFitTypeError(f"adapter must be an snn_spikefit.Adapter instance, got {type(adapter).__name__}")
    _discover()
    refuse_duplicate("an adapter named", adapter.name, _REGISTRY, replace=replace)
    _REGISTRY[adapter.name] = adapter
    return adapter


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _builtin_targets() -> dict[str, str] | None:
    """``name -> "module:Class"`` of the built-in adapters, or ``None`` when their package is absent."""
    try:
        package = importlib.import_module(BUILTIN_PACKAGE)
    except ModuleNotFoundError as exc:
        if exc.name == BUILTIN_PACKAGE:
            return None  # a core-only install: no built-in adapters
        raise
    return dict(getattr(package, "ADAPTERS", {}))


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    try:
        builtin = _builtin_targets()
    except Exception as exc:
        warnings.warn(f"snn_spikefit: the built-in adapters ({BUILTIN_PACKAGE}) failed to load and are "
                      f"skipped: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
        builtin = None
    targets = dict(builtin or {})
    try:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if builtin is None and ep.value.startswith(BUILTIN_PACKAGE + "."):
                continue  # the built-in package is not installed: its entry points cannot load
            targets.setdefault(ep.name, ep.value)
    except Exception as exc:  # pragma: no cover - broken metadata
        warnings.warn(f"snn_spikefit: could not read entry points {ENTRY_POINT_GROUP!r}: {exc}")
    for name, target in targets.items():
        if name in _REGISTRY:
            continue
        try:
            cls = _load(target)
            adapter = cls() if isinstance(cls, type) else cls
            if adapter.available():
                _REGISTRY.setdefault(name, adapter)
        except Exception as exc:
            warnings.warn(
                f"snn_spikefit: adapter plugin {name!r} ({target}) failed to load and is skipped: "
                f"{type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )


def list_adapters() -> list[str]:
    """Names of the adapters whose framework is installed, in registration order."""
    _discover()
    return list(_REGISTRY)


def nir_frameworks() -> list[str]:
    """Names of the installed adapters that :func:`~snn_spikefit.import_nir` can import into.

    Those whose :meth:`Adapter.imports_nir` is true, in registration order; the first is
    ``import_nir``'s default.
    """
    _discover()
    return [name for name, adapter in _REGISTRY.items() if adapter.imports_nir()]


def get_adapter(model: nn.Module, name: str | None = None) -> Adapter:
    """The adapter for ``model``: the named one, the first that owns it, or plain torch."""
    _discover()
    if name is not None:
        if name == "torch":
            return TorchAdapter()
        if name not in _REGISTRY:
            raise SpikeFitValueError(f"adapter={name!r} is not available; available: {list(_REGISTRY) + ['torch']}")
        return _REGISTRY[name]
    for adapter in _REGISTRY.values():
        if adapter.owns(model):
            return adapter
    return TorchAdapter()
