"""Hostile and bad inputs to the API and the CLI: each case names the error class and a phrase of it.

A case's ``make(tmp)`` returns ``(model, action)``: ``action()`` must raise ``error`` with
``phrase`` in its message, and ``model`` (when not ``None``) must come out exactly as it went in
(state_dict bytes, module structure). CLI cases return an ``action`` that calls ``spikefit``'s
``main`` and raises :class:`CLIFailure` with the captured output, so the same assertions hold.
Used by tests/test_hostile.py and benchmarks/hostile_corpus.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import nir
import numpy as np
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.checkpoint import UntrustedCheckpointError
from snn_spikefit.errors import InputMismatchError, NotWrappedError, SpikeFitTypeError, SpikeFitValueError
from snn_spikefit.nir.safety import UnsafeNIRFileError


class CLIFailure(Exception):
    """``spikefit`` exited with a non-zero code; ``str()`` is its stderr (and stdout with --json)."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        super().__init__(stderr + stdout)
        self.code, self.stdout, self.stderr = code, stdout, stderr


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], tuple[nn.Module | None, Callable[[], Any]]]
    error: type
    phrase: str


def snn_net(hidden: int = 8) -> nn.Module:
    import snntorch as snn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, hidden), snn.Leaky(beta=0.9, init_hidden=True), nn.Linear(hidden, 3),
                         snn.Leaky(beta=0.9, init_hidden=True))


def plain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))


def data(labels=None):
    torch.manual_seed(1)
    y = torch.tensor([0, 1, 2, 0]) if labels is None else labels
    return [(torch.rand(4, 6) * 3, y), (torch.rand(4, 6) * 3, y)]


def _nan(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    return model


def _bn(var=0.0, eps=0.0, mean=0.0, gamma=1.0, w=None) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 3), nn.BatchNorm1d(3, eps=eps)).eval()
    with torch.no_grad():
        net[1].weight.fill_(gamma)
        if w is not None:
            net[0].weight.fill_(w)
    net[1].running_var.fill_(var)
    net[1].running_mean.fill_(mean)
    return net


def _wrapped(**kw) -> nn.Module:
    return sf.wrap(plain(), m=3, **kw)


def _raise(msg):
    def finetune(model):
        raise ValueError(msg)
    return finetune


def _boom() -> nn.Module:
    raise ValueError("no")


def _evil_pickle(tmp: Path, via_torch: bool) -> tuple[Path, Path]:
    marker = tmp / ("pwned_torch" if via_torch else "pwned_pickle")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp / ("evil.pt" if via_torch else "evil.pth")
    if via_torch:
        torch.save({"state_dict": Evil()}, path)
    else:
        path.write_bytes(pickle.dumps(Evil()))
    return path, marker


def _checkpoint_case(via_torch: bool):
    def make(tmp):
        path, marker = _evil_pickle(tmp, via_torch)

        def action():
            try:
                sf.load_checkpoint(path, plain)
            finally:
                assert not marker.exists(), "the pickle ran code"
        return None, action
    return make


def _save_full(tmp):
    path = tmp / "full.pt"
    torch.save(plain(), path)
    return None, lambda: sf.load_checkpoint(path)


def _conv_graph_bomb():
    g = nir.NIRGraph(nodes={
        "input": nir.Input(np.array([1, 64, 64])),
        "conv": nir.Conv2d(input_shape=None, weight=np.ones((60000, 1, 1, 1), np.float32), stride=1, padding=0,
                           dilation=1, groups=1, bias=np.zeros(60000, np.float32)),
        "output": nir.Output(np.array([1]))},
        edges=[("input", "conv"), ("conv", "output")], type_check=False)
    return None, lambda: sf.import_nir(g, "snntorch", dt=1e-3)


def _recurrent_graph_bomb():
    """A recurrent graph (lif -> rec -> lif) whose neuron declares a 200000 x 200000 state."""
    lif = nir.LIF(tau=np.full(3, 0.01), r=np.full(3, 10.0), v_leak=np.zeros(3), v_threshold=np.ones(3),
                  v_reset=np.zeros(3))
    lif.output_type = {"output": np.array([200000, 200000])}
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([4])), "fc": nir.Linear(np.ones((3, 4), np.float32)),
                            "lif": lif, "rec": nir.Linear(np.ones((3, 3), np.float32)),
                            "output": nir.Output(np.array([3]))},
                     edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")],
                     type_check=False)
    return None, lambda: sf.import_nir(g, "snntorch", dt=1e-3)


def cli(*argv) -> Callable[[], Any]:
    """An action running ``spikefit ARGV`` in-process; raises :class:`CLIFailure` unless it exits 0."""
    from snn_spikefit.cli import main

    def action():
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:
                code = exc.code
        if code != 0:
            raise CLIFailure(code, out.getvalue(), err.getvalue())
    return action


def _state_dict_file(tmp, model):
    path = tmp / "net.pt"
    torch.save(model.state_dict(), path)
    (tmp / "factories.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"
        "def boom():\n    raise RuntimeError('factory exploded')\n")
    return path, f"{tmp / 'factories.py'}"


def _cli_export_wrong_shape(json_flag: bool):
    def make(tmp):
        path, factories = _state_dict_file(tmp, nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
        extra = ["--json"] if json_flag else []
        return None, cli("export", path, "--model-factory", f"{factories}:build", "--input-shape", 1, 8, 9,
                         "--out", tmp / "o.nir", *extra)
    return make


def _cli_evil(tmp):
    path, marker = _evil_pickle(tmp, True)
    run = cli("check", path, "--hardware", "loihi", "--input-shape", 6)

    def action():
        try:
            run()
        finally:
            assert not marker.exists(), "the pickle ran code"
    return None, action


def _cli_factory_raises(tmp):
    path, factories = _state_dict_file(tmp, nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    return None, cli("check", path, "--model-factory", f"{factories}:boom", "--hardware", "loihi")


def _linear_nir(tmp) -> Path:
    path = tmp / "linear.nir"
    sf.export_nir(nn.Sequential(nn.Linear(6, 3)), torch.rand(1, 6), path, dt=1e-3)
    return path


def _cli_small_limit(tmp):
    path = tmp / "ok.nir"
    sf.export_nir(nn.Sequential(nn.Linear(6, 3)), torch.rand(1, 6), path, dt=1e-3)
    return None, cli("check", path, "--hardware", "loihi", "--max-nir-bytes", 64)


CASES: list[Case] = [
    # -- wrap
    Case("wrap_m_huge", lambda t: (m := plain(), lambda: sf.wrap(m, m=10**30)), SpikeFitValueError,
         "m must be in 2..65536"),
    Case("wrap_m_1", lambda t: (m := plain(), lambda: sf.wrap(m, m=1)), SpikeFitValueError, "at least 2 values"),
    Case("wrap_m_str", lambda t: (m := plain(), lambda: sf.wrap(m, m="4")), SpikeFitTypeError, "m must be an int"),
    Case("wrap_bits_9", lambda t: (m := plain(), lambda: sf.wrap(m, bits=9)), SpikeFitValueError,
         "bits must be in 2..8"),
    Case("wrap_bits_m_clash", lambda t: (m := plain(), lambda: sf.wrap(m, m=16, bits=4)), SpikeFitValueError,
         "at most 2**bits - 1 = 15"),
    Case("wrap_granularity", lambda t: (m := plain(), lambda: sf.wrap(m, granularity="diag")), SpikeFitValueError,
         "granularity='diag' is not allowed"),
    Case("wrap_init", lambda t: (m := plain(), lambda: sf.wrap(m, init="magic")), SpikeFitValueError,
         "init='magic' is not allowed"),
    Case("wrap_nan_weights", lambda t: (m := _nan(plain()), lambda: sf.wrap(m, m=4)), SpikeFitValueError,
         "NaN/inf weights"),
    Case("wrap_twice", lambda t: (m := _wrapped(), lambda: sf.wrap(m, m=4)), SpikeFitValueError, "already wrapped"),
    Case("wrap_include_nothing", lambda t: (m := plain(), lambda: sf.wrap(m, include="conv*")), SpikeFitValueError,
         "matches no compressible layer"),
    Case("wrap_loihi_bits_33", lambda t: (m := plain(), lambda: sf.wrap(m, hardware="loihi", bits=33)),
         SpikeFitValueError, "use bits in 2..8"),
    Case("wrap_not_a_module", lambda t: (None, lambda: sf.wrap("net")), SpikeFitTypeError, "must be a torch.nn.Module"),
    # -- freeze, strip, commitment_loss, fold_batchnorm
    Case("commitment_loss_str", lambda t: (None, lambda: sf.commitment_loss("str")), SpikeFitTypeError,
         "model must be a torch.nn.Module, got str"),
    Case("commitment_loss_unwrapped", lambda t: (m := plain(), lambda: sf.commitment_loss(m)), NotWrappedError,
         "needs a model prepared by snn_spikefit.wrap"),
    Case("freeze_str", lambda t: (None, lambda: sf.freeze("str")), SpikeFitTypeError, "model must be a torch.nn.Module, got str"),
    Case("freeze_unwrapped", lambda t: (m := plain(), lambda: sf.freeze(m)), NotWrappedError, "freeze needs a model"),
    Case("strip_unwrapped", lambda t: (m := plain(), lambda: sf.strip(m)), NotWrappedError, "strip needs a model"),
    Case("fold_str", lambda t: (None, lambda: sf.fold_batchnorm("str")), SpikeFitTypeError,
         "model must be a torch.nn.Module, got str"),
    Case("fold_var0_eps0", lambda t: (m := _bn(), lambda: sf.fold_batchnorm(m)), SpikeFitValueError,
         "BatchNorm '1' cannot be folded into '0'"),
    Case("fold_negative_var", lambda t: (m := _bn(var=-1.0, eps=1e-5), lambda: sf.fold_batchnorm(m)),
         SpikeFitValueError, "NaN/inf values"),
    Case("fold_nan_mean", lambda t: (m := _bn(var=1.0, eps=1e-5, mean=float("nan")), lambda: sf.fold_batchnorm(m)),
         SpikeFitValueError, "folded bias has 3 NaN/inf"),
    Case("fold_overflowing_weight", lambda t: (m := _bn(var=1.0, eps=0.0, gamma=1e20, w=1e20), lambda: sf.fold_batchnorm(m)),
         SpikeFitValueError, "its folded weight has"),
    # -- run
    Case("run_1d_x", lambda t: (m := snn_net(), lambda: sf.run(m, torch.rand(6), num_steps=3)), SpikeFitValueError,
         "x must be a batch [B, ...]"),
    Case("run_wrong_features", lambda t: (m := snn_net(), lambda: sf.run(m, torch.rand(2, 7), num_steps=3)),
         InputMismatchError, "layer '0' (Linear) takes inputs [..., 6]"),
    Case("run_int_dtype", lambda t: (m := snn_net(), lambda: sf.run(m, torch.ones(2, 6, dtype=torch.long), num_steps=2)),
         InputMismatchError, "gets (2, 6) (torch.int64)"),
    Case("run_nan_x", lambda t: (m := snn_net(), lambda: sf.run(m, torch.full((2, 6), float("nan")), num_steps=2)),
         SpikeFitValueError, "NaN or inf"),
    Case("run_num_steps_0", lambda t: (m := snn_net(), lambda: sf.run(m, torch.rand(2, 6), num_steps=0)),
         SpikeFitValueError, "num_steps=0 is not allowed"),
    Case("run_conv_channels", lambda t: (m := nn.Sequential(nn.Conv2d(2, 3, 3)),
                                         lambda: sf.run(m, torch.rand(1, 1, 5, 5), num_steps=2)),
         InputMismatchError, "takes inputs [B, 2, ..., ...]"),
    # -- prune
    Case("prune_labels_out_of_range", lambda t: (m := snn_net(), lambda: sf.prune(
        m, data(torch.tensor([0, 1, 5, 0])), amount=0.5, progress=False)), SpikeFitValueError, "class indices in 0..2"),
    Case("prune_float_labels", lambda t: (m := snn_net(), lambda: sf.prune(
        m, data(torch.rand(4)), amount=0.5, progress=False)), SpikeFitValueError, "class indices"),
    Case("prune_fails_in_step_2", lambda t: (m := snn_net(), lambda: sf.prune(
        m, data(), amount=0.5, steps=2, finetune=_raise("finetune broke"), progress=False)), ValueError, "finetune broke"),
    Case("prune_amount_1", lambda t: (m := snn_net(), lambda: sf.prune(m, data(), amount=1.0, progress=False)),
         SpikeFitValueError, "amount=1.0 is not allowed"),
    Case("prune_empty_data", lambda t: (m := snn_net(), lambda: sf.prune(m, [], amount=0.5, progress=False)),
         SpikeFitValueError, "data yielded no batch"),
    # -- export
    Case("export_nan_weight", lambda t: (m := _nan(snn_net()), lambda: sf.export_nir(m, torch.rand(1, 6))),
         SpikeFitValueError, "layer '0' (NIR Affine) has 1 NaN/inf values in its 'weight'"),
    Case("export_wrong_sample", lambda t: (m := snn_net(), lambda: sf.export_nir(m, torch.rand(1, 5))),
         InputMismatchError, "takes inputs [..., 6]"),
    Case("export_1d_sample", lambda t: (m := snn_net(), lambda: sf.export_nir(m, torch.rand(6))),
         SpikeFitValueError, "sample must be a batch tensor"),
    # -- compress (works on a copy; the model must not change either way)
    Case("compress_data_mismatch", lambda t: (m := snn_net(), lambda: sf.compress(
        m, ([(torch.rand(4, 7), torch.tensor([0, 1, 2, 0]))],) * 2, hardware="loihi", epochs=0, progress=False)),
        sf.SpikeFitError,
        "cannot take"),
    # -- checkpoints
    Case("checkpoint_torch_pickle_os_system", _checkpoint_case(True), UntrustedCheckpointError,
         "pass trust=True / --trust-checkpoint"),
    Case("checkpoint_plain_pickle_os_system", _checkpoint_case(False), UntrustedCheckpointError,
         "unpickling them can run code"),
    Case("checkpoint_full_module_untrusted", _save_full, UntrustedCheckpointError, "holds pickled Python objects"),
    Case("checkpoint_factory_raises", lambda t: (None, lambda: (torch.save(plain().state_dict(), t / "s.pt"),
                                                              sf.load_checkpoint(t / "s.pt", _boom))),
         SpikeFitValueError, "failed: ValueError: no"),
    Case("checkpoint_missing", lambda t: (None, lambda: sf.load_checkpoint(t / "nope.pt")), SpikeFitValueError,
         "does not exist"),
    # -- NIR graphs given as objects, and the limit itself
    Case("import_max_bytes_0", lambda t: (None, lambda: sf.import_nir(t / "x.nir", "snntorch", max_bytes=0)),
         SpikeFitValueError, "max_bytes=0 is not allowed"),
    Case("import_graph_nan", lambda t: (None, lambda: sf.import_nir(nir.NIRGraph(
        nodes={"input": nir.Input(np.array([2])), "fc": nir.Linear(np.array([[np.inf, 1.0]])),
               "output": nir.Output(np.array([1]))}, edges=[("input", "fc"), ("fc", "output")], type_check=False),
        "snntorch", dt=1e-3)), SpikeFitValueError, "NIR node 'fc' (Linear): field 'weight'"),
    Case("import_graph_conv_output_bomb", lambda t: _conv_graph_bomb(), UnsafeNIRFileError,
         "NIR node 'conv' (Conv2d): its output declares shape (60000, 64, 64)"),
    Case("import_graph_recurrent_state_bomb", lambda t: _recurrent_graph_bomb(), UnsafeNIRFileError,
         "'output_type.output' declares shape (200000, 200000)"),
    # -- the CLI contract: exit 2, one line, --json error object
    Case("cli_export_wrong_input_shape", _cli_export_wrong_shape(False), CLIFailure,
         "layer '1' (Linear) takes inputs [..., 64]"),
    Case("cli_export_wrong_input_shape_json", _cli_export_wrong_shape(True), CLIFailure, '"error": {'),
    Case("cli_check_evil_checkpoint", _cli_evil, CLIFailure, "--trust-checkpoint"),
    Case("cli_model_factory_raises", _cli_factory_raises, CLIFailure, "failed: RuntimeError: factory exploded"),
    Case("cli_max_nir_bytes", _cli_small_limit, CLIFailure, "over the size limit of 64 bytes"),
    Case("cli_compress_loihi_bits_33", lambda t: (None, cli("compress", _linear_nir(t), "--hardware", "loihi",
                                                            "--bits", 33, "--out", t / "c.nir", "--no-progress")),
         CLIFailure, "use bits in 2..8"),
    Case("cli_evaluate_plain_pickle", lambda t: (None, cli("evaluate", _evil_pickle(t, False)[0], "--limit", 8)),
         CLIFailure, "holds pickled Python objects"),
]


def json_error(stdout: str) -> dict:
    """The JSON error object ``spikefit --json`` printed on stdout."""
    return json.loads(stdout)["error"]
