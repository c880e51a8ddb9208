"""The registry of named data sources behind ``load_data`` and ``spikefit --data``."""

import pytest
import torch
from torch.utils.data import TensorDataset

import snn_spikefit as sf
from snn_spikefit.data import DATA_SOURCES, DataOptions, LoadedData, load_data, register_data_source


def squares(options):
    """16 4x4 images: a bright square in one of 4 corners (the label); ``seed`` shifts nothing."""
    x = torch.zeros(16, 1, 4, 4)
    y = torch.arange(16) % 4
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, 0, 2 * r:2 * r + 2, 2 * c:2 * c + 2] = 1.0
    ds = TensorDataset(x, y)
    return ds, ds


@pytest.fixture
def registered():
    """Register test sources and remove them afterwards, whatever happens."""
    names = []

    def add(name, fn, **kwargs):
        source = register_data_source(name, fn, **kwargs)
        names.append(name)
        return source
    yield add
    for name in names:
        DATA_SOURCES.pop(name, None)


def test_builtins_are_registered():
    assert {"digits", "fashion-mnist", "tonic"} <= set(DATA_SOURCES)
    assert DATA_SOURCES["tonic"].prefix and DATA_SOURCES["tonic"].time_major
    assert DATA_SOURCES["tonic"].spec == "tonic:NAME" and DATA_SOURCES["digits"].spec == "digits"
    data = load_data("digits", limit=100, batch_size=32, seed=1)
    assert isinstance(data, LoadedData) and data.name == "digits" and data.options.seed == 1
    assert data.sample_shape == (1, 8, 8) and data.classes == 10 and data.num_steps == 4 and data.timesteps == 4
    assert len(data.train) == 100 // 32 and sum(len(y) for _, y in data.test) == 100  # last partial batch dropped


def test_a_user_source_is_called_with_the_options(registered):
    seen = []

    def source(options):
        seen.append(options)
        return squares(options)
    registered("squares-test", source, help="corner squares")
    data = load_data("squares-test", batch_size=4, limit=8, seed=5, root="/nowhere")
    assert seen == [DataOptions(root="/nowhere", num_steps=4, batch_size=4, limit=8, seed=5)]
    assert data.classes == 4 and sum(len(y) for _, y in data.test) == 8 and len(data.train) == 2


def test_duplicate_names_are_refused_unless_replace(registered):
    registered("squares-test", squares)
    with pytest.raises(sf.SpikeFitValueError, match="a data source named 'squares-test' is already registered; "
                                                   "pass replace=True"):
        register_data_source("squares-test", lambda options: squares(options))
    assert DATA_SOURCES["squares-test"].fn is squares
    with pytest.raises(sf.SpikeFitValueError, match="'digits' is already registered"):
        register_data_source("digits", squares)

    def other(options):
        x, y = squares(options)[0].tensors
        return TensorDataset(x[:4], y[:4]), TensorDataset(x[:4], y[:4])
    register_data_source("squares-test", other, replace=True)
    assert DATA_SOURCES["squares-test"].fn is other
    assert sum(len(y) for _, y in load_data("squares-test").test) == 4


def test_bad_registrations_are_refused():
    with pytest.raises(sf.SpikeFitValueError, match="name='a:b' is not allowed; use a non-empty str without ':'"):
        register_data_source("a:b", squares)
    with pytest.raises(sf.SpikeFitValueError, match="name='x.py' is not allowed"):
        register_data_source("x.py", squares)
    with pytest.raises(sf.SpikeFitTypeError, match="fn must be callable, got int"):
        register_data_source("nine", 9)
    assert "nine" not in DATA_SOURCES


def test_unknown_name_lists_what_exists():
    with pytest.raises(sf.SpikeFitValueError, match=r"data source 'mnist' is not allowed; use one of \[.*'digits', "
                                                    r"'fashion-mnist', 'tonic:NAME'.*\], 'path/to/file.py:function'"):
        load_data("mnist")
    with pytest.raises(sf.SpikeFitValueError, match="data source 'tonic' needs a name: 'tonic:NAME'"):
        load_data("tonic")
    with pytest.raises(sf.SpikeFitValueError, match="data source 'tonic:' needs a name"):
        load_data("tonic:")
    with pytest.raises(sf.SpikeFitValueError, match="cannot import 'no_such_module_xyz'"):
        load_data("no_such_module_xyz:load")


def test_prefix_source_gets_the_name_after_the_colon(registered):
    calls = []

    def prefixed(name, options):
        calls.append(name)
        return squares(options)
    registered("sq", prefixed, prefix=True)
    assert load_data("sq:corner/4").classes == 4 and calls == ["corner/4"]


def test_time_major_source_gives_time_major_batches(registered):
    def sequences(options):
        x = torch.rand(10, options.num_steps, 3)  # samples [T, features]
        ds = TensorDataset(x, torch.arange(10) % 2)
        return ds, ds
    registered("seq-test", sequences, time_major=True)
    data = load_data("seq-test", num_steps=5, batch_size=4)
    x, _ = next(iter(data.test))
    assert x.shape == (5, 10, 3) and data.num_steps is None and data.timesteps == 5 and data.sample_shape == (3,)
    assert data.sample(2).shape == (2, 3)


def test_user_function_specs_and_their_errors(tmp_path):
    (tmp_path / "mydata.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def load():\n    ds = TensorDataset(torch.rand(6, 1, 4, 4), torch.arange(6) % 3)\n    return ds, ds\n"
        "def one():\n    return 1\n"
        "def broken():\n    raise RuntimeError('disk on fire')\n")
    data = load_data(f"{tmp_path / 'mydata.py'}:load", limit=5)
    assert data.classes == 3 and sum(len(y) for _, y in data.test) == 5
    with pytest.raises(sf.SpikeFitTypeError, match="must return \\(train, test\\), got int"):
        load_data(f"{tmp_path / 'mydata.py'}:one")
    with pytest.raises(sf.SpikeFitValueError, match="failed: RuntimeError: disk on fire"):
        load_data(f"{tmp_path / 'mydata.py'}:broken")
    with pytest.raises(sf.SpikeFitValueError, match="has no function 'nope'"):
        load_data(f"{tmp_path / 'mydata.py'}:nope")


@pytest.mark.parametrize("kwargs, match", [
    ({"num_steps": 0}, "num_steps=0 is not allowed; use an int >= 1"),
    ({"batch_size": 1.5}, "batch_size=1.5 is not allowed"),
    ({"limit": 0}, "limit=0 is not allowed"),
])
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(sf.SpikeFitValueError, match=match):
        load_data("digits", **kwargs)
