"""The benchmark suite's outputs: the Table-2 style summary, verdicts, Markdown/CSV/JSON and PNG plots.

Used by ``benchmarks/suite.py`` (:func:`write_results` after every run); it reads the per-run rows
and plot data that :func:`suite.run_suite` returns and measures nothing itself.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.suite_config import BenchConfig
from snn_spikefit.table import Table

__all__ = ["summarize", "verdicts", "budget_text", "write_results"]


def summarize(rows: list[dict]) -> Table:
    """Table-2 style: one row per (data set, method, m, bits), mean +- std over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"], r["m"], r["bits"]), []).append(r)
    t = Table(["dataset", "method", "M", "bits", "seeds", "accuracy %", "acc std", "macro-F1 %", "size MB",
               "SOPs", "MACs", "energy mJ", "DR_acc", "note"])
    mean = lambda rs, k: statistics.mean(r[k] for r in rs) if all(r[k] is not None for r in rs) else None  # noqa
    for (ds, method, m, bits), rs in groups.items():  # noqa: B007
        acc = [r["accuracy"] for r in rs]
        t.add_row([ds, method, m, bits, len(rs), statistics.mean(acc), statistics.stdev(acc) if len(acc) > 1 else 0.0,
                   mean(rs, "f1"), mean(rs, "size_mb"), mean(rs, "sops"), mean(rs, "macs"), mean(rs, "energy_mj"),
                   mean(rs, "dr_acc"), rs[0]["note"]])
    return t


def verdicts(summary: Table) -> list[str]:
    rec = {(r["dataset"], r["method"], r["M"], r["bits"]): r for r in summary.records()}
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in summary.records()):
        for ref in ("FP32", "FP32 + fine-tune"):
            fp = rec.get((ds, ref, None, 32))
            for bits in (4, 8):
                cat = rec.get((ds, "CAT", 4, bits))
                if fp and cat:
                    gap = fp["accuracy %"] - cat["accuracy %"]
                    out.append(f"{ds}: CAT M=4 b={bits} {cat['accuracy %']:.2f} vs {ref} {fp['accuracy %']:.2f} "
                               f"(gap {gap:.2f} points: {'within' if gap <= 1 else 'NOT within'} 1 point)")
        pairs = [(("CAT", 4, 8), ("Clustered QAT (kmeans)", 4, 8)), (("CAT", 3, 8), ("TTQ", 3, None)),
                 (("CAT (first/last FP32)", 3, None), ("TTQ", 3, None)),
                 (("CAT", 3, 2), ("TTQ", 3, None)), (("CAT", 3, 2), ("QP-SNN (ReScaW)", 3, 2)),
                 (("CAT", 4, 8), ("Clustered QAT -> SNN conversion (IF)", 4, 8))]
        for a, b in pairs:
            ra, rb = rec.get((ds, *a)), rec.get((ds, *b))
            if ra and rb:
                d = ra["accuracy %"] - rb["accuracy %"]
                out.append(f"{ds}: {a[0]} M={a[1]} b={a[2]} {ra['accuracy %']:.2f} vs {b[0]} M={b[1]} b={b[2]} "
                           f"{rb['accuracy %']:.2f} ({'+' if d >= 0 else ''}{d:.2f}: CAT {'ahead' if d > 0 else 'NOT ahead'})")
    return out


def _plots(rows: list[dict], extra: dict[str, Any], out: Path, mode: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for ds, ex in extra.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        methods = dict.fromkeys(r["method"] for r in rows if r["dataset"] == ds and r["m"] is not None)
        for method in methods:
            for bits in sorted({r["bits"] for r in rows if r["dataset"] == ds and r["method"] == method},
                               key=lambda b: -1 if b is None else b):
                pts: dict[int, list[float]] = {}
                for r in rows:
                    if r["dataset"] == ds and r["method"] == method and r["bits"] == bits:
                        pts.setdefault(r["m"], []).append(r["accuracy"])
                ms = sorted(pts)
                ax.errorbar(ms, [statistics.mean(pts[m]) for m in ms], marker="o", capsize=3,
                            yerr=[statistics.stdev(pts[m]) if len(pts[m]) > 1 else 0 for m in ms],
                            label=f"{method} b={bits}")
        fp = [r["accuracy"] for r in rows if r["dataset"] == ds and r["method"] == "FP32"]
        ax.axhline(statistics.mean(fp), color="k", ls="--", label="FP32")
        ax.set(xscale="log", xlabel="M (values per layer / per channel for QP-SNN)", ylabel="test accuracy %",
               title=f"{ds}: accuracy vs M")
        ax.legend(fontsize=5)
        files.append(_save(fig, out / f"bench_{mode}_{ds}_accuracy_vs_m.png"))
        trace = ex.get("cat_trace")
        if trace:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.hist(ex["fp32_weights"], bins=80, color="0.6", label=f"FP32 weights, layer {ex['trace_layer']}")
            for i, v in enumerate(trace["values"][-1]):
                ax.axvline(v, color="C3", label="CAT codebook (learned)" if i == 0 else None)
            ax.set(xlabel="weight", ylabel="count", title=f"{ds}: CAT M={trace['m']} b={trace['bits']}")
            ax.legend(fontsize=7)
            files.append(_save(fig, out / f"bench_{mode}_{ds}_codebook_histogram.png"))
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(np.asarray(trace["values"]))
            ax.set(xlabel="optimizer step", ylabel="codebook value",
                   title=f"{ds}: CAT M={trace['m']} b={trace['bits']} codebook during fine-tune, "
                         f"layer {ex['trace_layer']}")
            files.append(_save(fig, out / f"bench_{mode}_{ds}_codebook_trace.png"))
    return files


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path.name


def budget_text(cfg: BenchConfig) -> str:
    lines = [f"mode {cfg.mode}: seeds {list(cfg.seeds)}, T={cfg.num_steps}, batch {cfg.batch_size}, "
             f"conv_snn channels {list(cfg.channels)} + BatchNorm, FP32 lr {cfg.lr}, fine-tune lr "
             f"{cfg.finetune_lr} (Adam, schedule {cfg.finetune_schedule or 'constant'}), BN re-estimated on {cfg.recal_batches} batches after every fine-tune, "
             f"profile {cfg.profile}"]
    for ds in cfg.datasets:
        b = cfg.budgets[ds]
        lines.append(f"{ds}: train {b.train or 'all'} / test {b.test or 'all'} samples, image "
                     f"{b.image_size or 'as stored'}, FP32 {b.epochs} epochs, every fine-tune {b.finetune_epochs} "
                     f"epoch(s) on {b.finetune or 'all'} training samples (one-stage methods - CAT, TTQ, QP-SNN, FP32 "
                     f"control - get twice that, matching the clustered pipeline's QAT + centroid stages)")
    return "\n".join(lines)


def write_results(cfg: BenchConfig, rows: list[dict], extra: dict, out: Path, seconds: float,
                  command: str) -> Table:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    summary.title = f"snn_spikefit bench ({cfg.mode})"
    found = verdicts(summary)
    plots = _plots(rows, extra, out, cfg.mode)
    stem = out / f"bench_{cfg.mode}"
    summary.to_csv(f"{stem}.csv")
    Table(list(rows[0]), [list(r.values()) for r in rows]).to_csv(f"{stem}_runs.csv")
    text = (f"# Benchmark ({cfg.mode})\n\nCommand: `{command}`\n\nWall time {seconds / 60:.1f} min on this machine "
            f"(shared with other jobs, so inflated).\n\n```\n{budget_text(cfg)}\n```\n\n{summary.to_markdown()}\n\n"
            "SOPs: effective accumulates (ACs) per inference, MACs: effective multiply-accumulates (NeuroBench "
            "rules, `snn_spikefit.count_ops`): a layer whose inputs are not all binary (the encoding layer, or a "
            "layer fed average-pooled spikes) counts MACs, not SOPs. Energy and DR under the profile above; DR "
            "also depends on the measured latency (not reproducible).\n\n" + "\n".join(f"- {v}" for v in found) + "\n\n"
            + "\n".join(f"![{p}]({p})" for p in plots) + "\n")
    Path(f"{stem}.md").write_text(text)
    cfg_dict = asdict(cfg)
    Path(f"{stem}.json").write_text(json.dumps({"config": cfg_dict, "command": command, "seconds": seconds,
                                                "summary": summary.records(), "runs": rows, "verdicts": found,
                                                "ann_accuracy": {d: e.get("ann_accuracy") for d, e in extra.items()}},
                                               indent=1, default=str))
    return summary
