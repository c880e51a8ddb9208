"""Distillation variants tried for issue 17 at CAT m=2 b=4 and not kept (validation split, as distill_sweep.py).

    python benchmarks/results/distill_scripts/kd_variants.py SEED

Measured (seeds 0 / 1; the printed lines are in kd_variants.log): kd-only-t1 (no cross-entropy, logits at tau 1) 83.6 / 82.25; kd-only-t4-mem (no
cross-entropy, logits 1.0 at tau 4, membranes 0.1) 82.25 / 81.3; mix-t2 (membranes 0.1, logits 0.5 at tau 2)
83.15 / 82.8; memvar-0.3 (variance-normalised membranes 0.3, logits 0.1) 82.95 / 82.0. The Distiller's
defaults give 83.85 / 83.6 on the same seeds (distill_sweep.md, ft-small).
"""
import sys, copy, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
torch.set_num_threads(1); torch.set_flush_denormal(True)
import snn_spikefit as sf
from benchmarks.distill_sweep import _Sweep
from benchmarks.suite import _seed_all
from snn_spikefit.train import fit, recalibrate_bn
seed = int(sys.argv[1])
sw = _Sweep(seed, 2000, False)
cfg, b = sw.cfg, sw.budget
zero = lambda s, y: s.sum() * 0.0
def ft(kw, loss_fn=None):
    model = sf.wrap(copy.deepcopy(sw.fp32), m=2, bits=4)
    _seed_all(seed)
    fit(model, sw._loader(True), epochs=2 * b.finetune_epochs, num_steps=cfg.num_steps, lr=cfg.finetune_lr,
        progress=False, recalibrate=False, schedule=cfg.finetune_schedule, teacher=sw.teachers["ft"], distill=kw, loss_fn=loss_fn)
    recalibrate_bn(model, sw._loader(False), num_steps=cfg.num_steps, num_batches=cfg.recal_batches, progress=False)
    return sw.score(model)
for name, kw, lf in (("kd-only-t1", {"membrane_weight": 0.0, "logit_weight": 1.0, "temperature": 1.0}, zero),
                     ("kd-only-t4-mem", {"membrane_weight": 0.1, "logit_weight": 1.0, "temperature": 4.0}, zero),
                     ("mix-t2", {"membrane_weight": 0.1, "logit_weight": 0.5, "temperature": 2.0}, None),
                     ("memvar-0.3", {"membrane_weight": 0.3, "logit_weight": 0.1, "normalize": "variance"}, None)):
    print(seed, name, ft(kw, lf), flush=True)
