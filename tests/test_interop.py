"""The interoperability matrix: producers x consumers x architectures, each cell exact or a named refusal.

Producers: our export_nir (of an snnTorch and of a Norse model), stock snnTorch's per-module
exporter, stock ``norse.torch.to_nir``, a hand-written NIR graph. Consumers: our import_nir into
snnTorch and into Norse, stock ``snntorch.import_nir.import_from_nir``, stock ``norse.torch.from_nir``.
"Exact" is the same spikes in every spiking layer at every one of 60 steps (each layer fires and
is silent somewhere). Where a stock tool fails on a foreign file, the cell asserts its failure and
that our path (import_nir, then export_nir(for_importer=...)) gives a file it runs exactly.
Stock importers' models take one sample at a time (interop_parts._per_sample).

Recurrent networks join as ``"recurrent"`` in ARCHS, a ``"recurrent"`` entry in every MATRIX row, and
recurrent models in interop_parts (snntorch_model / norse_model / hand_graph / euler for ``arch="recurrent"``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import pytest

import snn_spikefit as sf

import interop_parts as P
from conftest import HAS_NORSE, HAS_SNNTORCH

pytest.importorskip("nir")

#: Architectures of the matrix; recurrent rows (RLeaky/RSynaptic, LIFRecurrentCell, NIR cycles) add "recurrent".
ARCHS = ["dense", "conv"]


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
MATRIX = {
    ("ours:snntorch", "ours->snntorch"): {"dense": EXACT, "conv": EXACT},
    ("ours:snntorch", "ours->norse"): {"dense": EXACT, "conv": EXACT},
    ("ours:snntorch", "stock snntorch"): {"dense": EXACT, "conv": EXACT},
    ("ours:snntorch", "stock norse"): {"dense": EXACT, "conv": EXACT},
    ("ours:norse", "ours->snntorch"): {"dense": EXACT, "conv": EXACT},
    ("ours:norse", "ours->norse"): {"dense": EXACT, "conv": EXACT},
    ("ours:norse", "stock snntorch"): {"dense": EXACT, "conv": EXACT},
    ("ours:norse", "stock norse"): {"dense": EXACT, "conv": EXACT},
    ("stock snntorch", "ours->snntorch"): {"dense": EXACT, "conv": EXACT},
    ("stock snntorch", "ours->norse"): {"dense": EXACT, "conv": EXACT},
    ("stock snntorch", "stock snntorch"): {
        "dense": EXACT, "conv": StockFails(Refused(TypeError, "'int' object is not iterable"))},
    ("stock snntorch", "stock norse"): {"dense": StockFails("differs"), "conv": StockFails(Refused(KeyError, "'2'"))},
    ("stock norse", "ours->snntorch"): {"dense": EXACT, "conv": _NONE},
    ("stock norse", "ours->norse"): {"dense": EXACT, "conv": _NONE},
    ("stock norse", "stock snntorch"): {
        "dense": StockFails(Refused(AssertionError, "r not supported in CubaLIF")),
        "conv": Refused(ValueError, "Unknown node type <class 'NoneType'>")},
    ("stock norse", "stock norse"): {"dense": StockFails("differs"), "conv": Refused(KeyError, "'2'")},
    ("hand-written", "ours->snntorch"): {"dense": EXACT, "conv": EXACT},
    ("hand-written", "ours->norse"): {"dense": EXACT, "conv": EXACT},
    ("hand-written", "stock snntorch"): {
        "dense": StockFails(Refused(AssertionError, "r not supported in CubaLIF")),
        "conv": StockFails(Refused(AssertionError, "r not supported in CubaLIF"))},
    ("hand-written", "stock norse"): {"dense": EXACT, "conv": StockFails("differs")},
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
