"""One epoch of CAT (sf.fit) on digits: 1 process vs 2 DDP processes (gloo, CPU), interleaved repetitions.

    python benchmarks/ddp_epoch.py --reps 3

Each process uses one thread (torch.set_num_threads(1)). Reported per configuration: the median and spread
(min..max) of the epoch's wall time and of rank 0's CPU time (time.process_time), and the ratio against the
1-process median measured in the same run. The global batch is the same (64): 2 processes run 32 each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler

import snn_spikefit as sf
from snn_spikefit.data.datasets import digits
from snn_spikefit.zoo.snntorch import conv_snn

BATCH = 64


def epoch(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    train, _ = digits(seed=0)
    model = sf.wrap(conv_snn(1, 10, 8, (16, 32)), m=4, bits=4)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    sampler = DistributedSampler(train, shuffle=False) if world > 1 else None
    data = DataLoader(train, batch_size=BATCH // world, sampler=sampler)
    if world > 1:
        dist.barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    sf.fit(net, data, epochs=1, num_steps=4, lr=1e-2, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if rank == 0:
        with open(out, "w") as f:
            f.write(f"{wall} {cpu}")
    if world > 1:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    results: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as d:
        for rep in range(args.reps):
            for world in (1, 2):  # interleaved
                store, out = os.path.join(d, f"s{rep}{world}"), os.path.join(d, "out")
                if world == 1:
                    epoch(0, 1, store, out)
                else:
                    mp.spawn(epoch, args=(world, store, out), nprocs=world, join=True)
                with open(out) as f:
                    results[world].append(tuple(float(v) for v in f.read().split()))
    base = statistics.median(w for w, _ in results[1])
    for world, rows in results.items():
        walls, cpus = [w for w, _ in rows], [c for _, c in rows]
        print(f"processes={world}: wall median {statistics.median(walls):.2f} s ({min(walls):.2f}..{max(walls):.2f}), "
              f"rank-0 CPU median {statistics.median(cpus):.2f} s ({min(cpus):.2f}..{max(cpus):.2f}), "
              f"wall ratio vs 1 process {statistics.median(walls) / base:.2f}")


if __name__ == "__main__":
    main()
