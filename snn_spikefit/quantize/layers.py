"""Which weights of a model are compressed, and how a quantizer is attached to one.

Every consumer (surgery, folding, metrics, checks, NIR, reports) finds the
compressed weights of a model with :func:`compressed_layers`: one
:class:`CompressedLayer` per parametrized weight whose parametrization is a
:class:`~snn_spikefit.quantize.quantizer.Quantizer` (CAT's codebooks, frozen
or not, and every baseline), whatever the parameter is called (``weight`` of a
Linear/Conv, a Norse recurrent cell's ``input_weights``/``recurrent_weights``,
any parameter an adapter names in ``Adapter.weight_names``).

>>> import torch
>>> from torch import nn
>>> import snn_spikefit as sf
>>> net = sf.wrap(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), m=2)
>>> [(c.name, c.param, c.quantizer.kind) for c in compressed_layers(net)]
[('0', 'weight', 'trainable codebook'), ('2', 'weight', 'trainable codebook')]
>>> select_channels(net[0], "weight", 0, torch.tensor([0, 2]))
>>> tuple(net[0].weight.shape), compressed_layers(net)[0].integer_form().codes.shape
((2, 4), torch.Size([1, 8]))
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..adapter import Adapter, get_adapter
from ..errors import UnsupportedLayerError
from .cache import unwatch
from .quantizer import IntegerForm, Quantizer

__all__ = [
    "COMPRESSIBLE_TYPES", "CompressedLayer", "compressed_layers", "is_wrapped", "quantizer_of",
    "install_frozen", "remove_parametrization", "select_channels", "weight_names", "candidates", "layer_name",
]

#: Layer types whose ``weight`` :func:`snn_spikefit.wrap` (and every baseline) compresses.
COMPRESSIBLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class CompressedLayer:
    """One compressed weight: where it lives and its quantizer.

    ``name`` is the module's name for a ``weight``, ``"<module>.<param>"`` for any
    other weight parameter (e.g. a Norse recurrent cell's ``recurrent_weights``).
    """

    name: str
    module: nn.Module
    quantizer: Quantizer
    param: str = "weight"

    @property
    def frozen(self) -> bool:
        return self.quantizer.frozen

    @property
    def weight(self) -> Tensor:
        """The effective (quantized) weight."""
        return getattr(self.module, self.param)

    @property
    def latent(self) -> Tensor:
        """The tensor under the parametrization (latent weight; empty once frozen or released)."""
        return self.module.parametrizations[self.param].original

    def integer_form(self) -> IntegerForm:
        """The quantizer's exact integer description of this weight (what :func:`snn_spikefit.freeze` stores)."""
        return self.quantizer.integer_form(self.latent)


def layer_name(module_name: str, param: str) -> str:
    """The name of a compressed weight: the module's for ``weight``, else ``"<module>.<param>"``."""
    if param == "weight":
        return module_name
    return f"{module_name}.{param}" if module_name else param


def quantizer_of(module: nn.Module, param: str = "weight") -> Quantizer | None:
    """The quantizer on ``module.<param>``, or ``None`` when it has none."""
    if not parametrize.is_parametrized(module, param):
        return None
    return next((p for p in module.parametrizations[param] if isinstance(p, Quantizer)), None)


def compressed_layers(model: nn.Module) -> list[CompressedLayer]:
    """Every weight of ``model`` that carries a quantizer (CAT codebook, frozen codebook or baseline)."""
    out = []
    for name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for param in module.parametrizations.keys():
            q = quantizer_of(module, param)
            if q is not None:
                out.append(CompressedLayer(layer_name(name, param), module, q, param))
    return out


def is_wrapped(model: nn.Module) -> bool:
    """True if any weight of ``model`` carries a quantizer."""
    return bool(compressed_layers(model))


def install_frozen(module: nn.Module, frozen: Quantizer, param: str = "weight") -> None:
    """Register a frozen quantizer on ``module.<param>`` (which must not be parametrized).

    The one place that knows how a frozen layer is attached; used by
    :func:`snn_spikefit.freeze` (CAT and baselines) and NIR import.
    """
    parametrize.register_parametrization(module, param, frozen, unsafe=True)
    original = module.parametrizations[param].original
    original.requires_grad_(False)
    # PyTorch keeps the old Parameter object (set_ in place), .grad included: a gradient of the old
    # shape on the (empty) latent would break every later .grad assignment
    original.grad = None


def remove_parametrization(module: nn.Module, param: str = "weight", *, leave_parametrized: bool) -> None:
    """``remove_parametrizations`` without breaking deep copies of ``module``.

    PyTorch's deepcopy of a parametrized module shares the injected class with
    the copy, and removal deletes the ``weight`` property from that class, which
    breaks the copy. Give the module a private copy of its class first.
    """
    cls = module.__class__
    module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    parametrize.remove_parametrizations(module, param, leave_parametrized=leave_parametrized)
    unwatch(getattr(module, param))


def select_channels(module: nn.Module, param: str, dim: int, keep: Tensor) -> None:
    """Keep the indices ``keep`` of the quantized ``module.<param>`` along ``dim``, quantizer included.

    The quantizer updates its own state (:meth:`Quantizer.select_channels`);
    this installs the latent it returns. Refuses a weight with any other
    parametrization on it.
    """
    plist = module.parametrizations[param]
    q = quantizer_of(module, param)
    if len(plist) != 1 or q is None:
        raise UnsupportedLayerError(
            f"{type(module).__name__}.{param} has parametrizations {[type(p).__name__ for p in plist]}; "
            f"channel surgery supports plain weights and snn_spikefit quantizers alone")
    latent = plist.original
    new = q.select_channels(keep, dim, latent)
    if new is not latent:
        plist.original = nn.Parameter(new, requires_grad=latent.requires_grad)


def weight_names(module: nn.Module, adapter: Adapter) -> list[str]:
    """The synaptic weight parameters of ``module`` that can be compressed (output neurons first).

    ``weight`` of :data:`COMPRESSIBLE_TYPES`, else what ``adapter`` names
    (``Adapter.weight_names``, e.g. a Norse recurrent cell's two weights).
    """
    if isinstance(module, COMPRESSIBLE_TYPES):
        return ["weight"]
    return list(adapter.weight_names(module))


def candidates(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(layer name, module, parameter)`` of every weight ``wrap`` and the baselines can compress."""
    adapter = get_adapter(model)
    out = []
    for n, m in model.named_modules():
        if ".parametrizations" in f".{n}":
            continue
        out.extend((layer_name(n, p), m, p) for p in weight_names(m, adapter))
    return out
