"""CLI edges a new user meets: digits into a dense model, compress without matplotlib, violations that
no training fixes reported before training, the MaxPool model that check must not call OK."""

import sys
import warnings

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from conftest import needs_snntorch
from test_cli import run_cli

pytestmark = needs_snntorch


def dense64():
    """A dense snnTorch net with 64 inputs and no Flatten (trained on flattened digits, as tutorials do)."""
    import snntorch as snn

    return nn.Sequential(nn.Linear(64, 16), snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(16, 10))


@pytest.fixture
def dense_nir(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "dense64.nir"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.export_nir(dense64(), torch.rand(1, 64), path)
    return path


def test_digits_into_a_dense_nir_model_is_flattened_and_said(dense_nir):
    code, stdout, stderr = run_cli("evaluate", dense_nir, "--data", "digits", "--limit", 64, "--json")
    assert code == 0, stderr
    assert "--data digits gives inputs of shape (1, 8, 8); the model's first layer takes 64 features: " \
           "flattening each sample" in stderr
    assert '"accuracy"' in stdout


def test_digits_into_a_dense_checkpoint_is_flattened(tmp_path):
    factory = tmp_path / "factory.py"
    factory.write_text("import snntorch as snn\nfrom torch import nn\n\ndef build():\n"
                       "    return nn.Sequential(nn.Linear(64, 16), snn.Leaky(beta=0.5, init_hidden=True), "
                       "nn.Linear(16, 10))\n")
    torch.save(dense64().state_dict(), tmp_path / "dense.pt")
    code, _, stderr = run_cli("evaluate", tmp_path / "dense.pt", "--model-factory", f"{factory}:build",
                              "--limit", 64, "--no-progress")
    assert code == 0, stderr
    code, _, stderr = run_cli("check", tmp_path / "dense.pt", "--model-factory", f"{factory}:build",
                              "--hardware", "loihi", "--data", "digits")
    assert code in (0, 1) and "Traceback" not in stderr and "cannot" not in stderr, stderr


def test_compress_without_matplotlib_skips_plots_with_one_line(dense_nir, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "out.nir"
    code, stdout, stderr = run_cli("compress", dense_nir, "--hardware", "loihi", "--epochs", 0, "--limit", 64,
                                   "--out", out, "--no-progress")
    assert code in (0, 1), stderr
    lines = [line for line in stderr.splitlines() if "matplotlib" in line]
    assert lines == ['spikefit compress: warning: matplotlib is not installed: PNG plots skipped '
                     '(pip install "snn-spikefit[plots]" to get them)']
    assert out.exists() and out.with_suffix(".md").exists() and not list(tmp_path.glob("*.png"))
    assert "Traceback" not in stderr


def test_plots_extra_is_declared():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("matplotlib") for dep in project["optional-dependencies"]["plots"])
    assert not any(dep.startswith("matplotlib") for dep in project["dependencies"])


def test_compress_refuses_conv_on_truenorth_before_training(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "conv.nir"
    from snn_spikefit.zoo.snntorch import conv_snn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.export_nir(conv_snn(1, 10, 8, (4,)), torch.rand(1, 1, 8, 8), path)
    code, _, stderr = run_cli("compress", path, "--hardware", "truenorth", "--epochs", 5, "--limit", 64,
                              "--out", tmp_path / "x.nir")
    assert code == 1 and "no training, codebook or pruning can fix" in stderr  # 1: chip violations
    assert "no native convolution" in stderr and "fine-tun" not in stderr  # refused before any training
    assert not (tmp_path / "x.nir").exists()


CLASS_NET = '''
import torch
import snntorch as snn
from torch import nn


class Net(nn.Module):  # snnTorch tutorial 5
    def __init__(self):
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(64, 16), snn.Leaky(beta=0.95)
        self.fc2, self.lif2 = nn.Linear(16, 10), snn.Leaky(beta=0.95)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk2_rec, mem2_rec = [], []
        for _ in range(25):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec), torch.stack(mem2_rec)


def build():
    return Net()
'''


@pytest.mark.parametrize("command", [["check", "--hardware", "loihi"], ["export", "--out", "{tmp}/t5.nir"]])
def test_class_net_hint_works_on_the_command_line(tmp_path, command):
    factory = tmp_path / "t5.py"
    factory.write_text(CLASS_NET)
    import importlib.util

    spec = importlib.util.spec_from_file_location("t5", factory)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.build().state_dict(), tmp_path / "t5.pt")
    argv = [command[0], tmp_path / "t5.pt", "--model-factory", f"{factory}:build", "--input-shape", 64,
            *[a.replace("{tmp}", str(tmp_path)) for a in command[1:]]]
    code, _, stderr = run_cli(*argv)
    assert code == 2 and "pass num_steps=25 (on the command line: --num-steps 25)" in stderr
    code, _, stderr = run_cli(*argv, "--num-steps", 25)
    assert code in (0, 1) and "error" not in stderr, stderr
