"""Frozen codebook layers back to trainable ones: ``wrap(model, init="frozen")``.

A :class:`~snn_spikefit.quantize.codebook.FrozenCodebook` (from :func:`snn_spikefit.freeze`
or :func:`snn_spikefit.compress_posttraining`) becomes a
:class:`~snn_spikefit.quantize.codebook.CodebookWeight` whose latent weight is the decoded
weight and whose codebook rounds to the same integers and scale, so the model's outputs do
not change and CAT fine-tunes from there.

>>> import torch
>>> from torch import nn
>>> import snn_spikefit as sf
>>> net = sf.freeze(sf.wrap(nn.Sequential(nn.Linear(6, 3)), m=3, bits=4))
>>> before = net[0].weight.detach().clone()
>>> _ = thaw(net)
>>> net[0].parametrizations.weight[0].kind, bool(torch.equal(net[0].weight, before))
('trainable codebook', True)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import NotWrappedError, SpikeFitValueError
from .codebook import CodebookWeight, FrozenCodebook, quantize_codebook
from .layers import compressed_layers, remove_parametrization

__all__ = ["thaw", "trainable_codebook"]


def _same(book: Tensor, frozen: FrozenCodebook) -> bool:
    values, ints, scale = quantize_codebook(book, frozen.bits)
    return (torch.equal(values, frozen.values) and torch.equal(ints, frozen.codebook_int.to(ints.dtype))
            and torch.equal(scale, frozen.scale))


def trainable_codebook(frozen: FrozenCodebook, name: str) -> Tensor:
    """A float codebook that ``CodebookWeight`` turns into exactly ``frozen``'s values (and integers)."""
    book = frozen.values.detach().clone()
    if frozen.bits is None or _same(book, frozen):
        return book
    # CodebookWeight's scale is max|C| / qmax: move each row's largest codeword by a few ulps until it is
    qmax = 2 ** (frozen.bits - 1) - 1
    scale = frozen.scale.detach()
    if not bool((frozen.codebook_int.abs().amax(dim=1) == qmax).all()):
        raise SpikeFitValueError(
            f"layer {name!r}: its integer codebook does not reach +-{qmax}, so no trainable codebook "
            f"(scale = max|C| / {qmax}) gives the same integers; wrap it with init='kmeans' instead")
    for r, i in enumerate(book.abs().argmax(dim=1).tolist()):
        s_r = scale[r]
        cand = s_r * qmax
        for step in range(16):  # fl(scale * qmax) and its neighbours, nearest first
            up, down = cand, cand
            for _ in range(step):
                up, down = torch.nextafter(up, up + 1), torch.nextafter(down, down - 1)
            hit = next((c for c in (up, down) if bool(c / qmax == s_r)), None)
            if hit is not None:
                book[r, i] = torch.sign(book[r, i]) * hit
                break
    if not _same(book, frozen):
        raise SpikeFitValueError(f"layer {name!r}: no float codebook reproduces its frozen integers and scale")
    return book


@torch.no_grad()
def thaw(model: nn.Module, *, reseed: bool = True) -> nn.Module:
    """Replace every frozen codebook layer of ``model`` by a trainable one with the same weights; in place."""
    layers = [c for c in compressed_layers(model) if isinstance(c.quantizer, FrozenCodebook)]
    if not layers:
        raise NotWrappedError(f"init='frozen' needs frozen codebook layers (from freeze or compress_posttraining); "
                              f"{type(model).__name__} has none")
    plans = []
    for c in layers:
        fz = c.quantizer
        book = trainable_codebook(fz, c.name)
        q = CodebookWeight(book, bits=fz.bits, granularity=fz.granularity, reseed=reseed)
        plans.append((c, q, fz.decode().detach().clone()))
    for c, q, weight in plans:
        remove_parametrization(c.module, c.param, leave_parametrized=False)
        setattr(c.module, c.param, nn.Parameter(weight))
        parametrize.register_parametrization(c.module, c.param, q)
    return model
