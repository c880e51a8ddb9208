import sys, json
sys.path.insert(0, '/work/wt/sbc')
from pathlib import Path
from benchmarks import ptq
from snn_spikefit.table import Table
rows = []
for s in (0, 1, 2):
    rows += json.loads(Path(f'/tmp/sbc/full_s{s}/ptq_full.json').read_text())['rows']
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
    p = Path(f'/tmp/sbc/sp_s{s}.log')
    if p.exists() and p.read_text().strip():
        rows += json.loads(p.read_text().strip().splitlines()[-1])
order = {"fp32": 0, "uniform": 1, "codebook": 2, "sparsity": 3, "sparsity (superseded)": 4}
rows.sort(key=lambda r: order[r["section"]])  # stable: method order within a section kept
table = ptq.summarize(rows)
out = Path('/work/wt/sbc/benchmarks/results')
head = Path('/tmp/sbc/head.md').read_text()
(out / "ptq_full_targets.md").write_text(head + table.to_markdown() + "\n")
table.to_csv(out / "ptq_full_targets.csv")
cols = ptq._columns(rows)
Table(cols, rows=[[r.get(c) for c in cols] for r in rows]).to_csv(out / "ptq_full_targets_runs.csv")
(out / "ptq_full_targets.json").write_text(json.dumps({"seeds": [0, 1, 2], "rows": rows}, indent=1, default=str))
print(table.to_markdown())
