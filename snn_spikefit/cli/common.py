"""Options, model loading and data loading shared by the ``spikefit`` commands.

Every command spells a concept the same way: ``--hardware/--profile``, ``--data``,
``--data-root``, ``--num-steps``, ``--batch-size``, ``--limit``, ``--json``, ``--out``,
``--no-progress``, ``--seed``. Anything wrong with what the user gave (a path, a
module, a checkpoint, a data set that does not fit the model) becomes a
:class:`~snn_spikefit.errors.SpikeFitError`, which ``spikefit`` prints as one line
with exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..adapter import nir_frameworks
from ..checkpoint import TRUST_HELP, load_checkpoint
from ..nir.safety import DEFAULT_MAX_BYTES, format_bytes
from ..data.sources import LoadedData, data_source_help, load_callable
from ..data.sources import load_data as load_data_source
from ..errors import SpikeFitValueError
from ..pipeline.steps import check_fits as check_model_fits

__all__ = [
    "add_model_args", "add_hardware_arg", "add_data_args", "add_output_args", "load_model", "load_data",
    "load_callable", "LoadedModel", "LoadedData", "check_fits", "emit", "note", "relay_warnings",
    "CHECKPOINT_SUFFIXES",
]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
TRUST_NOTE = ("a checkpoint is read with torch.load(weights_only=True), which runs no code from the file; a "
              "whole pickled module needs --trust-checkpoint")


# -- options -----------------------------------------------------------------------------------------

def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help=f"a .nir file, or a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) saved with "
                        f"torch.save(model) or a state_dict (then give --model-factory; snnTorch and Norse "
                        f"modules usually do not pickle, so save model.state_dict()); {TRUST_NOTE}")
    p.add_argument("--model-factory", metavar="MODULE:FUNCTION",
                   help="for a state_dict checkpoint: a function returning the model to load it into, as "
                        "'package.module:function' or 'path/to/file.py:function'")
    p.add_argument("--framework", choices=nir_frameworks(), default=None,
                   help="framework a .nir file is imported into (default: the first of these)")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    p.add_argument("--max-nir-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N",
                   help=f"refuse a .nir file whose datasets declare more than N bytes in all, or whose shapes "
                        f"declare a larger tensor (default {DEFAULT_MAX_BYTES} = {format_bytes(DEFAULT_MAX_BYTES)})")
    p.add_argument("--dt", type=float, metavar="SECONDS",
                   help="step in seconds a .nir MODEL's neuron constants are discretised with (default: the file's "
                        "spikefit.dt, else the step its gains imply, e.g. 1e-4 for snnTorch's exporter, else 1e-3, "
                        "with a warning); `spikefit export` also writes the graph with it")


def add_hardware_arg(p: argparse.ArgumentParser, *, required: bool = False, default: str | None = None) -> None:
    p.add_argument("--hardware", "--profile", dest="hardware", required=required, default=default,
                   metavar="NAME", help="hardware profile (see `spikefit profiles`)"
                   + (f" (default {default})" if default else ""))


def add_data_args(p: argparse.ArgumentParser, *, default: str | None = "digits", num_steps: int = 4) -> None:
    p.add_argument("--data", default=default, metavar="SOURCE",
                   help=f"{data_source_help()}: datasets or loaders (default {default}); a name registered "
                        f"with snn_spikefit.data.register_data_source before the command runs is listed here too")
    p.add_argument("--data-root", metavar="DIR",
                   help="folder of fashion-mnist's IDX files or of a tonic data set (<DIR>/NMNIST/Train/...)")
    p.add_argument("--time-major", action="store_true",
                   help="a user module's inputs are time-major [T, B, ...] (run without --num-steps repetition)")
    p.add_argument("--num-steps", type=int, default=num_steps, metavar="T",
                   help=f"timesteps: a static input is repeated T times; event data is framed into T bins "
                        f"(default {num_steps})")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="batch size (default 64)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N training and N test samples")
    p.add_argument("--seed", type=int, default=0, help="random seed for shuffling and training (default 0)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch (default: torch's choice; 1 is fastest for small models)")


def add_output_args(p: argparse.ArgumentParser, *, out_help: str) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", metavar="PATH", help=out_help)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars and stage messages")


# -- messages -----------------------------------------------------------------------------------------

def note(args: argparse.Namespace, text: str) -> None:
    """A stage message on stderr (stdout stays clean for --json)."""
    if not getattr(args, "no_progress", False):
        print(f"spikefit {args.command}: {text}", file=sys.stderr)


@contextlib.contextmanager
def relay_warnings(args: argparse.Namespace) -> Iterator[None]:
    """Show each distinct warning once, as one line on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        if issubclass(w.category, DeprecationWarning):
            continue
        text = " ".join(str(w.message).split())
        if text not in seen:
            seen.add(text)
            print(f"spikefit {args.command}: warning: {text}", file=sys.stderr)


def emit(args: argparse.Namespace, text: str, payload: dict[str, Any]) -> None:
    """Print ``payload`` as JSON with --json, else ``text``."""
    if args.json:
        print(json.dumps(payload, indent=2, default=_jsonable))
    else:
        print(text)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# -- models -------------------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """A model read from MODEL, and the input shape it declares (NIR files only)."""

    model: nn.Module
    source: str
    kind: str                                 # "nir" or "checkpoint"
    input_shape: tuple[int, ...] | None       # one sample, from the NIR Input node


def _nir_input_shape(path: Path, max_bytes: int) -> tuple[int, ...] | None:
    from ..nir.importer import graph_input_shape, read_nir

    return graph_input_shape(read_nir(path, max_bytes=max_bytes))  # less a batch of 1 that stock exporters declare


def load_model(args: argparse.Namespace) -> LoadedModel:
    """The model of ``args.model``: a .nir file (imported) or a checkpoint (full module or state_dict)."""
    from ..nir.importer import import_nir

    path = Path(args.model)
    if not path.is_file():
        raise SpikeFitValueError(f"MODEL {args.model!r} does not exist or is not a file")
    max_bytes = getattr(args, "max_nir_bytes", DEFAULT_MAX_BYTES)
    if path.suffix == ".nir":
        shape = _nir_input_shape(path, max_bytes)
        with relay_warnings(args):
            model = import_nir(path, args.framework, dt=getattr(args, "dt", None), max_bytes=max_bytes)
        return LoadedModel(model, str(path), "nir", shape)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise SpikeFitValueError(f"MODEL {args.model!r} has suffix {path.suffix!r}; use a .nir file or a "
                                 f"checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")
    factory = getattr(args, "model_factory", None)
    build = None if factory is None else load_callable(factory, "--model-factory")
    trust = bool(getattr(args, "trust_checkpoint", False))
    if trust:
        note(args, f"--trust-checkpoint: unpickling {str(path)!r} with weights_only=False (it can run code)")
    model = load_checkpoint(path, build, trust=trust, factory_name=f"--model-factory {factory}")
    return LoadedModel(model, str(path), "checkpoint", None)


# -- data ---------------------------------------------------------------------------------------------

def load_data(args: argparse.Namespace) -> LoadedData:
    """The data of ``--data``, through the registry of :mod:`snn_spikefit.data.sources`."""
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise SpikeFitValueError(f"--threads={args.threads} is not allowed; use an int >= 1")
        torch.set_num_threads(args.threads)
    for name in ("num_steps", "batch_size", "limit"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise SpikeFitValueError(f"--{name.replace('_', '-')}={value} is not allowed; use an int >= 1")
    return load_data_source(args.data, root=getattr(args, "data_root", None), num_steps=args.num_steps,
                            batch_size=getattr(args, "batch_size", 64), limit=getattr(args, "limit", None),
                            seed=getattr(args, "seed", 0), time_major=bool(getattr(args, "time_major", False)))


def wants_flat_inputs(loaded: LoadedModel, shape: tuple[int, ...]) -> bool:
    """The model's first layer takes ``shape`` flattened: a NIR input of ``(prod(shape),)``, or (a
    checkpoint) a first ``Linear`` with ``prod(shape)`` inputs and no ``Flatten`` before it."""
    if len(shape) < 2:
        return False
    size = math.prod(shape)
    if loaded.input_shape is not None:
        return tuple(loaded.input_shape) == (size,)
    for module in loaded.model.modules():
        if isinstance(module, nn.Flatten):
            return False
        cls = parametrize.type_before_parametrizations(module)
        if issubclass(cls, (nn.Linear, nn.modules.conv._ConvNd)):
            return issubclass(cls, nn.Linear) and module.in_features == size
    return False


def check_fits(loaded: LoadedModel, data: LoadedData, args: argparse.Namespace | None = None) -> LoadedData:
    """The data the model can take: flattened when its first layer asks for it (said on stderr), or a
    refusal naming both shapes when it cannot take the inputs or has too few outputs."""
    if wants_flat_inputs(loaded, data.sample_shape):
        if args is not None:
            note(args, f"--data {data.name} gives inputs of shape {data.sample_shape}; the model's first layer "
                       f"takes {math.prod(data.sample_shape)} features: flattening each sample")
        data = data.flattened()
    if loaded.input_shape is not None and tuple(loaded.input_shape) != data.sample_shape:
        raise SpikeFitValueError(
            f"model {loaded.source!r} expects inputs of shape {tuple(loaded.input_shape)} per sample, "
            f"--data {data.name} gives {data.sample_shape}")
    check_model_fits(loaded.model, data, model_name=f"model {loaded.source!r}", data_name=f"--data {data.name}")
    return data


def model_sample(args: argparse.Namespace, loaded: "LoadedModel") -> Tensor | None:
    """A one-sample input for ``loaded``: from ``--input-shape``, ``--data``, or the NIR file's input node."""
    if getattr(args, "input_shape", None):
        if any(d < 1 for d in args.input_shape):
            raise SpikeFitValueError(f"--input-shape {args.input_shape} is not allowed; use positive sizes")
        return torch.zeros(1, *args.input_shape)
    if getattr(args, "data", None):
        for name, value in (("batch_size", 2), ("limit", 2), ("seed", 0), ("time_major", False)):
            setattr(args, name, value)
        data = load_data(args)
        return (data.flattened() if wants_flat_inputs(loaded, data.sample_shape) else data).sample(1)
    if loaded.input_shape is not None:
        return torch.zeros(1, *loaded.input_shape)
    return None
