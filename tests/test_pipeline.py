"""``sf.compress``: the whole path as one call, on the snnTorch zoo's dense model and real digits."""

import contextlib
import copy
import csv
import io
import json
import warnings

import nir
import numpy as np
import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.cli import main
from snn_spikefit.data import load_data
from snn_spikefit.data.datasets import digits, make_loader
from snn_spikefit.pipeline import CompressResult
from snn_spikefit.pipeline.report import DR_COMPONENTS, layer_stats

from conftest import needs_snntorch

pytestmark = needs_snntorch

LIMIT = 192


class CountingLoader:
    """A real loader that counts how often it is iterated (to show no training has started)."""

    def __init__(self, loader):
        self.loader, self.iterations = loader, 0

    def __iter__(self):
        self.iterations += 1
        return iter(self.loader)

    def __len__(self):
        return len(self.loader)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(model, state):
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


@pytest.fixture(scope="module")
def trained():
    from snn_spikefit.zoo.snntorch import dense_snn

    torch.manual_seed(0)
    model = dense_snn(64, 10, hidden=(16,))
    train, _ = digits()
    sf.fit(model, make_loader(torch.utils.data.Subset(train, range(512)), 64, shuffle=True), epochs=1, num_steps=4,
           lr=1e-2, progress=False)
    return model


@pytest.fixture(scope="module")
def data():
    return load_data("digits", limit=LIMIT)


@pytest.fixture(scope="module")
def compressed(trained, data):
    state = snapshot(trained)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # subtract reset kept in NIR metadata
        result = sf.compress(trained, data, hardware="truenorth", epochs=1, prune=0.25, progress=False)
    return result, state


def test_result_holds_every_measurement(compressed, data):
    result, _ = compressed
    assert isinstance(result, CompressResult)
    assert isinstance(result.before, sf.DeployReport) and isinstance(result.after, sf.DeployReport)
    assert result.before.samples == result.after.samples == LIMIT
    assert not result.check_before.ok and result.check_after.ok and result.ok
    assert isinstance(result.codebooks, sf.Table) and len(result.codebooks) == 2
    assert isinstance(result.prune_report, sf.PruneReport)
    assert result.prune_report.params_after < result.prune_report.params_before
    assert [r["channels_before"] for r in result.layers] == [16, 10]
    assert [r["channels_after"] for r in result.layers] == [12, 10]  # floor(0.25 * 16) hidden neurons removed
    assert set(result.losses) == {"finetune", "after_prune"} and all(len(v) == 1 for v in result.losses.values())
    assert set(result.timings) == {"prepare", "evaluate_before", "finetune", "prune", "finetune_after_prune",
                                   "freeze", "evaluate_after", "export"}
    record = result.record
    assert record["settings"] == {"m": 4, "bits": 8, "granularity": "channel", "init": "kmeans", "exclude": None,
                                  "prune": 0.25, "criterion": "fsc", "epochs": 1, "lr": 1e-3, "seed": 0,
                                  "method": "cat", "calib": None, "sparsity": 0.0,
                                  "limit": LIMIT}
    assert record["model"] == "Sequential" and record["data"] == "digits" and record["num_steps"] == 4
    assert record["output"] is None and record["files"] == []
    assert record["after"]["accuracy"] == result.after.accuracy


def test_compressed_model_has_at_most_m_values_per_neuron(compressed):
    result, _ = compressed
    assert all(r["distinct_per_neuron"] <= 4 for r in layer_stats(result.model))
    for layer in sf.compressed_layers(result.model):
        assert layer.frozen
        w = layer.module.weight
        rows = w.reshape(w.shape[0], -1)
        assert max(row.unique().numel() for row in rows) <= 4
    weighted = [n for n in result.graph.nodes.values() if hasattr(n, "weight")]
    assert len(weighted) == 2 and all("spikefit.codes" in n.metadata for n in weighted)
    assert all(max(len(np.unique(r)) for r in np.asarray(n.weight)) <= 4 for n in weighted)


def test_the_callers_model_is_left_as_it_was(compressed, trained):
    result, state = compressed
    assert same_state(trained, state)
    assert not sf.is_wrapped(trained) and result.model is not trained
    assert sf.is_wrapped(result.model)


def test_to_dict_json_csv_round_trip(compressed):
    result, _ = compressed
    record = result.to_dict()
    assert json.loads(result.to_json()) == record
    record["hardware"] = "changed"
    assert result.record["hardware"] == "truenorth"  # to_dict is a copy
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert [r["metric"] for r in rows] == [key for key, *_ in DR_COMPONENTS]
    for r in rows:
        for when in ("before", "after"):
            value = result.record[when][r["metric"]]
            assert (r[when] == "") if value is None else (float(r[when]) == value), (r["metric"], when)


def test_save_writes_what_the_cli_writes(compressed, tmp_path):
    result = copy.copy(compressed[0])
    result.record = result.to_dict()
    files = result.save(tmp_path / "net.nir")
    assert [f.name for f in files] == ["net.nir", "net.json", "net.md", "net_distinct_weights.png", "net_channels.png",
                                       "net_codebooks.png", "net_deploy_ratio.png"]
    assert all(f.is_file() and f.stat().st_size > 0 for f in files)
    assert json.loads((tmp_path / "net.json").read_text()) == result.to_dict()
    assert result.record["output"] == str(tmp_path / "net.nir")
    graph = nir.read(tmp_path / "net.nir")
    assert set(graph.nodes) == set(result.graph.nodes)
    with pytest.raises(sf.SpikeFitValueError, match="give a path ending in .nir"):
        result.save(tmp_path / "net.txt")
    with pytest.raises(sf.SpikeFitValueError, match="does not exist"):
        result.save(tmp_path / "no" / "net.nir")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"hardware": "nochip"}, sf.SpikeFitValueError, "unknown hardware profile 'nochip'"),
    ({"m": 8}, sf.SpikeFitValueError, "m=8 is not allowed on truenorth"),
    ({"prune": 1.5}, sf.SpikeFitValueError, r"prune=1.5 is not allowed; use the fraction .* \[0, 1\)"),
    ({"prune": -0.1}, sf.SpikeFitValueError, "prune=-0.1 is not allowed"),
    ({"epochs": -1}, sf.SpikeFitValueError, "epochs=-1 is not allowed; use an int >= 0"),
    ({"epochs": 1.5}, sf.SpikeFitValueError, "epochs=1.5 is not allowed"),
    ({"lr": 0}, sf.SpikeFitValueError, "lr=0 is not allowed; use a number > 0"),
    ({"criterion": "nope"}, sf.SpikeFitValueError, "criterion='nope' is not known"),
    ({"init": "bogus"}, sf.SpikeFitValueError, "init='bogus' is not allowed"),
    ({"exclude": "nolayer"}, sf.SpikeFitValueError, "exclude='nolayer' matches no compressible layer"),
    ({"seed": "a"}, sf.SpikeFitTypeError, "seed='a' is not allowed"),
    ({"num_steps": 8}, sf.SpikeFitValueError, "num_steps=8 is not allowed with data 'digits', loaded with num_steps=4"),
    ({"log": 3}, sf.SpikeFitTypeError, "log=3 is not allowed; use a callable"),
])
def test_bad_arguments_are_refused_before_any_work(kwargs, error, match, trained, data):
    state = snapshot(trained)
    train = CountingLoader(data.train)
    counted = copy.copy(data)
    counted.train = train
    with pytest.raises(error, match=match):
        sf.compress(trained, counted, **{"hardware": "truenorth", "progress": False, **kwargs})
    assert train.iterations == 0 and same_state(trained, state)


def test_bad_model_or_data_is_refused_before_any_work(trained, data):
    with pytest.raises(sf.SpikeFitTypeError, match="model must be a torch.nn.Module, got str"):
        sf.compress("net.pt", data, hardware="truenorth")
    with pytest.raises(sf.SpikeFitTypeError, match="data must be a LoadedData .* got int"):
        sf.compress(trained, 42, hardware="truenorth")
    with pytest.raises(sf.SpikeFitValueError, match="data source 'mnist' is not allowed; use one of"):
        sf.compress(trained, "mnist", hardware="truenorth")
    small = torch.utils.data.TensorDataset(torch.rand(8, 1, 5, 5), torch.arange(8) % 2)
    with pytest.raises(sf.SpikeFitValueError, match=r"model cannot take data 'user data' inputs of shape \(1, 5, 5\)"):
        sf.compress(trained, (small, small), hardware="truenorth")
    maxpool = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 10))
    train = CountingLoader(data.train)
    counted = copy.copy(data)
    counted.train = train
    with pytest.raises(sf.UnsupportedLayerError, match="could not be exported, so nothing was done: .*MaxPool"):
        sf.compress(maxpool, counted, hardware="loihi", progress=False)
    assert train.iterations == 0
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 10))
    with pytest.raises(sf.ConstraintViolationError,
                       match=r"1 truenorth rule\(s\) that no training.*fix, so nothing was done: layer 0: IBM "
                             r"TrueNorth has no native convolution"):
        sf.compress(conv, counted, hardware="truenorth", progress=False)
    assert train.iterations == 0


def test_splits_and_wrapped_models_are_accepted(trained):
    train, test = digits()
    wrapped = sf.wrap(copy.deepcopy(trained), m=3)
    state = snapshot(wrapped)
    logged = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sf.compress(wrapped, (torch.utils.data.Subset(train, range(64)), torch.utils.data.Subset(test, range(64))),
                             hardware="loihi", epochs=0, progress=False, log=logged.append, source="mine")
    assert result.record["data"] == "user data" and result.record["model"] == "mine"
    assert result.before.samples == 64 and result.record["losses"] == {"finetune": []}
    assert "model is already compressed: starting again from its quantized weights" in logged
    assert same_state(wrapped, state) and sf.is_wrapped(wrapped)


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


#: measured wall-clock time, and what depends on it
TIMED = ("seconds", "timings", "latency_s", "dr_acc", "dr_f1")


def untimed(record):
    if isinstance(record, dict):
        return {k: untimed(v) for k, v in record.items() if k not in TIMED}
    if isinstance(record, list):
        return [untimed(v) for v in record]
    return record


@pytest.mark.slow  # runs compress twice
def test_cli_and_library_give_the_same_record(trained, tmp_path):
    path = tmp_path / "dense.nir"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.export_nir(trained, torch.zeros(1, 1, 8, 8), path)
    code, _, stderr = run_cli("compress", path, "--hardware", "truenorth", "--epochs", 1, "--limit", LIMIT,
                              "--prune", 0.25, "--seed", 3, "--no-progress", "--threads", 1, "--out", tmp_path / "c.nir")
    assert code == 0, stderr
    cli = json.loads((tmp_path / "c.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sf.compress(sf.import_nir(path), load_data("digits", limit=LIMIT, seed=3), hardware="truenorth",
                             epochs=1, prune=0.25, seed=3, source=str(path), progress=False)
    result.save(tmp_path / "c.nir")
    assert untimed(result.to_dict()) == untimed(cli)
    assert cli["settings"]["seed"] == 3 and cli["after"]["accuracy"] == result.after.accuracy
