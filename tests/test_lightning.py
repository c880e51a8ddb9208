"""The Lightning callback on 2 CPU devices (strategy="ddp"): the same model on both ranks and as 1 device.

The model has BatchNorm; ``SpikeFitCallback(sync_batchnorm=True)`` trains it on the global batch, so the
2-device weights and BN statistics equal the 1-device ones up to summation order (float32 sums of the
global batch split in two: tolerance 1e-5 after 4 SGD steps, a prune and the BN re-estimation).
"""

import os
import subprocess
import sys

import pytest
import torch

from conftest import needs_snntorch

pytest.importorskip("lightning", reason="the optional extra snn-spikefit[lightning] is not installed")
pytestmark = [needs_snntorch, pytest.mark.slow]

HERE = os.path.dirname(os.path.abspath(__file__))


def _launch(*runs):
    """Run ``lightning_script.py`` once per ``(devices, out)``, all at once (they share no files or ports)."""
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "lightning_script.py"), "--devices", str(devices),
                               "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE)
             for devices, out in runs]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]


def test_callback_on_two_ddp_devices_trains_prunes_and_freezes_as_one_device(tmp_path):
    _launch((1, tmp_path / "one"), (2, tmp_path / "two"))
    load = lambda name: torch.load(tmp_path / name, weights_only=False)  # noqa: E731
    one, r0, r1 = load("one.rank0.pt"), load("two.rank0.pt"), load("two.rank1.pt")
    assert r0["kept"] == r1["kept"] == one["kept"]
    assert r0["frozen"] and r1["frozen"] and one["frozen"]
    assert r0["state"].keys() == r1["state"].keys() == one["state"].keys()
    assert r0["plain_bn"] and one["plain_bn"]  # the plain BatchNorm classes are back after fit
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
        torch.testing.assert_close(v, one["state"][k], rtol=0, atol=1e-5, msg=k)
    assert r0["state"]["net.0.bias"].shape == (len(one["kept"][0]),)  # the first conv lost its pruned channels


def test_callback_refuses_an_unwrapped_module():
    import lightning.pytorch as pl

    import snn_spikefit as sf
    from snn_spikefit.distributed.lightning import SpikeFitCallback

    with pytest.raises(sf.NotWrappedError, match="wrapped by"):
        SpikeFitCallback().setup(None, pl.LightningModule(), "fit")
    with pytest.raises(sf.SpikeFitValueError, match="beta=-1"):
        SpikeFitCallback(beta=-1)
