"""Hostile files and bad input (issue 12): nothing runs, nothing leaks, nothing is half-changed.

The corpus is generated here (tests/hostile_files.py: .nir files; tests/hostile_api.py: API and
CLI calls). Every case asserts the error class and a phrase of its message; API cases also that the
model's state_dict and module structure are exactly as before; file cases, imported one after the
other in a fresh interpreter, that the peak memory grew by less than :data:`MEMORY_BOUND_MIB`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch

import snn_spikefit as sf
from snn_spikefit.nir.safety import DEFAULT_MAX_BYTES, UnsafeNIRFileError, check_nir_file

from conftest import HAS_SNNTORCH

pytestmark = pytest.mark.skipif(not HAS_SNNTORCH, reason="the corpus's models use snntorch")

if HAS_SNNTORCH:
    import hostile_api
    import hostile_files

HERE = Path(__file__).resolve().parent
#: Most the process's peak memory may grow while one hostile file is refused.
MEMORY_BOUND_MIB = 64


def model_state(model):
    """Everything 'unchanged' means: state_dict bytes (NaN-safe) and the module structure."""
    if model is None:
        return None
    return ({k: (v.dtype, tuple(v.shape), v.detach().cpu().numpy().tobytes()) for k, v in model.state_dict().items()},
            [(name, type(m).__name__) for name, m in model.named_modules()])


# -- API and CLI cases, in-process --------------------------------------------------------------------

@pytest.mark.parametrize("case", hostile_api.CASES if HAS_SNNTORCH else [], ids=lambda c: c.id)
def test_api_case_fails_with_a_named_error_and_leaves_the_model_as_it_was(case, tmp_path):
    model, action = case.make(tmp_path)
    before = model_state(model)
    with pytest.raises(case.error) as info:
        action()
    assert case.phrase in str(info.value), str(info.value)
    assert model_state(model) == before
    if isinstance(info.value, hostile_api.CLIFailure):
        failure = info.value
        assert failure.code == 2 and "Traceback" not in failure.stderr
        assert len(failure.stderr.strip().splitlines()) == 1, failure.stderr
    elif case.error is not ValueError:  # the one user error passed through (a finetune that raises)
        assert isinstance(info.value, sf.SpikeFitError)


def test_json_error_object_and_debug_traceback(tmp_path):
    _, action = hostile_api.CASES[[c.id for c in hostile_api.CASES].index("cli_export_wrong_input_shape_json")].make(
        tmp_path)
    with pytest.raises(hostile_api.CLIFailure) as info:
        action()
    error = hostile_api.json_error(info.value.stdout)
    assert error["command"] == "export" and error["type"] == "InputMismatchError" and error["exit_code"] == 2
    assert "takes inputs [..., 64]" in error["message"]
    with pytest.raises(hostile_api.CLIFailure) as info:
        hostile_api.cli("--debug", "check", tmp_path / "none.pt", "--hardware", "loihi")()
    assert "Traceback" in info.value.stderr and info.value.stderr.strip().endswith("does not exist or is not a file")


def test_an_unexpected_error_also_exits_2_with_one_line(tmp_path, monkeypatch):
    import snn_spikefit.cli.check as check_cli

    def broken(*args, **kwargs):
        raise KeyError("internal")
    monkeypatch.setattr(check_cli, "load_model", broken)  # a bug anywhere: still exit 2, never 1
    with pytest.raises(hostile_api.CLIFailure) as info:
        hostile_api.cli("check", tmp_path / "x.nir", "--hardware", "loihi")()
    assert info.value.code == 2 and info.value.stderr.count("\n") == 1
    assert "KeyError: 'internal' (an unexpected error; --debug shows the traceback)" in info.value.stderr


def test_trusted_checkpoint_loads_a_whole_module(tmp_path):
    net = hostile_api.plain()
    torch.save(net, tmp_path / "full.pt")
    loaded = sf.load_checkpoint(tmp_path / "full.pt", trust=True)
    assert torch.equal(loaded[0].weight, net[0].weight)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "sd.pt")
    assert torch.equal(sf.load_checkpoint(tmp_path / "sd.pt", hostile_api.plain)[2].bias, net[2].bias)


# -- files, in a fresh interpreter with a memory bound -------------------------------------------------

@pytest.fixture(scope="module")
def file_results(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    files = hostile_files.make_files(d)
    jobs = [{"id": k, "path": str(p), "max_bytes": hostile_files.FILE_CASES[k][3]} for k, p in files.items()]
    jobs += [{"id": "control_valid", "path": str(d / "valid.nir")},
             {"id": "control_gzip_bomb_with_a_raised_limit", "path": str(files["gzip_bomb"]), "max_bytes": 64 * 2**20},
             {"id": "control_bomb_without_a_limit", "path": str(files["input_150M"]), "max_bytes": 2**40}]
    jobs += hostile_files.cli_file_jobs(files, d)
    (d / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, str(HERE / "hostile_files.py"), str(d / "jobs.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["id"]: r for r in map(json.loads, proc.stdout.splitlines())}, jobs


CLI_FILE_PHRASES = hostile_files.CLI_FILE_PHRASES if HAS_SNNTORCH else {}


@pytest.mark.slow  # one fresh interpreter imports the whole corpus (a few seconds)
@pytest.mark.parametrize("case", sorted(hostile_files.FILE_CASES) if HAS_SNNTORCH else [])
def test_hostile_file_is_refused_by_name_within_the_memory_bound(case, file_results):
    _, error, phrase, _ = hostile_files.FILE_CASES[case]
    result = file_results[0][case]
    assert result["named"], result
    assert result["error"] == error or error == "SpikeFitError", result
    assert phrase in result["message"], result["message"]
    assert result["peak_growth_mib"] < MEMORY_BOUND_MIB, result


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CLI_FILE_PHRASES))
def test_cli_on_a_hostile_file_exits_2_with_one_line(case, file_results):
    result = file_results[0][case]
    assert result["exit"] == 2, result
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1 and CLI_FILE_PHRASES[case] in lines[0], result["stderr"]
    assert result["peak_growth_mib"] < MEMORY_BOUND_MIB, result
    if "--json" in next(j for j in file_results[1] if j["id"] == case)["argv"]:
        assert CLI_FILE_PHRASES[case] in hostile_api.json_error(result["stdout"])["message"]
    assert not Path(next(j for j in file_results[1] if j["id"] == case)["out"]).exists()  # nothing written


@pytest.mark.slow
def test_controls_import_valid_files_and_the_limit_can_be_raised(file_results):
    results = file_results[0]
    assert results["control_valid"]["error"] is None, results["control_valid"]
    assert results["control_gzip_bomb_with_a_raised_limit"]["error"] is None
    # the measurement sees a real allocation: with the limit lifted, the 150M-float input costs ~572 MiB
    assert results["control_bomb_without_a_limit"]["peak_growth_mib"] > 500


# -- the pre-pass itself ---------------------------------------------------------------------------

def test_pre_pass_accepts_soft_links_inside_the_file_and_sees_every_dataset(tmp_path):
    path = hostile_files.base_file(tmp_path / "ok.nir")
    facts = check_nir_file(path)
    with h5py.File(path, "r+") as f:
        f["/node/nodes/fc/metadata/alias"] = h5py.SoftLink("/node/nodes/fc/bias")  # stays inside: allowed
    again = check_nir_file(path)
    assert again.datasets == facts.datasets + 1 and again.declared_bytes == facts.declared_bytes + 12
    assert isinstance(sf.import_nir(path, "snntorch"), torch.nn.Module)


def test_size_limit_names_node_size_and_limit_and_is_documented(tmp_path):
    path = hostile_files.base_file(tmp_path / "ok.nir")
    with pytest.raises(UnsafeNIRFileError, match=r"NIR node 'graph': dataset '/node/edges' declares shape \(3, 2\) "
                                                 r"of strings = 96 bytes, over the size limit of 40 bytes"):
        check_nir_file(path, max_bytes=40)
    assert DEFAULT_MAX_BYTES == 256 * 2**20
    assert "max_bytes" in sf.import_nir.__doc__ and "--max-nir-bytes" in (HERE.parent / "README.md").read_text()



# -- fuzz ------------------------------------------------------------------------------------------

#: Mutated files per run (derandomized, so every run tries the same ones).
FUZZ_EXAMPLES = 150


@pytest.mark.slow  # a fresh interpreter, FUZZ_EXAMPLES imports (10-60 s on a shared machine)
def test_fuzzed_nir_files_give_only_named_errors_within_the_memory_bound(tmp_path):
    proc = subprocess.run([sys.executable, str(HERE / "fuzz_nir.py"), str(tmp_path), str(FUZZ_EXAMPLES)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["examples"] == FUZZ_EXAMPLES and summary["other"] == [], summary["other"][:5]
    assert summary["named"] > FUZZ_EXAMPLES // 2 and summary["imported"] > 0  # the mutations bite, and not all
    assert summary["peak_growth_mib"] < MEMORY_BOUND_MIB, summary


# -- all or nothing: a failure half-way through a verb ----------------------------------------------

def _fail_on_second_call(monkeypatch, module, name):
    real, calls = getattr(module, name), []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError(f"injected failure in {name}")
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, flaky)


@pytest.mark.parametrize("verb, module, name", [
    ("freeze", "snn_spikefit.quantize.wrap", "install_frozen"),
    ("strip", "snn_spikefit.quantize.wrap", "remove_parametrization"),
    ("wrap", "torch.nn.utils.parametrize", "register_parametrization"),
    ("prune", "snn_spikefit.pruning.prune", "remove_channels"),
])
def test_a_verb_that_fails_half_way_leaves_the_model_exactly_as_it_was(verb, module, name, monkeypatch):
    import importlib

    net = hostile_api.snn_net()
    if verb in ("freeze", "strip"):
        sf.wrap(net, m=3, bits=4)
    x = torch.rand(2, 6)
    out_before = sf.run(net, x, num_steps=3)
    before, ids = model_state(net), [id(p) for p in net.parameters()]
    _fail_on_second_call(monkeypatch, importlib.import_module(module), name)
    calls = {"freeze": lambda: sf.freeze(net), "strip": lambda: sf.strip(net), "wrap": lambda: sf.wrap(net, m=3),
             "prune": lambda: sf.prune(net, hostile_api.data(), amount=0.5, steps=2, progress=False)}
    with pytest.raises(RuntimeError, match=f"injected failure in {name}"):
        calls[verb]()
    assert model_state(net) == before and [id(p) for p in net.parameters()] == ids
    monkeypatch.undo()
    assert torch.equal(sf.run(net, x, num_steps=3), out_before)  # and it still runs the same


def test_fold_batchnorm_refusing_the_second_pair_changes_nothing():
    net = torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2),
                              torch.nn.BatchNorm1d(2, eps=0.0)).eval()
    net[3].running_var.zero_()
    before = model_state(net)
    with pytest.raises(sf.SpikeFitValueError, match="BatchNorm '3' cannot be folded into '2'"):
        sf.fold_batchnorm(net)
    assert model_state(net) == before
