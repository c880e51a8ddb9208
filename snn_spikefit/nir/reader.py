"""Reading a ``.nir`` file: the HDF5 pre-pass first, then ``nir.read``; and one named error for the rest.

>>> import torch, snn_spikefit as sf
>>> from torch import nn
>>> _ = sf.export_nir(nn.Sequential(nn.Linear(4, 2)), torch.rand(1, 4), "/tmp/_reader_doc.nir", dt=1e-3)
>>> sorted(read_nir("/tmp/_reader_doc.nir").nodes)
['0', 'input', 'output']
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import nir

from ..errors import SpikeFitError, SpikeFitTypeError, SpikeFitValueError
from .safety import DEFAULT_MAX_BYTES, check_nir_file

__all__ = ["read_nir", "named_errors"]


def read_nir(graph_or_path: Any, *, max_bytes: int = DEFAULT_MAX_BYTES) -> nir.NIRGraph:
    """A ``nir.NIRGraph`` from a graph or a file written by ``nir.write``, with clear errors.

    A file is first checked by :func:`~snn_spikefit.nir.safety.check_nir_file` (links, storage,
    dtypes, declared sizes against ``max_bytes``) before ``nir.read`` reads any of its data.
    """
    if isinstance(graph_or_path, nir.NIRGraph):
        return graph_or_path
    if not isinstance(graph_or_path, (str, os.PathLike)):
        raise SpikeFitTypeError(
            f"graph_or_path must be a nir.NIRGraph or a path to a .nir file, got {type(graph_or_path).__name__}")
    path = Path(graph_or_path)
    if not path.is_file():
        raise SpikeFitValueError(f"NIR file {str(path)!r} does not exist")
    check_nir_file(path, max_bytes=max_bytes)
    try:
        graph = nir.read(path, type_check=False)
    except Exception as exc:  # h5py / nir raise OSError, KeyError, ValueError, AssertionError ...
        raise SpikeFitValueError(
            f"{str(path)!r} is not a readable NIR file (an HDF5 file written by nir.write): "
            f"{type(exc).__name__}: {exc}") from None
    if not isinstance(graph, nir.NIRGraph):
        raise SpikeFitValueError(f"{str(path)!r} holds a single NIR {type(graph).__name__}, not a NIRGraph")
    return graph


@contextmanager
def named_errors() -> Iterator[None]:
    """Anything a hostile graph still provokes becomes one named error, never a raw one."""
    try:
        yield
    except SpikeFitError:
        raise
    except Exception as exc:
        raise SpikeFitValueError(f"the NIR graph cannot be imported: {type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:300]}") from None
