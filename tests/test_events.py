"""Event data from a local folder through tonic's own classes; emulated saccade events (not recordings)."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from snn_spikefit.data.datasets import digits, make_loader
from snn_spikefit.errors import SpikeFitValueError
from snn_spikefit.data.events import (load_events, saccade_events, time_major, write_emulated_nmnist, write_nmnist)

tonic = pytest.importorskip("tonic")


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """Any attempt to download fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive", refuse)


@pytest.fixture(scope="module")
def images():
    train, _ = digits()
    return train.tensors[0][:30].numpy(), train.tensors[1][:30].numpy()


@pytest.fixture(scope="module")
def emulated_root(images, tmp_path_factory):
    """N-MNIST folder tree of emulated events from 20 + 10 real digits images."""
    root = tmp_path_factory.mktemp("events")
    x, y = images
    write_emulated_nmnist(root, x[:20], y[:20], train=True)
    write_emulated_nmnist(root, x[20:], y[20:], train=False)
    return root


def test_saccade_events_stay_on_the_sensor_in_time_order(images):
    events = saccade_events(images[0][:5])
    for ev in events:
        assert len(ev) > 0
        assert ev["x"].min() >= 0 and ev["x"].max() < 34 and ev["y"].min() >= 0 and ev["y"].max() < 34
        assert np.all(np.diff(ev["t"]) >= 0)
        assert set(np.unique(ev["p"])) == {0, 1}
    again = saccade_events(images[0][:5])
    assert all(np.array_equal(a, b) for a, b in zip(events, again))
    assert len(saccade_events(np.zeros((1, 8, 8)))[0]) == 0  # a blank image makes no events
    with pytest.raises(SpikeFitValueError, match="do not fit the sensor"):
        saccade_events(np.ones((1, 40, 40)))


def test_nmnist_binary_round_trip_through_tonic_reader(images, tmp_path):
    ev = saccade_events(images[0][:1])[0]
    write_nmnist(ev, tmp_path / "a.bin")
    back = tonic.io.read_mnist_file(str(tmp_path / "a.bin"), dtype=tonic.datasets.NMNIST.dtype)
    for key in "xytp":
        assert np.array_equal(back[key], ev[key])
    bad = ev.copy()
    bad["t"][0] = 2**23
    with pytest.raises(SpikeFitValueError, match="t < 2\\*\\*23"):
        write_nmnist(bad, tmp_path / "b.bin")


def test_load_events_frames_with_tonic(emulated_root, images):
    train, test = load_events("NMNIST", emulated_root, n_time_bins=5)
    assert len(train) == 20 and len(test) == 10
    frames, label = train[0]
    assert frames.shape == (5, 2, 34, 34) and frames.dtype == torch.float32
    assert frames.sum() > 0 and bool((frames >= 0).all())
    assert sorted(train.targets) == sorted(images[1][:20].tolist())
    small, _ = load_events("NMNIST", emulated_root, n_time_bins=3, limit_train=4)
    assert len(small) == 4


def test_time_major_batches(emulated_root):
    train, _ = load_events("NMNIST", emulated_root, n_time_bins=4)
    loader = time_major(make_loader(train, 8))
    batches = list(loader)
    assert len(loader) == 3 and [x.shape[:2] for x, _ in batches] == [(4, 8), (4, 8), (4, 4)]
    assert torch.equal(batches[0][0][:, 0], train[0][0])
    assert len(list(loader)) == 3  # re-iterable


def test_tonic_prefix_source_of_the_data_registry(emulated_root):
    from snn_spikefit.data import load_data

    data = load_data("tonic:NMNIST", root=str(emulated_root), num_steps=3, batch_size=8, limit=16)
    x, y = next(iter(data.test))
    assert x.shape == (3, 10, 2, 34, 34) and len(y) == 10  # test split: 10 samples, time-major
    assert data.num_steps is None and data.timesteps == 3 and data.sample_shape == (2, 34, 34)
    assert len(data.train) == 2 and all(xb.shape[:2] == (3, 8) for xb, _ in data.train)  # 16 of 20, batches of 8
    with pytest.raises(SpikeFitValueError, match="tonic:NMNIST needs root=DIR"):
        load_data("tonic:NMNIST")


def test_missing_files_name_the_folder_and_never_download(tmp_path):
    with pytest.raises(SpikeFitValueError, match="NMNIST.*nothing is downloaded"):
        load_events("NMNIST", tmp_path)
    with pytest.raises(SpikeFitValueError, match="does not exist"):
        load_events("NMNIST", tmp_path / "nowhere")
    with pytest.raises(SpikeFitValueError, match="not known"):
        load_events("MNIST-DVS-XYZ", tmp_path)
    with pytest.raises(SpikeFitValueError, match="n_time_bins=0"):
        load_events("NMNIST", tmp_path, n_time_bins=0)


def test_cli_evaluates_on_event_data(emulated_root, tmp_path):
    from snn_spikefit.cli import main

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 34 * 34, 10))
    torch.save(model, tmp_path / "m.pt")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["evaluate", str(tmp_path / "m.pt"), "--data", "tonic:NMNIST", "--data-root", str(emulated_root),
                     "--num-steps", "3", "--json", "--no-progress", "--trust-checkpoint"])
    assert code == 0, err.getvalue()
    report = json.loads(out.getvalue())
    assert report["samples"] == 10 and report["num_steps"] is None  # time-major: T from the data
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err := io.StringIO()):
        code = main(["evaluate", str(tmp_path / "m.pt"), "--data", "tonic:NMNIST", "--data-root", str(tmp_path),
                     "--no-progress", "--trust-checkpoint"])
    assert code == 2 and "nothing is downloaded" in err.getvalue() and "Traceback" not in err.getvalue()
