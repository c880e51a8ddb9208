# python benchmarks/results/ptq_scripts/sparsity_rerun.py SEED > /tmp/sbc/sp_sSEED.log (one JSON line of rows)
import sys, json
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import torch
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True, warn_only=True)
from benchmarks import ptq
from benchmarks.suite import _Run
from benchmarks.suite_config import MODES
cfg = MODES['full']; seed = int(sys.argv[1])
run = _Run(cfg, 'fashion-mnist', seed, False)
b = ptq._Bench(run, 16)
for s in ptq.SPARSITIES:
    b.add("sparsity", "SBC (LAMP; exact OBS up to 256 inputs, SparseGPT above)", f"{s:.0%}",
          lambda m, s=s: b.ptq(m, sparsity=s), memory=True)
b.add("sparsity", "SBC (LAMP; exact OBS everywhere)", "90%", lambda m: b.ptq(m, sparsity=0.9, pruner="obs"),
      memory=True)
epoch = ptq._epoch_seconds(run)
for r in b.rows: r["epoch_cpu_s"] = epoch
print(json.dumps(b.rows), flush=True)
