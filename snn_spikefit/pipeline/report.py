"""The human report of a compression run: Markdown (or HTML) with PNG plots.

``spikefit compress`` writes a machine record (JSON) and renders it with
:func:`write_report`: per-layer distinct weights per neuron and channels before
and after, the codebooks, the DeployRatio components before and after, and the
check results. The plots are drawn with matplotlib's Agg canvas (no display, no
change to the user's matplotlib backend).

:func:`layer_stats` and :func:`codebook_records` give the per-layer facts the
record holds.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(4, 3))
>>> with torch.no_grad():
...     _ = net[0].weight.copy_(torch.tensor([[1., 1., 2., 0.], [1., 2., 3., 4.], [0., 0., 0., 0.]]))
>>> [(r["layer"], r["channels"], r["distinct_per_neuron"], r["distinct"]) for r in layer_stats(net)]
[('0', 3, 4, 5)]
"""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import SpikeFitValueError
from ..deploy.ops import connection_layers
from ..runtime import check_module
from ..table import Table, format_value
from ..quantize.layers import compressed_layers
from ..quantize.quantizer import distinct_per_row

__all__ = ["layer_stats", "codebook_records", "write_report", "REPORT_FORMATS", "DR_COMPONENTS"]

REPORT_FORMATS = ("md", "html")
#: DeployReport fields compared before/after: (key, label, unit, higher is better)
DR_COMPONENTS = (
    ("dr_acc", "DR_acc", "1/(s*mJ*MB)", True), ("accuracy", "accuracy", "%", True), ("f1", "macro-F1", "%", True),
    ("latency_s", "latency L", "s/input", False), ("energy_mj", "energy E", "mJ/inference", False),
    ("size_mb", "size S", "MB", False), ("parameters", "parameters", "", False),
    ("bits_per_weight", "bits/weight", "bits", False), ("acs", "ACs", "ops/inference", False),
    ("macs", "MACs", "ops/inference", False),
)


@torch.no_grad()
def layer_stats(model: nn.Module) -> list[dict[str, Any]]:
    """Per connection layer (Linear/Conv) and per other compressed weight: channels, inputs, distinct weights.

    ``distinct`` counts the whole weight, ``distinct_per_neuron`` the most in one
    output channel. Zero counts as a value here (a pruned or zero weight still
    occupies a slot in a dense table).
    """
    check_module(model)
    weights = [(name, module, "weight") for name, module in connection_layers(model)]
    seen = {id(module) for _, module, _ in weights}
    weights += [(c.name, c.module, c.param) for c in compressed_layers(model) if id(c.module) not in seen]
    out = []
    for name, module, param in weights:
        w = getattr(module, param).detach()
        rows = w.reshape(w.shape[0], -1)
        per = distinct_per_row(rows)
        out.append({
            "layer": name, "type": parametrize.type_before_parametrizations(module).__name__,
            "channels": int(w.shape[0]), "inputs": int(rows.shape[1]),
            "distinct": int(w.unique().numel()), "distinct_per_neuron": int(per.max()) if per.numel() else 0,
        })
    return out


def codebook_records(model: nn.Module) -> list[dict[str, Any]]:
    """Per compressed weight: m, bits, granularity and every group's codebook (integers when ``bits`` is set)."""
    out = []
    for layer in compressed_layers(model):
        q, form = layer.quantizer, layer.integer_form()
        out.append({
            "layer": layer.name, "m": int(q.m), "bits": q.bits, "granularity": q.granularity,
            "groups": form.groups,
            "codebook_int": form.ints.to(torch.int64).tolist() if form.ints is not None else None,
            "codebook": form.values.detach().float().tolist(),
            "scale": form.scale.detach().float().tolist() if form.scale is not None else None,
        })
    return out


# -- plots --------------------------------------------------------------------------------------------

#: The extra that installs what the plots need: ``pip install "snn-spikefit[plots]"``.
PLOTS_EXTRA = "plots"


def have_matplotlib() -> bool:
    """matplotlib can be imported (the PNG plots need it; everything else does not)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(width: float = 7.0, height: float = 3.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _bars_before_after(path: Path, names: Sequence[str], before: Sequence[float], after: Sequence[float], *,
                       title: str, ylabel: str, limit: float | None = None, log: bool = False) -> Path:
    import numpy as np

    fig = new_figure(max(5.0, 1.0 + 0.9 * len(names)))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    ax.bar(x - 0.2, before, 0.4, label="before", color="#999999")
    ax.bar(x + 0.2, after, 0.4, label="after", color="#1f77b4")
    if limit is not None:
        ax.axhline(limit, color="#d62728", linestyle="--", label=f"chip limit {limit:g}")
    ax.set_xticks(x, list(names))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def _codebook_plot(path: Path, books: list[dict[str, Any]]) -> Path:
    import numpy as np

    fig = new_figure(max(5.0, 3.2 * len(books)), 3.5)
    for i, book in enumerate(books):
        ax = fig.add_subplot(1, len(books), i + 1)
        values = np.asarray(book["codebook_int"] if book["codebook_int"] is not None else book["codebook"], dtype=float)
        groups = np.repeat(np.arange(values.shape[0]), values.shape[1])
        ax.scatter(groups, values.reshape(-1), s=8, color="#1f77b4")
        ax.set_title(f"{book['layer']}: m={book['m']}, bits={book['bits']}")
        ax.set_xlabel("neuron" if book["granularity"] == "channel" else "codebook")
        ax.set_ylabel("integer codeword" if book["codebook_int"] is not None else "codeword")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _ratio_plot(path: Path, before: dict[str, Any], after: dict[str, Any]) -> Path:
    import numpy as np

    labels, ratios = [], []
    for key, label, _, _ in DR_COMPONENTS:
        b, a = before.get(key), after.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b and a and a > 0 and b > 0:
            labels.append(label)
            ratios.append(a / b)
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(labels))
    ax.bar(x, ratios, color=["#2ca02c" if r >= 1 else "#ff7f0e" for r in ratios])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("after / before")
    ax.set_title("DeployRatio and its components, after / before")
    fig.tight_layout()
    fig.savefig(path)
    return path


# -- tables -------------------------------------------------------------------------------------------

def _layer_table(record: dict[str, Any]) -> Table:
    t = Table(["layer", "type", "channels before", "channels after", "distinct/neuron before",
               "distinct/neuron after", "distinct/layer before", "distinct/layer after"],
              title="layers (distinct weights include 0)")
    for r in record["layers"]:
        t.add_row([r["layer"], r["type"], r["channels_before"], r["channels_after"], r["distinct_per_neuron_before"],
                   r["distinct_per_neuron_after"], r["distinct_before"], r["distinct_after"]])
    return t


def _dr_table(before: dict[str, Any], after: dict[str, Any]) -> Table:
    t = Table(["metric", "before", "after", "after/before", "unit"], title="DeployRatio components")
    for key, label, unit, _ in DR_COMPONENTS:
        b, a = before.get(key), after.get(key)
        ratio = a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None
        t.add_row([label, b, a, ratio, unit])
    return t


def _codebook_table(books: list[dict[str, Any]]) -> Table:
    t = Table(["layer", "granularity", "groups", "m", "bits", "codebook (first group)", "scale (first group)"],
              title="codebooks")
    for b in books:
        first = b["codebook_int"][0] if b["codebook_int"] is not None else [round(v, 5) for v in b["codebook"][0]]
        t.add_row([b["layer"], b["granularity"], b["groups"], b["m"], b["bits"], sorted(first),
                   b["scale"][0] if b["scale"] else None])
    return t


def _check_table(check: dict[str, Any], when: str) -> Table:
    t = Table(["rule", "layer", "limit", "actual", "severity"],
              title=f"check {when} against {check['profile']}: {'OK' if check['ok'] else 'FAILED'}")
    for v in check["violations"]:
        t.add_row([v["rule"], v["layer"], v["limit"], v["actual"], v["severity"]])
    return t


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(v))}</td>" for v in r) + "</tr>"
                   for r in table.rows)
    title = f"<p><b>{html.escape(table.title)}</b></p>" if table.title else ""
    return f"{title}<table><tr>{head}</tr>{body}</table>"


def write_report(record: dict[str, Any], path: str | os.PathLike, *, format: str | None = None,
                 plots: bool = True) -> list[Path]:
    """Render a compression record (``spikefit compress``'s JSON) as a human report at ``path``.

    ``format``: ``"md"`` or ``"html"`` (default from the suffix of ``path``, else Markdown). The PNG
    plots go next to it as ``<stem>_<plot>.png``. Returns the files written (report first). Without
    matplotlib (a plain ``pip install snn-spikefit``) the plots are skipped with one warning naming
    the extra that brings them (``snn-spikefit[plots]``); the report is written all the same.
    """
    path = Path(path)
    fmt = format or (path.suffix.lstrip(".") if path.suffix.lstrip(".") in REPORT_FORMATS else "md")
    if fmt not in REPORT_FORMATS:
        raise SpikeFitValueError(f"format={format!r} is not allowed; use one of {REPORT_FORMATS}")
    missing = [k for k in ("layers", "before", "after", "check_before", "check_after", "codebooks") if k not in record]
    if missing:
        raise SpikeFitValueError(f"record lacks {missing}; pass the JSON record written by spikefit compress")
    path.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    images: list[tuple[str, Path]] = []
    if plots and not have_matplotlib():
        warnings.warn(f"matplotlib is not installed: PNG plots skipped (pip install "
                      f"\"snn-spikefit[{PLOTS_EXTRA}]\" to get them)", UserWarning, stacklevel=2)
        plots = False
    if plots:
        stem = path.parent / path.stem
        names = [r["layer"] for r in record["layers"]]
        images.append(("Distinct weights per neuron", _bars_before_after(
            Path(f"{stem}_distinct_weights.png"), names, [r["distinct_per_neuron_before"] for r in record["layers"]],
            [r["distinct_per_neuron_after"] for r in record["layers"]], title="distinct weights per neuron (most)",
            ylabel="distinct values", limit=record.get("limit_per_neuron"), log=True)))
        images.append(("Channels", _bars_before_after(
            Path(f"{stem}_channels.png"), names, [r["channels_before"] for r in record["layers"]],
            [r["channels_after"] for r in record["layers"]], title="output channels (neurons)", ylabel="channels")))
        if record["codebooks"]:
            images.append(("Codebooks", _codebook_plot(Path(f"{stem}_codebooks.png"), record["codebooks"])))
        images.append(("DeployRatio components", _ratio_plot(Path(f"{stem}_deploy_ratio.png"), record["before"],
                                                              record["after"])))
    tables = [_layer_table(record), _codebook_table(record["codebooks"]), _dr_table(record["before"], record["after"]),
              _check_table(record["check_before"], "before"), _check_table(record["check_after"], "after")]
    if record.get("prune"):
        p = record["prune"]
        tables.insert(1, Table(["criterion", "amount", "parameters before", "parameters after"],
                               [[p["criterion"], p["amount"], p["params_before"], p["params_after"]]], title="pruning"))
    title = f"spikefit compress: {record.get('model', '')} for {record.get('hardware', '')}"
    facts = [f"{k}: {record[k]}" for k in ("data", "num_steps", "output", "seconds") if k in record]
    if isinstance(record.get("settings"), dict):
        facts.append("settings: " + ", ".join(f"{k}={v}" for k, v in record["settings"].items()))
    if record["after"].get("energy_note"):
        facts.append(f"energy: {record['after']['energy_note']}")
    hints = [v["hint"] for v in record["check_after"]["violations"]]
    if fmt == "md":
        parts = [f"# {title}", "", *[f"- {f}" for f in facts], ""]
        for t in tables:
            parts += [t.to_markdown(), ""]
        if hints:
            parts += ["**How to fix what remains**", "", *[f"- {h}" for h in hints], ""]
        for caption, img in images:
            parts += [f"![{caption}]({img.name})", ""]
        text = "\n".join(parts)
    else:
        body = [f"<h1>{html.escape(title)}</h1><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in facts) + "</ul>"]
        body += [_html_table(t) for t in tables]
        body += [f"<p>{html.escape(h)}</p>" for h in hints]
        body += [f'<figure><img src="{html.escape(img.name)}"><figcaption>{html.escape(c)}</figcaption></figure>'
                 for c, img in images]
        text = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
                "<style>table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
                "</head><body>" + "\n".join(body) + "</body></html>")
    path.write_text(text)
    written.append(path)
    return written + [img for _, img in images]
