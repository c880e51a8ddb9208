"""Pruning warns when its scores cannot tell the channels it removes from those it keeps."""

import warnings

import pytest
import torch

import snn_spikefit as sf

from conftest import needs_snntorch

pytestmark = needs_snntorch


def _data():
    from snn_spikefit.data.datasets import digits

    train, _ = digits()
    x, y = train.tensors[0][:64], train.tensors[1][:64]
    return [(x[:32], y[:32]), (x[32:], y[32:])]


def test_fsc_on_a_silent_untrained_net_warns():
    from snn_spikefit.zoo.snntorch import dense_snn

    model = dense_snn(64, 10, hidden=(16,))
    with torch.no_grad():
        model[1].weight.mul_(0.01)  # untrained scale: the hidden layer never fires, every FSC score is 0
    with pytest.warns(UserWarning, match=r"criterion 'fsc' gives 16 of the 16 channels of layer '2' the same "
                                         r"score 0, so which of them are removed is arbitrary.*no spikes"):
        report = sf.prune(model, _data(), amount=0.25, criterion="fsc", progress=False)
    assert report.layers[0].score_max == 0.0


def test_scores_that_separate_the_channels_do_not_warn():
    from snn_spikefit.zoo.snntorch import dense_snn

    torch.manual_seed(1)
    model = dense_snn(64, 10, hidden=(16,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        sf.prune(model, _data(), amount=0.25, criterion="l1", progress=False)  # 16 distinct filter norms
