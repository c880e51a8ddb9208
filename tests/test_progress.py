"""Progress bars follow tqdm's convention (no bar without a terminal) under one library-wide switch."""

import io

import pytest
import torch
from torch import nn

import snn_spikefit as sf


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def _restore_switch():
    yield
    sf.set_progress(None)


def _fit(**kwargs):
    torch.manual_seed(0)
    data = [(torch.rand(4, 3), torch.tensor([0, 1, 0, 1]))] * 3
    sf.fit(nn.Linear(3, 2), data, epochs=1, num_steps=2, **kwargs)


def test_no_bar_when_output_is_not_a_terminal(monkeypatch):
    log = io.StringIO()  # `make demo > log`: stderr is a file
    monkeypatch.setattr("sys.stderr", log)
    _fit()
    assert "train" not in log.getvalue() and "\r" not in log.getvalue()


def test_bar_on_a_terminal_by_default(monkeypatch):
    tty = FakeTerminal()
    monkeypatch.setattr("sys.stderr", tty)
    _fit()
    assert "train 1/1" in tty.getvalue()


def test_one_switch_for_the_library_and_the_call_wins(monkeypatch):
    tty, log = FakeTerminal(), io.StringIO()
    monkeypatch.setattr("sys.stderr", tty)
    sf.set_progress(False)
    _fit()
    assert "train" not in tty.getvalue()
    _fit(progress=True)  # a call's own argument overrides the switch
    assert "train 1/1" in tty.getvalue()
    monkeypatch.setattr("sys.stderr", log)
    sf.set_progress(True)  # forced on even into a file
    assert sf.get_progress() is True
    _fit()
    assert "train 1/1" in log.getvalue()
    with pytest.raises(sf.SpikeFitTypeError, match="enabled='yes' is not allowed"):
        sf.set_progress("yes")


def test_cli_writes_no_carriage_returns_into_a_log(capsys, tmp_path):
    from snn_spikefit.cli import main

    path = tmp_path / "net.nir"
    sf.export_nir(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), torch.rand(1, 1, 8, 8), path)
    code = main(["evaluate", str(path), "--limit", "64"])
    err = capsys.readouterr().err
    assert code == 0 and "\r" not in err
