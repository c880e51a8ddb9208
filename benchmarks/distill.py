"""Distillation (MD-SNN) and chip-precision state on the suite's conv SNN, one command.

    python benchmarks/distill.py --quick                       # digits, 1 seed
    python benchmarks/distill.py --full --out benchmarks/results   # Fashion-MNIST, 3 seeds

Per data set and seed the suite's conv SNN (snnTorch ``conv_snn``, BatchNorm, Leaky beta=0.5,
T=4) is trained FP32 once (the teacher); every row starts from it with the same fine-tune
budget as the suite's one-stage methods (samples, epochs, lr, cosine schedule, BatchNorm
re-estimation):

* ``FP32 + fine-tune`` (the control) and ``CAT`` m = 2, 3, 4 at 4 bits, without and with
  distillation from the FP32 teacher (``sf.fit(..., teacher=fp32)``);
* chip-precision state, per profile (loihi, xylo): BatchNorm folded into the weights first (a
  chip has none), then CAT trained without state and evaluated with it (``unaware``), and CAT
  trained with it (``wrap(..., hardware=...)``, ``aware``), each without and with distillation.

It also times one training step of CAT with and without distillation (interleaved, one
thread, CPU time, median and quartiles over repetitions). Results: ``distill_<mode>.md``,
``.json``, ``_runs.csv`` in ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import snn_spikefit as sf
from snn_spikefit.quantize.fold import fold_batchnorm
from snn_spikefit.table import Table
from snn_spikefit.train import accuracy, fit, recalibrate_bn, scores

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.suite import _data, _seed_all  # noqa: E402
from benchmarks.suite_config import MODES  # noqa: E402
from snn_spikefit.data.datasets import make_loader  # noqa: E402

#: The Distiller's defaults, read from its signature (what every distilled row uses).
DISTILL = {k: inspect.signature(sf.Distiller).parameters[k].default
           for k in ("membrane_weight", "logit_weight", "temperature", "teacher_bn")}


class _Bench:
    def __init__(self, mode: str, name: str, seed: int, progress: bool) -> None:
        from snn_spikefit.zoo.snntorch import conv_snn

        self.cfg = MODES[mode]
        self.name, self.seed, self.progress = name, seed, progress
        self.budget = self.cfg.budgets[name]
        self.train, self.test = _data(name, self.budget)
        x0 = self.train.tensors[0]
        _seed_all(seed)
        self.fp32 = conv_snn(in_channels=x0.shape[1], num_classes=10, image_size=x0.shape[-1],
                             channels=self.cfg.channels, batch_norm=True)
        fit(self.fp32, self.loader(), epochs=self.budget.epochs, num_steps=self.cfg.num_steps, lr=self.cfg.lr,
            progress=progress, desc=f"{name} s{seed} FP32", recalibrate=False)
        self.rows: list[dict] = []

    def loader(self, finetune: bool = False, shuffle: bool = True):
        if not shuffle:
            return make_loader(self.test, 256)
        data = self.train
        if finetune and self.budget.finetune is not None:
            data = torch.utils.data.Subset(self.train, range(min(self.budget.finetune, len(self.train))))
        return make_loader(data, self.cfg.batch_size, shuffle=True, seed=self.seed, drop_last=True)

    def finetune(self, model, desc: str, teacher=None) -> None:
        _seed_all(self.seed)
        fit(model, self.loader(finetune=True), epochs=2 * self.budget.finetune_epochs, num_steps=self.cfg.num_steps,
            lr=self.cfg.finetune_lr, progress=self.progress, desc=f"{self.name} s{self.seed} {desc}",
            recalibrate=False, schedule=self.cfg.finetune_schedule, teacher=teacher,
            distill=DISTILL if teacher is not None else None)
        recalibrate_bn(model, self.loader(), num_steps=self.cfg.num_steps, num_batches=self.cfg.recal_batches,
                       progress=False)

    def record(self, model, method: str, m, distilled, state: str = "float", trained: str = "") -> None:
        """``distilled``: ``False`` or the teacher's name (``"fp32"``, ``"fp32-ft"``)."""
        acc = accuracy(model, self.loader(shuffle=False), num_steps=self.cfg.num_steps)
        self.rows.append({"dataset": self.name, "seed": self.seed, "method": method, "m": m, "bits": 4 if m else 32,
                          "distilled": distilled, "state": state, "trained_with_state": trained, "accuracy": acc})
        print(f"{self.name} s{self.seed} {method} m={m} distil={distilled} state={state} {trained}: {acc:.2f}%",
              flush=True)


def _rows(b: _Bench, ms, profiles, state_ms, teacher_kinds=("fp32",), state_plain: bool = True) -> None:
    """Every row of one seed; CAT is distilled from each teacher of ``teacher_kinds``, the state rows
    from the first."""
    control = copy.deepcopy(b.fp32)
    b.finetune(control, "FP32 ft")
    b.record(control, "FP32 + fine-tune", None, False)
    teachers = {"fp32": b.fp32, "fp32-ft": control}
    for m in ms:
        for kind in (False, *teacher_kinds):
            model = sf.wrap(copy.deepcopy(b.fp32), m=m, bits=4)
            b.finetune(model, f"CAT m={m}{f' +KD {kind}' if kind else ''}", teachers[kind] if kind else None)
            b.record(model, "CAT", m, kind)
    folded = fold_batchnorm(copy.deepcopy(b.fp32))
    for m in state_ms if profiles else ():
        for distilled in (False, teacher_kinds[0]) if state_plain else (teacher_kinds[0],):
            kd = teachers[distilled] if distilled else None
            plain = sf.wrap(copy.deepcopy(folded), m=m, bits=4)
            b.finetune(plain, f"CAT-folded m={m}", kd)
            b.record(plain, "CAT (BN folded)", m, distilled)
            for prof in profiles:
                unaware = sf.quantize_state(copy.deepcopy(plain), hardware=prof)
                b.record(unaware, "CAT (BN folded)", m, distilled, prof, "no (evaluated with state)")
                aware = sf.wrap(copy.deepcopy(folded), m=m, bits=4, hardware=prof)
                b.finetune(aware, f"CAT-{prof} m={m}", kd)
                b.record(aware, "CAT (BN folded)", m, distilled, prof, "yes")


def _step_times(b: _Bench, reps: int) -> dict:
    """CPU seconds of one training step (forward, loss, backward, Adam) of CAT m=4 b=4, interleaved."""
    torch.set_num_threads(1)
    x, y = next(iter(b.loader(finetune=True)))
    models = {k: sf.wrap(copy.deepcopy(b.fp32), m=4, bits=4) for k in ("plain", "distilled")}
    opts = {k: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-4) for k, m in models.items()}
    distiller = sf.Distiller(b.fp32, models["distilled"], **DISTILL)
    times = {"plain": [], "distilled": []}
    for i in range(reps + 2):
        for key in ("plain", "distilled") if i % 2 == 0 else ("distilled", "plain"):
            model, opt = models[key], opts[key]
            start = time.process_time()
            if key == "plain":
                out = sf.run(model, x, num_steps=b.cfg.num_steps)
                loss = F.cross_entropy(scores(out), y) + 0.25 * sf.commitment_loss(model)
            else:
                out = distiller.run(x, num_steps=b.cfg.num_steps)
                loss = F.cross_entropy(scores(out), y) + 0.25 * sf.commitment_loss(model) + distiller.loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sf.reset(model)
            if i >= 2:  # two warm-up rounds
                times[key].append(time.process_time() - start)
    distiller.close()
    ratios = sorted(d / p for d, p in zip(times["distilled"], times["plain"]))
    q = statistics.quantiles(ratios, n=4)
    return {"reps": reps, "plain_median_s": statistics.median(times["plain"]),
            "distilled_median_s": statistics.median(times["distilled"]), "ratio_median": statistics.median(ratios),
            "ratio_q1": q[0], "ratio_q3": q[2], "batch": int(x.shape[0]), "num_steps": b.cfg.num_steps}


def _summary(rows: list[dict]) -> Table:
    keys = []
    for r in rows:
        k = (r["dataset"], r["method"], r["m"], r["distilled"], r["state"], r["trained_with_state"])
        if k not in keys:
            keys.append(k)
    t = Table(["dataset", "method", "m", "distilled", "state", "trained with state", "seeds", "accuracy", "std"])
    for k in keys:
        accs = [r["accuracy"] for r in rows if (r["dataset"], r["method"], r["m"], r["distilled"], r["state"],
                                                r["trained_with_state"]) == k]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        t.add_row([k[0], k[1], k[2] or "-", _teacher_name(k[3]), k[4], k[5] or "-", len(accs),
                   round(statistics.mean(accs), 2), round(std, 2)])
    return t


def _teacher_name(distilled) -> str:
    if distilled is True:  # results written before the teacher was named
        return "yes"
    return {False: "no", "fp32": "from FP32", "fp32-ft": "from FP32 + fine-tune"}.get(distilled, str(distilled))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="digits, 1 seed (the default)")
    g.add_argument("--full", action="store_true", help="Fashion-MNIST, 3 seeds (suite budgets)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--ms", type=int, nargs="*", default=[2, 3, 4], help="m of the CAT rows (none: only state rows)")
    ap.add_argument("--profiles", nargs="*", default=["loihi", "xylo"])
    ap.add_argument("--state-ms", type=int, nargs="*", default=None, help="m of the state rows (default: --ms)")
    ap.add_argument("--timing-reps", type=int, default=15)
    ap.add_argument("--teacher", choices=("fp32", "fp32-ft"), nargs="+", default=["fp32"],
                    help="distil from the FP32 model (default) and/or from the FP32 + fine-tune control "
                         "(the state rows use the first)")
    ap.add_argument("--state-distilled-only", action="store_true", help="state rows: only the distilled ones")
    ap.add_argument("--only-seeds", type=int, nargs="+", default=None,
                    help="run just these seeds (one process per seed; combine with --merge)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="write one result from the runs of several distill_*.json files and exit")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    mode = "full" if args.full else "quick"
    name = "fashion-mnist" if args.full else "digits"
    cfg = MODES[mode]
    seeds = list(range(args.seeds)) if args.seeds is not None else list(cfg.seeds if args.full else (0,))
    seeds = args.only_seeds if args.only_seeds is not None else seeds
    begin, rows, timing = time.perf_counter(), [], None
    command = "python benchmarks/distill.py " + " ".join(argv if argv is not None else sys.argv[1:])
    tag = "" if args.teacher == ["fp32"] else "_teacher-" + "-and-".join(args.teacher)
    tag += "" if args.only_seeds is None else "_seeds-" + "-".join(map(str, seeds))
    if args.merge:
        return _merge(Path(args.out), mode, name, command, args.merge, tag.split("_seeds-")[0])
    for seed in seeds:
        b = _Bench(mode, name, seed, not args.no_progress)
        b.record(b.fp32, "FP32", None, False)
        if timing is None and args.timing_reps:
            timing = _step_times(b, args.timing_reps)
            print("step time:", timing, flush=True)
        _rows(b, args.ms, args.profiles, args.ms if args.state_ms is None else args.state_ms, tuple(args.teacher),
              not args.state_distilled_only)
        rows.extend(b.rows)
        _write(Path(args.out), mode, name, command, rows, timing, time.perf_counter() - begin, tag)  # every seed
    return 0


def _merge(out: Path, mode: str, name: str, command: str, files, tag: str) -> int:
    """One result from per-seed runs: their rows in seed order, the first timing found, the summed wall."""
    runs = [json.loads(Path(f).read_text()) if f.endswith(".json") else _from_log(Path(f)) for f in files]
    rows, seen = [], set()  # a row two processes both made (FP32, the control: deterministic) counts once
    for r in sorted((r for run in runs for r in run["rows"]), key=lambda r: r["seed"]):
        key = tuple(r[k] for k in ("seed", "method", "m", "distilled", "state", "trained_with_state"))
        if key not in seen:
            seen.add(key)
            rows.append(r)
    timing = next((run["timing"] for run in runs if run.get("timing")), None)
    commands = "; ".join(run["command"] for run in runs)
    _write(out, mode, name, f"{commands}; {command}", rows, timing, sum(run.get("wall", 0.0) for run in runs), tag)
    return 0


def _from_log(path: Path) -> dict:
    """The rows a run printed (``<dataset> s<seed> <method> m=<m> distil=<teacher> state=<s> <trained>: <acc>%``),
    for a process stopped before it wrote its JSON; its first line names it (``# <command>``)."""
    import ast
    import re

    lines = path.read_text().splitlines()
    line_re = re.compile(r"^(\S+) s(\d+) (.+?) m=(\S+) distil=(\S+) state=(\S+) (.*): ([\d.]+)%$")
    rows = []
    for line in lines:
        hit = line_re.match(line)
        if hit:
            ds, seed, method, m, dist, state, trained, acc = hit.groups()
            m = None if m == "None" else int(m)
            rows.append({"dataset": ds, "seed": int(seed), "method": method, "m": m, "bits": 4 if m else 32,
                         "distilled": False if dist == "False" else dist, "state": state,
                         "trained_with_state": trained.strip(), "accuracy": float(acc)})
    timing = next((ast.literal_eval(ln[len("step time: "):]) for ln in lines if ln.startswith("step time: ")), None)
    command = lines[0][2:] if lines and lines[0].startswith("# ") else f"(log {path.name})"
    return {"command": command, "rows": rows, "timing": timing}


def _write(out: Path, mode: str, name: str, command: str, rows: list[dict], timing, wall: float,
           tag: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    cfg = MODES[mode]
    budget = cfg.budgets[name]
    seeds = sorted({r["seed"] for r in rows})
    head = (f"# Distillation and chip-precision state ({mode})\n\n`{command}`\n\n"
            f"{name}: train {budget.train or 'all'} / test {budget.test or 'all'}, FP32 {budget.epochs} epochs, every "
            f"row fine-tuned {2 * budget.finetune_epochs} epochs on {budget.finetune or 'all'} samples (lr "
            f"{cfg.finetune_lr}, {cfg.finetune_schedule}), T={cfg.num_steps}, seeds {seeds}; distillation "
            f"{DISTILL} (the Distiller's defaults), teacher as in the `distilled` column; wall {wall:.0f} s "
            f"(shared machine, summed over processes)\n\n")
    text = head + _summary(rows).to_markdown() + "\n"
    if timing:
        text += (f"\nStep time (CAT m=4 b=4, batch {timing['batch']}, T={timing['num_steps']}, one thread, CPU time, "
                 f"{timing['reps']} interleaved repetitions): plain {timing['plain_median_s']:.4f} s, distilled "
                 f"{timing['distilled_median_s']:.4f} s, ratio median {timing['ratio_median']:.2f} "
                 f"(quartiles {timing['ratio_q1']:.2f}-{timing['ratio_q3']:.2f})\n")
    (out / f"distill_{mode}{tag}.md").write_text(text)
    (out / f"distill_{mode}{tag}.json").write_text(json.dumps({"command": command, "rows": rows, "timing": timing,
                                                          "distill": DISTILL, "wall": wall}, indent=2))
    keys = list(rows[0])
    (out / f"distill_{mode}{tag}_runs.csv").write_text(
        "\n".join([",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]) + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
