"""One rank of the 2-process equality test (tests/test_distributed.py): CAT steps, prune, BN, accuracy.

``work(rank, world, store_dir)`` runs on ``1/world`` of every global batch and saves what must equal the
single-process run. Imported by spawned processes, so it lives in a plain module, not in the test file.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

import snn_spikefit as sf
from snn_spikefit.distributed import check_same_model

T, GLOBAL_B, BATCHES = 3, 8, 3


def _model(batch_norm: bool):
    from snn_spikefit.zoo.snntorch import conv_snn

    torch.manual_seed(0)
    model = conv_snn(1, 5, 8, (4, 6), batch_norm=batch_norm)
    with torch.no_grad():
        model[0].weight.mul_(3)  # the first layer fires, so FSC has something to rank
    return model


def _data(rank: int, world: int):
    g = torch.Generator().manual_seed(1)
    out = []
    share = GLOBAL_B // world
    for _ in range(BATCHES):
        x, y = torch.rand(GLOBAL_B, 1, 8, 8, generator=g), torch.randint(0, 5, (GLOBAL_B,), generator=g)
        out.append((x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]))
    return out


def work(rank: int, world: int, store_dir: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store_dir}/store", rank=rank, world_size=world)
    data = _data(rank, world)
    model = sf.wrap(_model(False), m=4)  # wrap before DDP: DDP broadcasts rank 0's codebooks
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)  # Adam divides by sqrt(v): rounding noise in tiny grads becomes lr-sized steps
    history = sf.fit(ddp, data, epochs=2, num_steps=T, optimizer=opt, progress=False)
    check_same_model(model)
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    reseeded = sum(q.quantizer.reseeded for q in sf.quantize.layers.compressed_layers(model))
    fresh = sf.wrap(_model(False), m=4)  # same weights on every run: scores differ by summation order only
    fresh_report = sf.prune(fresh, data, amount=0.5, criterion="fsc", num_steps=T, progress=False)
    report = sf.prune(model, data, amount=0.5, criterion="fsc", num_steps=T, progress=False)
    bn_model = _model(True)
    with torch.no_grad():
        for p in bn_model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    sf.recalibrate_bn(bn_model, data, num_steps=T)
    bns = {k: v.clone() for k, v in bn_model.state_dict().items() if "running" in k or "tracked" in k}
    acc = sf.accuracy(model, data, num_steps=T)
    ev = sf.evaluate(model, data, num_steps=T, warmup=0)
    torch.save({"trained": trained, "history": history, "reseeded": reseeded, "scores": fresh_report.scores,
                "kept": [row.kept for row in fresh_report.layers], "kept_trained": [r.kept for r in report.layers],
                "bn": bns, "accuracy": acc, "evaluate": (ev.samples, ev.accuracy, ev.f1),
                "after_prune": {k: v.clone() for k, v in model.state_dict().items()}},
               os.path.join(store_dir, f"rank{rank}_of{world}.pt"))
    if world > 1:
        dist.destroy_process_group()
