"""Choose one-shot CAT settings on a validation split (never on the test split).

    python benchmarks/ptq_select.py SEED VARIANT [VARIANT ...] [--cache DIR]

The FP32 conv SNN of ``benchmarks/ptq.py --full`` (same seed, so the same model; cached in
``--cache``) is compressed with 16 calibration samples per class (as the benchmark) and measured
on training images 4000..4999, which the model never saw (it trains on the first 4000).
A variant is ``catM:aAbBdD`` (one-shot CAT, m=M, b=8, ``asymmetric=A``, ``bias_correction=B``,
``damping=D``), ``sbcB:aAbBdD`` (uniform B-bit SBC) or ``kmM:cal`` (k-means, BN re-estimated
on the calibration set). One JSON line per variant: validation accuracy and CPU seconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from torch.utils.data import TensorDataset  # noqa: E402

from benchmarks.ptq import calibration  # noqa: E402
from benchmarks.suite import _Run, _seed_all  # noqa: E402
from benchmarks.suite_config import MODES  # noqa: E402
from snn_spikefit.baselines import cluster, freeze_baseline  # noqa: E402
from snn_spikefit.data.datasets import fashion_mnist, make_loader  # noqa: E402
from snn_spikefit.deploy.metrics import evaluate  # noqa: E402
from snn_spikefit.ptq import compress_posttraining  # noqa: E402
from snn_spikefit.train import recalibrate_bn  # noqa: E402
from snn_spikefit.zoo.snntorch import conv_snn  # noqa: E402


def _fp32(cfg, seed: int, cache: Path):
    path = cache / f"fp32_s{seed}.pt"
    model = conv_snn(in_channels=1, num_classes=10, image_size=28, channels=cfg.channels, batch_norm=True)
    if path.exists():
        model.load_state_dict(torch.load(path))
    else:
        model = _Run(cfg, "fashion-mnist", seed, False).fp32
        cache.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval()


def _apply(model, spec: str, calib, cfg, seed: int) -> None:
    kind, opts = spec.split(":")
    if kind.startswith("km"):
        model = cluster(model, m=int(kind[2:]), method="kmeans", bits=8, seed=seed)
        recalibrate_bn(model, [(calib, None)], num_steps=cfg.num_steps, progress=False)
        freeze_baseline(model)
        return
    a, b, d = opts[1], opts[3], float(opts[5:])
    kw = dict(m=int(kind[3:]), bits=8) if kind.startswith("cat") else dict(bits=int(kind[3:]))
    compress_posttraining(model, calib, num_steps=cfg.num_steps, progress=False, damping=d,
                          asymmetric=a == "1", bias_correction=b == "1", **kw)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seed", type=int)
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--cache", default="/tmp/spikefit_ptq_select")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cfg = MODES["full"]
    full, _ = fashion_mnist(limit_train=5000, limit_test=1)
    x, y = full.tensors
    train = TensorDataset(x[:4000].contiguous(), y[:4000])
    val = make_loader(TensorDataset(x[4000:5000].contiguous(), y[4000:5000]), 256)
    fp32 = _fp32(cfg, args.seed, Path(args.cache))
    calib = calibration(train, 16, args.seed)
    for spec in ["fp32:-"] + args.variants:
        _seed_all(args.seed)
        model = copy.deepcopy(fp32)
        t0 = time.process_time()
        if spec != "fp32:-":
            _apply(model, spec, calib, cfg, args.seed)
        cpu = time.process_time() - t0
        acc = evaluate(model, val, hardware=cfg.profile, num_steps=cfg.num_steps, progress=False).accuracy
        print(json.dumps({"seed": args.seed, "variant": spec, "val_acc": acc, "cpu_s": round(cpu, 2)}), flush=True)


if __name__ == "__main__":
    main()
