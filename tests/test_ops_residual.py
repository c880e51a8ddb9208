"""Operation counts where spikes add (residual blocks): a position where k spikes meet costs k ACs."""

import pytest
import torch
from torch import nn

import snn_spikefit as sf

from conftest import needs_snntorch

pytestmark = needs_snntorch


class _Sum(nn.Module):
    """Two spiking layers whose spike maps are added, then read by ``fc`` (weights set by hand)."""

    def __init__(self, how="add"):
        super().__init__()
        import snntorch as snn

        self.how = how
        self.a, self.b = nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)
        self.la, self.lb = (snn.Leaky(beta=0.5, threshold=1.0, init_hidden=True) for _ in range(2))
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.a.weight.copy_(torch.eye(2))                           # x = [3, 2] -> spikes [1, 1]
            self.b.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # -> spikes [1, 0]
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]))

    def forward(self, x):
        sa, sb = self.la(self.a(x)), self.lb(self.b(x))
        if self.how == "add":
            h = sa + sb
        elif self.how == "iadd":  # in place, on the neuron's own output tensor
            h = sa
            h += sb
        elif self.how == "torch.add":
            h = torch.add(sa, sb)
        else:  # "membrane": spikes added to the real-valued current of layer a
            h = sa + self.a(x)
        return self.fc(h)


@pytest.mark.parametrize("how", ["add", "torch.add", "iadd"])
def test_added_spikes_cost_one_ac_per_spike_and_synapse(how):
    ops = sf.count_ops(_Sum(how).eval(), torch.tensor([[3.0, 2.0]]), num_steps=1)
    fc = next(layer for layer in ops.layers if layer.name == "fc")
    # fc input [2, 1]; nonzero synapses [[1, 0], [1, 1], [0, 1]]: 2 + (2 + 1) + 1 = 6 ACs, 0 MACs;
    # graded: one event per non-zero input and synapse: 1 + 2 + 1 = 4; dense 3 x 2
    assert (fc.acs, fc.macs, fc.graded, fc.dense) == (6.0, 0.0, 4.0, 6.0)
    a, b = (next(layer for layer in ops.layers if layer.name == n) for n in ("a", "b"))
    assert (a.macs, a.acs, b.macs, b.acs) == (2.0, 0.0, 1.0, 0.0)  # real-valued input: MACs


def test_spikes_added_to_a_real_valued_current_are_macs():
    ops = sf.count_ops(_Sum("membrane").eval(), torch.tensor([[3.0, 2.0]]), num_steps=1)
    fc = next(layer for layer in ops.layers if layer.name == "fc")
    assert (fc.acs, fc.macs, fc.graded) == (0.0, 4.0, 0.0)


def test_sew_block_output_over_steps_matches_a_count_by_hand():
    from snn_spikefit.zoo.snntorch import sew_resnet
    from snn_spikefit.trace import Recorder

    torch.manual_seed(0)
    model = sew_resnet(channels=4, blocks=2).eval()
    with torch.no_grad():
        model.stem.weight.mul_(4)
        model.blocks[0].conv1.weight.mul_(4)
        model.blocks[0].conv2.weight.mul_(4)
    x = torch.rand(3, 1, 8, 8) * 2
    conv1 = model.blocks[1].conv1
    inputs = []
    handle = conv1.register_forward_hook(lambda m, a, o: inputs.append(a[0].detach()))
    ops = sf.count_ops(model, x, num_steps=4)
    handle.remove()
    seen = torch.stack(inputs)  # blocks.0's output: stem spikes + n2 spikes, values 0, 1, 2
    assert float(seen.max()) == 2.0
    w_bin = (conv1.weight != 0).float()
    by_hand = sum(float(conv1._conv_forward(s, w_bin, None).sum()) for s in seen) / 3
    events = sum(float(conv1._conv_forward((s != 0).float(), w_bin, None).sum()) for s in seen) / 3
    layer = next(layer for layer in ops.layers if layer.name == "blocks.1.conv1")
    assert layer.macs == 0.0 and layer.acs == pytest.approx(by_hand) and layer.graded == pytest.approx(events)
    assert layer.acs > layer.graded
