"""Real data sets that install offline (nothing is downloaded at run time).

* :func:`digits`: scikit-learn's 8x8 handwritten digits (1,797 images; ships in
  the scikit-learn wheel).
* :func:`fashion_mnist`: Fashion-MNIST 28x28 (60k/10k) from the IDX files that
  Debian's ``dataset-fashion-mnist`` package installs, or any folder holding them.

Images are float32 in ``[0, 1]``, shape ``[N, 1, H, W]``; labels int64.

>>> train, test = digits()
>>> tuple(train.tensors[0].shape[1:]), len(train) + len(test)
((1, 8, 8), 1797)
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..errors import SpikeFitValueError

__all__ = ["digits", "fashion_mnist", "read_idx", "make_loader", "FASHION_MNIST_ROOT"]

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    as_ds = lambda idx: TensorDataset(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))  # noqa: E731
    return as_ds(train), as_ds(test)


def digits(*, test_fraction: float = 0.25, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn digits as ``(train, test)``, images ``[N, 1, 8, 8]`` scaled to ``[0, 1]``.

    The split is stratified by nothing but a seeded permutation, so it is the
    same on every machine for the same ``seed``.
    """
    if not 0 < test_fraction < 1:
        raise SpikeFitValueError(f"test_fraction={test_fraction} is not allowed; use a value in (0, 1)")
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None]
    y = data.target.astype(np.int64)
    return _split(x, y, test_fraction, seed)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (MNIST format), gzipped or not, checking its header."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise SpikeFitValueError(f"cannot read IDX file {str(path)!r}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise SpikeFitValueError(
            f"{str(path)!r} is not an unsigned-byte IDX file (header {raw[:4].hex() or 'empty'}, "
            f"expected 000008xx)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - header != expected:
        raise SpikeFitValueError(
            f"IDX file {str(path)!r} is truncated or corrupt: header says {dims} "
            f"({expected} bytes), file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).exists():
            return root / name
    raise SpikeFitValueError(
        f"Fashion-MNIST file {stem}[.gz] not found in {str(root)!r}; install it with "
        f"`apt-get install dataset-fashion-mnist` (files in {FASHION_MNIST_ROOT}) or pass root=<folder>"
    )


def fashion_mnist(
    root: str | os.PathLike = FASHION_MNIST_ROOT, *, limit_train: int | None = None,
    limit_test: int | None = None,
) -> tuple[TensorDataset, TensorDataset]:
    """Fashion-MNIST as ``(train, test)``, images ``[N, 1, 28, 28]`` in ``[0, 1]``.

    ``limit_train``/``limit_test`` keep the first N images of each split (for
    quick runs); the files' order is the published one.
    """
    root = Path(root)
    out = []
    for split, limit in (("train", limit_train), ("t10k", limit_test)):
        images = read_idx(_find(root, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_find(root, f"{split}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise SpikeFitValueError(f"{split}: {len(images)} images but {len(labels)} labels in {str(root)!r}")
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
        y = torch.from_numpy(labels.astype(np.int64))
        out.append(TensorDataset(x, y))
    return out[0], out[1]


def make_loader(dataset, batch_size: int = 64, *, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader with a seeded shuffle (same order for the same seed).

    Use ``drop_last=True`` for training with BatchNorm: a tiny last batch skews
    the running statistics.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last)
