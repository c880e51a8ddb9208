"""Files in and out of the ecosystem: stock importers' conventions named at export, the NIR paper's files, --dt."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import snn_spikefit as sf
from snn_spikefit.cli import main as cli_main

import interop_parts as P
from conftest import needs_norse, needs_snntorch

nir = pytest.importorskip("nir")
PAPER = Path(__file__).parent / "data" / "nir_paper"


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# -- out: what export_nir says about the stock importers ------------------------------------------------
@needs_snntorch
def test_default_export_of_an_snntorch_model_runs_in_stock_snntorch(tmp_path):
    model, x = P.snntorch_model("dense"), P.inputs("dense")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: the stock importer runs this file exactly
        graph = sf.export_nir(model, x[0], tmp_path / "m.nir")
    assert graph.metadata["spikefit.dt"] == 1e-4  # snnTorch's own convention (its exporter and importer)
    P.same_spikes(P.stock_snntorch(tmp_path / "m.nir", x), P.recorded_spikes(model, x))


@needs_snntorch
def test_subtract_reset_is_named_at_export_for_the_stock_snntorch_importer(tmp_path):
    import snntorch as snn

    torch.manual_seed(0)
    model = P._boost(nn.Sequential(nn.Linear(16, 20), snn.Leaky(beta=0.8, init_hidden=True), nn.Linear(20, 6),
                                   snn.Leaky(beta=0.8, init_hidden=True)), 4.0)  # snnTorch's default: subtract
    x = P.inputs("dense")
    message = (r"snntorch.import_nir.import_from_nir cannot run node '1' \(LIF\) exactly: the neuron resets by "
               r"'subtract' and the importer builds neurons that reset to 0.*nearest exact alternative: snnTorch "
               r"Leaky/Synaptic\(reset_mechanism='zero'")
    with pytest.warns(UserWarning, match=message):
        sf.export_nir(model, x[0], tmp_path / "default.nir")
    with pytest.raises(sf.UnsupportedLayerError, match=message):
        sf.export_nir(model, x[0], tmp_path / "stock.nir", for_importer="snntorch")
    assert not (tmp_path / "stock.nir").exists()
    # the refusal is warranted: the stock importer runs the default file with other spikes ...
    with pytest.raises(AssertionError, match="spikes differ"):
        P.same_spikes(P.stock_snntorch(tmp_path / "default.nir", x), P.recorded_spikes(model, x))
    # ... and our import runs it exactly
    P.same_spikes(P.ours("snntorch")(tmp_path / "default.nir", x), P.recorded_spikes(model, x))


@needs_snntorch
def test_stock_snntorch_refusals_name_importer_node_and_alternative():
    import snntorch as snn

    if_net = nn.Sequential(nn.Linear(3, 2), snn.Leaky(beta=1.0, reset_mechanism="zero", init_hidden=True))
    with pytest.raises(sf.UnsupportedLayerError, match=r"node '1' \(IF\) exactly: it builds snn.Leaky\(beta=0.9\)"):
        sf.export_nir(if_net, torch.rand(1, 3), for_importer="snntorch")
    with pytest.raises(sf.SpikeFitValueError, match=r"dt=0.001 is not allowed with for_importer='snntorch'"):
        sf.export_nir(if_net, torch.rand(1, 3), dt=1e-3, for_importer="snntorch")
    with pytest.raises(sf.SpikeFitValueError, match=r"for_importer='keras' is not allowed"):
        sf.export_nir(if_net, torch.rand(1, 3), for_importer="keras")
    pool = nn.Sequential(nn.Conv2d(1, 2, 3), snn.Leaky(beta=0.5, reset_mechanism="zero", init_hidden=True),
                         nn.LPPool2d(1, 2))
    with pytest.raises(sf.UnsupportedLayerError, match=r"node '2' \(SumPool2d\) exactly: it has no SumPool2d node"):
        sf.export_nir(pool, torch.rand(1, 1, 6, 6), for_importer="snntorch")


@needs_norse
def test_compressed_norse_conv_for_stock_norse_keeps_its_codebooks(tmp_path):
    model, x = P.norse_model("conv"), P.inputs("conv")
    sf.freeze(sf.wrap(model, m=4, bits=4))
    want = P.recorded_spikes(model, x)
    with pytest.warns(UserWarning, match=r"builds torch.nn.Flatten\(0, -1\) .*batch size 1"):
        graph = sf.export_nir(model, x[0], tmp_path / "m.nir", for_importer="norse")
    assert isinstance(graph.nodes["2"], nir.SumPool2d)  # Norse's importer drops AvgPool2d; 1/4 folded into '4'
    P.same_spikes(P.stock_norse(tmp_path / "m.nir", x), want)
    back = _quiet(sf.import_nir, tmp_path / "m.nir", "norse")
    assert [c.name for c in sf.compressed_layers(back)] == ["0", "4"]
    P.same_spikes(P.recorded_spikes(back, x), want)


@needs_snntorch
def test_fold_that_would_change_a_codebook_is_refused():
    model = sf.wrap(P.snntorch_model("dense"), m=4, bits=4)
    with pytest.raises(sf.UnsupportedLayerError, match=r"norse.torch.from_nir cannot run node '1' \(LIF\).*codebook"):
        sf.export_nir(model, P.inputs("dense")[0], for_importer="norse")


# -- in: the NIR paper's files ----------------------------------------------------------------------------
@pytest.mark.parametrize("framework", [pytest.param("snntorch", marks=needs_snntorch),
                                       pytest.param("norse", marks=needs_norse)])
def test_paper_lif_norse_matches_norses_own_run(framework):
    rows = np.array([[float(v) for v in r] for r in csv.reader(open(PAPER / "lif_norse.csv"))])
    x = torch.tensor(rows[:, 0], dtype=torch.float32).reshape(-1, 1, 1)
    model = sf.import_nir(PAPER / "lif_norse.nir", framework, dt=1e-4)  # the paper's step (paper/01_lif/README.md)
    spikes = P.recorded_spikes(model, x)[0].reshape(-1).numpy()
    assert 0 < rows[:, 2].sum() < len(rows) and np.array_equal(spikes, rows[:, 2])


@needs_norse
def test_paper_two_lif_neurons(tmp_path):
    with pytest.raises(sf.UnsupportedLayerError, match=r"node 'lif1': NIR LIF with v_reset != v_leak cannot run in "
                                                       r"snnTorch"):
        _quiet(sf.import_nir, PAPER / "two_lif_neurons.nir", "snntorch")
    graph = nir.read(PAPER / "two_lif_neurons.nir")
    x = torch.zeros(P.STEPS, 2, 1)  # no input: LIF1 fires on its own (v_leak above threshold)
    got = P.recorded_spikes(sf.import_nir(PAPER / "two_lif_neurons.nir", "norse", dt=1e-3), x)
    want = P.euler(graph, x, 1e-3)
    assert 0 < int(want[0].sum()) < want[0].numel() and int(want[1].sum()) == 0  # LIF2 stays sub-threshold
    assert all(torch.equal(g, w) for g, w in zip(got, want)) and len(got) == 2


@pytest.mark.parametrize("framework", [pytest.param("snntorch", marks=needs_snntorch),
                                       pytest.param("norse", marks=needs_norse)])
def test_paper_cnn_sinabs_imports_exactly_without_scale_nodes(framework):
    with pytest.warns(UserWarning, match=r"unit input gain per step at dt=1.0"):
        model = sf.import_nir(PAPER / "cnn_sinabs.nir", framework)  # sinabs' IF: r = 1 means v += x per step
    assert not any(isinstance(m, sf.nir.common.Gain) for m in model.modules())
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(P.STEPS, 2, 2, 34, 34, generator=g) < 0.3).float() * 2
    got, want = P.recorded_spikes(model, x), P.euler(nir.read(PAPER / "cnn_sinabs.nir"), x, 1.0)
    assert len(got) == len(want) == 5 and int(want[0].sum()) > 0
    assert all(torch.equal(a.reshape(b.shape), b) for a, b in zip(got, want))


# -- in: stock files, never a raw Python error --------------------------------------------------------------
@needs_snntorch
def test_stock_snntorch_file_dt_is_detected():
    model = P.snntorch_model("dense")
    graph = P.snntorch_per_module(model, P.inputs("dense")[0])
    with pytest.warns(UserWarning, match=r"dt=0.0001 \(r = tau/dt, snnTorch's convention\)"):
        sf.import_nir(graph, "snntorch")


def test_malformed_neuron_is_a_named_error_not_a_python_error():
    g = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((2, 3), np.float32), bias=np.zeros(2, np.float32)),
                               nir.LIF(tau=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2)))
    g.nodes["lif"].tau = np.full(3, 0.01)
    from snn_spikefit.adapter import nir_frameworks

    frameworks = nir_frameworks()
    if not frameworks:
        pytest.skip("no SNN framework installed")
    with pytest.raises(sf.SpikeFitError, match=r"node 'lif'"):
        sf.import_nir(g, frameworks[0], dt=1e-3)


# -- the CLI: --dt wherever a .nir file is read -------------------------------------------------------------
def test_every_command_that_reads_nir_takes_dt():
    from snn_spikefit.cli import build_parser

    parser = build_parser()
    for argv in (["check", "m.nir", "--hardware", "loihi2"], ["compress", "m.nir", "--hardware", "loihi2"],
                 ["evaluate", "m.nir", "--hardware", "loihi2"], ["export", "m.nir", "--out", "o.nir"]):
        assert parser.parse_args(argv + ["--dt", "2e-4"]).dt == 2e-4, argv[0]


@needs_snntorch
def test_cli_export_with_dt_rewrites_a_stock_file_for_the_stock_importer(tmp_path):
    model, x = P.snntorch_model("dense"), P.inputs("dense")
    # snnTorch writes 0-d parameters, which nir.write's default gzip refuses ("Scalar datasets don't support ...")
    nir.write(tmp_path / "stock.nir", P.snntorch_per_module(model, x[0]), compression=None)
    code = _quiet(cli_main, ["export", str(tmp_path / "stock.nir"), "--dt", "1e-4", "--for-importer", "snntorch",
                             "--out", str(tmp_path / "out.nir"), "--no-progress"])
    assert code == 0 and nir.read(tmp_path / "out.nir").metadata["spikefit.dt"] == 1e-4
    P.same_spikes(P.stock_snntorch(tmp_path / "out.nir", x), P.recorded_spikes(model, x))


@needs_norse
def test_norse_li_cell_is_refused_for_both_stock_importers():
    import norse.torch as norse

    model = norse.SequentialState(nn.Linear(4, 3), norse.LICell())
    for importer in ("norse", "snntorch"):
        with pytest.raises(sf.UnsupportedLayerError, match=r"cannot run node '1' \(CubaLI\) exactly: it has no"):
            sf.export_nir(model, torch.rand(1, 4), for_importer=importer)


@needs_snntorch
def test_synaptic_with_delayed_zero_reset_is_refused_for_stock_snntorch():
    import snntorch as snn

    model = nn.Sequential(nn.Linear(4, 3), snn.Synaptic(alpha=0.5, beta=0.5, reset_mechanism="zero", init_hidden=True))
    with pytest.raises(sf.UnsupportedLayerError, match=r"node '1' \(CubaLIF\) exactly: the neuron resets by "
                                                       r"'zero_delayed'.*reset_delay=False"):
        sf.export_nir(model, torch.rand(1, 4), for_importer="snntorch")


@needs_snntorch
def test_compressed_snntorch_model_for_stock_snntorch_keeps_codebooks(tmp_path):
    model, x = P.snntorch_model("conv"), P.inputs("conv")
    sf.freeze(sf.wrap(model, m=4, bits=4))
    want = P.recorded_spikes(model, x)
    _quiet(sf.export_nir, model, x[0], tmp_path / "m.nir", for_importer="snntorch")
    P.same_spikes(P.stock_snntorch(tmp_path / "m.nir", x), want)
    back = _quiet(sf.import_nir, tmp_path / "m.nir", "snntorch")
    assert [c.name for c in sf.compressed_layers(back)] == ["0", "3", "7"]
    P.same_spikes(P.recorded_spikes(back, x), want)


@needs_snntorch
@needs_norse
def test_if_neurons_run_in_stock_norse(tmp_path):
    import snntorch as snn

    torch.manual_seed(0)
    model = P._boost(nn.Sequential(nn.Linear(16, 12), snn.Leaky(beta=1.0, threshold=2.0, reset_mechanism="zero",
                                                                 init_hidden=True),
                                   nn.Linear(12, 5), snn.Leaky(beta=1.0, threshold=2.0, reset_mechanism="zero",
                                                               init_hidden=True)), 2.0)
    x = P.inputs("dense")
    _quiet(sf.export_nir, model, x[0], tmp_path / "if.nir", for_importer="norse")
    P.same_spikes(_quiet(P.stock_norse, tmp_path / "if.nir", x), P.recorded_spikes(model, x))


@needs_norse
def test_default_norse_export_names_what_stock_norse_would_run_differently():
    model, x = P.norse_model("conv"), P.inputs("conv")
    with pytest.warns(UserWarning, match=r"norse.torch.from_nir will not run this file exactly: nodes \['2', '4'\] "
                                         r"need rewriting.*for_importer='norse'"):
        sf.export_nir(model, x[0])
