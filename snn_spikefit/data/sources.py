"""Data sources by name: the registry behind ``spikefit --data`` and :func:`snn_spikefit.compress`.

:func:`load_data` turns a *spec* into training and test batches (:class:`LoadedData`):

* a registered name: ``digits`` (scikit-learn, built in), ``fashion-mnist`` (IDX files from ``root``),
  or one of yours (:func:`register_data_source`);
* ``PREFIX:NAME`` for a *prefix* source: ``tonic:NMNIST`` reads tonic event data set ``NMNIST`` from
  ``root`` (never downloaded), framed into ``num_steps`` bins, batches time-major ``[T, B, ...]``;
* ``path/to/file.py:function`` or ``package.module:function``: a function called with no arguments
  that returns ``(train, test)``.

A source returns ``(train, test)``, each a torch ``Dataset`` (then ``limit`` keeps its first N
samples; training batches of ``batch_size`` are shuffled with ``seed``, a last partial batch is
dropped; test batches hold 256) or an iterable of ``(x, y)`` batches, used as it is. A registered
source is called with the :class:`DataOptions` (a prefix source with the name after the colon first).

>>> import torch
>>> from torch.utils.data import TensorDataset
>>> def noise(options):
...     g = torch.Generator().manual_seed(options.seed)
...     ds = TensorDataset(torch.rand(20, 1, 4, 4, generator=g), torch.arange(20) % 3)
...     return ds, ds
>>> source = register_data_source("noise-doctest", noise, help="random 4x4 images, 3 classes")
>>> data = load_data("noise-doctest", batch_size=8, limit=16)
>>> data.sample_shape, data.classes, len(data.train), data.num_steps
((1, 4, 4), 3, 2, 4)
>>> _ = DATA_SOURCES.pop("noise-doctest")
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import SpikeFitError, SpikeFitTypeError, SpikeFitValueError, refuse_duplicate
from .datasets import FASHION_MNIST_ROOT, digits, fashion_mnist, make_loader
from .events import time_major as as_time_major

__all__ = ["DataOptions", "DataSource", "LoadedData", "DATA_SOURCES", "register_data_source", "load_data",
           "data_source_help", "load_callable", "TEST_BATCH_SIZE"]

#: batch size of every test loader made from a Dataset
TEST_BATCH_SIZE = 256


@dataclass(frozen=True)
class DataOptions:
    """What :func:`load_data` passes to a source (each source uses what applies to it)."""

    root: str | None = None      # folder of file-based data sets (fashion-mnist, tonic)
    num_steps: int = 4           # timesteps: a static input is repeated T times, events framed into T bins
    batch_size: int = 64         # training batch size
    limit: int | None = None     # keep the first N training and N test samples
    seed: int = 0                # shuffling (and digits' train/test split)

    def __post_init__(self) -> None:
        for name in ("num_steps", "batch_size", "limit"):
            value = getattr(self, name)
            if value is None and name == "limit":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpikeFitValueError(f"{name}={value!r} is not allowed; use an int >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SpikeFitTypeError(f"seed={self.seed!r} is not allowed; use an int")
        if self.root is not None and not isinstance(self.root, (str, Path)):
            raise SpikeFitTypeError(f"root={self.root!r} is not allowed; use a folder path or None")


@dataclass(frozen=True)
class DataSource:
    """A registered source: ``fn(options)``, or ``fn(name, options)`` for a prefix source ``NAME:...``."""

    name: str
    fn: Callable[..., Any]
    prefix: bool = False         # used as 'name:ARG'
    time_major: bool = False     # samples are sequences [T, ...]: batches become [T, B, ...]
    help: str = ""

    @property
    def spec(self) -> str:
        """How a user writes it: ``digits`` or ``tonic:NAME``."""
        return f"{self.name}:NAME" if self.prefix else self.name


@dataclass
class LoadedData:
    """Training and test batches, and how to run a model on them."""

    name: str
    train: Iterable
    test: Iterable
    num_steps: int | None           # for run/fit/evaluate: None when inputs are time-major
    sample_shape: tuple[int, ...]   # one sample's static shape (time-major data: one step's)
    classes: int
    options: DataOptions | None = None  # what it was loaded with (None: built from loaders by hand)

    def sample(self, n: int = 1) -> Tensor:
        """A static input batch ``[n, ...]`` (one time step of time-major data), for check/export/trace."""
        x, _ = next(iter(self.test))
        x = x[0] if self.num_steps is None else x
        return x[:n]

    def flattened(self) -> "LoadedData":
        """The same batches with each sample flattened to ``(prod(sample_shape),)``, for a model whose
        first layer is a ``Linear`` (``spikefit --data digits`` on a dense 64-input model does this).

        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.rand(4, 1, 8, 8), torch.arange(4))
        >>> flat = LoadedData.from_splits(ds, ds).flattened()
        >>> flat.sample_shape, tuple(flat.sample(2).shape)
        ((64,), (2, 64))
        """
        start = 1 if self.num_steps is not None else 2  # time-major batches are [T, B, ...]
        size = 1
        for d in self.sample_shape:
            size *= int(d)
        return LoadedData(self.name, _Flat(self.train, start), _Flat(self.test, start), self.num_steps, (size,),
                          self.classes, self.options)

    @property
    def timesteps(self) -> int:
        """T: ``num_steps``, or the length of the time-major test batches."""
        return self.num_steps if self.num_steps is not None else int(next(iter(self.test))[0].shape[0])

    @classmethod
    def from_splits(cls, train: Any, test: Any, *, name: str = "user data", time_major: bool = False,
                    options: DataOptions | None = None) -> "LoadedData":
        """Batches from ``(train, test)`` datasets or loaders (see the module docstring)."""
        options = options or DataOptions()
        train = _as_loader(train, options, train=True, time_major=time_major, what=f"data {name!r}")
        test = _as_loader(test, options, train=False, time_major=time_major, what=f"data {name!r}")
        try:
            x, y = next(iter(test))
        except StopIteration:
            raise SpikeFitValueError(f"data {name!r}: the test split is empty") from None
        except Exception as exc:
            raise SpikeFitValueError(f"data {name!r}: cannot read a batch: {type(exc).__name__}: "
                                     f"{_first_line(exc)}") from None
        shape = tuple(x.shape[2:] if time_major else x.shape[1:])
        labels = torch.as_tensor(y)
        classes = int(labels.max()) + 1 if labels.numel() else 0
        return cls(name, train, test, None if time_major else options.num_steps, shape, classes, options)


class _Flat:
    """Re-iterable ``(x.flatten(start), y)`` batches of another re-iterable."""

    def __init__(self, batches: Iterable, start: int) -> None:
        self.batches, self.start = batches, start

    def __iter__(self):
        for x, y in self.batches:
            yield x.flatten(self.start), y

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


#: name -> DataSource; add with :func:`register_data_source`
DATA_SOURCES: dict[str, DataSource] = {}


def register_data_source(name: str, fn: Callable[..., Any], *, prefix: bool = False, time_major: bool = False,
                         help: str = "", replace: bool = False) -> DataSource:
    """Make ``fn`` available as ``load_data(name)`` and ``spikefit --data name`` (``name:ARG`` with ``prefix``).

    ``fn(options)`` (``fn(arg, options)`` for a prefix source) returns ``(train, test)``; ``time_major``:
    its samples are sequences ``[T, ...]``. A name already registered is refused unless ``replace=True``.
    """
    if not isinstance(name, str) or not name or ":" in name or name.endswith(".py"):
        raise SpikeFitValueError(f"data source name={name!r} is not allowed; use a non-empty str without ':' "
                                 f"that does not end in .py")
    if not callable(fn):
        raise SpikeFitTypeError(f"data source {name!r}: fn must be callable, got {type(fn).__name__}")
    refuse_duplicate("a data source named", name, DATA_SOURCES, replace=replace)
    source = DataSource(name, fn, bool(prefix), bool(time_major), str(help))
    DATA_SOURCES[name] = source
    return source


def data_source_help() -> str:
    """One line per way of naming data, for ``--help`` and error messages."""
    named = [f"'{s.spec}'" + (f" ({s.help})" if s.help else "") for s in DATA_SOURCES.values()]
    return ", ".join(named) + ", or 'path/to/file.py:function' / 'package.module:function' returning (train, test)"


def _allowed() -> str:
    return f"use one of {[s.spec for s in DATA_SOURCES.values()]}, 'path/to/file.py:function' or " \
           f"'package.module:function'"


def load_data(spec: str, *, root: str | None = None, num_steps: int = 4, batch_size: int = 64,
              limit: int | None = None, seed: int = 0, time_major: bool = False) -> LoadedData:
    """The data named by ``spec`` (see the module docstring), batched.

    ``time_major``: a user function's samples (or batches) are sequences, ``[T, ...]`` (``[T, B, ...]``).
    Raises :class:`~snn_spikefit.errors.SpikeFitValueError` naming what exists for an unknown ``spec``.
    """
    if not isinstance(spec, str) or not spec:
        raise SpikeFitTypeError(f"data={spec!r} is not allowed; {_allowed()}")
    options = DataOptions(root, num_steps, batch_size, limit, seed)
    head, sep, arg = spec.partition(":")
    source = DATA_SOURCES.get(head if sep else spec)
    if source is not None and source.prefix != bool(sep):
        if not sep:
            raise SpikeFitValueError(f"data source {spec!r} needs a name: '{source.spec}'")
        source = None  # 'module:function' whose module shares a plain source's name
    if source is not None and source.prefix and not arg:
        raise SpikeFitValueError(f"data source {spec!r} needs a name: '{source.spec}'")
    if source is not None:
        call = (lambda: source.fn(arg, options)) if source.prefix else (lambda: source.fn(options))
        time_major = time_major or source.time_major
    elif sep:
        call = load_callable(spec, "data")
    else:
        raise SpikeFitValueError(f"data source {spec!r} is not allowed; {_allowed()}")
    try:
        result = call()
    except SpikeFitError:
        raise
    except Exception as exc:
        raise SpikeFitValueError(f"data {spec!r} failed: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise SpikeFitTypeError(f"data {spec!r} must return (train, test), got {type(result).__name__}")
    return LoadedData.from_splits(result[0], result[1], name=spec, time_major=time_major, options=options)


def _as_loader(obj: Any, options: DataOptions, *, train: bool, time_major: bool, what: str) -> Iterable:
    if isinstance(obj, DataLoader) or (not isinstance(obj, Dataset) and hasattr(obj, "__iter__")
                                       and not hasattr(obj, "__getitem__")):
        return obj
    if isinstance(obj, Dataset) or (hasattr(obj, "__getitem__") and hasattr(obj, "__len__")):
        ds = obj if options.limit is None else Subset(obj, range(min(options.limit, len(obj))))
        if train:
            loader = make_loader(ds, options.batch_size, shuffle=True, seed=options.seed,
                                 drop_last=len(ds) > options.batch_size)
        else:
            loader = make_loader(ds, TEST_BATCH_SIZE)
        return as_time_major(loader) if time_major else loader
    raise SpikeFitTypeError(f"{what} returned a {type(obj).__name__} for the {'train' if train else 'test'} split; "
                            f"return a torch Dataset or an iterable of (x, y) batches")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


def load_callable(spec: str, what: str) -> Callable:
    """``'package.module:function'`` or ``'path/to/file.py:function'`` -> the function."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise SpikeFitValueError(f"{what}={spec!r} is not allowed; use 'package.module:function' or "
                                 f"'path/to/file.py:function'")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise SpikeFitValueError(f"{what}: file {target!r} does not exist")
            mod_spec = importlib.util.spec_from_file_location(f"spikefit_user_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except SpikeFitError:
        raise
    except Exception as exc:
        raise SpikeFitValueError(f"{what}: cannot import {target!r}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SpikeFitValueError(f"{what}: {target!r} has no function {attr!r}")
    return fn


# -- built-in sources -----------------------------------------------------------------------------------

def _digits(options: DataOptions):
    return digits(seed=options.seed)


def _fashion_mnist(options: DataOptions):
    root = str(options.root or FASHION_MNIST_ROOT)
    if not Path(root).is_dir():
        raise SpikeFitValueError(f"data fashion-mnist: folder {root!r} does not exist (give root=DIR, on the "
                                 f"command line --data-root DIR, holding the IDX files, or install "
                                 f"dataset-fashion-mnist)")
    return fashion_mnist(root, limit_train=options.limit, limit_test=options.limit)


def _tonic(name: str, options: DataOptions):
    from .events import load_events

    if options.root is None:
        raise SpikeFitValueError(f"data tonic:{name} needs root=DIR (on the command line --data-root DIR), the "
                                 f"folder holding the data set (nothing is downloaded)")
    return load_events(name, options.root, n_time_bins=options.num_steps, limit_train=options.limit,
                       limit_test=options.limit)


register_data_source("digits", _digits, help="scikit-learn's 8x8 digits, built in")
register_data_source("fashion-mnist", _fashion_mnist, help=f"IDX files in root (--data-root), default "
                                                           f"{FASHION_MNIST_ROOT}")
register_data_source("tonic", _tonic, prefix=True, time_major=True,
                     help="tonic event data set NMNIST/DVSGesture/POKERDVS read from root (--data-root), "
                          "never downloaded")
