"""A validation split held out of the user's training data, to choose among fitted candidates.

:func:`split_validation` gives ``(data with the rest of the training data, validation batches)``:

* a ``DataLoader`` over a sized dataset: a seeded permutation of the samples, the first
  ``round(fraction * n)`` of them validation (at least one, and at least one left to train); the
  training loader is rebuilt with the same batch size, shuffling and ``drop_last``;
* any other iterable of batches (time-major or flattened wrappers): the batches are read once and
  every ``k``-th of them (``k = round(1 / fraction)``) is held out; the rest train in a fixed order.

The test split is never touched: candidates are chosen on validation accuracy and reported on test.

>>> import torch
>>> from torch.utils.data import TensorDataset
>>> from snn_spikefit.data import LoadedData
>>> ds = TensorDataset(torch.rand(100, 4), torch.arange(100) % 2)
>>> data = LoadedData.from_splits(ds, ds)
>>> rest, val = split_validation(data, 0.2, seed=0)
>>> sum(len(y) for _, y in val), len(rest.train.dataset)
(20, 80)
"""

from __future__ import annotations

from dataclasses import replace
from numbers import Real
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler, Subset

from ..data import LoadedData
from ..data.datasets import make_loader
from ..errors import SpikeFitValueError

__all__ = ["split_validation", "check_fraction"]

_VAL_BATCH = 256


def check_fraction(validation: Any) -> float | None:
    """``validation`` as a fraction in (0, 0.5], or ``None``; anything else is refused by name."""
    if validation is None:
        return None
    if isinstance(validation, bool) or not isinstance(validation, Real) or not 0 < validation <= 0.5:
        raise SpikeFitValueError(f"validation={validation!r} is not allowed; use a fraction of the training data "
                                 f"in (0, 0.5] to hold out (0.2: a fifth), or None (no selection)")
    return float(validation)


def _sized_dataset(loader: Any):
    ds = getattr(loader, "dataset", None) if isinstance(loader, DataLoader) else None
    try:
        return ds if ds is not None and len(ds) >= 2 else None
    except TypeError:  # an IterableDataset
        return None


def split_validation(data: LoadedData, fraction: float, *, seed: int = 0) -> tuple[LoadedData, Any]:
    """``(data whose train holds the rest, validation batches)``; see the module text."""
    loader = data.train
    ds = _sized_dataset(loader)
    if ds is not None:
        n = len(ds)
        n_val = min(max(1, round(fraction * n)), n - 1)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        val = make_loader(Subset(ds, order[:n_val]), _VAL_BATCH)
        shuffle = isinstance(loader.sampler, RandomSampler)
        batch = loader.batch_size or 1
        rest = Subset(ds, order[n_val:])
        train = make_loader(rest, batch, shuffle=shuffle, seed=seed, drop_last=loader.drop_last and len(rest) > batch)
        return replace(data, train=train), val
    batches = list(loader)
    if len(batches) < 2:
        raise SpikeFitValueError(f"validation={fraction:g} needs at least 2 training batches to hold one out; "
                                 f"data {data.name!r} gave {len(batches)} (use validation=None, or a "
                                 f"Dataset/DataLoader)")
    k = max(2, round(1 / fraction))
    held = {i for i in range(len(batches)) if i % k == k - 1} or {len(batches) - 1}
    val = [b for i, b in enumerate(batches) if i in held]
    train = [b for i, b in enumerate(batches) if i not in held]
    return replace(data, train=train), val
