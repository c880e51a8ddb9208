"""What a ``.nir`` file may contain before anything in it is read: one pass over its HDF5 structure.

A ``.nir`` file comes from elsewhere (colleagues, papers, model zoos, CI artifacts), so
:func:`~snn_spikefit.import_nir` trusts nothing in it. :func:`check_nir_file` walks every
link, group and dataset of the file through HDF5's metadata only (no dataset is read) and
refuses, naming the NIR node and the HDF5 path:

* external links, and soft links that do not resolve to an object inside the file through
  hard links (a link can make ``nir.read`` open any other file on the machine);
* datasets with external raw storage or virtual (mapped) storage (the same: their bytes live
  in other files);
* data types other than numbers, booleans and strings: object references, opaque, compound,
  enum, array and variable-length non-string types (NIR stores none of them; an object
  dtype must never reach ``np.array``/``float``);
* compression filters other than HDF5's built-in ones (gzip, shuffle, fletcher32, szip,
  n-bit, scale-offset, lzf);
* cycles of hard links, more than :data:`MAX_LINKS` links or a nesting deeper than
  :data:`MAX_DEPTH`;
* a dataset, or all datasets together, whose *declared* size (shape times item size, read
  from the metadata, whatever is actually stored or compressed) exceeds ``max_bytes``.

HDF5 attributes are not checked: ``nir.read`` never reads them. The limit bounds what the file
declares; reading and building a model holds a few copies of that (numpy arrays, then tensors).

``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`, 256 MiB) also bounds what the importer
allocates for the shapes the graph declares (see :func:`check_declared_size`). Change it
with ``import_nir(..., max_bytes=...)`` or ``spikefit ... --max-nir-bytes N``.

>>> import torch, snn_spikefit as sf
>>> from torch import nn
>>> _ = sf.export_nir(nn.Sequential(nn.Linear(40, 2)), torch.rand(1, 40), "/tmp/_safety_doc.nir", dt=1e-3)
>>> facts = check_nir_file("/tmp/_safety_doc.nir")
>>> facts.datasets > 0, facts.declared_bytes < DEFAULT_MAX_BYTES
(True, True)
>>> check_nir_file("/tmp/_safety_doc.nir", max_bytes=200)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
snn_spikefit.nir.safety.UnsafeNIRFileError: NIR node '0': dataset '/node/nodes/0/weight' declares shape (2, 40) of float32 = 320 bytes, over the size limit of 200 bytes (max_bytes=200; ...)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SpikeFitValueError

__all__ = ["check_nir_file", "check_declared_size", "check_max_bytes", "UnsafeNIRFileError", "NIRFileFacts",
           "DEFAULT_MAX_BYTES", "MAX_LINKS", "MAX_DEPTH", "ALLOWED_FILTERS", "format_bytes"]

#: Default limit on what a NIR file may make the importer allocate (declared dataset sizes,
#: all together, and any one tensor of the declared shapes): 256 MiB.
DEFAULT_MAX_BYTES = 256 * 2**20
#: Most links (group members) one file may hold; ``nir.read`` visits each.
MAX_LINKS = 100_000
#: Deepest nesting of groups.
MAX_DEPTH = 32
#: HDF5's built-in filters (id -> name); a file asking for any other filter is refused.
ALLOWED_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset",
                   32000: "lzf"}
#: Bytes one variable-length string element costs at most before its characters (the heap
#: characters themselves are inside the file, so bounded by its size).
_VLEN_ELEMENT_BYTES = 16


class UnsafeNIRFileError(SpikeFitValueError):
    """A ``.nir`` file holds something the importer refuses to read (a link out, a size over the limit ...)."""


@dataclass(frozen=True)
class NIRFileFacts:
    """What :func:`check_nir_file` saw: counts of links and datasets, total declared bytes."""

    links: int
    datasets: int
    declared_bytes: int


def format_bytes(n: int) -> str:
    """``n`` bytes for people: ``'32 bytes'``, ``'1.5 KiB'``, ``'14.4 GiB'``.

    >>> format_bytes(32), format_bytes(1536), format_bytes(int(14.4 * 2**30))
    ('32 bytes', '1.5 KiB', '14.4 GiB')
    """
    if n < 1024:
        return f"{n} bytes"
    for unit, size in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20),
                       ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"  # pragma: no cover


def check_max_bytes(max_bytes: Any) -> int:
    """``max_bytes`` as an int, refused unless it is a positive int."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
        raise SpikeFitValueError(f"max_bytes={max_bytes!r} is not allowed; use a positive int (bytes), "
                                 f"default {DEFAULT_MAX_BYTES} ({format_bytes(DEFAULT_MAX_BYTES)})")
    return int(max_bytes)


def _limit_text(max_bytes: int) -> str:
    return (f"the size limit of {format_bytes(max_bytes)} (max_bytes={max_bytes}; raise it with "
            f"import_nir(..., max_bytes=...) or --max-nir-bytes)")


def node_of(path: str) -> str:
    """The NIR node an HDF5 path belongs to: ``/node/nodes/fc/weight`` -> ``'fc'`` (nested: ``'g.fc'``)."""
    parts = [p for p in path.split("/") if p]
    names = [parts[i + 1] for i, p in enumerate(parts[:-1]) if p == "nodes"]
    return ".".join(names) if names else "graph"


def check_declared_size(what: str, shape: Any, max_bytes: int, *, itemsize: int = 4) -> int:
    """Refuse, naming ``what``, a tensor of ``shape`` (batch of one) larger than ``max_bytes``; its bytes."""
    dims = [int(d) for d in shape]
    size = math.prod(max(d, 0) for d in dims) * itemsize
    if size > max_bytes:
        raise UnsafeNIRFileError(f"{what} declares shape {tuple(dims)} = {format_bytes(size)} as float32, over "
                                 f"{_limit_text(max_bytes)}")
    return size


def _refuse(path: str, text: str) -> UnsafeNIRFileError:
    return UnsafeNIRFileError(f"NIR node {node_of(path)!r}: {text}; the file is refused before any data is read")


def _dtype_problem(dtype: np.dtype, h5py) -> str | None:
    """Why a dataset's dtype is refused, or ``None`` for numbers, booleans and strings."""
    if h5py.check_string_dtype(dtype) is not None:
        return None
    if h5py.check_ref_dtype(dtype) is not None:
        return "an object-reference dtype"
    if h5py.check_vlen_dtype(dtype) is not None:
        return f"a variable-length dtype of {h5py.check_vlen_dtype(dtype)}"
    if dtype.subdtype is not None:
        return f"an array dtype {dtype}"
    if dtype.kind == "b":
        return None
    if h5py.check_enum_dtype(dtype) is not None:
        return "an enum dtype"
    if dtype.kind in "iuf":
        return None
    kinds = {"V": "an opaque or compound dtype", "O": "an object dtype", "c": "a complex dtype"}
    return f"{kinds.get(dtype.kind, 'dtype')} {dtype}"


def _check_dataset(ds, path: str, max_bytes: int, h5py) -> int:
    """Refuse a dataset whose storage or dtype is not allowed; its declared bytes."""
    if ds.is_virtual:
        return _raise(_refuse(path, f"dataset {path!r} is a virtual dataset (its data maps other files)"))
    external = ds.external
    if external:
        files = sorted({str(e[0]) for e in external})
        return _raise(_refuse(path, f"dataset {path!r} keeps its data in external files {files}"))
    problem = _dtype_problem(ds.dtype, h5py)
    if problem is not None:
        return _raise(_refuse(path, f"dataset {path!r} has {problem}; NIR files hold numbers and strings only"))
    dcpl = ds.id.get_create_plist()
    for i in range(dcpl.get_nfilters()):
        code = int(dcpl.get_filter(i)[0])
        if code not in ALLOWED_FILTERS:
            return _raise(_refuse(path, f"dataset {path!r} needs HDF5 filter {code}; allowed filters are "
                                        f"{sorted(ALLOWED_FILTERS.values())}"))
    shape = ds.shape if ds.shape is not None else ()
    itemsize = _VLEN_ELEMENT_BYTES if ds.dtype.kind == "O" else max(int(ds.dtype.itemsize), 1)
    size = math.prod(int(d) for d in shape) * itemsize
    if size > max_bytes:
        raise UnsafeNIRFileError(
            f"NIR node {node_of(path)!r}: dataset {path!r} declares shape {tuple(int(d) for d in shape)} of "
            f"{ds.dtype if ds.dtype.kind != 'O' else 'strings'} = {format_bytes(size)}, "
            f"over {_limit_text(max_bytes)}")
    return size


def _raise(exc: Exception) -> int:
    raise exc


def _resolve_soft(f, link_path: str, target: str, h5py) -> None:
    """Refuse a soft link unless its target exists inside the file, reached through hard links only."""
    if not target.startswith("/"):
        base = link_path.rsplit("/", 1)[0] or "/"
        target = f"{base.rstrip('/')}/{target}"
    node = f["/"]
    walked = ""
    for part in [p for p in target.split("/") if p]:
        if part in (".", ".."):
            raise _refuse(link_path, f"soft link {link_path!r} -> {target!r} uses '.'/'..'")
        link = node.get(part, getlink=True) if isinstance(node, h5py.Group) else None
        walked += f"/{part}"
        if not isinstance(link, h5py.HardLink):
            kind = "does not exist" if link is None else f"goes through a {type(link).__name__} at {walked!r}"
            raise _refuse(link_path, f"soft link {link_path!r} -> {target!r} {kind}; links must stay inside "
                                     f"the file")
        node = node[part]


def check_nir_file(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> NIRFileFacts:
    """Walk the HDF5 structure of ``path`` (metadata only) and refuse anything a NIR file must not hold.

    Raises :class:`UnsafeNIRFileError` (a ``SpikeFitValueError``) naming the NIR node, the HDF5 path
    and, for sizes, the declared size and the limit; a file that is not HDF5 at all raises
    ``SpikeFitValueError``. See the module docstring for the rules.
    """
    import h5py

    max_bytes = check_max_bytes(max_bytes)
    try:
        f = h5py.File(Path(path), "r", locking=False)
    except Exception as exc:
        raise SpikeFitValueError(f"{str(path)!r} is not a readable NIR file (an HDF5 file written by nir.write): "
                                 f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    try:
        with f:
            return _walk(f, max_bytes, h5py)
    except SpikeFitValueError:
        raise
    except Exception as exc:  # a damaged header deep inside the file
        raise SpikeFitValueError(f"{str(path)!r} is not a readable NIR file: its HDF5 structure is damaged "
                                 f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None


def _walk(f, max_bytes: int, h5py) -> NIRFileFacts:
    links = datasets = total = 0
    root = h5py.h5o.get_info(f["/"].id)
    stack: list[tuple[Any, str, tuple]] = [(f["/"], "", ((root.fileno, root.addr),))]
    while stack:
        group, gpath, ancestors = stack.pop()
        if len(ancestors) > MAX_DEPTH:
            raise _refuse(gpath, f"groups nest deeper than {MAX_DEPTH} levels at {gpath!r}")
        for name in group:
            links += 1
            if links > MAX_LINKS:
                raise _refuse(gpath, f"the file holds more than {MAX_LINKS} links")
            path = f"{gpath}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise _refuse(path, f"{path!r} is an external link to {link.filename!r}:{link.path!r}; links "
                                    f"must stay inside the file")
            if isinstance(link, h5py.SoftLink):
                _resolve_soft(f, path, link.path, h5py)
            elif not isinstance(link, h5py.HardLink):
                raise _refuse(path, f"{path!r} is a {type(link).__name__}, not a link inside the file")
            obj = group.get(name)
            if isinstance(obj, h5py.Dataset):
                datasets += 1
                total += _check_dataset(obj, path, max_bytes, h5py)
                if total > max_bytes:
                    raise UnsafeNIRFileError(
                        f"NIR node {node_of(path)!r}: the file's datasets declare {format_bytes(total)} in all "
                        f"(up to {path!r}), over {_limit_text(max_bytes)}")
            elif isinstance(obj, h5py.Group):
                info = h5py.h5o.get_info(obj.id)
                key = (info.fileno, info.addr)
                if key in ancestors:
                    raise _refuse(path, f"group {path!r} contains itself (a cycle of hard links)")
                stack.append((obj, path, ancestors + (key,)))
    return NIRFileFacts(links, datasets, total)
