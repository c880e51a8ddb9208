# python benchmarks/results/ptq_scripts/merge.py [RUNS]: RUNS (default /tmp/sbc) holds full_s{0,1,2}/ptq_full.json,
# the sp_s{0,1,2}.log of sparsity_rerun.py and head.md; writes ptq_full_targets.* into this checkout's benchmarks/results.
import sys, json
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
RUNS = Path(sys.argv[1]) if len(sys.argv) > 1 else Path('/tmp/sbc')
from benchmarks import ptq
from snn_spikefit.table import Table
rows = []
for s in (0, 1, 2):
    rows += json.loads((RUNS / f'full_s{s}' / 'ptq_full.json').read_text())['rows']
RELABEL = {
    "SBC (GPTQ, spike Hessian)": "SBC 4-bit with asymmetric target + bias correction (not the default)",
    "SBC, last session's settings (no asymmetric target, no bias correction, 1 % damping)":
        "SBC (GPTQ, spike Hessian; the default: as published, 1 % damping)",
    "SBC (LAMP; exact OBS up to 256 inputs, SparseGPT above)":
        "superseded: SBC SparseGPT (equal block counts) + asymmetric + bias correction",
    "SBC (LAMP; exact OBS everywhere)": "superseded: SBC exact OBS + asymmetric + bias correction",
}
for r in rows:
    r["method"] = RELABEL.get(r["method"], r["method"])
    if r["section"] == "sparsity" and r["method"].startswith("superseded"):
        r["section"] = "sparsity (superseded)"
for s in (0, 1, 2):
    p = RUNS / f'sp_s{s}.log'
    if p.exists() and p.read_text().strip():
        rows += json.loads(p.read_text().strip().splitlines()[-1])
order = {"fp32": 0, "uniform": 1, "codebook": 2, "sparsity": 3, "sparsity (superseded)": 4}
rows.sort(key=lambda r: order[r["section"]])  # stable: method order within a section kept
table = ptq.summarize(rows)
out = ROOT / 'benchmarks' / 'results'
head = (RUNS / 'head.md').read_text()
(out / "ptq_full_targets.md").write_text(head + table.to_markdown() + "\n")
table.to_csv(out / "ptq_full_targets.csv")
cols = ptq._columns(rows)
Table(cols, rows=[[r.get(c) for c in cols] for r in rows]).to_csv(out / "ptq_full_targets_runs.csv")
(out / "ptq_full_targets.json").write_text(json.dumps({"seeds": [0, 1, 2], "rows": rows}, indent=1, default=str))
print(table.to_markdown())
