"""Run by tests/test_lightning.py: Lightning, strategy="ddp" on 2 CPU devices (or 1 with --devices 1)."""

import argparse
import os
import sys

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import snn_spikefit as sf
from snn_spikefit.distributed.lightning import SpikeFitCallback

T = 3


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        from snn_spikefit.zoo.snntorch import conv_snn

        torch.manual_seed(0)
        self.net = sf.wrap(conv_snn(1, 5, 8, (4, 6), batch_norm=True), m=4)
        with torch.no_grad():
            self.net[0].weight.mul_(3)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.cross_entropy(sf.run(self.net, x, num_steps=T).mean(0), y)

    def train_dataloader(self):  # after the process group exists: the same global batches as 1 device
        g = torch.Generator().manual_seed(1)
        ds = TensorDataset(torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 5, (32,), generator=g))
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        sampler = DistributedSampler(ds, shuffle=False) if world > 1 else None  # rank r: samples r, r + 2, ...
        return DataLoader(ds, batch_size=16 // world, sampler=sampler)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = Module()
    cb = SpikeFitCallback(num_steps=T, prune={0: 0.5}, sync_batchnorm=True)
    trainer = pl.Trainer(strategy="ddp" if args.devices > 1 else "auto", accelerator="cpu", devices=args.devices,
                         max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[cb], use_distributed_sampler=False)
    trainer.fit(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"state": state, "kept": [r.kept for r in cb.reports[0].layers],
                "plain_bn": all(type(m) is torch.nn.BatchNorm2d for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)),
                "frozen": not sf.quantize.layers.is_wrapped(model) or all(c.frozen for c in sf.quantize.layers.compressed_layers(model))},
               f"{args.out}.rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main()
