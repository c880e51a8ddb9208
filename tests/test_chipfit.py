"""fit_to_chip: the chip's budgets drive codebooks and per-layer channel counts until check passes."""

import json
import math
import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.chipfit import core_map, cores_needed, pareto_front
from snn_spikefit.chipfit.allocate import allocate
from snn_spikefit.chipfit.budgets import Layout
from snn_spikefit.chipfit.report import Candidate
from snn_spikefit.data import load_data
from snn_spikefit.deploy.rules import layer_facts
from snn_spikefit.pruning.surgery import prunable_layers

from conftest import needs_snntorch

pytestmark = needs_snntorch


def dense(hidden):
    from snn_spikefit.zoo.snntorch import dense_snn

    torch.manual_seed(0)
    return dense_snn(64, 10, hidden=hidden)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", limit=128, num_steps=4)


def _layout(model, profile):
    sample = torch.rand(1, 1, 8, 8)
    return Layout(layer_facts(model, sample), prunable_layers(model, sample), profile)


# -- packing and the core map, by hand ------------------------------------------------------------------

def test_core_map_packs_layers_around_the_per_core_limit_by_hand():
    layers = [("a", 127), ("b", 128), ("c", 129), ("d", 256), ("e", 257)]
    cmap = core_map(layers, neurons_per_core=128)
    cores = {}
    for layer, core, first, last in cmap:
        cores.setdefault(layer, []).append((core, first, last))
    assert cores == {"a": [(0, 0, 126)], "b": [(1, 0, 127)], "c": [(2, 0, 127), (3, 128, 128)],
                     "d": [(4, 0, 127), (5, 128, 255)], "e": [(6, 0, 127), (7, 128, 255), (8, 256, 256)]}
    prof = sf.HardwareProfile("chip128", neurons_per_core=128, cores=100)
    assert cores_needed([n for _, n in layers], prof) == len(cmap) == 9
    one = core_map(layers, neurons_per_core=128, one_core_per_layer=True)
    assert [c[1] for c in one] == [0, 1, 2, 3, 4] and one[-1][3] == 256


def test_packing_prefers_128_over_130_on_a_128_per_core_chip():
    prof = sf.HardwareProfile("chip128", neurons_per_core=128, cores=100)
    layout = _layout(dense((130,)), prof)
    scores = {g: torch.arange(1.0, 131.0) for g in layout.channels}
    alloc = allocate(layout, scores, {"cores": 100})
    assert list(alloc.keep.values()) == [128]
    assert "130 neurons would take 2 cores of 128" in alloc.packing[0]
    # far from a multiple: 200 neurons keep their 2 cores (cutting to 128 would cost 72 channels)
    layout = _layout(dense((200,)), prof)
    alloc = allocate(layout, {g: torch.ones(200) for g in layout.channels}, {"cores": 100})
    assert list(alloc.keep.values()) == [200] and "would remove too many" in alloc.packing[0]


def test_allocation_spends_the_cuts_where_the_scores_are_lowest():
    prof = sf.HardwareProfile("small", max_neurons=40 + 10)
    layout = _layout(dense((30, 30)), prof)
    g1, g2 = list(layout.channels)
    # layer 1: all channels matter equally; layer 2: a third of them carry almost nothing
    scores = {g1: torch.ones(30), g2: torch.cat([torch.full((10,), 1e-3), torch.ones(20)])}
    keep = allocate(layout, scores, {"neurons": 50}).keep
    assert keep == {g1: 20, g2: 20}  # the 10 weak ones go first, then layer 1 (its channels weigh less)


# -- bad input ----------------------------------------------------------------------------------------

def test_a_profile_with_no_budgets_has_nothing_to_fit(digits):
    with pytest.raises(sf.SpikeFitValueError, match="generic-45nm gives no budget to fit"):
        sf.fit_to_chip(dense((16,)), digits, hardware="generic-45nm")


def test_an_impossible_target_names_the_rule_and_by_how_much(digits):
    tiny = sf.HardwareProfile("tiny-fanin", fan_in=40, weight_bits=8)
    model = dense((16,))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(sf.ConstraintViolationError, match=r"fan_in at .* needs 64 .* limit 40 \(over by 24\)"):
        sf.fit_to_chip(model, digits, hardware=tiny, max_epochs=0)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_inputs_beyond_the_chip_are_refused_before_training(digits):
    in16 = sf.HardwareProfile("in16", max_inputs=16, max_neurons=1000, weight_bits=8)  # Xylo's 16 inputs
    with pytest.raises(sf.ConstraintViolationError, match="no allocation can fit the model to in16.*inputs"):
        sf.fit_to_chip(dense((16,)), digits, hardware=in16, max_epochs=0)


def test_convolution_on_a_dense_only_chip_is_refused(digits):
    from snn_spikefit.zoo.snntorch import conv_snn

    with pytest.raises(sf.ConstraintViolationError, match="no native convolution"):
        sf.fit_to_chip(conv_snn(1, 10, 8, channels=(4,)), digits, hardware="truenorth", max_epochs=0)


def test_bad_objective_is_refused(digits):
    with pytest.raises(sf.SpikeFitValueError, match="objective='speed' is not allowed"):
        sf.fit_to_chip(dense((16,)), digits, hardware="truenorth", objective="speed")


# -- the whole path -----------------------------------------------------------------------------------

def test_fit_to_truenorth_cuts_the_fan_in_and_the_core_map_agrees_with_check(digits):
    model = dense((300,))  # the output layer's fan-in is 300, TrueNorth allows 256
    report = sf.fit_to_chip(model, digits, hardware="truenorth", max_epochs=0, progress=False)
    assert not report.check_before.ok and report.ok
    assert [a[2:] for a in report.allocation] == [(300, 256)]
    budgets = {b[0]: b for b in report.budgets}
    assert budgets["fan_in"] == ("fan_in", 256, 300, 256)
    assert budgets["distinct_weights_per_neuron"][3] <= 4
    facts = layer_facts(report.model, digits.sample(1))
    assert report.cores == cores_needed([f.neurons for f in facts], sf.get_profile("truenorth")) == 2
    assert sf.check(report.model, "truenorth", sample=digits.sample(1)).ok
    d = json.loads(report.to_json())
    assert d["ok"] and d["allocation"][0]["channels_after"] == 256 and len(d["core_map"]) == 2
    assert "fit to truenorth" in str(report) and model[1].out_features == 300  # the model is not changed


def test_save_plot_writes_a_png_or_says_why_not(digits, tmp_path):
    report = sf.fit_to_chip(dense((300,)), digits, hardware="truenorth", max_epochs=0, progress=False)
    pytest.importorskip("matplotlib")
    path = report.save_plot(tmp_path / "trade.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_front_keeps_only_passing_undominated_candidates():
    def c(name, ok, acc, e, size):
        return Candidate(name, 4, 8, 1.0, {}, {}, ok, acc, e, size, None)

    cands = [c("a", True, 90, 1.0, 1.0), c("b", True, 85, 2.0, 2.0), c("c", True, 80, 0.5, 1.0),
             c("d", False, 99, 0.1, 0.1)]
    assert pareto_front(cands) == [0, 2]


@pytest.mark.slow  # three fine-tunes
def test_sweep_gives_candidates_and_a_front(digits):
    report = sf.chip_sweep(dense((300,)), digits, hardware="truenorth", margins=(1.0, 0.5), max_epochs=1,
                           progress=False)
    assert len(report.candidates) == 2 and all(c.ok for c in report.candidates)
    assert report.candidates[1].usage["fan_in"] <= 128 < report.candidates[0].usage["fan_in"] <= 256
    assert report.front and set(report.front) <= {0, 1}


@pytest.mark.slow  # fine-tunes on several chips
@pytest.mark.parametrize("hardware, hidden, rule", [
    ("dynap-se2", (200,), "fan_in"),          # fan-in 64: 3x over
    ("altai", (1200,), "fan_in"),             # 512 inputs per core: 2.3x over
    ("tianjic", (600,), "fan_in"),            # 256 inputs: 2.3x over
    ("spinnaker", (9000,), "cores"),          # 18 cores of 256: 36 needed, 2x over
])
def test_fit_to_chip_ends_with_check_ok(digits, hardware, hidden, rule):
    report = sf.fit_to_chip(dense(hidden), digits, hardware=hardware, max_epochs=1, progress=False)
    assert rule in {v.rule for v in report.check_before.errors}
    assert report.ok, str(report.check_after)
    if sf.get_profile(hardware).neurons_per_core is not None:
        facts = layer_facts(report.model, digits.sample(1))
        assert report.cores == cores_needed([f.neurons for f in facts], sf.get_profile(hardware))


@pytest.mark.slow  # runs the command end to end
def test_cli_compress_fit_writes_nir_json_and_exits_0(tmp_path):
    from test_cli import run_cli, state_dict_checkpoint
    (tmp_path / "factories.py").write_text(
        "from snn_spikefit.zoo.snntorch import dense_snn\ndef big():\n    return dense_snn(64, 10, hidden=(300,))\n")
    factory = f"{tmp_path / 'factories.py'}:big"
    torch.save(dense((300,)).state_dict(), tmp_path / "big.pt")
    out = tmp_path / "big_tn.nir"
    code, stdout, stderr = run_cli("compress", tmp_path / "big.pt", "--model-factory", factory, "--hardware",
                                   "truenorth", "--fit", "--epochs", 0, "--limit", 64, "--no-progress", "--out", out)
    assert code == 0, stderr
    assert out.exists() and json.loads(out.with_suffix(".json").read_text())["ok"]
    assert "fit to truenorth" in stdout


def test_energy_objective_cuts_the_expensive_channels_first():
    prof = sf.HardwareProfile("small", max_neurons=40 + 10)
    layout = _layout(dense((30, 30)), prof)
    g1, g2 = list(layout.channels)
    scores = {g1: torch.ones(30), g2: torch.ones(30)}
    cost = {g1: 10.0, g2: 1.0}  # a channel of layer 1 carries ten times the synapses
    assert allocate(layout, scores, {"neurons": 50}, objective="energy", cost=cost).keep == {g1: 10, g2: 30}
    assert allocate(layout, scores, {"neurons": 50}, objective="accuracy", cost=cost).keep == {g1: 20, g2: 20}


@pytest.mark.slow  # fine-tunes a 3000-neuron layer
def test_fit_to_xylo_with_its_16_inputs():
    from torch.nn import functional as F
    from torch.utils.data import TensorDataset

    from snn_spikefit.data import LoadedData
    from snn_spikefit.data.datasets import digits

    train, test = digits()

    def pool(ds):  # 16 inputs and 8 classes: Xylo's inputs and readout neurons
        x, y = ds.tensors
        k = y < 8
        return TensorDataset(F.avg_pool2d(x[k][:256], 2).flatten(1), y[k][:256])

    data = LoadedData.from_splits(pool(train), pool(test))
    import snntorch as snn
    torch.manual_seed(0)
    cuba = dict(alpha=0.5, beta=0.875, init_hidden=True)  # CUBA-LIF with bit-shift decays, no bias
    net = nn.Sequential(nn.Linear(16, 3000, bias=False), snn.Synaptic(**cuba),
                        nn.Linear(3000, 8, bias=False), snn.Synaptic(**cuba, output=True))
    report = sf.fit_to_chip(net, data, hardware="xylo", max_epochs=1, progress=False)
    assert "neurons" in {v.rule for v in report.check_before.errors}
    assert report.ok, str(report.check_after)
    assert dict((b[0], b[3]) for b in report.budgets)["neurons"] <= 1008


def test_a_budget_still_broken_after_the_surgery_is_tightened_and_tried_again(digits):
    from snn_spikefit.deploy.rules import check_rules, register_check_rule

    original = check_rules()["neurons"]

    def neurons_with_reserve(ctx):  # a vendor's rule: the chip keeps 30 neurons for itself
        total = sum(f.neurons for f in ctx.layers if f.neurons is not None) + 30
        if ctx.profile.max_neurons is not None and total > ctx.profile.max_neurons:
            ctx.add("neurons", "max_neurons", "(model)", ctx.profile.max_neurons, total, "reserve")

    register_check_rule("neurons", neurons_with_reserve, replace=True)
    try:
        report = sf.fit_to_chip(dense((300,)), digits, hardware=sf.HardwareProfile("n200", max_neurons=200),
                                max_epochs=0, margins=(1.0,), progress=False)
    finally:
        register_check_rule("neurons", original, replace=True)
    assert [c.ok for c in report.candidates] == [False, True] and report.ok
    assert list(report.candidates[0].keep.values()) == [190] and report.candidates[1].margin == 0.85
    assert report.allocation[0][3] == 160  # 200 * 0.85 = 170 neurons, 10 of them the output layer's


def test_fit_packs_130_neurons_into_one_core_of_128_when_no_budget_is_broken(digits):
    chip = sf.HardwareProfile("chip128", neurons_per_core=128, cores=100, weight_bits=8)
    report = sf.fit_to_chip(dense((130,)), digits, hardware=chip, max_epochs=0, margins=(1.0,), progress=False)
    assert "cores" not in {v.rule for v in report.check_before.errors} and report.ok
    assert [a[2:] for a in report.allocation] == [(130, 128)]
    assert "130 neurons would take 2 cores of 128" in report.packing[0]
    assert [(c[0], c[1]) for c in report.core_map] == [("1", 0), ("3", 1)]  # hidden layer on core 0, output on 1


def test_cli_refuses_prune_with_fit(tmp_path):
    from test_cli import run_cli
    (tmp_path / "factories.py").write_text(
        "from snn_spikefit.zoo.snntorch import dense_snn\ndef small():\n    return dense_snn(64, 10, hidden=(8,))\n")
    torch.save(dense((8,)).state_dict(), tmp_path / "small.pt")
    code, _, stderr = run_cli("compress", tmp_path / "small.pt", "--model-factory", f"{tmp_path / 'factories.py'}:small",
                              "--hardware", "truenorth", "--fit", "--prune", 0.3, "--limit", 64, "--no-progress",
                              "--out", tmp_path / "x.nir")
    assert code != 0 and "--prune=0.3 is not allowed with --fit" in stderr


@pytest.mark.slow  # a conv net on 64x64 maps
def test_fit_to_speck_keeps_each_layer_within_one_core_even_where_the_limit_is_uncertain():
    from torch.nn import functional as F
    from torch.utils.data import TensorDataset

    from snn_spikefit.data import LoadedData
    from snn_spikefit.data.datasets import digits
    from snn_spikefit.zoo.snntorch import conv_snn

    train, test = digits()
    up = lambda ds: TensorDataset(F.interpolate(ds.tensors[0][:128], size=64), ds.tensors[1][:128])  # noqa: E731
    data = LoadedData.from_splits(up(train), up(test))
    torch.manual_seed(0)
    report = sf.fit_to_chip(conv_snn(1, 10, 64, channels=(32, 8), beta=1.0), data, hardware="speck", max_epochs=0,
                            progress=False)
    assert "neurons_per_core" in {v.rule for v in report.check_before.violations}  # 131072 on one core: 2x over
    assert [a[2:] for a in report.allocation] == [(32, 16), (8, 8)]
    assert report.ok and not report.check_after.violations
    assert report.cores == 3 and report.core_map[0][3] == 65535


# -- candidates chosen on a validation split ------------------------------------------------------------

def test_split_validation_holds_out_a_seeded_disjoint_fraction():
    from torch.utils.data import TensorDataset

    from snn_spikefit.chipfit.validation import split_validation
    from snn_spikefit.data import LoadedData

    ds = TensorDataset(torch.arange(100.0).unsqueeze(1), torch.arange(100) % 2)
    data = LoadedData.from_splits(ds, ds)

    def ids(batches):
        return sorted(int(v) for x, _ in batches for v in x.flatten())

    rest, val = split_validation(data, 0.2, seed=3)
    held, kept = ids(val), ids([rest.train.dataset[i] for i in range(len(rest.train.dataset))])
    assert len(held) == 20 and len(kept) == 80 and sorted(held + kept) == list(range(100))
    assert ids(split_validation(data, 0.2, seed=3)[1]) == held != ids(split_validation(data, 0.2, seed=4)[1])
    assert ids(data.test) == list(range(100))  # the test split is untouched
    # any other iterable of batches: every 5th batch is held out, the rest trains in order
    batches = [(torch.full((2, 1), float(i)), torch.zeros(2, dtype=torch.long)) for i in range(10)]
    rest, val = split_validation(LoadedData("b", batches, batches, 4, (1,), 2), 0.2)
    assert [int(x[0]) for x, _ in val] == [4, 9] and [int(x[0]) for x, _ in rest.train] == [0, 1, 2, 3, 5, 6, 7, 8]


def test_fit_to_chip_keeps_the_passing_candidate_best_on_validation(digits):
    report = sf.fit_to_chip(dense((300,)), digits, hardware="truenorth", max_epochs=0, margins=(1.0, 0.8),
                            progress=False)
    cands = report.candidates
    assert [c.margin for c in cands] == [1.0, 0.8] and all(c.ok and c.val_accuracy is not None for c in cands)
    best = max(range(len(cands)), key=lambda i: (cands[i].val_accuracy, -i))  # ties: the larger margin
    assert report.chosen == best and report.after.accuracy == cands[best].accuracy
    assert [a[3] for a in report.allocation] == [list(cands[best].keep.values())[0]]
    assert "26 validation samples held out" in str(report)  # round(0.2 * 128) training samples
    # without a validation split the first passing margin is kept and the others are not trained
    plain = sf.fit_to_chip(dense((300,)), digits, hardware="truenorth", max_epochs=0, margins=(1.0, 0.8),
                           validation=None, progress=False)
    assert len(plain.candidates) == 1 and plain.candidates[0].val_accuracy is None and plain.chosen == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"validation": 0.7}, r"validation=0.7 is not allowed; use a fraction .* in \(0, 0.5\]"),
    ({"validation": True}, r"validation=True is not allowed"),
    ({"margins": ()}, r"margins=\(\) is not allowed; use a non-empty tuple of numbers in \(0, 1\]"),
    ({"margins": (1.0, 1.5)}, r"margins=\(1.0, 1.5\) is not allowed"),
    ({"distill": {"temp": 2.0}}, r"\['temp'\] are no Distiller keywords"),
    ({"distill": "yes"}, r"distill='yes' is not allowed; use False, True or a dict"),
])
def test_bad_selection_and_distill_arguments_are_refused_by_name(digits, kwargs, match):
    model = dense((300,))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(sf.SpikeFitValueError, match=match):
        sf.fit_to_chip(model, digits, hardware="truenorth", max_epochs=0, progress=False, **kwargs)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow  # three fine-tunes
def test_distill_fine_tunes_against_the_original_with_the_pruned_channels_matched(digits):
    runs = {}
    logits_only = {"membrane_weight": 0.0, "logit_weight": 2.0}
    for distill in (False, True, logits_only):
        report = sf.fit_to_chip(dense((300,)), digits, hardware="truenorth", max_epochs=3, margins=(1.0,),
                                distill=distill, progress=False)  # 3 epochs of one batch: Adam's first step is sign(g)
        assert report.ok and [a[2:] for a in report.allocation] == [(300, 256)]  # membranes cut to 256 channels
        runs[str(distill)] = report
    assert runs["True"].settings["distill"] == {} and runs["False"].settings["distill"] is None
    w = {k: torch.cat([r.model[1].weight.flatten(), r.model[3].weight.flatten()]) for k, r in runs.items()}
    assert not torch.equal(w["False"], w["True"]) and not torch.equal(w["True"], w[str(logits_only)])
    assert runs[str(logits_only)].settings["distill"] == logits_only


@pytest.mark.slow  # three fits, each check runs the membranes
def test_a_membrane_beyond_the_state_bits_is_refitted_with_coarser_weights(digits):
    # 8-bit weights: the hidden membrane reaches 1287 weight LSBs, a 10-bit membrane holds +-511
    chip = sf.HardwareProfile("mem10", max_neurons=210, weight_bits=8, membrane_bits=10)
    report = sf.fit_to_chip(dense((300,)), digits, hardware=chip, max_epochs=0, margins=(1.0,), progress=False)
    assert report.ok and report.settings["bits"] == 6  # ceil(log2(1287 / 511)) = 2 bits fewer
    assert "no channel allocation changes that" in report.notes[0] and "refitted with bits=6" in report.notes[0]
    assert sf.check(report.model, chip, sample=digits.sample(1), num_steps=4).ok
    # bits given by the user: not changed behind their back, the report says why it fails
    given = sf.fit_to_chip(dense((300,)), digits, hardware=chip, bits=8, max_epochs=0, margins=(1.0,),
                           progress=False)
    assert not given.ok and {v.rule for v in given.check_after.errors} == {"membrane_range"}
    assert "not refitted with coarser weights (bits/m were given)" in given.notes[0]


def test_cli_refuses_distill_and_validation_without_fit(tmp_path):
    from test_cli import run_cli
    (tmp_path / "factories.py").write_text(
        "from snn_spikefit.zoo.snntorch import dense_snn\ndef small():\n    return dense_snn(64, 10, hidden=(8,))\n")
    torch.save(dense((8,)).state_dict(), tmp_path / "small.pt")
    for flag in (["--distill"], ["--validation", 0.1]):
        code, _, stderr = run_cli("compress", tmp_path / "small.pt", "--model-factory",
                                  f"{tmp_path / 'factories.py'}:small", "--hardware", "truenorth", *flag, "--limit", 64,
                                  "--no-progress", "--out", tmp_path / "x.nir")
        assert code != 0 and "--validation and --distill are not allowed without --fit" in stderr


@pytest.mark.parametrize("kwargs, match", [
    ({"margins": ()}, r"margins=\(\) is not allowed; use a non-empty tuple of numbers in \(0, 1\]"),
    ({"margins": (0.5, 0.0)}, r"margins=\(0.5, 0.0\) is not allowed"),
    ({"distill": "yes"}, r"distill='yes' is not allowed; use False, True or a dict"),
    ({"granularity": "row"}, r"granularity='row' is not allowed; use one of \('layer', 'channel'\)"),
])
def test_sweep_refuses_bad_margins_codebook_and_distill_arguments_by_name(digits, kwargs, match):
    with pytest.raises(sf.SpikeFitValueError, match=match):
        sf.chip_sweep(dense((300,)), digits, hardware="truenorth", max_epochs=0, progress=False, **kwargs)


def test_cli_refuses_validation_with_sweep(tmp_path):
    from test_cli import run_cli
    (tmp_path / "factories.py").write_text(
        "from snn_spikefit.zoo.snntorch import dense_snn\ndef small():\n    return dense_snn(64, 10, hidden=(8,))\n")
    torch.save(dense((8,)).state_dict(), tmp_path / "small.pt")
    code, _, stderr = run_cli("compress", tmp_path / "small.pt", "--model-factory", f"{tmp_path / 'factories.py'}:small",
                              "--hardware", "truenorth", "--fit", "--sweep", "--validation", 0.1, "--limit", 64,
                              "--no-progress", "--out", tmp_path / "x.nir")
    assert code != 0 and "--validation=0.1 is not allowed with --sweep" in stderr
    assert not (tmp_path / "x.json").exists()


def test_akida_has_only_a_weight_bit_budget_and_the_report_says_why_cores_are_not_one(digits):
    from snn_spikefit.chipfit import profile_budgets

    assert profile_budgets(sf.get_profile("akida")) == {"weight_bits": 8}
    report = sf.fit_to_chip(dense((32,)), digits, hardware="akida", max_epochs=0, progress=False)
    # Akida's 8 bits are marked uncertain: float weights (32 bits, 4x over) are a warning, not an error
    found = [(v.rule, v.severity, v.actual) for v in report.check_before.violations]
    assert found == [("weight_bits", "warning", 32)] * 2
    assert report.ok and not report.check_after.violations and report.settings["bits"] == 8
    assert report.allocation == () and len(report.candidates) == 1  # no allocation budget: every margin is the same
    assert any("80 cores but no neurons per core" in n for n in report.notes)
    assert any(n.startswith("weight_bits: marked uncertain") for n in report.notes)


def test_a_margin_no_allocation_meets_is_skipped_and_said(digits):
    chip = sf.HardwareProfile("fan70", fan_in=70, weight_bits=8)  # the input layer's 64 inputs fit 70, not 0.8 * 70
    report = sf.fit_to_chip(dense((100,)), digits, hardware=chip, max_epochs=0, margins=(1.0, 0.8), progress=False)
    assert report.ok and [c.margin for c in report.candidates] == [1.0]
    assert [a[2:] for a in report.allocation] == [(100, 70)]
    assert any(n.startswith("margin 0.8 not tried: no channel allocation meets the fan_in budget") for n in report.notes)


def test_check_margins_takes_any_iterable_of_numbers_in_0_1():
    import numpy as np

    from snn_spikefit.chipfit.fit import check_margins

    assert check_margins(np.array([1.0, 0.5])) == (1.0, 0.5) and check_margins(m for m in (0.9,)) == (0.9,)
    assert check_margins([1]) == (1.0,) and all(type(v) is float for v in check_margins(np.array([0.5])))
    for bad in ("1", 0.5, [], [True], [np.float32(0.5), 2]):
        with pytest.raises(sf.SpikeFitValueError, match=r"margins=.* is not allowed; use a non-empty tuple"):
            check_margins(bad)


@pytest.mark.parametrize("validation", [None, 0.2])
def test_when_no_candidate_passes_the_last_one_tried_is_reported(digits, validation):
    from snn_spikefit.deploy.rules import check_rules, register_check_rule

    original = check_rules()["neurons"]

    def reserve(ctx):  # 300 neurons held back: no allocation ever passes
        total = sum(f.neurons for f in ctx.layers if f.neurons is not None) + 300
        if ctx.profile.max_neurons is not None and total > ctx.profile.max_neurons:
            ctx.add("neurons", "max_neurons", "(model)", ctx.profile.max_neurons, total, "reserve")

    register_check_rule("neurons", reserve, replace=True)
    try:
        torch.manual_seed(0)
        report = sf.fit_to_chip(dense((300,)), digits, hardware=sf.HardwareProfile("n200", max_neurons=200),
                                max_epochs=0, margins=(1.0,), max_tries=3, validation=validation, progress=False)
    finally:
        register_check_rule("neurons", original, replace=True)
    kept = [next(iter(c.keep.values())) for c in report.candidates]
    assert len(kept) == 3 and kept == sorted(kept, reverse=True) and not report.ok
    assert report.chosen == 2 and report.allocation[0][3] == kept[-1]
    assert f"no candidate passes check: reported is the last one tried ({report.candidates[2].name})" in report.notes
