"""Writes ``benchmarks/speed.py``'s results: ``speed.json`` (every row, run and profile) and ``speed.md``."""

from __future__ import annotations

import json
from pathlib import Path

NOTES = (Path(__file__).parent / "speed_notes.md").read_text()  # the reading of the dense rows


def write(out: Path, meta: dict, rows: list[dict], profiles: list[str], append: bool) -> None:
    """Write ``rows`` (with, under ``append``, the earlier run's other figures) to json and md."""
    out.mkdir(parents=True, exist_ok=True)
    runs = [meta]
    if append and (out / "speed.json").exists():  # keep the earlier run's other figures
        old = json.loads((out / "speed.json").read_text())
        figures = {r["figure"] for r in rows}
        rows = [r for r in old["rows"] if r["figure"] not in figures] + rows
        profiles = profiles or old.get("profiles", [])
        runs = old.get("runs", [old.get("meta")]) + runs
    (out / "speed.json").write_text(json.dumps({"runs": runs, "rows": rows, "profiles": profiles}, indent=1,
                                               default=str) + "\n")
    render(out, runs, rows, profiles)


def render(out: Path, runs: list[dict], rows: list[dict], profiles: list[str]) -> None:
    """``speed.md``: one line per run, the table of ratios, the notes, the profiles."""
    lines = ["# Speed (benchmarks/speed.py)", ""]
    for run in runs:
        lines.append(f"Command: `{run['command']}`, started {run['started']}, {run['wall_s']:.0f} s wall; torch "
                     f"{run['torch']}, {run['cpus']} CPUs, one thread; load average {run['load_start']} at start, "
                     f"{run['load_end']} at the end (the machine is shared: only the ratios count).")
    lines += ["", "Ratios of CPU times measured in interleaved rounds within one run: median of the per-round "
              "ratios and their min-max; the baseline's median time for scale.", "",
              "| figure | config | ratio | spread | baseline ms | target | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        spread = f"{r['min']:.2f}-{r['max']:.2f}" if r["min"] is not None else ""
        ratio = "" if r["ratio"] != r["ratio"] else f"{r['ratio']:.3f}"
        base = "" if r["base_ms"] is None else f"{r['base_ms']:.1f}"
        lines.append(f"| {r['figure']} | {r['config']} | {ratio} | {spread} | {base} | {r['target']} | {r['note']} |")
    lines += ["", NOTES]
    if profiles:
        lines += ["## Where the time goes: CAT step, Linear 1024x1024, T=8, B=32 (torch.profiler)", "", *profiles]
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'speed.md'} and speed.json")
