"""fit / predict / recalibrate_bn."""

import copy

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.data.datasets import digits, make_loader

from conftest import needs_snntorch


def test_recalibrate_bn_sets_cumulative_batch_statistics():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        model[1].running_mean.fill_(100.0)
    data = [(torch.randn(8, 4) * 2 + 1, torch.zeros(8)) for _ in range(3)]
    used = sf.recalibrate_bn(model, data, num_steps=2, progress=False)
    assert used == 3
    feats = torch.cat([model[0](x) for x, _ in data])
    assert torch.allclose(model[1].running_mean, feats.mean(0), atol=1e-5)
    assert model[1].momentum == 0.1 and model.training


def test_recalibrate_bn_empty_data():
    with pytest.raises(sf.SpikeFitValueError, match="no batch"):
        sf.recalibrate_bn(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), [], progress=False)


@needs_snntorch
def test_fit_learns_digits_and_model_can_be_copied():
    from snn_spikefit.zoo.snntorch import dense_snn

    train, test = digits()
    model = sf.wrap(dense_snn(64, 10, (32,)), m=4, bits=4)
    loader = make_loader(train, 64, shuffle=True, drop_last=True)
    before = sf.accuracy(model, make_loader(test, 256), num_steps=2)
    losses = sf.fit(model, loader, epochs=3, num_steps=2, lr=5e-3, progress=False)
    assert losses[-1] < losses[0]
    after = sf.accuracy(model, make_loader(test, 256), num_steps=2)
    assert after > max(before, 50.0)
    copy.deepcopy(model)  # no state attached to a freed graph is left behind


def test_fit_rejects_bad_epochs_and_empty_data():
    with pytest.raises(sf.SpikeFitValueError, match="epochs=-1"):
        sf.fit(nn.Linear(2, 2), [], epochs=-1)
    with pytest.raises(sf.SpikeFitValueError, match="no batch"):
        sf.fit(nn.Linear(2, 2), [], epochs=1, progress=False)


def test_cosine_schedule_decays_learning_rate_to_zero():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.rand(4, 3), torch.randint(0, 2, (4,))) for _ in range(5)]
    sf.fit(model, data, epochs=2, num_steps=1, optimizer=opt, schedule="cosine", progress=False)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(sf.SpikeFitValueError, match="schedule='step' is not allowed"):
        sf.fit(model, data, schedule="step", progress=False)
    with pytest.raises(sf.SpikeFitValueError, match="needs data with a length"):
        sf.fit(model, iter(data), schedule="cosine", progress=False)


@needs_snntorch
def test_fit_refused_with_teacher_leaves_no_distillation_hooks():
    from snn_spikefit.zoo.snntorch import dense_snn

    teacher = dense_snn(64, 10, (8,))
    student = copy.deepcopy(teacher)
    with pytest.raises(sf.SpikeFitValueError, match="no batch"):
        sf.fit(student, [], epochs=1, num_steps=2, teacher=teacher, progress=False)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in [*student.modules(), *teacher.modules()])
