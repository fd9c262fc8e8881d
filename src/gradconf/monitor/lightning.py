"""PyTorch Lightning callback that monitors gradient confusion (needs the ``lightning`` extra).

    trainer = Trainer(callbacks=[ConfusionCallback(every=50, save_path="confusion.parquet")])

One optimizer step is one monitored step, numbered by ``trainer.global_step``. The
measurement opens at the first ``on_train_batch_start`` of the step and closes in
``on_before_optimizer_step``, so the Gram comes from the same forward and backward
passes as the update. The statistics are logged with ``pl_module.log_dict`` under
``<prefix>/<column>``. Lightning divides each micro-batch loss by
``accumulate_grad_batches`` and, under 16-bit mixed precision, multiplies it by the
GradScaler's scale; the callback passes both to the monitor as its loss scale.
Tested with automatic optimization and one optimizer (lightning 2.6).
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch

from gradconf.monitor.monitor import Monitor
from gradconf.monitor.tensorboard import SCALAR_COLUMNS

__all__ = ["ConfusionCallback"]

# Logged columns; the loss is left to the LightningModule, which logs it already.
LOGGED_COLUMNS = tuple(column for column in SCALAR_COLUMNS if column != "loss")


class ConfusionCallback(pl.Callback):
    """Measure per-example gradient confusion of the training batch on scheduled steps.

    ``every``/``schedule`` and the other keyword arguments are those of ``Monitor``
    (``loss_scale`` is set by the callback). ``save_path``, if given, receives the record
    as Parquet at the end of training. ``monitor`` is the ``Monitor`` once fitting starts.
    """

    def __init__(
        self,
        *,
        every: int | None = None,
        schedule: Any = None,
        save_path: str | os.PathLike[str] | None = None,
        log_prefix: str = "gradconf",
        log_layers: bool = False,
        **monitor_options: Any,
    ) -> None:
        if "loss_scale" in monitor_options:
            raise ValueError(
                "ConfusionCallback sets loss_scale from the trainer (accumulate_grad_batches "
                "and the AMP GradScaler); remove loss_scale from its arguments."
            )
        self.every = every
        self.schedule = schedule
        self.save_path = save_path
        self.log_prefix = log_prefix
        self.log_layers = log_layers
        self.monitor_options = monitor_options
        self.monitor: Monitor | None = None
        self._pending_state: dict[str, Any] | None = None
        self._open = False
        self._loss_sum: torch.Tensor | None = None
        self._scale = 1.0

    # -- attaching -------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Attach a Monitor to ``pl_module`` when fitting starts (checks its layers)."""
        if stage != "fit" or self.monitor is not None:
            return
        self.monitor = Monitor(
            pl_module,
            every=self.every,
            schedule=self.schedule,
            loss_scale=lambda: self._scale,
            **self.monitor_options,
        )
        if self._pending_state is not None:
            self.monitor.load_state_dict(self._pending_state)
            self._pending_state = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Detach the monitor, so that the module can be monitored again."""
        if stage == "fit" and self.monitor is not None:
            self.monitor.detach()

    # -- one optimizer step ----------------------------------------------------------------

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Start the optimizer step's measurement at its first micro-batch."""
        if self._open:
            return  # a later micro-batch of the same optimizer step
        self._open = True
        self._loss_sum = None
        self._monitor().start(trainer.global_step)

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        """Add the micro-batch's loss (as differentiated) to the step's loss."""
        detached = loss.detach()
        self._loss_sum = detached if self._loss_sum is None else self._loss_sum + detached

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Close the measurement and log its statistics."""
        monitor = self._monitor()
        self._open = False
        if self._loss_sum is None:
            monitor.abort()  # training_step returned None: no backward ran
            return
        amp_scale = _amp_scale(trainer)
        self._scale = amp_scale / trainer.accumulate_grad_batches
        # Each micro-batch loss entered backward as AMP scale × loss / K, so the mean
        # micro-batch loss is their sum over the AMP scale.
        row = monitor.stop(loss=self._loss_sum / amp_scale)
        if row is None:
            return
        values = {f"{self.log_prefix}/{column}": float(row[column]) for column in LOGGED_COLUMNS}
        if self.log_layers:
            values.update(
                {f"{self.log_prefix}/{key}": float(value) for key, value in row.items()
                 if key.startswith("min_cosine/")}
            )
        pl_module.log_dict(
            values, on_step=True, on_epoch=False, batch_size=int(row["batch_size"] or 1)
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the record to ``save_path``, if one was given."""
        if self.save_path is not None and trainer.is_global_zero:
            self._monitor().save(self.save_path)

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Return the monitor's record for the checkpoint."""
        return self.monitor.state_dict() if self.monitor is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the record saved in a checkpoint."""
        if not state_dict:
            return
        if self.monitor is None:
            self._pending_state = state_dict
        else:
            self.monitor.load_state_dict(state_dict)

    def _monitor(self) -> Monitor:
        if self.monitor is None:
            raise RuntimeError(
                "ConfusionCallback has no monitor: its setup() did not run for stage 'fit'. "
                "Pass the callback to Trainer(callbacks=[...]) and call trainer.fit()."
            )
        return self.monitor


def _amp_scale(trainer: pl.Trainer) -> float:
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return float(scaler.get_scale()) if scaler is not None else 1.0
