"""The README's Python examples run as written (with a small model and data for its placeholders)."""

import re
import warnings
from pathlib import Path

import pytest
import torch

import snn_spikefit as sf

from conftest import needs_norse, needs_snntorch

README = Path(__file__).resolve().parents[1] / "README.md"


@needs_snntorch
@needs_norse
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    from snn_spikefit.zoo.snntorch import conv_snn
    from snn_spikefit.data.datasets import digits, make_loader

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    train, test = digits()
    small = torch.utils.data.Subset(train, range(128))
    namespace = {
        "my_snntorch_net": lambda: conv_snn(1, 10, 8, (8, 16)),
        "loader": make_loader(small, 64, shuffle=True, drop_last=True),
        "calib_loader": make_loader(small, 64),
        "test_loader": make_loader(torch.utils.data.Subset(test, range(64)), 64),
        "loss_fn": torch.nn.functional.cross_entropy,
    }
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    assert (tmp_path / "net.nir").exists()
    net, again = namespace["net"], namespace["again"]
    assert all(layer.weight.reshape(layer.quantizer.groups, -1).unique().numel() <= 4
               for layer in sf.compressed_layers(net))
    x = namespace["x"][:2]
    net.eval()
    assert torch.equal(sf.run(again, x, num_steps=4), sf.run(net, x, num_steps=4))  # the round trip is exact
