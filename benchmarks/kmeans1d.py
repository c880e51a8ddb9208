"""Timing of the exact 1-D k-means (benchmark, not a test).

Times ``kmeans_1d`` on N = 1,000,000 float32 normal values for k in
{4, 16, 256}, a small problem (N = 4,000, k = 4) and the batched solver on
codebook-like workloads, and prints wall-clock and CPU seconds (the solver is
single-threaded numpy; on a shared machine the CPU column is the steadier one).

    python benchmarks/kmeans1d.py
    python benchmarks/kmeans1d.py --n 200000 --ks 4 16     # quicker
"""

from __future__ import annotations

import argparse
import time

import torch

from snn_spikefit.quantize.kmeans1d import kmeans_1d, kmeans_1d_batched


def timed(fn, repeat: int = 1) -> str:
    """Best wall-clock and CPU seconds over ``repeat`` runs, formatted."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return f"{wall:9.4f} {cpu:9.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="number of values")
    ap.add_argument("--ks", type=int, nargs="+", default=[4, 16, 256], help="numbers of clusters")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)

    print(f"{'problem':<36} {'wall s':>9} {'cpu s':>9}")
    x = torch.randn(4000, generator=gen)
    kmeans_1d(x, 4)  # warm-up
    print(f"{'kmeans_1d N=4,000 k=4':<36} {timed(lambda: kmeans_1d(x, 4), 20)}")

    x = torch.randn(args.n, generator=gen)
    for k in args.ks:
        print(f"{f'kmeans_1d N={args.n:,} k={k}':<36} {timed(lambda: kmeans_1d(x, k))}", flush=True)

    for g, n, k in [(1024, 64, 16), (256, 4096, 16)]:
        w = torch.randn(g, n, generator=gen)
        label = f"kmeans_1d_batched [{g}, {n}] k={k}"
        print(f"{label:<36} {timed(lambda: kmeans_1d_batched(w, k))}", flush=True)


if __name__ == "__main__":
    main()
