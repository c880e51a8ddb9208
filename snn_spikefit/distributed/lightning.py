"""A PyTorch Lightning callback for CAT: commitment loss, pruning schedule, BN re-estimation, freeze.

Needs the optional extra ``snn-spikefit[lightning]``. Wrap the model (``sf.wrap``) in the LightningModule's
``__init__``, before the Trainer builds DDP; the batches of the training dataloader are ``(x, y)``.

    trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2,
                        callbacks=[SpikeFitCallback(num_steps=4, prune={1: 0.25})])

* ``beta``: the commitment loss ``beta * sf.commitment_loss`` is added to what ``training_step`` returns
  (inside DDP's forward, so DDP averages the codebook gradients).
* ``prune``: ``{epoch: amount}``; at the end of that epoch (0-based) :func:`snn_spikefit.prune` runs on the
  LightningModule over the rank's training batches (scores all-reduced, same channels on every rank), then
  DDP and the optimizers are built again (pruning replaces parameters).
* ``recalibrate``: at the end of fit, :func:`snn_spikefit.recalibrate_bn` (global-batch statistics).
* ``freeze``: at the end of fit, :func:`snn_spikefit.freeze`.
* ``sync_batchnorm``: train BatchNorm on the global batch (:func:`snn_spikefit.distributed.sync_batchnorm`,
  CPU and GPU; Lightning's own ``Trainer(sync_batchnorm=True)`` uses ``nn.SyncBatchNorm``, which refuses CPU
  tensors and which ``prune`` does not know); the plain classes come back at the end of fit.
"""

from __future__ import annotations

import types
from typing import Any

import lightning.pytorch as pl

from ..errors import NotWrappedError, SpikeFitValueError
from ..quantize.layers import is_wrapped
from ..quantize.wrap import commitment_loss, freeze as freeze_model
from ..pruning.prune import prune as prune_model
from ..runtime import DEFAULT_NUM_STEPS
from ..train import recalibrate_bn
from .syncbn import sync_batchnorm as sync_bn, unsync_batchnorm

__all__ = ["SpikeFitCallback"]


class SpikeFitCallback(pl.Callback):
    def __init__(self, *, beta: float = 0.25, num_steps: int | None = DEFAULT_NUM_STEPS,
                 prune: dict[int, float] | None = None, prune_kwargs: dict[str, Any] | None = None,
                 recalibrate: bool = True, freeze: bool = True, sync_batchnorm: bool = False) -> None:
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta < 0:
            raise SpikeFitValueError(f"beta={beta!r} is not allowed; use a number >= 0")
        self.beta, self.num_steps, self.schedule = float(beta), num_steps, dict(prune or {})
        self.prune_kwargs, self.recalibrate, self.freeze = dict(prune_kwargs or {}), recalibrate, freeze
        self.sync_batchnorm = bool(sync_batchnorm)
        self.reports: list = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not is_wrapped(pl_module):
            raise NotWrappedError("SpikeFitCallback needs a LightningModule whose model was wrapped by "
                                  "snn_spikefit.wrap(...) in __init__ (before the Trainer builds DDP)")
        if self.sync_batchnorm:
            sync_bn(pl_module)
        if getattr(pl_module, "_spikefit_step", None) is None:
            original = pl_module.training_step
            beta = self.beta

            def training_step(module, *args, **kwargs):
                out = original(*args, **kwargs)
                loss = out["loss"] if isinstance(out, dict) else out
                loss = loss + beta * commitment_loss(module)
                if isinstance(out, dict):
                    return {**out, "loss": loss}
                return loss

            pl_module._spikefit_step = original
            pl_module.training_step = types.MethodType(training_step, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        amount = self.schedule.get(trainer.current_epoch)
        if amount is None:
            return
        was_training = pl_module.training
        report = prune_model(pl_module, trainer.train_dataloader, amount=amount, num_steps=self.num_steps,
                             progress=False, **self.prune_kwargs)
        self.reports.append(report)
        pl_module.train(was_training)
        strategy = trainer.strategy
        if hasattr(strategy, "configure_ddp"):  # DDP holds the old parameters: wrap the pruned module anew
            strategy.model = pl_module
            strategy.configure_ddp()
        strategy.setup_optimizers(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recalibrate:
            recalibrate_bn(pl_module, trainer.train_dataloader, num_steps=self.num_steps)
        if self.sync_batchnorm:
            unsync_batchnorm(pl_module)
        if self.freeze:
            freeze_model(pl_module)
        if getattr(pl_module, "_spikefit_step", None) is not None:
            pl_module.training_step = pl_module._spikefit_step
            pl_module._spikefit_step = None
