"""One set of conventions across the API: reports, registries, keyword-only arguments, modes, validation."""

import inspect
import json
import warnings

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.deploy.ops import OP_RULES, register_op_rule
from snn_spikefit.errors import SpikeFitTypeError, SpikeFitValueError
from snn_spikefit.nir.common import layer_for_module, register_nir_layer
from snn_spikefit.reports import Report
from snn_spikefit.runtime import check_module, eval_mode, train_mode

from conftest import needs_snntorch


def _data(n=16, d=6, classes=3, batches=2):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)) for _ in range(batches)]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


# -- reports ---------------------------------------------------------------------------------------

_REPORTS = {  # name -> the call that makes one (only the report a test asks for is made)
    "CheckReport": lambda: sf.check(_net(), "truenorth"),
    "DeployReport": lambda: sf.evaluate(_net(), _data(), progress=False),
    "OpCounts": lambda: sf.count_ops(_net(), torch.rand(4, 6), num_steps=3),
}


@pytest.mark.parametrize("name", sorted(_REPORTS))
def test_every_report_saves_the_same_way(name, tmp_path):
    report = _REPORTS[name]()
    assert isinstance(report, Report)
    d = report.to_dict()
    assert json.loads(report.to_json()) == json.loads(json.dumps(d, default=str))
    path = tmp_path / "r.json"
    assert report.to_json(path) == path.read_text()
    csv = report.to_csv(tmp_path / "r.csv")
    assert csv == (tmp_path / "r.csv").read_text()
    assert csv.splitlines()[0] == ",".join(report.table().columns)
    assert len(csv.splitlines()) == 1 + len(report.table().rows)


@needs_snntorch
def test_prune_report_saves_like_the_others(tmp_path):
    import snntorch as snn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), snn.Leaky(beta=0.9, init_hidden=True), nn.Linear(8, 3),
                        snn.Leaky(beta=0.9, init_hidden=True))
    report = sf.prune(net, _data(), amount=0.25, progress=False)
    assert isinstance(report, Report)
    d = json.loads(report.to_json(tmp_path / "p.json"))
    assert d["params_after"] < d["params_before"] and d["layers"][0]["channels_after"] == 6
    rows = report.to_csv().splitlines()
    assert rows[0].startswith("neuron,layer,channels_before,channels_after") and len(rows) == 2


def test_op_counts_to_dict_matches_its_properties():
    ops = _REPORTS["OpCounts"]()
    d = ops.to_dict()
    assert (d["acs"], d["macs"], d["dense"], d["samples"]) == (ops.acs, ops.macs, ops.dense, ops.samples)
    assert [layer["name"] for layer in d["layers"]] == [layer.name for layer in ops.layers]


# -- registries ------------------------------------------------------------------------------------

class _MyLinear(nn.Linear):
    pass


def test_register_op_rule_refuses_a_duplicate_unless_replace():
    with pytest.raises(SpikeFitValueError, match="Linear is already registered.*replace=True"):
        register_op_rule(nn.Linear, lambda m, x, w: x @ w.T)
    rule = lambda m, x, w: torch.nn.functional.linear(x, w)  # noqa: E731
    try:
        assert register_op_rule(_MyLinear, rule) is rule
        with pytest.raises(SpikeFitValueError, match="_MyLinear"):
            register_op_rule(_MyLinear, rule)
        other = lambda m, x, w: torch.nn.functional.linear(x, w)  # noqa: E731
        assert register_op_rule(_MyLinear, other, replace=True) is other
        assert OP_RULES[_MyLinear] is other
    finally:
        OP_RULES.pop(_MyLinear, None)


def _registry_calls():
    """Each registry with something already in it: (name, call that registers that thing again)."""
    from snn_spikefit.adapter import get_adapter, list_adapters, register_adapter
    from snn_spikefit.data.events import EVENT_DATASETS, register_event_dataset
    from snn_spikefit.data.sources import DATA_SOURCES, register_data_source
    from snn_spikefit.deploy.hardware import HardwareProfile, get_profile, register_profile
    from snn_spikefit.deploy.rules import _RULES, register_check_rule
    from snn_spikefit.pruning.importance import CRITERIA, register_criterion
    from snn_spikefit.pruning.surgery import SURGERY, register_surgery
    from snn_spikefit.targets import get_target, register_target
    spec = next(iter(EVENT_DATASETS.values()))
    profile = get_profile("loihi")
    return [
        ("check rule", lambda: register_check_rule("fan_in", _RULES["fan_in"])),
        ("operation rule", lambda: register_op_rule(nn.Linear, OP_RULES[nn.Linear])),
        ("profile", lambda: register_profile(profile)),  # the identical one too: the rule has no exception
        ("surgery", lambda: register_surgery(nn.Linear, SURGERY[nn.Linear])),
        ("criterion", lambda: register_criterion("l1", CRITERIA["l1"])),
        ("NIR layer", lambda: register_nir_layer(nn.Linear, (), layer_for_module("fc", nn.Linear(2, 2)).to_nir, None)),
        ("target", lambda: register_target(get_target("lava"))),
        ("data source", lambda: register_data_source("digits", DATA_SOURCES["digits"].fn)),
        ("event data set", lambda: register_event_dataset(spec)),
        ("adapter", lambda: register_adapter(get_adapter(nn.Linear(1, 1), list_adapters()[0]))),
    ]


@pytest.mark.parametrize("index", range(len(_registry_calls())))
def test_every_registry_refuses_a_duplicate_with_one_message(index):
    kind, again = _registry_calls()[index]
    with pytest.raises(SpikeFitValueError, match=r"is already registered; pass replace=True to replace it "
                                                 r"\(registered: \[.+\]\)"):
        again()


def test_register_nir_layer_refuses_a_duplicate_unless_replace():
    base = layer_for_module("fc", nn.Linear(2, 2))
    with pytest.raises(SpikeFitValueError, match="Linear is already registered.*replace=True"):
        register_nir_layer(nn.Linear, base.nir_types, base.to_nir, base.from_nir)
    with pytest.raises(SpikeFitTypeError, match="from_nir too unless nir_types is"):
        register_nir_layer(_MyLinear, base.nir_types, base.to_nir, None)
    mine = register_nir_layer(_MyLinear, (), base.to_nir, None)  # export only
    try:
        assert layer_for_module("fc", _MyLinear(2, 2)) is mine
        assert layer_for_module("fc", nn.Linear(2, 2)) is base
        again = register_nir_layer(_MyLinear, (), base.to_nir, None, replace=True)
        assert layer_for_module("fc", _MyLinear(2, 2)) is again
    finally:
        from snn_spikefit.nir import common
        common._LAYERS[:] = [entry for entry in common._LAYERS if entry.torch_type is not _MyLinear]
    assert layer_for_module("fc", _MyLinear(2, 2)) is base


# -- names and keyword-only arguments --------------------------------------------------------------

VERBS = ["wrap", "prune", "fit", "evaluate", "accuracy", "predict", "recalibrate_bn", "compress", "run",
         "count_ops", "cluster", "qat", "qpsnn", "ttq", "check"]


@pytest.mark.parametrize("verb", VERBS)
def test_options_are_keyword_only(verb):
    params = list(inspect.signature(getattr(sf, verb)).parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # model, then the data/input (or the chip for check); everything else by keyword
    assert positional[0] in ("model", "snn")
    assert len(positional) <= 2, f"{verb}{inspect.signature(getattr(sf, verb))}"


def test_num_steps_default_is_one_for_every_loader_verb():
    from snn_spikefit.runtime import DEFAULT_NUM_STEPS
    for verb in ["prune", "fit", "evaluate", "accuracy", "predict", "recalibrate_bn"]:
        assert inspect.signature(getattr(sf, verb)).parameters["num_steps"].default == DEFAULT_NUM_STEPS, verb
    # the tensor-level verbs take x as it is: time-major unless told to repeat a static input
    for verb in ["run", "count_ops"]:
        assert inspect.signature(getattr(sf, verb)).parameters["num_steps"].default is None, verb


def test_hardware_is_one_name_taking_both_types():
    profile = sf.get_profile("truenorth")
    net = nn.Sequential(nn.Linear(6, 3))
    by_name, by_profile = sf.check(net, "truenorth"), sf.check(net, hardware=profile)
    assert by_name.to_dict() == by_profile.to_dict()
    a = sf.wrap(_net(), hardware="truenorth")
    b = sf.wrap(_net(), hardware=profile)
    assert [c.quantizer.m for c in sf.compressed_layers(a)] == [c.quantizer.m for c in sf.compressed_layers(b)]
    with pytest.warns(FutureWarning, match=r"check\(hardware=...\)"):
        old = sf.check(net, profile="truenorth")
    assert old.to_dict() == by_name.to_dict()
    with pytest.raises(SpikeFitTypeError, match="needs the chip.*truenorth"):
        sf.check(net)


# -- modes and validation --------------------------------------------------------------------------

def test_eval_mode_restores_mixed_modes_even_on_error():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))
    net[1].eval()
    before = [m.training for m in net.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(net):
            assert not any(m.training for m in net.modules())
            raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == before
    net.eval()
    with train_mode(net):
        assert all(m.training for m in net.modules())
    assert not any(m.training for m in net.modules())


@pytest.mark.parametrize("verb, args", [
    ("run", (torch.rand(2, 3, 6),)), ("count_ops", (torch.rand(2, 3, 6),)), ("wrap", ()), ("freeze", ()),
    ("strip", ()), ("evaluate", (_data(),)), ("check", ("truenorth",)), ("export_nir", (torch.rand(1, 6),)),
    ("cluster", ()), ("ttq", ()), ("qpsnn", ()), ("freeze_baseline", ()),
])
def test_every_verb_names_a_model_that_is_not_a_module(verb, args):
    kwargs = {"m": 4} if verb in ("wrap", "cluster") else {}
    with pytest.raises(SpikeFitTypeError, match="model must be a torch.nn.Module, got str"):
        getattr(sf, verb)("not a model", *args, **kwargs)


def test_check_module_names_the_argument():
    with pytest.raises(SpikeFitTypeError, match="snn must be a torch.nn.Module, got int"):
        check_module(3, "snn")
    net = nn.Linear(1, 1)
    assert check_module(net) is net


def test_evaluate_leaves_modes_as_they_were():
    net = _net()
    net[0].eval()
    before = [m.training for m in net.modules()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sf.evaluate(net, _data(), progress=False)
    assert [m.training for m in net.modules()] == before
