"""evaluate / DeployReport: accuracy, macro-F1, energy, size, DeployRatio and its components, errors."""

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import snn_spikefit as sf
from snn_spikefit.deploy.hardware import HardwareProfile
from snn_spikefit.deploy.metrics import deploy_ratio, macro_f1, model_size_bits
from snn_spikefit.train import scores
from snn_spikefit.quantize.quantizer import compressed_bits

from conftest import needs_snntorch


def _data(n=24, features=8, classes=3, batch=8):
    x = torch.rand(n, features)
    y = torch.arange(n) % classes
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def test_macro_f1_matches_scikit_learn():
    from sklearn.metrics import f1_score

    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        pred, target = torch.randint(0, 5, (50,), generator=g), torch.randint(0, 4, (50,), generator=g)
        assert macro_f1(pred, target) == pytest.approx(f1_score(target, pred, average="macro"), abs=1e-12)


def test_accuracy_f1_and_energy_are_what_the_formula_says():
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    data = _data()
    r = sf.evaluate(net, data, num_steps=2, progress=False)
    preds = torch.cat([scores(sf.run(net, x, num_steps=2)).argmax(1) for x, _ in data])
    labels = torch.cat([y for _, y in data])
    assert r.accuracy == pytest.approx(100 * float((preds == labels).double().mean()))
    assert r.f1 == pytest.approx(100 * macro_f1(preds, labels))
    assert r.samples == 24 and r.latency_s > 0
    assert r.energy_mj == pytest.approx((4.6 * r.macs + 0.9 * r.acs) * 1e-9)
    assert r.dense_ops == 2 * (8 * 6 + 6 * 3)


def test_neuron_update_term_only_when_priced():
    net = nn.Sequential(nn.Linear(8, 3))
    priced = HardwareProfile("priced", e_mac_pj=2.0, e_ac_pj=1.0, e_neuron_pj=0.5)
    r = sf.evaluate(net, _data(), num_steps=2, hardware=priced, progress=False)
    assert r.energy_mj == pytest.approx((2.0 * r.macs + 1.0 * r.acs + 0.5 * r.neuron_updates) * 1e-9)


def test_energy_unavailable_when_the_chip_has_no_figure():
    net = nn.Sequential(nn.Linear(8, 3))
    r = sf.evaluate(net, _data(), num_steps=2, hardware="truenorth", progress=False)  # MACs, no E_MAC
    assert r.energy_mj is None and r.dr_acc is None and r.dr_f1 is None
    assert "no E_MAC" in r.energy_note
    r = sf.evaluate(net, _data(), num_steps=2, hardware="loihi2", progress=False)
    assert r.energy_mj is None and "unavailable under loihi2" in str(r)


def test_size_follows_the_formula_and_falls_with_m_and_bits():
    sizes = {}
    for m, bits in [(15, 8), (4, 8), (4, 3), (2, 2)]:
        net = nn.Sequential(nn.Linear(40, 20), nn.ReLU(), nn.Linear(20, 5, bias=False))
        sf.wrap(net, m=m, bits=bits)
        params, total = model_size_bits(net)
        expected = compressed_bits(800, 1, m, bits) + compressed_bits(100, 1, m, bits) + 20 * 32
        assert (params, total) == (920, expected)
        r = sf.evaluate(net, _data(features=40, classes=5), num_steps=1, progress=False)
        assert r.size_mb == expected / 8e6 and r.parameters == 920
        sizes[(m, bits)] = r.size_mb
    assert sizes[(15, 8)] > sizes[(4, 8)] > sizes[(4, 3)] > sizes[(2, 2)]
    plain = nn.Sequential(nn.Linear(40, 20))
    assert model_size_bits(plain) == (820, 820 * 32)


def test_deploy_ratio_and_its_components_side_by_side(tmp_path):
    net = nn.Sequential(nn.Linear(8, 3))
    r = sf.evaluate(net, _data(), num_steps=3, progress=False)
    assert r.dr_acc == pytest.approx((r.accuracy / 100) / (r.latency_s * r.energy_mj * r.size_mb))
    assert r.dr_f1 == pytest.approx((r.f1 / 100) / (r.latency_s * r.energy_mj * r.size_mb))
    rows = [row["metric"] for row in r.table().records()]
    assert rows[:2] == ["DR_acc", "DR_f1"]
    assert {"accuracy", "macro_f1", "latency", "energy", "size"} <= set(rows)
    d = json.loads(r.to_json(tmp_path / "r.json"))
    assert d["dr_acc"] == r.dr_acc and d["profile"] == "generic-45nm" and d["layers"][0]["name"] == "0"
    assert json.loads((tmp_path / "r.json").read_text()) == d
    csv = r.to_csv(tmp_path / "r.csv")
    assert csv.splitlines()[0] == "metric,value,unit" and "DR_acc" in csv.splitlines()[1]
    assert deploy_ratio(90.0, 0.5, None, 1.0) is None
    assert deploy_ratio(90.0, 0.5, 2.0, 0.1) == pytest.approx(0.9 / 0.1)


@needs_snntorch
def test_snn_report_has_firing_rates_and_neuron_updates():
    from snn_spikefit.zoo.snntorch import dense_snn

    net = dense_snn(8, 3, (16,))
    net.train()
    r = sf.evaluate(net, _data(), num_steps=4, progress=False)
    assert r.neuron_updates == 16 * 4
    assert set(r.firing_rates) == {"2"} and 0 <= r.firing_rates["2"] <= 1
    assert r.macs > 0 and r.dense_ops == 4 * (8 * 16 + 16 * 3)
    assert net.training and all(m.training for m in net.modules())   # mode restored


def test_one_shot_iterator_is_read_once():
    net = nn.Sequential(nn.Linear(8, 3))
    batches = ((torch.rand(4, 8), torch.tensor([0, 1, 2, 0])) for _ in range(3))
    r = sf.evaluate(net, batches, num_steps=1, progress=False)
    assert r.samples == 12 and r.macs == 24


def test_errors_are_clear():
    net = nn.Sequential(nn.Linear(8, 3))
    with pytest.raises(sf.SpikeFitValueError, match="data yielded no samples"):
        sf.evaluate(net, [], num_steps=1, progress=False)
    wrong = DataLoader(TensorDataset(torch.rand(6, 8), torch.tensor([0, 1, 2, 3, 4, 9])), batch_size=6)
    with pytest.raises(sf.SpikeFitValueError, match=r"labels must be class indices in 0..2 \(the model has 3"):
        sf.evaluate(net, wrong, num_steps=1, progress=False)
    with pytest.raises(sf.SpikeFitValueError, match=r"class scores of shape \(6,\)"):
        sf.evaluate(net, _data(n=6, batch=6), num_steps=1, forward_fn=lambda m, x: m(x).sum(1), progress=False)
    with pytest.raises(sf.SpikeFitTypeError, match=r"data must yield \(x, y\) pairs"):
        sf.evaluate(net, [torch.rand(2, 8)], num_steps=1, progress=False)
    with pytest.raises(sf.SpikeFitTypeError, match="data must be an iterable"):
        sf.evaluate(net, 3, num_steps=1, progress=False)
    with pytest.raises(sf.SpikeFitValueError, match="unknown hardware profile 'x'; known profiles"):
        sf.evaluate(net, _data(), hardware="x", progress=False)
    with pytest.raises(sf.SpikeFitValueError, match="warmup=-1"):
        sf.evaluate(net, _data(), warmup=-1, progress=False)


def test_profile_is_the_old_name_of_hardware():
    net = nn.Sequential(nn.Linear(8, 3))
    new = sf.evaluate(net, _data(), num_steps=2, hardware="loihi2", progress=False)
    with pytest.warns(FutureWarning, match=r"renamed evaluate\(hardware=\.\.\.\)"):
        old = sf.evaluate(net, _data(), num_steps=2, profile="loihi2", progress=False)
    assert old.profile == new.profile == "loihi2" and (old.acs, old.macs) == (new.acs, new.macs)
