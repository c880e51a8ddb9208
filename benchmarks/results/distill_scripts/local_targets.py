"""Prototype (not in the library): teacher-forced distillation targets, tried for issue 17 and not kept.

The teacher's neuron l is fed the student's spikes of neuron l-1 (forward hooks replace the teacher
neurons' outputs with the student's), so each layer's membrane target is what the full-precision layer
would do with the student's own input. Same models, budget, validation split and Distiller weights as
benchmarks/distill_sweep.py / distill_budget.py.

    python benchmarks/results/distill_scripts/local_targets.py SEED M [CONFIG,...]

Measured (CAT m=2 b=4, validation accuracy; the printed lines are in local_targets.log): local 83.65 / 83.55 / 82.85 (seeds 0, 1, 2; mean 83.35),
local-1 82.65, local-mem1 82.5 (seed 0); the Distiller's own targets give 83.32 (distill_budget.md, x1),
no distillation 82.87.
"""
import sys, copy, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
torch.set_num_threads(1); torch.set_flush_denormal(True)
import snn_spikefit as sf
from snn_spikefit.runtime import eval_mode, run
from snn_spikefit.distill.distiller import _first
from benchmarks.distill_sweep import _Sweep
from benchmarks.suite import _seed_all
from snn_spikefit.train import fit, recalibrate_bn

class Local(sf.Distiller):
    forced = True
    def run(self, x, *, num_steps=None):
        self.clear()
        ad_s, ad_t = sf.get_adapter(self.student), sf.get_adapter(self.teacher)
        s_neu, t_neu = dict(ad_s.neurons(self.student)), dict(ad_t.neurons(self.teacher))
        rec = {n: [] for n in s_neu}
        hs = [m.register_forward_hook(lambda mod, a, o, n=n: rec[n].append(ad_s.spikes(mod, o).detach())) for n, m in s_neu.items()]
        try:
            s_out = run(self.student, x, num_steps=num_steps)
        finally:
            for h in hs: h.remove()
        pos = {n: 0 for n in t_neu}
        def sub(mod, a, o, n):
            i = pos[n]; pos[n] += 1
            return rec[n][i]
        th = [m.register_forward_hook(lambda mod, a, o, n=n: sub(mod, a, o, n)) for n, m in t_neu.items()] if self.forced else []
        try:
            with torch.no_grad(), eval_mode(self.teacher, clear=True), self._teacher_batch_stats():
                t_out = run(self.teacher, x, num_steps=num_steps)
        finally:
            for h in th: h.remove()
        self._outputs = (_first(t_out).detach(), _first(s_out))
        return s_out

seed = int(sys.argv[1]); ms = [int(v) for v in sys.argv[2].split(",")]
sw = _Sweep(seed, 2000, False)
cfg, b = sw.cfg, sw.budget
import snn_spikefit.train as T
def ft(m, kw, cls):
    model = sf.wrap(copy.deepcopy(sw.fp32), m=m, bits=4)
    orig = T.Distiller
    T.Distiller = cls
    try:
        _seed_all(seed)
        fit(model, sw._loader(True), epochs=2 * b.finetune_epochs, num_steps=cfg.num_steps, lr=cfg.finetune_lr,
            progress=False, recalibrate=False, schedule=cfg.finetune_schedule, teacher=sw.teachers["ft"], distill=kw)
    finally:
        T.Distiller = orig
    recalibrate_bn(model, sw._loader(False), num_steps=cfg.num_steps, num_batches=cfg.recal_batches, progress=False)
    return sw.score(model)
for m in ms:
    configs = {"local": {}, "local-1": {"membrane_weight": 1.0, "logit_weight": 1.0}, "local-mem1": {"membrane_weight": 1.0, "logit_weight": 0.1}}
    for name in (sys.argv[3].split(",") if len(sys.argv) > 3 else configs):
        kw = configs[name]
        print(seed, m, name, ft(m, kw, Local), flush=True)
