"""The interoperability matrix: producers x consumers x architectures, each cell exact or a named refusal.

Producers: our export_nir (of an snnTorch and of a Norse model), stock snnTorch's per-module
exporter, stock ``norse.torch.to_nir``, a hand-written NIR graph. Consumers: our import_nir into
snnTorch and into Norse, stock ``snntorch.import_nir.import_from_nir``, stock ``norse.torch.from_nir``.
"Exact" is the same spikes in every spiking layer at every one of 60 steps (each layer fires and
is silent somewhere). Where a stock tool fails on a foreign file, the cell asserts its failure and
that our path (import_nir, then export_nir(for_importer=...)) gives a file it runs exactly.
Stock importers' models take one sample at a time (interop_parts._per_sample).

Recurrent: snnTorch ``RLeaky`` (its recurrent Linear has a bias), Norse ``LIFRecurrentCell``, a hand-written
graph ``lif <-> w_rec`` (an Affine with a bias); our convention (snn_spikefit.nir.recurrence) feeds the neuron
its previous step's spikes through the recurrent weight. The stock importers run a cycle through nirtorch,
which feeds the neuron the recurrent node's previous output, 0 at the first step: without the recurrent bias
on that step. export_nir(for_importer=...) moves that bias into the input bias (snn_spikefit.nir.stock).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import snn_spikefit as sf

import interop_parts as P
from conftest import HAS_NORSE, HAS_SNNTORCH

nir = pytest.importorskip("nir")

#: Architectures of the matrix; recurrent rows (RLeaky/RSynaptic, LIFRecurrentCell, NIR cycles) add "recurrent".
ARCHS = ["dense", "conv", "recurrent"]


@dataclass(frozen=True)
class Refused:
    """The consumer refuses: ``error`` raised with a message matching ``match``."""

    error: type | str
    match: str


@dataclass(frozen=True)
class StockFails:
    """A stock tool fails on this foreign file (error or spikes that differ); our path is exact."""

    what: Refused | str  # "differs": it runs but other spikes


EXACT = "exact"
_NONE = Refused(sf.SpikeFitValueError, r"nodes \['2', '3'\] are empty \(None\).*norse.to_nir does this for AvgPool2d")
_NONE_REC = Refused(sf.SpikeFitValueError, r"nodes \['0'\] are empty \(None\).*LIFRecurrentCell")
_ALL_EXACT = {"dense": EXACT, "conv": EXACT, "recurrent": EXACT}
#: nirtorch (both stock importers) starts a recurrent edge at 0, not at the recurrent Affine's bias
_FIRST_STEP = StockFails("differs")
MATRIX = {
    ("ours:snntorch", "ours->snntorch"): _ALL_EXACT,
    ("ours:snntorch", "ours->norse"): _ALL_EXACT,
    ("ours:snntorch", "stock snntorch"): _ALL_EXACT,
    ("ours:snntorch", "stock norse"): _ALL_EXACT,
    ("ours:norse", "ours->snntorch"): _ALL_EXACT,
    ("ours:norse", "ours->norse"): _ALL_EXACT,
    ("ours:norse", "stock snntorch"): _ALL_EXACT,
    ("ours:norse", "stock norse"): _ALL_EXACT,
    ("stock snntorch", "ours->snntorch"): _ALL_EXACT,
    ("stock snntorch", "ours->norse"): _ALL_EXACT,
    ("stock snntorch", "stock snntorch"): {
        "dense": EXACT, "conv": StockFails(Refused(TypeError, "'int' object is not iterable")),
        "recurrent": _FIRST_STEP},
    ("stock snntorch", "stock norse"): {"dense": StockFails("differs"), "conv": StockFails(Refused(KeyError, "'2'")),
                                        "recurrent": StockFails("differs")},
    # norse.to_nir writes None for LIFRecurrentCell (and for AvgPool2d/Flatten)
    ("stock norse", "ours->snntorch"): {"dense": EXACT, "conv": _NONE, "recurrent": _NONE_REC},
    ("stock norse", "ours->norse"): {"dense": EXACT, "conv": _NONE, "recurrent": _NONE_REC},
    ("stock norse", "stock snntorch"): {
        "dense": StockFails(Refused(AssertionError, "r not supported in CubaLIF")),
        "conv": Refused(ValueError, "Unknown node type <class 'NoneType'>"),
        "recurrent": Refused(ValueError, "Unknown node type <class 'NoneType'>")},
    ("stock norse", "stock norse"): {"dense": StockFails("differs"), "conv": Refused(KeyError, "'2'"),
                                     "recurrent": Refused(RuntimeError, "mat1 and mat2 shapes cannot be multiplied")},
    ("hand-written", "ours->snntorch"): _ALL_EXACT,
    ("hand-written", "ours->norse"): _ALL_EXACT,
    ("hand-written", "stock snntorch"): {
        "dense": StockFails(Refused(AssertionError, "r not supported in CubaLIF")),
        "conv": StockFails(Refused(AssertionError, "r not supported in CubaLIF")),
        "recurrent": StockFails(Refused(AssertionError, "r not supported in CubaLIF"))},
    ("hand-written", "stock norse"): {"dense": EXACT, "conv": StockFails("differs"), "recurrent": _FIRST_STEP},
}

_NEEDS = {"ours:snntorch": "s", "stock snntorch": "s", "ours:norse": "n", "stock norse": "n", "hand-written": "",
          "ours->snntorch": "s", "ours->norse": "n"}
_FOR = {"stock snntorch": "snntorch", "stock norse": "norse"}


def _available(*names):
    need = "".join(_NEEDS[n] for n in names)
    return ("s" not in need or HAS_SNNTORCH) and ("n" not in need or HAS_NORSE)


def produce(producer, arch, consumer, tmp_path):
    """``(graph or path, reference spikes, input)`` of a producer, written for ``consumer``."""
    x = P.inputs(arch)
    if producer.startswith("ours:"):
        model = P.snntorch_model(arch) if producer == "ours:snntorch" else P.norse_model(arch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sf.export_nir(model, x[0], tmp_path / "ours.nir", for_importer=_FOR.get(consumer))
        return tmp_path / "ours.nir", P.recorded_spikes(model, x), x
    if producer == "stock snntorch":
        model = P.snntorch_model(arch)
        return P.snntorch_per_module(model, x[0]), P.recorded_spikes(model, x), x
    if producer == "stock norse":
        import norse.torch as norse

        model = P.norse_model(arch)
        return norse.to_nir(model, x[0][:1]), P.recorded_spikes(model, x), x
    graph = P.hand_graph(arch)
    return graph, P.euler(graph, x, 1e-3), x


CONSUMERS = {"ours->snntorch": P.ours("snntorch"), "ours->norse": P.ours("norse"),
             "stock snntorch": P.stock_snntorch, "stock norse": P.stock_norse}


def via_ours(src, consumer, sample, tmp_path):
    """Our path for a stock importer: import_nir into its framework, export_nir(for_importer=...)."""
    framework = _FOR[consumer]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sf.import_nir(src, framework)
        sf.export_nir(model, sample, tmp_path / "via.nir", for_importer=framework)
    return tmp_path / "via.nir"


def _expect_refusal(outcome, run):
    error = outcome.error
    with pytest.raises(error, match=outcome.match):
        run()


CELLS = [(p, c, a) for (p, c), row in MATRIX.items() for a in ARCHS if a in row]


@pytest.mark.parametrize("producer,consumer,arch", CELLS, ids=[f"{p}|{c}|{a}" for p, c, a in CELLS])
def test_matrix_cell(producer, consumer, arch, tmp_path, caplog):
    if not _available(producer, consumer):
        pytest.skip("the producer's or consumer's framework is not installed")
    logging.disable(logging.WARNING)  # stock Norse logs a warning per node; the cell asserts behaviour
    try:
        outcome = MATRIX[(producer, consumer)][arch]
        src, want, x = produce(producer, arch, consumer, tmp_path)
        consume = CONSUMERS[consumer]
        if outcome == EXACT:
            P.same_spikes(consume(src, x), want)
        elif isinstance(outcome, Refused):
            _expect_refusal(outcome, lambda: consume(src, x))
        else:
            if outcome.what == "differs":
                with pytest.raises(AssertionError, match="spikes differ|spiking layers"):
                    P.same_spikes(consume(src, x), want)
            else:
                _expect_refusal(outcome.what, lambda: consume(src, x))
            P.same_spikes(consume(via_ours(src, consumer, x[0], tmp_path), x), want)
    finally:
        logging.disable(logging.NOTSET)


def test_matrix_covers_every_pair():
    producers = {p for p, _ in MATRIX}
    consumers = {c for _, c in MATRIX}
    assert len(producers) == 5 and len(consumers) == 4 and len(MATRIX) == 20
    assert all(set(row) == set(ARCHS) for row in MATRIX.values())




@pytest.mark.parametrize("producer", ["ours:snntorch", "ours:norse"])
@pytest.mark.parametrize("consumer", ["stock snntorch", "stock norse"])
def test_recurrent_files_for_stock_importers_read_exactly_by_ours(producer, consumer, tmp_path):
    """The rewritten cycle (bias moved, Flatten(0, 0) delay node for snnTorch) means the same to import_nir."""
    if not _available(producer, consumer):
        pytest.skip("the producer's or consumer's framework is not installed")
    src, want, x = produce(producer, "recurrent", consumer, tmp_path)
    graph = nir.read(src)
    assert any(k.endswith("_delay") for k in graph.nodes) == (consumer == "stock snntorch")
    for framework in ("snntorch", "norse"):
        if _available(f"ours->{framework}"):
            P.same_spikes(P.ours(framework)(src, x), want)

BRAILLE = P.DATA / "braille_noDelay_bias_zero.nir"


@pytest.mark.parametrize("consumer", ["stock snntorch", "stock norse"])
def test_nir_paper_braille_rnn_in_stock_importers(consumer, tmp_path):
    """The NIR paper's braille RNN (snnTorch RSynaptic, dt = 1e-4): stock importers fail; through ours, exact."""
    if not _available(consumer, "ours->snntorch"):
        pytest.skip("snntorch or the consumer's framework is not installed")
    x = (torch.rand(P.STEPS, 2, 12, generator=torch.Generator().manual_seed(0)) < 0.1).float()
    want = P.recorded_spikes(sf.import_nir(BRAILLE, "snntorch", dt=1e-4), x)
    logging.disable(logging.WARNING)
    try:
        if consumer == "stock snntorch":  # its importer nests the lif1 <-> w_rec cycle; nirtorch 2.6 cannot build it
            with pytest.raises(AttributeError, match="'GraphModule' object has no attribute 'items'"):
                P.stock_snntorch(BRAILLE, x)
        else:  # Norse's CubaLIF conventions differ even at the file's dt
            with pytest.raises(AssertionError, match="spikes differ"):
                P.same_spikes(P.stock_norse(BRAILLE, x, dt=1e-4), want)
        model = sf.import_nir(BRAILLE, _FOR[consumer], dt=1e-4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = sf.export_nir(model, x[0], tmp_path / "braille.nir", for_importer=_FOR[consumer])
        assert not any(isinstance(n, nir.Affine) and n.bias.any() for k, n in graph.nodes.items() if "w_rec" in k)
        P.same_spikes(CONSUMERS[consumer](tmp_path / "braille.nir", x), want)
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("importer", ["snntorch", "norse"])
def test_for_importer_refuses_recurrence_the_stock_importer_cannot_run(importer):
    """A Conv2d recurrence (RLeaky(conv2d_channels=...)), and a recurrent bias with no input weight to move to."""
    if not HAS_SNNTORCH:
        pytest.skip("snntorch is not installed")
    import snntorch as snn
    from torch import nn

    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), snn.RLeaky(beta=0.8, conv2d_channels=4, kernel_size=3,
                         reset_mechanism="zero", reset_delay=False, init_hidden=True), nn.Flatten())
    name = {"snntorch": "snntorch.import_nir.import_from_nir", "norse": "norse.torch.from_nir"}[importer]
    with pytest.raises(sf.UnsupportedLayerError, match=rf"{name} cannot run node '1' \(LIF\) exactly: its "
                       r"recurrence runs through '1_rec' \(Conv2d\).*nearest exact alternative"):
        sf.export_nir(conv, torch.rand(1, 1, 6, 6), for_importer=importer)
    graph = P.hand_graph("recurrent")  # the input straight into the recurrent neuron: no input bias to take it
    graph.nodes.pop("fc1")
    graph.edges = [("in", "lif") if e == ("in", "fc1") else e for e in graph.edges if e != ("fc1", "lif")]
    graph.nodes["in"] = nir.Input(input_type={"input": np.array([12])})
    graph.nodes["lif"].r = np.full(12, 4.0)  # r = tau/dt: no Gain in front of the neuron in snnTorch
    model = sf.import_nir(graph, "snntorch")
    with pytest.raises(sf.UnsupportedLayerError, match=r"node 'lif' \(LIF\) exactly: it starts the recurrent "
                       r"edge from 'w_rec' at 0, not at that Affine's bias"):
        sf.export_nir(model, torch.rand(1, 12), for_importer=importer)


def matrix_table() -> str:
    """The matrix as a Markdown table (for notes): ``python -c 'import test_interop as t; print(t.matrix_table())'``."""
    def text(o):
        if o == EXACT:
            return "exact"
        if isinstance(o, Refused):
            return f"refused: {getattr(o.error, '__name__', o.error)} '{o.match}'"
        what = o.what if isinstance(o.what, str) else f"{getattr(o.what.error, '__name__', o.what.error)} '{o.what.match}'"
        return f"stock fails ({what}); via ours exact"

    consumers = list(CONSUMERS)
    lines = ["| producer | arch | " + " | ".join(consumers) + " |", "|---" * (len(consumers) + 2) + "|"]
    for producer in dict.fromkeys(p for p, _ in MATRIX):
        for arch in ARCHS:
            lines.append(f"| {producer} | {arch} | " + " | ".join(text(MATRIX[(producer, c)][arch]) for c in consumers) + " |")
    return "\n".join(lines)
