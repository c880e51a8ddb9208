"""One rank of the 2-process equality test (tests/test_distributed.py): CAT steps, prune, BN, accuracy.

``work(rank, world, store_dir)`` runs on ``1/world`` of every global batch and saves what must equal the
single-process run. The single process (``world == 1``) also trains once by gradient accumulation over the
same halves the two ranks see (the halves' gradients summed, then halved: what DDP computes), which the
2-process run must equal bit for bit. Imported by spawned processes, so it lives in a plain module.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import snn_spikefit as sf
from snn_spikefit.distributed import check_same_model, sync_batchnorm
from snn_spikefit.train import scores

T, GLOBAL_B, BATCHES, ODD = 3, 8, 3, 23


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


def _odd_loader(world: int):
    """23 samples in batches of 4: a DistributedSampler over 2 ranks pads rank 1 with sample 0."""
    g = torch.Generator().manual_seed(5)
    ds = TensorDataset(torch.rand(ODD, 1, 8, 8, generator=g), torch.randint(0, 5, (ODD,), generator=g))
    return DataLoader(ds, batch_size=4, sampler=DistributedSampler(ds, shuffle=False) if world > 1 else None)


def _adam(params):
    return torch.optim.Adam(params, lr=1e-2)


def _train(model, world, data, optimizer, epochs=2, **kw):
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    history = sf.fit(net, data, epochs=epochs, num_steps=T, optimizer=optimizer(net.parameters()), progress=False, **kw)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, history


def _accumulated(model, halves, optimizer, epochs=2, beta=0.25):
    """``sf.fit`` in one process with every global batch's gradient the mean of its halves' gradients."""
    opt = optimizer(model.parameters())
    model.train()
    for _ in range(epochs):
        for i in range(BATCHES):
            opt.zero_grad(set_to_none=True)
            for half in halves:
                x, y = half[i]
                out = sf.run(model, x, num_steps=T)
                loss = torch.nn.functional.cross_entropy(scores(out), y) + beta * sf.commitment_loss(model)
                loss.backward()
            for p in model.parameters():
                p.grad.div_(len(halves))
            opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def work(rank: int, world: int, store_dir: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store_dir}/store", rank=rank, world_size=world)
    data, out = _data(rank, world), {}
    out["init"] = {k: v.clone() for k, v in sf.wrap(_model(False), m=4).state_dict().items()}
    out["init_bn"] = {k: v.clone() for k, v in sf.wrap(_model(True), m=4).state_dict().items()}
    model = sf.wrap(_model(False), m=4)  # wrap before DDP: DDP broadcasts rank 0's codebooks
    out["trained"], out["history"] = _train(model, world, data, lambda p: torch.optim.SGD(p, lr=0.05))
    check_same_model(model)
    out["reseeded"] = sum(q.quantizer.reseeded for q in sf.quantize.layers.compressed_layers(model))
    out["adam"], _ = _train(sf.wrap(_model(False), m=4), world, data, _adam)
    if world == 1:
        out["adam_accumulated"] = _accumulated(sf.wrap(_model(False), m=4), [_data(0, 2), _data(1, 2)], _adam)
    bn = sf.wrap(_model(True), m=4)
    sync_batchnorm(bn)  # global-batch BatchNorm in training: the same model as one process trains
    out["sync_bn"], _ = _train(bn, world, data, lambda p: torch.optim.SGD(p, lr=0.05), recalibrate=False)
    fresh = sf.wrap(_model(False), m=4)  # same weights on every run: scores differ by summation order only
    fresh_report = sf.prune(fresh, data, amount=0.5, criterion="fsc", num_steps=T, progress=False)
    report = sf.prune(model, data, amount=0.5, criterion="fsc", num_steps=T, progress=False)
    bn_model = _model(True)
    with torch.no_grad():
        for p in bn_model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    sf.recalibrate_bn(bn_model, data, num_steps=T)
    ev, odd = sf.evaluate(model, data, num_steps=T, warmup=0), _odd_loader(world)
    odd_ev = sf.evaluate(model, odd, num_steps=T, warmup=0)
    out.update(scores=fresh_report.scores, kept=[row.kept for row in fresh_report.layers],
               kept_trained=[r.kept for r in report.layers], accuracy=sf.accuracy(model, data, num_steps=T),
               bn={k: v.clone() for k, v in bn_model.state_dict().items() if "running" in k or "tracked" in k},
               evaluate=(ev.samples, ev.accuracy, ev.f1), odd_accuracy=sf.accuracy(model, odd, num_steps=T),
               odd_evaluate=(odd_ev.samples, odd_ev.accuracy, odd_ev.f1), odd_local=len(sf.predict(model, odd, num_steps=T)[0]),
               after_prune={k: v.clone() for k, v in model.state_dict().items()})
    torch.save(out, os.path.join(store_dir, f"rank{rank}_of{world}.pt"))
    if world > 1:
        dist.destroy_process_group()
