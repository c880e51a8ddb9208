"""Choose the distillation defaults on a validation split of the training set (never the test set).

    python benchmarks/distill_sweep.py --seeds 0 1 --ms 2 --configs none old ft ...

Fashion-MNIST as in ``benchmarks/distill.py --full`` (the suite's conv SNN, the first 4000
training images, the same FP32 training and fine-tune budget), but every row is scored on
the training file's images ``4000 .. 4000 + --val`` that no model trains on. Each config
names the teacher (``fp32``: the FP32 model, ``ft``: the FP32 + fine-tune control) and the
:class:`~snn_spikefit.Distiller` keywords; ``none`` is CAT without distillation. Prints one
line per run and writes ``distill_sweep.md`` / ``_runs.csv`` in ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Subset, TensorDataset

import snn_spikefit as sf
from snn_spikefit.table import Table
from snn_spikefit.train import accuracy, fit, recalibrate_bn

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.suite import _seed_all  # noqa: E402
from benchmarks.suite_config import MODES  # noqa: E402
from snn_spikefit.data.datasets import fashion_mnist, make_loader  # noqa: E402

_OLD = {"membrane_weight": 1.0, "logit_weight": 1.0, "temperature": 4.0, "teacher_bn": "running"}
CONFIGS: dict[str, tuple[str, dict | None]] = {
    "none": ("", None),
    "old": ("fp32", _OLD),                                        # the previous defaults
    "bn": ("fp32", {**_OLD, "teacher_bn": "match"}),
    "ft-old": ("ft", _OLD),
    "ft-bn": ("ft", {**_OLD, "teacher_bn": "match"}),
    "ft-mem": ("ft", {"membrane_weight": 1.0, "logit_weight": 0.0}),
    "ft-memvar": ("ft", {"membrane_weight": 1.0, "logit_weight": 0.0, "normalize": "variance"}),
    "ft-logit": ("ft", {"membrane_weight": 0.0, "logit_weight": 1.0, "temperature": 4.0}),
    "ft-logit-t1": ("ft", {"membrane_weight": 0.0, "logit_weight": 1.0, "temperature": 1.0}),
    "ft-last": ("ft", {"membrane_weight": 1.0, "logit_weight": 1.0, "layers": "last"}),
    "ft-small": ("ft", {"membrane_weight": 0.1, "logit_weight": 0.1}),
    "ft-var-small": ("ft", {"membrane_weight": 0.1, "logit_weight": 0.1, "normalize": "variance"}),
    "fp32-small": ("fp32", {"membrane_weight": 0.1, "logit_weight": 0.1}),
    "fp32-var-small": ("fp32", {"membrane_weight": 0.1, "logit_weight": 0.1, "normalize": "variance"}),
    "ft-small-t1": ("ft", {"membrane_weight": 0.1, "logit_weight": 0.1, "temperature": 1.0}),
    "ft-tiny": ("ft", {"membrane_weight": 0.03, "logit_weight": 0.03}),
    "ft-mem-small": ("ft", {"membrane_weight": 0.1, "logit_weight": 0.0}),
    "ft-small-t2": ("ft", {"membrane_weight": 0.1, "logit_weight": 0.1, "temperature": 2.0}),
    "ft-mix-t1": ("ft", {"membrane_weight": 0.1, "logit_weight": 1.0, "temperature": 1.0}),
}


class _Sweep:
    def __init__(self, seed: int, val: int, progress: bool) -> None:
        from snn_spikefit.zoo.snntorch import conv_snn

        self.cfg = MODES["full"]
        self.budget = self.cfg.budgets["fashion-mnist"]
        self.seed, self.progress = seed, progress
        train, _ = fashion_mnist(limit_train=self.budget.train + val, limit_test=1)
        x, y = train.tensors
        n = self.budget.train
        self.train, self.val = TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:])
        _seed_all(seed)
        self.fp32 = conv_snn(in_channels=1, num_classes=10, image_size=28, channels=self.cfg.channels,
                             batch_norm=True)
        fit(self.fp32, self._loader(False), epochs=self.budget.epochs, num_steps=self.cfg.num_steps,
            lr=self.cfg.lr, progress=progress, recalibrate=False)
        self.teachers = {"fp32": self.fp32, "ft": self.finetune(copy.deepcopy(self.fp32), None, None)}

    def _loader(self, finetune: bool):
        data = Subset(self.train, range(self.budget.finetune)) if finetune else self.train
        return make_loader(data, self.cfg.batch_size, shuffle=True, seed=self.seed, drop_last=True)

    def finetune(self, model, teacher, kwargs, *, epochs_times: int = 1, lr: float | None = None):
        """The suite's fine-tune (``epochs_times`` its epochs, at ``lr``: the suite's by default), BN recalibrated."""
        if kwargs and kwargs.get("layers") == "last":
            names = [n for n, _ in sf.get_adapter(model).neurons(model)]
            kwargs = {**kwargs, "layers": {names[-1]: names[-1]}}
        _seed_all(self.seed)
        fit(model, self._loader(True), epochs=2 * self.budget.finetune_epochs * epochs_times,
            num_steps=self.cfg.num_steps, lr=self.cfg.finetune_lr if lr is None else lr, progress=self.progress,
            recalibrate=False, schedule=self.cfg.finetune_schedule, teacher=teacher, distill=kwargs)
        recalibrate_bn(model, self._loader(False), num_steps=self.cfg.num_steps, num_batches=self.cfg.recal_batches,
                       progress=False)
        return model

    def score(self, model) -> float:
        return accuracy(model, make_loader(self.val, 256), num_steps=self.cfg.num_steps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--ms", type=int, nargs="+", default=[2])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--val", type=int, default=2000)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="")
    ap.add_argument("--merge", nargs="+", default=None, metavar="CSV",
                    help="write one table from several distill_sweep*_runs.csv files and exit")
    args = ap.parse_args(argv)
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    command = "python benchmarks/distill_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows, begin = [], time.perf_counter()
    if args.merge:
        return _merge(Path(args.out), args.tag, command, args.merge)
    for seed in args.seeds:
        sw = _Sweep(seed, args.val, False)
        rows.append({"seed": seed, "m": "-", "config": "FP32", "val": sw.score(sw.fp32)})
        rows.append({"seed": seed, "m": "-", "config": "FP32 + fine-tune", "val": sw.score(sw.teachers["ft"])})
        print(rows[-2], rows[-1], flush=True)
        for m in args.ms:
            for name in args.configs:
                teacher, kwargs = CONFIGS[name]
                model = sw.finetune(sf.wrap(copy.deepcopy(sw.fp32), m=m, bits=4), sw.teachers.get(teacher), kwargs)
                rows.append({"seed": seed, "m": m, "config": name, "val": sw.score(model)})
                print(rows[-1], flush=True)
        _write(Path(args.out), args.tag, command, rows, time.perf_counter() - begin)
    return 0


def read_runs(files) -> list[dict]:
    """The rows of ``_runs.csv`` files (``seed``, ``m``, ``val`` typed; ``m`` is ``"-"`` for FP32 rows)."""
    rows = []
    for f in files:
        lines = Path(f).read_text().splitlines()
        keys = lines[0].split(",")
        for line in lines[1:]:
            r = dict(zip(keys, line.split(",")))
            r["seed"], r["val"] = int(r["seed"]), float(r["val"])
            r["m"] = r["m"] if r["m"] == "-" else int(r["m"])
            rows.append(r)
    return rows


def commands(files) -> list[str]:
    """The commands recorded in the ``.md`` next to each ``_runs.csv``."""
    runs = []
    for f in files:
        md = Path(str(f).replace("_runs.csv", ".md"))
        runs += [ln.strip("`") for ln in md.read_text().splitlines() if ln.startswith("`python")] if md.exists() else []
    return runs


def _merge(out: Path, tag: str, command: str, files) -> int:
    """One table from the runs of several processes (their commands are listed in each CSV's folder)."""
    rows = read_runs(files)
    seen, kept = set(), []  # FP32 / control rows repeat in every process of a seed: keep one
    for r in rows:
        key = (r["seed"], r["m"], r["config"])
        if key not in seen:
            seen.add(key)
            kept.append(r)
    rows = kept
    rows.sort(key=lambda r: (str(r["m"]) != "-", str(r["m"]), list(CONFIGS).index(r["config"])
                             if r["config"] in CONFIGS else -1, r["seed"]))
    _write(out, tag, "; ".join(commands(files) + [command]), rows, 0.0)
    return 0


def _defaults() -> str:
    """The Distiller's defaults of the keywords no config sets (as the table's head names them)."""
    params = inspect.signature(sf.Distiller).parameters
    return ", ".join(f"{k} {params[k].default!r}" for k in ("temperature", "teacher_bn", "normalize"))


def _write(out: Path, tag: str, command: str, rows: list[dict], wall: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    t = Table(["m", "config", "teacher", "distiller", "seeds", "val accuracy", "std"])
    keys = list(dict.fromkeys((r["m"], r["config"]) for r in rows))
    for m, name in keys:
        accs = [r["val"] for r in rows if (r["m"], r["config"]) == (m, name)]
        teacher, kwargs = CONFIGS.get(name, ("-", None))
        t.add_row([m, name, teacher or "-", kwargs or "-", len(accs), round(statistics.mean(accs), 2),
                   round(statistics.stdev(accs), 2) if len(accs) > 1 else 0.0])
    head = (f"# Distillation settings on a validation split\n\n`{command}`\n\nFashion-MNIST, models as in "
            f"`distill.py --full`; accuracy on training-file images 4000.. (no model trains on them); a "
            f"keyword not listed is the Distiller's default ({_defaults()}); "
            f"wall {wall:.0f} s (shared machine; 0: merged)\n\n")
    (out / f"distill_sweep{tag}.md").write_text(head + t.to_markdown() + "\n")
    keys = list(rows[0])
    Table(keys, [[r[k] for k in keys] for r in rows]).to_csv(out / f"distill_sweep{tag}_runs.csv")


if __name__ == "__main__":
    raise SystemExit(main())
