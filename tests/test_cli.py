"""The ``spikefit`` command line: end to end on a NIR file, every command, one-line errors."""

import contextlib
import io
import json
import subprocess
import sys
import warnings

import nir
import numpy as np
import pytest
import torch

import snn_spikefit as sf
import snn_spikefit.cli.common
from snn_spikefit.cli import build_parser, main
from snn_spikefit.data.datasets import digits, make_loader
from snn_spikefit.pipeline.report import layer_stats, write_report

from conftest import needs_snntorch

pytestmark = needs_snntorch


def run_cli(*argv):
    """``main(argv)`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def dense_model():
    from snn_spikefit.zoo.snntorch import dense_snn

    return dense_snn(64, 10, hidden=(16,))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = dense_model()
    train, _ = digits()
    sf.fit(model, make_loader(train, 64, shuffle=True), epochs=2, num_steps=4, lr=1e-2, progress=False)
    return model


@pytest.fixture(scope="module")
def original_nir(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("nir") / "original.nir"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # subtract reset kept in metadata
        sf.export_nir(trained, torch.zeros(1, 1, 8, 8), path)
    return path


@pytest.fixture(scope="module")
def compressed(original_nir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "small.nir"
    code, stdout, stderr = run_cli("compress", original_nir, "--hardware", "truenorth", "--epochs", 1, "--limit", 256,
                                   "--prune", 0.25, "--no-progress", "--threads", 1, "--out", out)
    return code, stdout, stderr, out


@pytest.mark.slow  # runs compress end to end
def test_compress_end_to_end_fits_truenorth(compressed):
    code, stdout, stderr, out = compressed
    assert code == 0, stderr
    assert "Traceback" not in stderr
    graph = nir.read(out)
    weighted = [n for n in graph.nodes.values() if hasattr(n, "weight")]
    assert len(weighted) == 2
    for node in weighted:
        rows = np.asarray(node.weight).reshape(np.asarray(node.weight).shape[0], -1)
        assert max(len(np.unique(r)) for r in rows) <= 4
        assert "spikefit.codes" in node.metadata
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["check_before"]["ok"] is False and record["check_after"]["ok"] is True
    assert all(r["distinct_per_neuron_after"] <= 4 < r["distinct_per_neuron_before"] for r in record["layers"])
    hidden = record["layers"][0]
    assert hidden["channels_before"] == 16 and hidden["channels_after"] == 12  # floor(0.25 * 16) removed
    assert record["settings"]["m"] == 4 and record["settings"]["granularity"] == "channel"
    for path in record["files"]:
        assert (out.parent / path.split("/")[-1]).is_file()
    assert out.with_suffix(".md").read_text().count("![") == 4
    assert "compressed" in stdout and "OK" in stdout


@pytest.mark.slow  # runs compress end to end
def test_check_compressed_passes_and_original_lists_violations(compressed, original_nir):
    out = compressed[3]
    code, stdout, _ = run_cli("check", out, "--hardware", "truenorth")
    assert code == 0 and "OK" in stdout
    code, stdout, _ = run_cli("check", original_nir, "--profile", "truenorth")
    assert code == 1
    assert "distinct_weights_per_neuron" in stdout and "weight_bits" in stdout and "FAILED" in stdout
    code, stdout, _ = run_cli("check", original_nir, "--hardware", "truenorth", "--json")
    result = json.loads(stdout)
    assert code == 1 and result["ok"] is False
    assert {v["rule"] for v in result["violations"]} == {"distinct_weights_per_neuron", "weight_bits"}


@pytest.mark.slow  # runs compress end to end
def test_compressed_nir_imports_with_the_same_accuracy_as_reported(compressed):
    out = compressed[3]
    record = json.loads(out.with_suffix(".json").read_text())
    code, stdout, _ = run_cli("evaluate", out, "--hardware", "truenorth", "--limit", 256, "--json", "--no-progress")
    assert code == 0
    assert json.loads(stdout)["accuracy"] == pytest.approx(record["after"]["accuracy"])


FACTORIES = """
from snn_spikefit.zoo.snntorch import conv_snn, dense_snn
def conv():
    return conv_snn(1, 10, 8, channels=(4,))
def conv_bn():
    return conv_snn(1, 10, 8, channels=(4,), batch_norm=True)
def build():
    return dense_snn(64, 10, hidden=(16,))
def wrong():
    return dense_snn(64, 10, hidden=(8,))
"""


def state_dict_checkpoint(tmp_path, name):
    """snnTorch and Norse modules do not pickle (local surrogate functions): a state_dict + factory."""
    (tmp_path / "factories.py").write_text(FACTORIES)
    factory = f"{tmp_path / 'factories.py'}:{name}"
    torch.save(sf.cli.common.load_callable(factory, "test")().state_dict(), tmp_path / f"{name}.pt")
    return tmp_path / f"{name}.pt", factory


def test_compress_exits_1_when_the_chip_cannot_hold_the_result(tmp_path):
    path, factory = state_dict_checkpoint(tmp_path, "conv")
    code, stdout, stderr = run_cli("compress", path, "--model-factory", factory, "--hardware", "truenorth",
                                   "--epochs", 0, "--limit", 64, "--no-progress", "--out", tmp_path / "conv_tn.nir")
    assert code == 1, stderr  # a chip violation, found before any training: nothing is written
    assert "no native convolution" in stderr and not (tmp_path / "conv_tn.nir").exists()


def test_every_flag_is_documented_in_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert set(subparsers) == {"demo", "compress", "evaluate", "check", "profiles", "export", "verify"}
    for name, sub in subparsers.items():
        text = sub.format_help()
        for action in sub._actions:
            for option in action.option_strings:
                assert option in text, (name, option)
            if action.option_strings and action.dest != "help":
                assert action.help, (name, action.dest)


@pytest.mark.slow  # starts a fresh interpreter
def test_python_m_snn_spikefit_help_runs_as_a_program():
    result = subprocess.run([sys.executable, "-m", "snn_spikefit", "compress", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    assert "--hardware" in result.stdout and "torch.load(weights_only=True), which runs no code" in " ".join(result.stdout.split())


@pytest.mark.slow  # starts a fresh interpreter
def test_the_cli_imports_the_demo_and_snntorch_only_when_the_demo_runs():
    script = ("import sys\nfrom snn_spikefit.cli import main\nassert main(['profiles']) == 0\n"
              "print([m for m in ('snntorch', 'norse', 'snn_spikefit.zoo.demo', 'benchmarks') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _one_line_error(code, stderr, match):
    assert code == 2
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert match in lines[0], lines[0]


@pytest.mark.parametrize("argv, match", [
    (["check", "missing.nir", "--hardware", "truenorth"], "does not exist"),
    (["check", "{nir}", "--hardware", "nochip"], "unknown hardware profile 'nochip'"),
    (["check", "{garbage}", "--hardware", "truenorth"], "is not a readable NIR file"),
    (["evaluate", "{notmodel}", "--no-progress"], "not a model saved with torch.save(model)"),
    (["evaluate", "{notmodel}", "--model-factory", "no_such_module_xyz:build"], "cannot import 'no_such_module_xyz'"),
    (["evaluate", "{nir}", "--data", "{wrongdata}", "--no-progress"], "expects inputs of shape (1, 8, 8)"),
    (["evaluate", "{nir}", "--data", "tonic:NMNIST", "--no-progress"], "needs root=DIR (on the command line --data-root DIR)"),
    (["evaluate", "{nir}", "--data", "mnist", "--no-progress"], "is not allowed"),
    (["compress", "{nir}", "--hardware", "truenorth", "--out", "{tmp}/no/dir/x.nir"], "does not exist"),
    (["compress", "{nir}", "--hardware", "truenorth", "--m", "8"], "m=8 is not allowed on truenorth"),
    (["compress", "{nir}", "--hardware", "truenorth", "--prune", "1.5"], "--prune=1.5 is not allowed"),
    (["export", "{nir}", "--out", "{tmp}/x.txt"], "give a path ending in .nir"),
    (["profiles", "nochip"], "unknown hardware profile"),
    (["evaluate", "{model.txt}"], "has suffix '.txt'"),
])
def test_bad_input_gives_one_line_and_exit_2(argv, match, original_nir, tmp_path):
    (tmp_path / "garbage.nir").write_bytes(b"not an hdf5 file\n" * 10)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "notmodel.pt")
    (tmp_path / "model.txt").write_text("x")
    (tmp_path / "data.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def make():\n    ds = TensorDataset(torch.rand(8, 1, 5, 5), torch.arange(8) % 2)\n    return ds, ds\n")
    subs = {"{nir}": str(original_nir), "{garbage}": str(tmp_path / "garbage.nir"),
            "{notmodel}": str(tmp_path / "notmodel.pt"), "{wrongdata}": f"{tmp_path / 'data.py'}:make",
            "{tmp}": str(tmp_path), "{model.txt}": str(tmp_path / "model.txt")}
    args = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        args.append(a)
    code, _, stderr = run_cli(*args)
    _one_line_error(code, stderr, match)


def test_batchnorm_checkpoint_is_folded_then_compressed(tmp_path):
    path, factory = state_dict_checkpoint(tmp_path, "conv_bn")
    code, stdout, stderr = run_cli("compress", path, "--model-factory", factory, "--hardware", "loihi",
                                   "--epochs", 0, "--limit", 64, "--no-progress", "--out", tmp_path / "bn.nir")
    assert code in (0, 1), stderr  # 1: the chip may still refuse something; the point is the export
    graph = nir.read(tmp_path / "bn.nir")
    assert not any("BatchNorm" in type(node).__name__ for node in graph.nodes.values())


def test_checkpoints_full_module_and_state_dict_with_factory(trained, tmp_path):
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))  # a module that pickles
    torch.save(plain, tmp_path / "full.pt")
    code, _, stderr = run_cli("evaluate", tmp_path / "full.pt", "--limit", 64, "--no-progress")
    _one_line_error(code, stderr, "pass trust=True / --trust-checkpoint if you trust the file")
    code, stdout, _ = run_cli("evaluate", tmp_path / "full.pt", "--limit", 64, "--json", "--no-progress",
                              "--out", tmp_path / "report.csv", "--trust-checkpoint")
    full = json.loads(stdout)
    assert code == 0 and full["samples"] == 64 and 0 <= full["accuracy"] <= 100
    assert (tmp_path / "report.csv").read_text().startswith("metric,value,unit")

    path, factory = state_dict_checkpoint(tmp_path, "build")
    torch.save(trained.state_dict(), path)
    code, stdout, _ = run_cli("evaluate", path, "--model-factory", factory, "--limit", 64, "--json", "--no-progress")
    test = make_loader(torch.utils.data.Subset(digits()[1], range(64)), 256)
    assert code == 0 and json.loads(stdout)["accuracy"] == pytest.approx(sf.accuracy(trained, test))
    code, _, stderr = run_cli("evaluate", path, "--model-factory", factory.replace(":build", ":wrong"),
                              "--no-progress")
    _one_line_error(code, stderr, "does not fit the model of --model-factory")


def test_export_checkpoint_to_nir_gives_the_same_outputs(trained, tmp_path):
    path, factory = state_dict_checkpoint(tmp_path, "build")
    torch.save(trained.state_dict(), path)
    code, stdout, _ = run_cli("export", path, "--model-factory", factory, "--input-shape", 1, 8, 8,
                              "--out", tmp_path / "m.nir", "--json", "--no-progress")
    assert code == 0 and json.loads(stdout)["input_shape"] == [1, 8, 8]
    again = sf.import_nir(tmp_path / "m.nir")
    x = digits()[1].tensors[0][:32]
    assert torch.equal(sf.run(again, x, num_steps=6), sf.run(trained, x, num_steps=6))
    code, _, stderr = run_cli("export", path, "--model-factory", factory, "--out", tmp_path / "n.nir")
    _one_line_error(code, stderr, "needs the input shape")


def test_user_data_module(original_nir, tmp_path):
    (tmp_path / "mydata.py").write_text(
        "from snn_spikefit.data import digits\n"
        "from torch.utils.data import Subset\n"
        "def load():\n    train, test = digits()\n    return Subset(train, range(40)), Subset(test, range(30))\n")
    code, stdout, _ = run_cli("evaluate", original_nir, "--data", f"{tmp_path / 'mydata.py'}:load", "--json",
                              "--no-progress")
    assert code == 0 and json.loads(stdout)["samples"] == 30


def test_registered_data_source_is_used_and_listed_by_the_cli(original_nir):
    from snn_spikefit.data import DATA_SOURCES, register_data_source

    def small_digits(options):
        train, test = digits(seed=options.seed)
        return torch.utils.data.Subset(train, range(40)), torch.utils.data.Subset(test, range(24))

    register_data_source("digits-small-test", small_digits, help="24 test digits")
    try:
        code, stdout, stderr = run_cli("evaluate", original_nir, "--data", "digits-small-test", "--json",
                                       "--no-progress")
        assert code == 0, stderr
        assert json.loads(stdout)["samples"] == 24
        code, stdout, _ = run_cli("evaluate", "--help")
        assert "'digits-small-test' (24 test digits)" in " ".join(stdout.split())
    finally:
        DATA_SOURCES.pop("digits-small-test")
    code, _, stderr = run_cli("evaluate", original_nir, "--data", "digits-small-test", "--no-progress")
    _one_line_error(code, stderr, "data source 'digits-small-test' is not allowed; use one of ['digits'")


def test_profiles_lists_and_describes():
    code, stdout, _ = run_cli("profiles")
    assert code == 0 and all(name in stdout for name in sf.list_profiles())
    code, stdout, _ = run_cli("profiles", "truenorth", "--json")
    assert code == 0 and json.loads(stdout)["weight_bits"] == 9


@pytest.mark.slow  # runs compress end to end
def test_write_report_html_and_layer_stats(compressed, tmp_path):
    record = json.loads(compressed[3].with_suffix(".json").read_text())
    files = write_report(record, tmp_path / "r.html")
    text = files[0].read_text()
    assert files[0].suffix == ".html" and text.count("<table>") >= 5 and text.count("<img") == 4
    assert all(f.is_file() and f.stat().st_size > 0 for f in files[1:])
    with pytest.raises(sf.SpikeFitValueError, match="record lacks"):
        write_report({"layers": []}, tmp_path / "x.md")
    with pytest.raises(sf.SpikeFitValueError, match="format='pdf' is not allowed"):
        write_report(record, tmp_path / "x.md", format="pdf")
    model = dense_model()
    stats = layer_stats(model)
    assert [s["channels"] for s in stats] == [16, 10] and stats[0]["inputs"] == 64
