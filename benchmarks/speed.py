"""Speed of snn_spikefit against its baselines, as ratios measured side by side (issue 13).

Every figure is a ratio of CPU times (``time.process_time``, one thread) of configurations
timed in interleaved rounds in this one run: round ``r`` times each configuration once,
so drift and other jobs on the machine hit all of them alike. A row gives the median of
the per-round ratios and their spread (min-max over rounds); baseline times are printed
for scale only. Rows:

* CAT training step / FP32 step (T steps, cross-entropy + 0.25 x commitment, backward, Adam):
  VGG-style conv SNN (3x32x32, T=4, B=32; m = 2..1024), tutorial conv SNN (1x28x28, T=25,
  B=128), dense SNNs with a Linear 1024x1024 / 256x256 layer (T=8, B=32; also T=4, 25);
* peak RSS of training, CAT / FP32 (VGG bench, a fresh subprocess each);
* ``kmeans_1d`` / scikit-learn ``KMeans(n_init=1)``, 1e5 and 1e6 weights (1e7: ``--large``);
* FSC scoring per calibration batch / training step; ``sf.run`` / a hand-written snnTorch
  loop; frozen / stripped / FP32 inference; coremltools ``DKMPalettizer`` when importable.

    .venv/bin/python benchmarks/speed.py            # ~5 min on the 2-core machine
    .venv/bin/python benchmarks/speed.py --quick    # fewer rounds and configurations, no tutorial-net training
    .venv/bin/python benchmarks/speed.py --large    # adds k-means on 1e7 weights

Writes ``benchmarks/results/speed.md`` and ``speed.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

import snn_spikefit as sf

if __package__ in (None, ""):  # run as a script (python benchmarks/speed.py): make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import speed_report  # noqa: E402

ROWS: list[dict] = []


# -- timing --------------------------------------------------------------------------------------

def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """CPU seconds of every function, ``rounds`` interleaved rounds after ``warmup`` untimed ones."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.process_time()
            f()
            times[k].append(time.process_time() - t0)
    return times


def add_ratios(figure: str, times: dict[str, list[float]], base: str, target: str = "", label: str | None = None,
               note: str = "", **extra) -> None:
    """One row per non-baseline configuration: median and spread of the per-round ratios."""
    for name, ts in times.items():
        if name == base:
            continue
        ratios = [t / b for t, b in zip(ts, times[base])]
        add_row(figure, label or name, statistics.median(ratios), min(ratios), max(ratios),
                base_ms=1e3 * statistics.median(times[base]), target=target, note=note, **extra)


def add_row(figure, config, ratio, lo, hi, *, base_ms=None, target="", note="", **extra) -> None:
    row = {"figure": figure, "config": config, "ratio": ratio, "min": lo, "max": hi, "base_ms": base_ms,
           "target": target, "note": note, **extra}
    ROWS.append(row)
    spread = f"{lo:.2f}-{hi:.2f}" if lo is not None else ""
    print(f"  {figure:38} {config:22} {ratio:7.3f}  [{spread}] {note}", flush=True)


# -- CAT training step ------------------------------------------------------------------------

def train_step(model, x, y, num_steps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    wrapped = sf.is_wrapped(model)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(sf.run(model, x, num_steps=num_steps).mean(0), y)
        if wrapped:
            loss = loss + 0.25 * sf.commitment_loss(model)
        loss.backward()
        opt.step()

    return step


def parse(config: str) -> tuple[int, str]:
    """``"m=4"`` -> (4, layer); ``"m=4 channel"`` -> (4, channel)."""
    m, _, gran = config.partition(" ")
    return int(m.split("=")[1]), gran or "layer"


def cat_bench(figure: str, build, x, y, num_steps, configs, rounds, target) -> None:
    steps = {}
    for config in ["fp32"] + configs:
        torch.manual_seed(0)
        model = build()
        if config != "fp32":
            m, gran = parse(config)
            sf.wrap(model, m=m, granularity=gran)
        steps[config] = train_step(model, x, y, num_steps)
    add_ratios(figure, interleaved(steps, rounds), "fp32", target=target)


def cat_rows(quick: bool) -> None:
    from snn_spikefit.zoo.snntorch import conv_snn, dense_snn, vgg_snn

    print("CAT training step / FP32 step", flush=True)
    rounds = 5 if quick else 9
    x, y = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))
    sweep = ["m=4", "m=256"] if quick else ["m=2", "m=4", "m=16", "m=256", "m=1024", "m=4 channel"]
    cat_bench("CAT step, VGG conv SNN T=4 B=32", lambda: vgg_snn(), x, y, 4, sweep, 3 if quick else rounds,
              "<= 1.05")
    if not quick:
        x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
        cat_bench("CAT step, tutorial conv SNN T=25 B=128", lambda: conv_snn(1, 10, 28, (12, 64)), x, y, 25,
                  ["m=4", "m=256"], 3, "<= 1.05")
    for width in (1024, 256):
        x, y = torch.rand(32, width), torch.randint(0, 10, (32,))
        cat_bench(f"CAT step, Linear {width}x{width} T=8 B=32", lambda: dense_snn(width, 10, (width,)), x, y, 8,
                  ["m=2", "m=4", "m=16", "m=256", "m=4 channel"], 3 * rounds, "<= 1.10")
    x, y = torch.rand(32, 1024), torch.randint(0, 10, (32,))
    for t in (4, 25):
        cat_bench(f"CAT step, Linear 1024x1024 T={t} B=32", lambda: dense_snn(1024, 10, (1024,)), x, y, t,
                  ["m=4", "m=256"], 2 * rounds, "<= 1.10")


def rss_child(config: str) -> None:
    from snn_spikefit.zoo.snntorch import vgg_snn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = vgg_snn()
    if config != "fp32":
        sf.wrap(model, m=parse(config)[0])
    step = train_step(model, torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,)), 4)
    for _ in range(3):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def rss_rows() -> None:
    print("peak RSS of training, CAT / FP32", flush=True)
    peak = {}
    for config in ("fp32", "m=4", "m=256"):
        out = subprocess.run([sys.executable, __file__, "--rss-child", config], capture_output=True, text=True,
                             check=True)
        peak[config] = int(out.stdout.strip().splitlines()[-1])
    for config in ("m=4", "m=256"):
        r = peak[config] / peak["fp32"]
        add_row("peak RSS of training, VGG T=4 B=32", config, r, r, r, target="keep (1.00)",
                note=f"fp32 {peak['fp32'] / 2**20:.0f} MiB")


# -- k-means ---------------------------------------------------------------------------------

def sse(x: np.ndarray, centers: np.ndarray) -> float:
    c = np.sort(centers)
    return float(np.square(x - c[np.searchsorted((c[1:] + c[:-1]) / 2, x)]).sum())


def kmeans_rows(quick: bool, large: bool) -> None:
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from snn_spikefit.quantize.kmeans1d import exact_limit, kmeans_1d

    print("kmeans_1d / scikit-learn KMeans(n_init=1)", flush=True)
    sizes = [100_000, 1_000_000] + ([10_000_000] if large else [])
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        for n in sizes:
            x32 = rng.standard_normal(n).astype(np.float32)
            x64 = x32.astype(np.float64)
            for k in (4, 16, 256):
                got = {}
                fns = {"sklearn": lambda: got.__setitem__("sklearn", KMeans(k, n_init=1, random_state=0).fit(
                           x64.reshape(-1, 1)).cluster_centers_.ravel()),
                       "kmeans_1d": lambda: got.__setitem__("kmeans_1d", kmeans_1d(torch.from_numpy(x32), k).numpy())}
                rounds = 1 if (n >= 1_000_000 and k == 256) or n > 1_000_000 or quick else 3
                times = interleaved(fns, rounds, warmup=0)
                inertia = sse(x64, got["kmeans_1d"].astype(np.float64)) / sse(x64, got["sklearn"])
                method = "binned DP + Lloyd" if n > exact_limit(k) else "exact DP"
                add_ratios(f"k-means time / sklearn, {n:.0e} weights", times, "sklearn",
                           target="<= 1.0, inertia <= 1.0", label=f"k={k}",
                           note=f"inertia / sklearn's {inertia:.4f} ({method})", inertia_ratio=inertia)


# -- pruning score, run, inference -----------------------------------------------------------

def fsc_rows(quick: bool) -> None:
    from snn_spikefit.pruning.importance import get_criterion
    from snn_spikefit.pruning.prune import default_loss, score_channels
    from snn_spikefit.pruning.surgery import prunable_layers
    from snn_spikefit.zoo.snntorch import conv_snn

    print("FSC scoring per calibration batch / training step", flush=True)
    torch.manual_seed(0)
    model = conv_snn(1, 10, 28, (16, 32), batch_norm=True)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    layers = prunable_layers(model, x[:1])
    step = train_step(model, x, y, 4)

    def train():
        model.train()
        step()

    def score():
        score_channels(model, layers, get_criterion("fsc"), [(x, y)], num_batches=1, num_steps=4, loss_fn=default_loss,
                       progress=False, desc="")

    add_ratios("FSC scoring / training step, conv SNN T=4 B=64", interleaved({"train": train, "fsc": score},
               5 if quick else 15), "train", target="<= 1.2", label="one calibration batch")


def hand_loop(model, x, num_steps):
    import snntorch.utils

    snntorch.utils.reset(model)
    return torch.stack([model(x) for _ in range(num_steps)])


def inference_rows(quick: bool) -> None:
    from snn_spikefit.zoo.snntorch import conv_snn, dense_snn

    print("inference: sf.run / hand loop; frozen / stripped / FP32", flush=True)
    rounds = 5 if quick else 11
    cases = {"tutorial conv SNN T=25 B=128": (conv_snn(1, 10, 28, (12, 64)), torch.rand(128, 1, 28, 28)),
             "dense SNN 64-128-10 T=25 B=128": (dense_snn(64, 10, (128,)), torch.rand(128, 64))}
    with torch.no_grad():
        for name, (model, x) in cases.items():
            model.eval()
            assert torch.equal(hand_loop(model, x, 25), sf.run(model, x, num_steps=25))
            times = interleaved({"hand loop": lambda: hand_loop(model, x, 25),
                                 "sf.run": lambda: sf.run(model, x, num_steps=25)}, 3 * rounds)
            add_ratios(f"sf.run / hand loop, {name}", times, "hand loop", target="<= 1.02")
        model, x = cases["tutorial conv SNN T=25 B=128"]
        frozen = sf.freeze(sf.wrap(copy.deepcopy(model), m=16, bits=8)).eval()
        stripped = sf.strip(sf.wrap(copy.deepcopy(model), m=16, bits=8)).eval()
        times = interleaved({"fp32": lambda: sf.run(model, x, num_steps=25),
                             "frozen": lambda: sf.run(frozen, x, num_steps=25),
                             "stripped": lambda: sf.run(stripped, x, num_steps=25)}, rounds)
        add_ratios("inference / FP32, tutorial conv SNN T=25 B=128", times, "fp32", target="keep (~1)")


# -- the peer: coremltools DKM -----------------------------------------------------------------

def dkm_rows(quick: bool) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from coremltools.optimize.torch.palettization import DKMPalettizer, DKMPalettizerConfig
    except Exception as exc:  # optional peer
        print(f"coremltools not importable ({type(exc).__name__}): DKM row skipped", flush=True)
        return
    import coremltools
    from snn_spikefit.zoo.snntorch import dense_snn

    print(f"coremltools {coremltools.__version__} DKMPalettizer (n_bits=2, m=4) vs CAT m=4", flush=True)
    config = DKMPalettizerConfig.from_dict({"global_config": {"n_bits": 2}})

    def ann():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 10))

    x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    palettizer = DKMPalettizer(ann(), config)
    dkm = palettizer.prepare(inplace=True)
    dkm_step = train_step(dkm, x, y, 1)
    steps = {"fp32": train_step(ann(), x, y, 1), "CAT m=4": train_step(sf.wrap(ann(), m=4), x, y, 1),
             "DKM n_bits=2": lambda: (dkm_step(), palettizer.step())}
    add_ratios("ANN MLP 784-256-256-10 step / FP32 step, B=128", interleaved(steps, 5 if quick else 11), "fp32",
               target="(peer)")
    snn_pal = DKMPalettizer(dense_snn(784, 10, (256,)), config)
    snn = snn_pal.prepare(inplace=True)
    step = train_step(snn, x, y, 4)
    try:
        for _ in range(3):
            step()
            snn_pal.step()
        outcome = "trains"
    except Exception as exc:
        outcome = f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
    add_row("DKM on an SNN (dense, T=4), 3 steps", "DKM n_bits=2", float("nan"), None, None, target="(peer)",
            note=outcome)


# -- where the time goes ----------------------------------------------------------------------

PROFILES: list[str] = []


def profile_rows(quick: bool) -> None:
    """torch.profiler's top operators of a CAT step on the Linear 1024x1024 bench (m=4 and m=256)."""
    from torch.profiler import profile

    from snn_spikefit.zoo.snntorch import dense_snn

    print("profile: CAT step, Linear 1024x1024 T=8 B=32", flush=True)
    x, y = torch.rand(32, 1024), torch.randint(0, 10, (32,))
    for config in ("fp32", "m=4", "m=256"):
        torch.manual_seed(0)
        model = dense_snn(1024, 10, (1024,))
        if config != "fp32":
            sf.wrap(model, m=parse(config)[0])
        step = train_step(model, x, y, 8)
        step()
        with profile() as prof:
            for _ in range(3):
                step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)
        PROFILES.append(f"### {config} (3 steps)\n\n```\n{table.strip()}\n```\n")


# -- report ------------------------------------------------------------------------------------

def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def write(out: Path, command: str, started: str, wall: float, append: bool) -> None:
    meta = {"command": command, "started": started, "wall_s": round(wall, 1), "load_start": LOAD_START,
            "load_end": load(), "torch": torch.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    speed_report.write(out, meta, ROWS, PROFILES, append)


LOAD_START = load()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds; no tutorial-net training rows")
    ap.add_argument("--large", action="store_true", help="also k-means on 1e7 weights (sklearn takes minutes)")
    ap.add_argument("--only", nargs="+", choices=["cat", "rss", "kmeans", "fsc", "inference", "dkm", "profile"],
                    help="run only these sections")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--append", action="store_true",
                    help="keep the figures of the earlier run in --out that this run does not measure")
    ap.add_argument("--render", action="store_true", help="rewrite speed.md from speed.json in --out, measure nothing")
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    if args.rss_child:
        rss_child(args.rss_child)
        return
    if args.render:  # rewrite speed.md from speed.json (no measuring)
        data = json.loads((args.out / "speed.json").read_text())
        speed_report.render(args.out, data["runs"], data["rows"], data["profiles"])
        return
    started, t0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.perf_counter()
    sections = {"cat": lambda: cat_rows(args.quick), "rss": rss_rows,
                "kmeans": lambda: kmeans_rows(args.quick, args.large), "fsc": lambda: fsc_rows(args.quick),
                "inference": lambda: inference_rows(args.quick), "dkm": lambda: dkm_rows(args.quick),
                "profile": lambda: profile_rows(args.quick)}
    for name, fn in sections.items():
        if not args.only or name in args.only:
            fn()
    command = "python benchmarks/speed.py" + "".join(f" {a}" for a in sys.argv[1:])
    write(args.out, command, started, time.perf_counter() - t0, args.append)


if __name__ == "__main__":
    main()
