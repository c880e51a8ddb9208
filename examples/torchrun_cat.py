"""CAT, pruning and freezing with torchrun (DDP, gloo on the CPU; NCCL on GPUs is the same code).

    torchrun --nproc_per_node=2 examples/torchrun_cat.py            # 2 processes
    python examples/torchrun_cat.py                                 # 1 process, the same numbers

Each rank trains on its share of every epoch (DistributedSampler); ``sf.fit`` is unchanged. Order:
``wrap`` before DDP (DDP broadcasts rank 0's codebooks), ``prune`` on ``ddp.module`` (it replaces
parameters DDP holds) and a new DDP after it, ``freeze`` + ``export_nir`` on rank 0 only.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

import snn_spikefit as sf
from snn_spikefit.data.datasets import digits
from snn_spikefit.distributed import check_same_model, is_distributed, rank, rank_zero_only
from snn_spikefit.zoo.snntorch import conv_snn


def loader(dataset, batch_size: int, shuffle: bool, epoch: int = 0) -> DataLoader:
    if is_distributed():  # each rank gets batch_size // world of every global batch
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=0)
        sampler.set_epoch(epoch)
        return DataLoader(dataset, batch_size=batch_size // dist.get_world_size(), sampler=sampler)
    g = torch.Generator().manual_seed(epoch)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g)


def ddp(model):
    return DDP(model) if is_distributed() else model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--amount", type=float, default=0.25)
    ap.add_argument("--out", default="examples/results/torchrun_cat.nir")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    torch.manual_seed(0)  # the same initial model everywhere (DDP broadcasts rank 0's anyway)
    train, test = digits(seed=0)
    model = sf.wrap(conv_snn(1, 10, 8, (16, 32)), m=4, bits=4)
    net = ddp(model)
    start = time.process_time(), time.perf_counter()
    for epoch in range(args.epochs):  # one sf.fit call per epoch so the sampler reshuffles
        sf.fit(net, loader(train, args.batch_size, True, epoch), epochs=1, num_steps=4, lr=1e-2,
               progress=False)
    cpu, wall = time.process_time() - start[0], time.perf_counter() - start[1]
    check_same_model(model, "trained codebooks and weights")
    acc = sf.accuracy(net, loader(test, 256, False), num_steps=4)
    report = sf.prune(model, loader(train, args.batch_size, False), amount=args.amount, num_steps=4,
                      progress=False)  # scores all-reduced; same channels on every rank (checked)
    net = ddp(model)  # pruning replaced the parameters: a new DDP
    sf.fit(net, loader(train, args.batch_size, True, 99), epochs=1, num_steps=4, lr=5e-3, progress=False)
    pruned_acc = sf.accuracy(net, loader(test, 256, False), num_steps=4)

    @rank_zero_only
    def save():
        return sf.export_nir(sf.freeze(model), test[0][0][None], args.out, dt=1e-3)

    save()
    if rank() == 0:
        world = dist.get_world_size() if is_distributed() else 1
        print(f"processes={world} train: {wall:.2f} s wall, {cpu:.2f} s CPU (rank 0) for {args.epochs} epochs; "
              f"accuracy {acc:.2f}% -> pruned {report.params_before}->{report.params_after} params, "
              f"fine-tuned {pruned_acc:.2f}%; kept {[r.channels_after for r in report.layers]}; wrote {args.out}")
    if is_distributed():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
