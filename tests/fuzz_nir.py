"""A bounded fuzz of the NIR reader: hypothesis mutates a valid file; only SpikeFitError may come out.

``python tests/fuzz_nir.py DIR EXAMPLES`` runs in a fresh interpreter (an HDF5 crash cannot take
pytest down with it, and the peak memory is its own) and prints one JSON summary: examples run,
files imported, named refusals, any other exception (with the mutation), and the growth of peak
memory. Mutations: truncation, flipped bytes, and through h5py: changed shapes (including
unwritten huge ones), changed dtypes, deleted members, added external/soft/hard links.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DTYPES = ["f4", "f8", "i1", "i8", "u1", "u8", "c8", "V4", "bool", "S3", "str", "vlen_i4", "ref"]
SHAPES = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple) | st.sampled_from(
    [(10**5, 10**5), (2**31,), (60000, 60000)])


def _members(path: Path) -> list[str]:
    names: list[str] = []
    with h5py.File(path, "r") as f:
        f.visit(names.append)
    return sorted(names)


def _dataset(f, name, shape, dtype):
    big = int(np.prod(shape, dtype=object)) > 10**6
    if dtype == "str":
        return f.create_dataset(name, shape=shape, dtype=h5py.string_dtype())
    if dtype == "vlen_i4":
        return f.create_dataset(name, shape=shape, dtype=h5py.vlen_dtype("i4"))
    if dtype == "ref":
        return f.create_dataset(name, shape=shape, dtype=h5py.ref_dtype)
    kw = {"chunks": True} if big else {}
    return f.create_dataset(name, shape=shape, dtype=np.dtype(dtype), **kw)


def mutate(path: Path, other: Path, op) -> None:
    kind = op[0]
    if kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: int(op[1] * len(data))])
        return
    if kind == "flip":
        data = bytearray(path.read_bytes())
        for where, value in op[1]:
            data[int(where * (len(data) - 1))] = value
        path.write_bytes(bytes(data))
        return
    with h5py.File(path, "r+") as f:
        names = sorted(n for n in _members(path) if n != "")
        target = names[op[1] % len(names)]
        parent = target.rsplit("/", 1)[0] if "/" in target else ""
        if kind == "reshape":
            del f[target]
            _dataset(f, target, op[2], op[3])
        elif kind == "delete":
            del f[target]
        elif kind == "external_link":
            f[f"{parent}/x_ext"] = h5py.ExternalLink(str(other), "/w")
        elif kind == "soft_link":
            f[f"{parent}/x_soft"] = h5py.SoftLink(op[2])
        elif kind == "hard_link" and isinstance(f[target], h5py.Group):
            f[f"{target}/x_loop"] = f[target]
        elif kind == "nan" and isinstance(f[target], h5py.Dataset) and f[target].dtype.kind == "f":
            data = f[target][()]
            del f[target]
            f[target] = np.full_like(data, np.nan)


OPS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("reshape"), st.integers(0, 999), SHAPES, st.sampled_from(DTYPES)),
    st.tuples(st.just("delete"), st.integers(0, 999)),
    st.tuples(st.just("external_link"), st.integers(0, 999)),
    st.tuples(st.just("soft_link"), st.integers(0, 999), st.sampled_from(["/nowhere", "/node/nodes", "x/../..",
                                                                            "/node/x_ext/w"])),
    st.tuples(st.just("hard_link"), st.integers(0, 999)),
    st.tuples(st.just("nan"), st.integers(0, 999)),
)


def main(d: Path, examples: int) -> dict:
    import snn_spikefit as sf
    from hostile_files import base_file, peak_kib, reset_peak

    base = base_file(d / "valid.nir")
    other = d / "other.h5"
    with h5py.File(other, "w") as f:
        f["w"] = np.ones((3, 4), np.float32)
    counts = {"examples": 0, "imported": 0, "named": 0, "other": []}
    before = reset_peak()

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(ops=st.lists(OPS, min_size=1, max_size=3))
    def fuzz(ops):
        path = d / "case.nir"
        shutil.copy(base, path)
        try:
            for op in ops:
                mutate(path, other, op)
        except Exception:  # h5py cannot make this mutation (e.g. the file is already truncated): skip it
            pass
        counts["examples"] += 1
        try:
            sf.import_nir(path, "snntorch")
            counts["imported"] += 1
        except sf.SpikeFitError:
            counts["named"] += 1
        except Exception as exc:  # noqa: BLE001 - what the fuzz looks for
            counts["other"].append(f"{ops!r}: {type(exc).__name__}: {exc}"[:400])

    fuzz()
    counts["peak_growth_mib"] = (peak_kib() - before) / 1024
    return counts


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]))))
