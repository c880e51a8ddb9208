"""The weight-quantizer protocol: what every compressed weight tells the rest of the library.

A quantizer is a ``torch.nn.utils.parametrize`` parametrization that gives a
weight at most ``m`` distinct values per group (one group per layer, or one per
output channel). CAT's :class:`~snn_spikefit.quantize.codebook.CodebookWeight`,
its frozen form :class:`~snn_spikefit.quantize.codebook.FrozenCodebook` and the
baselines (TTQ, the clustered baseline and its INT8 fake-quantizer, QP-SNN)
subclass :class:`Quantizer`; surgery, BatchNorm folding, metrics, checks, NIR
export and :func:`snn_spikefit.freeze` ask only this protocol, never a
quantizer's own fields:

* ``m``, ``bits``, ``granularity``, ``groups``: what it promises;
* :meth:`Quantizer.integer_form`: the exact description a chip is programmed
  with, an :class:`IntegerForm` (codes, codebook, integer codebook, scale);
* :meth:`Quantizer.select_channels`: keep some output or input channels;
* :meth:`Quantizer.scale_channels`: multiply each output channel by a factor
  (only a frozen per-channel integer codebook can, exactly: its scales change);
* :meth:`Quantizer.freeze`: the frozen form, a ``FrozenCodebook``.

Caches are private; :meth:`Quantizer.invalidate` drops them.

>>> import torch
>>> form = IntegerForm(torch.Size([2, 2]), torch.tensor([[0, 1, 1, 0]], dtype=torch.uint8),
...                    torch.tensor([[-0.5, 0.25]]), torch.tensor([[-2, 1]], dtype=torch.int8), torch.tensor([0.25]))
>>> form.decode().tolist()
[[-0.5, 0.25], [0.25, -0.5]]
>>> distinct_per_row(torch.tensor([[0.0, 1.0, 1.0], [2.0, 3.0, 4.0]])).tolist()
[2, 3]
>>> distinct_per_row(torch.tensor([[0.0, 1.0, 1.0]]), nonzero=True).tolist()
[1]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import UnsupportedLayerError

__all__ = ["Quantizer", "IntegerForm", "code_dtype", "int_dtype", "compressed_bits", "distinct_per_row"]


def code_dtype(m: int) -> torch.dtype:
    """The smallest unsigned integer dtype that holds codes ``0 .. m-1``."""
    if m <= 2**8:
        return torch.uint8
    if m <= 2**16:
        return torch.uint16
    if m <= 2**32:
        return torch.uint32
    return torch.int64


def int_dtype(bits: int | None) -> torch.dtype:
    """The dtype of a ``bits``-bit signed integer codebook (``int8`` up to 8 bits, else ``int16``)."""
    return torch.int8 if bits is not None and bits <= 8 else torch.int16


def compressed_bits(n_weights: int, groups: int, m: int, bits: int | None) -> int:
    """Storage of a codebook layer: index bits per weight + codebooks (+ fp32 scales).

    >>> compressed_bits(1000, 1, 4, 4)   # 2 bits x 1000 + 4 x 4-bit codebook + 32-bit scale
    2048
    """
    index = max(1, (m - 1).bit_length())
    book = groups * m * (bits if bits is not None else 32)
    scales = groups * 32 if bits is not None else 0
    return n_weights * index + book + scales


def distinct_per_row(rows: Tensor, *, nonzero: bool = False) -> Tensor:
    """Distinct values in each row of ``[G, N]`` (sort + diff), ``int64 [G]``; ``nonzero``: 0 does not count."""
    srt = rows.detach().sort(dim=1).values
    distinct = 1 + (srt[:, 1:] != srt[:, :-1]).sum(dim=1)
    if nonzero:
        distinct = distinct - (srt == 0).any(dim=1).long()
    return distinct


@dataclass(frozen=True)
class IntegerForm:
    """A quantized weight exactly: ``weight == values.gather(1, codes).reshape(shape)``.

    With ``bits`` set, ``values == ints * scale[:, None]`` (the same float
    product) and ``|ints| <= 2^(bits-1) - 1``; without, ``ints`` and ``scale``
    are ``None`` (a float codebook). The tensors may be a quantizer's own
    buffers: read them, do not change them.
    """

    shape: torch.Size        # the weight's shape
    codes: Tensor            # [groups, n] codebook indices, unsigned (smallest dtype that holds m)
    values: Tensor           # [groups, k] float codebook (k codewords, k <= m distinct)
    ints: Tensor | None      # [groups, k] integer codebook (int8 / int16), or None
    scale: Tensor | None     # [groups] one scale per group, or None

    @property
    def groups(self) -> int:
        return int(self.values.shape[0])

    def decode(self) -> Tensor:
        """The weight these integers describe."""
        return torch.gather(self.values, 1, self.codes.long()).reshape(self.shape)


class Quantizer(nn.Module):
    """Base class and protocol of a weight quantizer (a parametrization of one weight).

    Subclasses set ``m`` (values per group at most), ``bits`` (width of the
    integer codebook, or ``None`` for a float codebook) and ``granularity``
    (``"layer"`` or ``"channel"``), and implement :meth:`integer_form`
    (and :meth:`select_channels` when they hold per-channel state or release
    the latent weight). A subclass is found by
    :func:`snn_spikefit.compressed_layers` (and so by every consumer) without
    further registration.
    """

    m: int
    bits: int | None = None
    granularity: str = "layer"
    #: True for the frozen form (integer codes and codebook, no latent weight).
    frozen: bool = False
    #: What this is, for messages ("trainable codebook", "ternary (TTQ) weight", ...).
    kind: str = "quantizer"

    @property
    def groups(self) -> int:
        """Number of codebooks: 1 for ``granularity="layer"``, else one per output channel."""
        if self.granularity == "layer":
            return 1
        raise NotImplementedError(f"{type(self).__name__} has granularity='channel' and must define groups")

    def integer_form(self, latent: Tensor) -> IntegerForm:
        """The exact integer description of the weight this quantizer makes of ``latent``.

        ``latent`` is the tensor under the parametrization (empty for
        quantizers that release it). What :meth:`freeze` stores and NIR exports.
        """
        raise NotImplementedError

    @torch.no_grad()
    def select_channels(self, keep: Tensor, dim: int, latent: Tensor) -> Tensor:
        """Keep the indices ``keep`` of the weight along ``dim`` (0: outputs, 1: inputs); returns the new latent.

        The quantizer updates its own state (per-channel codebooks, stored codes,
        shape) so it describes the smaller weight with at most ``m`` values per
        group; the caller installs the returned latent (the same tensor when the
        quantizer holds none). This default suits a quantizer with no
        per-channel state: the latent weight sliced.
        """
        self.invalidate()
        return latent.detach().index_select(dim, keep.to(latent.device)).clone()

    @property
    def scales_channels(self) -> bool:
        """Whether :meth:`scale_channels` is exact (a frozen per-channel integer codebook)."""
        return False

    def scale_channels(self, factor: Tensor) -> None:
        """Multiply output channel ``c`` of the weight by ``factor[c]`` (BatchNorm folding)."""
        raise UnsupportedLayerError(
            f"a {self.kind} cannot scale its output channels without more distinct weights than its codebook "
            f"allows; only a frozen codebook with granularity='channel' and bits set can")

    def size_bits(self, n_weights: int) -> int:
        """Storage bits of the weight: :func:`compressed_bits` of its codes and codebooks."""
        return compressed_bits(n_weights, self.groups, self.m, self.bits)

    def invalidate(self) -> None:
        """Drop any cached weight (after changing the quantizer's tensors in place)."""

    def freeze(self, latent: Tensor):
        """The frozen form of this quantizer on ``latent``: a ``FrozenCodebook`` (outputs do not change)."""
        from .codebook import FrozenCodebook  # codebook.py subclasses Quantizer: a real import cycle

        return FrozenCodebook.from_form(self.integer_form(latent), m=self.m, bits=self.bits,
                                        granularity=self.granularity)
