"""A corpus of hostile and malformed ``.nir`` files, generated (no binary blobs), and a runner.

Every case starts from one valid file (a wrapped, frozen ``Linear -> Leaky`` exported by
``export_nir``) and changes it through h5py or its raw bytes. :data:`FILE_CASES` maps a case
id to ``(make, error class, phrase, max_bytes)``. ``python tests/hostile_files.py DIR`` imports
every file of DIR (made by :func:`make_files`) in one fresh interpreter, one after the other,
and prints one JSON line per case: the error class, its message, whether it is a
``SpikeFitError``, and the growth of the process's peak memory (VmHWM, reset before each call) during the call.
The same runner drives CLI cases (``{"argv": [...]}``) through ``spikefit``'s ``main``.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

NODE = "/node/nodes/fc"
LIF = "/node/nodes/lif"
META = "/node/nodes/fc/metadata"


def base_file(path: Path) -> Path:
    """The valid file every case starts from: input(4) -> fc (frozen codebook, bits=4) -> lif -> output."""
    import snntorch as snn
    import torch
    from torch import nn

    import snn_spikefit as sf

    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("fc", nn.Linear(4, 3))
    net.add_module("lif", snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero"))
    sf.wrap(net, m=3, bits=4)
    sf.freeze(net)
    sf.export_nir(net, torch.rand(1, 4), path, dt=1e-3)
    return path


def _replace(f: h5py.File, path: str, data, **kw) -> None:
    del f[path]
    f.create_dataset(path, data=data, **kw)


def _shape_bomb(shape):
    return lambda f, d: _replace(f, "/node/nodes/input/shape", np.array(shape, dtype=np.int64))


def _raw(transform: Callable[[bytes], bytes]):
    def make(path: Path, d: Path) -> None:
        path.write_bytes(transform(path.read_bytes()))
    make.raw = True
    return make


def _secret(d: Path) -> Path:
    secret = d / "secret.bin"
    secret.write_bytes(b"SECRET-" * 4)
    return secret


def _external_storage(f, d):
    secret = _secret(d)
    del f[f"{NODE}/weight"]
    f.create_dataset(f"{NODE}/weight", shape=(3, 4), dtype="f4", external=[(str(secret), 0, 48)])


def _virtual(f, d):
    layout = h5py.VirtualLayout(shape=(3, 4), dtype="f4")
    layout[:] = h5py.VirtualSource(str(d / "other.h5"), "/w", shape=(3, 4))
    del f[f"{NODE}/weight"]
    f.create_virtual_dataset(f"{NODE}/weight", layout)


def _soft_through_external(f, d):
    f["/node/outside"] = h5py.ExternalLink(str(d / "other.h5"), "/")
    del f[f"{NODE}/weight"]
    f[f"{NODE}/weight"] = h5py.SoftLink("/node/outside/w")


def _ref(f, d):
    del f[f"{META}/spikefit.m"]
    f.create_dataset(f"{META}/spikefit.m", shape=(), dtype=h5py.ref_dtype)[()] = f[f"{NODE}/bias"].ref


def _cycle(f, d):
    f[f"{NODE}/loop"] = f[NODE]


def _deep(f, d):
    g = f[META]
    for i in range(40):
        g = g.create_group(f"g{i}")


def _many_under_limit(f, d):
    for i in range(5):  # 5 x 64 MiB declared, each under the 256 MiB limit; nothing written
        f.create_dataset(f"{META}/spikefit.pad{i}", shape=(2**24,), dtype="f4", chunks=(2**16,))


def _meta(key, value, **kw):
    def make(f, d):
        path = f"{META}/{key}"
        if path in f:
            del f[path]
        f.create_dataset(path, data=value, **kw)
    return make


def _field(path, value, **kw):
    return lambda f, d: _replace(f, path, value, **kw)


def _node_type(f, d, name, type_name, fields):
    g = f.create_group(f"/node/nodes/{name}")
    g.create_dataset("type", data=type_name, dtype=h5py.string_dtype())
    for k, v in fields.items():
        g.create_dataset(k, data=v)


def _conv(**overrides):
    """Replace fc by a Conv2d node (input 1x4x4) with the given fields overridden."""
    def make(f, d):
        del f[NODE]
        fields = dict(weight=np.ones((2, 1, 3, 3), np.float32), bias=np.zeros(2, np.float32),
                      stride=np.array([1, 1]), padding=np.array([1, 1]), dilation=np.array([1, 1]),
                      groups=np.int64(1), input_shape=np.array([4, 4]))
        fields.update(overrides)
        _node_type(f, d, "fc", "Conv2d", {k: v for k, v in fields.items() if v is not None})
        _replace(f, "/node/nodes/input/shape", np.array([1, 4, 4]))
    return make


def _scale_bomb(f, d):  # Scale of shape (20000, 1) times an input (20000,) broadcasts to 20000 x 20000
    del f[NODE]
    _node_type(f, d, "fc", "Scale", {"scale": np.ones((20000, 1), np.float32)})
    _replace(f, "/node/nodes/input/shape", np.array([20000]))


def _edge_to_missing(f, d):
    _replace(f, "/node/edges", np.array([["input", "fc"], ["fc", "ghost"], ["lif", "output"]], dtype=object),
             dtype=h5py.string_dtype())


#: id -> (make(f or path, dir), error class name, phrase of the message, max_bytes or None)
FILE_CASES: dict[str, tuple] = {
    # -- links, storage and dtypes that reach outside the file or hold objects
    "external_link": (lambda f, d: f.__setitem__(f"{NODE}/extra", h5py.ExternalLink(str(_secret(d)), "/x")),
                      "UnsafeNIRFileError", "is an external link to", None),
    "external_link_as_weight": (lambda f, d: (f.__delitem__(f"{NODE}/weight"), f.__setitem__(
        f"{NODE}/weight", h5py.ExternalLink(str(d / "other.h5"), "/w"))), "UnsafeNIRFileError", "external link", None),
    "soft_link_dangling": (lambda f, d: f.__setitem__(f"{NODE}/extra", h5py.SoftLink("/nowhere")),
                           "UnsafeNIRFileError", "does not exist; links must stay inside the file", None),
    "soft_link_through_external": (_soft_through_external, "UnsafeNIRFileError", "external link", None),
    "soft_link_dotdot": (lambda f, d: f.__setitem__(f"{NODE}/extra", h5py.SoftLink("../../x")),
                         "UnsafeNIRFileError", "uses '.'/'..'", None),
    "external_storage": (_external_storage, "UnsafeNIRFileError", "keeps its data in external files", None),
    "virtual_dataset": (_virtual, "UnsafeNIRFileError", "is a virtual dataset", None),
    "object_reference": (_ref, "UnsafeNIRFileError", "object-reference dtype", None),
    "opaque_pickle": (_meta("spikefit.m", np.void(pickle.dumps(print))), "UnsafeNIRFileError", "opaque", None),
    "vlen_ints": (lambda f, d: f.create_dataset(f"{META}/spikefit.extra", shape=(2,), dtype=h5py.vlen_dtype("i4")),
                  "UnsafeNIRFileError", "variable-length dtype", None),
    "compound": (_field(f"{NODE}/bias", np.zeros(3, dtype=[("a", "f4"), ("b", "i4")])), "UnsafeNIRFileError",
                 "compound dtype", None),
    "enum": (lambda f, d: _replace(f, f"{META}/spikefit.bits", np.int8(4),
                                   dtype=h5py.enum_dtype({"A": 4}, basetype="i1")), "UnsafeNIRFileError", "enum", None),
    "complex": (_field(f"{NODE}/bias", np.zeros(3, np.complex64)), "UnsafeNIRFileError", "complex dtype", None),
    "array_dtype": (lambda f, d: (f.__delitem__(f"{NODE}/bias"), f.create_dataset(
        f"{NODE}/bias", shape=(3,), dtype=np.dtype("(2,)f4"))), "UnsafeNIRFileError", "array dtype", None),
    "hard_link_cycle": (_cycle, "UnsafeNIRFileError", "contains itself", None),
    "deep_nesting": (_deep, "UnsafeNIRFileError", "nest deeper than", None),
    # -- sizes: refused from the metadata, before anything is allocated
    "input_150M": (_shape_bomb([150_000_000]), "UnsafeNIRFileError", "over the size limit", None),
    "input_2e5x2e5": (_shape_bomb([200_000, 200_000]), "UnsafeNIRFileError", "over the size limit", None),
    "unwritten_60000x60000": (lambda f, d: (f.__delitem__(f"{NODE}/weight"), f.create_dataset(
        f"{NODE}/weight", shape=(60000, 60000), dtype="f4", chunks=(256, 256))), "UnsafeNIRFileError",
        "declares shape (60000, 60000) of float32 = 13.4 GiB", None),
    "gzip_bomb": (lambda f, d: f.create_dataset(f"{META}/spikefit.pad", data=np.zeros(2**23, np.float32),
                                                compression="gzip", compression_opts=9),
                  "UnsafeNIRFileError", "32.0 MiB, over the size limit of 16.0 MiB", 16 * 2**20),
    "many_datasets_in_all": (_many_under_limit, "UnsafeNIRFileError", "in all", None),
    "scale_broadcast_bomb": (_scale_bomb, "SpikeFitValueError", "shape mismatch at node 'fc' (Scale)", None),
    "conv_output_bomb": (_conv(weight=np.ones((60000, 1, 1, 1), np.float32), bias=np.zeros(60000, np.float32),
                               padding=np.array([0, 0]), input_shape=np.array([64, 64])), "UnsafeNIRFileError",
                         "declares shape (60000, 64, 64) = 937.5 MiB", None),
    # -- fields import_nir reads
    "nan_weight": (_field(f"{NODE}/weight", np.full((3, 4), np.nan, np.float32)), "SpikeFitValueError",
                   "'weight' has 12 NaN/inf", None),
    "inf_bias": (_field(f"{NODE}/bias", np.array([0, np.inf, 0], np.float32)), "SpikeFitValueError",
                 "'bias' has 1 NaN/inf", None),
    "nan_tau": (_field(f"{LIF}/tau", np.full(3, np.nan)), "SpikeFitValueError", "'tau' has 3 NaN/inf", None),
    "bits_99": (_meta("spikefit.bits", np.int64(99)), "SpikeFitValueError", "spikefit.bits=99 is not allowed", None),
    "m_minus_5": (_meta("spikefit.m", np.int64(-5)), "SpikeFitValueError", "spikefit.m=-5 is not allowed", None),
    "m_array": (_meta("spikefit.m", np.array([3, 3])), "SpikeFitValueError", "'spikefit.m' is an array", None),
    "codes_negative": (_meta("spikefit.codes", -np.ones((1, 12), np.int64)), "SpikeFitValueError",
                       "negative entries", None),
    "codes_float": (_meta("spikefit.codes", np.zeros((1, 12), np.float32)), "SpikeFitValueError",
                    "must be 2-d integers", None),
    "codes_out_of_range": (_meta("spikefit.codes", np.full((1, 12), 7, np.uint8)), "SpikeFitValueError",
                           "does not reproduce its weight", None),
    "codebook_int_too_wide": (_meta("spikefit.codebook_int", np.array([[-100, 0, 100]], np.int16)),
                              "SpikeFitValueError", "|k| <= 7 (bits=4)", None),
    "scale_negative": (_meta("spikefit.scale", np.array([-1.0], np.float32)), "SpikeFitValueError",
                       "'spikefit.scale' must be positive", None),
    "granularity_bad": (_meta("spikefit.granularity", "diagonal", dtype=h5py.string_dtype()), "SpikeFitValueError",
                        "use 'layer' or 'channel'", None),
    "codebook_missing": (lambda f, d: f.__delitem__(f"{META}/spikefit.codebook"), "SpikeFitValueError",
                         "lacks 'spikefit.codebook'", None),
    "dt_array": (lambda f, d: _replace(f, "/node/metadata/spikefit.dt", np.array([1e-3, 1e-3])),
                 "SpikeFitValueError", "'spikefit.dt' is an array of shape (2,)", None),
    "dt_negative": (lambda f, d: _replace(f, "/node/metadata/spikefit.dt", np.float64(-1.0)),
                    "SpikeFitValueError", "it must be one positive finite number", None),
    "dt_string": (lambda f, d: _replace(f, "/node/metadata/spikefit.dt", "fast", dtype=h5py.string_dtype()),
                  "SpikeFitValueError", "'spikefit.dt' is 'fast'", None),
    "reset_not_string": (lambda f, d: f.create_dataset(f"{LIF}/metadata/spikefit.reset_mechanism", data=np.int64(3)),
                         "SpikeFitValueError", "must be a string", None),
    "weight_string": (_field(f"{NODE}/weight", "zeros", dtype=h5py.string_dtype()), "SpikeFitValueError",
                      "is not a readable NIR file", None),
    "weight_3d": (_field(f"{NODE}/weight", np.ones((3, 4, 1), np.float32)), "SpikeFitError", "3-d weight", None),
    "input_negative": (_shape_bomb([-4]), "SpikeFitValueError", "a shape is a list of positive integers", None),
    "input_fraction": (lambda f, d: _replace(f, "/node/nodes/input/shape", np.array([2.5])), "SpikeFitValueError",
                       "a shape is a list of positive integers", None),
    "conv_stride_0": (_conv(stride=np.array([0, 1])), "SpikeFitValueError", "is not a readable NIR file", None),
    "pool_stride_0": (lambda f, d: (f.__delitem__(NODE), _node_type(f, d, "fc", "AvgPool2d", dict(
        kernel_size=np.array([2, 2]), stride=np.array([0, 0]), padding=np.array([0, 0]))),
        _replace(f, "/node/nodes/input/shape", np.array([1, 4, 4]))), "SpikeFitValueError",
        "stride=[0, 0] is not allowed", None),
    "conv_padding_huge": (_conv(padding=np.array([10**6, 10**6])), "UnsafeNIRFileError",
                          "(2, 2000002, 2000002) = 29.1 TiB as float32, over the size limit", None),
    "conv_padding_wide": (_conv(padding=np.array([5, 5])), "SpikeFitValueError", "at most dilation * (kernel - 1)",
                          None),
    "conv_groups_0": (_conv(groups=np.int64(0)), "SpikeFitValueError", "groups=0 is not allowed", None),
    "conv_dilation_nan": (_conv(dilation=np.array([np.nan, 1.0])), "SpikeFitValueError",
                          "is not a readable NIR file", None),
    "edge_to_missing_node": (_edge_to_missing, "SpikeFitValueError", "which does not exist in the graph", None),
    "unknown_node_type": (_field(f"{NODE}/type", "Teleport", dtype=h5py.string_dtype()), "SpikeFitValueError",
                          "is not a readable NIR file", None),
    "no_input_node": (lambda f, d: f.__delitem__("/node/nodes/input"), "SpikeFitError", "input", None),
    # -- not HDF5 at all, or damaged
    "truncated_half": (_raw(lambda b: b[: len(b) // 2]), "SpikeFitValueError", "not a readable NIR file", None),
    "truncated_header": (_raw(lambda b: b[:100]), "SpikeFitValueError", "not a readable NIR file", None),
    "random_bytes": (_raw(lambda b: bytes(np.random.default_rng(0).integers(0, 256, len(b), dtype=np.uint8))),
                     "SpikeFitValueError", "not a readable NIR file", None),
    "empty": (_raw(lambda b: b""), "SpikeFitValueError", "not a readable NIR file", None),
    "pickle_not_hdf5": (_raw(lambda b: pickle.dumps({"weight": [1.0]})), "SpikeFitValueError",
                        "not a readable NIR file", None),
}


def make_files(d: Path) -> dict[str, Path]:
    """Write every case of :data:`FILE_CASES` into ``d``: id -> path (plus ``valid.nir`` and ``other.h5``)."""
    d.mkdir(parents=True, exist_ok=True)
    base = base_file(d / "valid.nir")
    with h5py.File(d / "other.h5", "w") as f:
        f["w"] = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = {}
    for case, (make, *_rest) in FILE_CASES.items():
        path = d / f"{case}.nir"
        shutil.copy(base, path)
        if getattr(make, "raw", False):
            make(path, d)
        else:
            with h5py.File(path, "r+") as f:
                make(f, d)
        out[case] = path
    return out


#: CLI runs on corpus files: id -> the phrase of the one line ``spikefit`` must print (exit code 2).
CLI_FILE_PHRASES = {
    "cli_export_external_link": "is an external link to",
    "cli_export_external_storage": "keeps its data in external files",
    "cli_check_input_150M": "over the size limit of 256.0 MiB",
    "cli_check_unwritten_60000x60000": "13.4 GiB",
    "cli_check_dt_array": "'spikefit.dt' is an array of shape (2,)",
    "cli_check_codes_negative": "'spikefit.codes' has negative entries",
    "cli_compress_gzip_bomb": "over the size limit of 16.0 MiB",
    "cli_evaluate_opaque_pickle": "opaque",
}


def cli_file_jobs(files: dict[str, Path], d: Path) -> list[dict]:
    """The runner's jobs for :data:`CLI_FILE_PHRASES` (``out``: a file that must not be written)."""
    out = str(d / "cli_out.nir")
    argvs = {
        "cli_export_external_link": ["export", files["external_link"], "--out", out, "--json"],
        "cli_export_external_storage": ["export", files["external_storage"], "--out", out],
        "cli_check_input_150M": ["check", files["input_150M"], "--hardware", "loihi"],
        "cli_check_unwritten_60000x60000": ["check", files["unwritten_60000x60000"], "--hardware", "loihi", "--json"],
        "cli_check_dt_array": ["check", files["dt_array"], "--hardware", "loihi"],
        "cli_check_codes_negative": ["check", files["codes_negative"], "--hardware", "loihi"],
        "cli_compress_gzip_bomb": ["compress", files["gzip_bomb"], "--hardware", "loihi", "--max-nir-bytes",
                                   str(16 * 2**20), "--epochs", "0", "--no-progress", "--out", out],
        "cli_evaluate_opaque_pickle": ["evaluate", files["opaque_pickle"], "--limit", "8"],
    }
    return [{"id": cid, "argv": [str(a) for a in argv], "out": out} for cid, argv in argvs.items()]


def cli_result_ok(result: dict) -> bool:
    """Exit code 2, one line on stderr holding the phrase, nothing written."""
    lines = result["stderr"].strip().splitlines()
    return result.get("exit") == 2 and len(lines) == 1 and CLI_FILE_PHRASES[result["id"]] in lines[0]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def reset_peak() -> int:
    """Reset the process's peak memory to what it uses now (Linux ``clear_refs``); the current KiB."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS")
    except OSError:  # not Linux: the peak since start, a looser bound
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_kib() -> int:
    """The peak resident memory since the last :func:`reset_peak` (KiB)."""
    try:
        return _status_kib("VmHWM")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _one(job: dict) -> dict:
    import contextlib
    import io

    import snn_spikefit as sf

    before = reset_peak()
    result: dict = {"id": job["id"]}
    try:
        if "argv" in job:
            from snn_spikefit.cli import main

            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                result["exit"] = main(job["argv"])
            result.update(stdout=out.getvalue(), stderr=err.getvalue())
        else:
            kw = {"max_bytes": job["max_bytes"]} if job.get("max_bytes") else {}
            sf.import_nir(job["path"], "snntorch", **kw)
            result["error"] = None
    except BaseException as exc:  # noqa: BLE001 - the corpus records whatever comes out
        result.update(error=type(exc).__name__, message=str(exc), named=isinstance(exc, sf.SpikeFitError))
    result["peak_growth_mib"] = (peak_kib() - before) / 1024
    return result


if __name__ == "__main__":  # python tests/hostile_files.py JOBS.json: one JSON line per job
    import resource
    import warnings

    warnings.simplefilter("ignore")
    import snn_spikefit  # noqa: F401  (imports before the memory baseline)
    import snntorch  # noqa: F401

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) for line in status if line.startswith("VmSize")) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + 6 * 2**30, hard))  # a bomb that got through fails here
    for job in json.loads(Path(sys.argv[1]).read_text()):
        print(json.dumps(_one(job)), flush=True)
