"""``Monitor``: gradient confusion of the training batch, measured inside the training step.

On a scheduled step the monitor wraps the user's own forward and backward in a
``gradconf.engine.GramCapture``. Its hooks read the activations and backprops that the
step computes anyway and return None, so ``.grad`` is bit for bit what it is without the
monitor. The per-example Gram costs a few [B, B] products per layer on top of the step.
On other steps no hook is registered.

    monitor = Monitor(model, every=10)
    for step, (inputs, targets) in enumerate(loader):
        with monitor.step(step):
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        monitor.record_loss(loss)
    monitor.save("confusion.parquet")
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradconf.engine.capture import GramCapture
from gradconf.engine.result import check_loss_reduction
from gradconf.engine.state import batchnorm_in_train_mode
from gradconf.monitor.inspect import (
    BATCHNORM_MODES,
    check_unchanged,
    claim_model,
    inspect_model,
    release_model,
)
from gradconf.monitor.record import LAYER_PREFIX, STATE_VERSION, Record
from gradconf.monitor.statistics import STAT_COLUMNS, step_statistics, to_example_units
from gradconf.monitor.tensorboard import write_history, write_row

__all__ = ["Monitor", "StepContext"]

logger = logging.getLogger(__name__)

Schedule = Callable[[int], bool]


class StepContext:
    """The ``with monitor.step(...)`` block of one training step.

    ``measuring`` is True on a measured step. ``record_loss(loss)`` records the step's
    loss from inside the block. A clean exit closes the measurement, and an exception
    drops it.
    """

    __slots__ = ("_monitor", "_step", "measuring")

    def __init__(self, monitor: Monitor, step: int | None) -> None:
        self._monitor = monitor
        self._step = step
        self.measuring = False

    def __enter__(self) -> StepContext:
        self.measuring = self._monitor.start(self._step)
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self._monitor.stop()
        else:
            self._monitor.abort()

    @property
    def step(self) -> int:
        """The step number of this block."""
        return self._monitor.current_step

    def record_loss(self, loss: torch.Tensor | float) -> None:
        """Record the loss of this step (a scalar tensor or float)."""
        self._monitor.record_loss(loss, step=self.step)


class Monitor:
    """Measure per-example gradient confusion of the training batch on scheduled steps.

    ``model`` is the module whose parameters the optimizer trains. Its layers are checked
    when the monitor attaches: a layer whose per-example gradients cannot be measured
    raises ValueError then, not at the first measured step. ``every=k`` measures steps
    0, k, 2k, ...; ``schedule`` (a function step -> bool) replaces it. Exactly one of the
    two is required.

    ``loss_reduction`` ("mean" or "sum") is the reduction of the loss over the batch. Inner
    products and squared norms are recorded in per-example-loss units ⟨∇f_i, ∇f_j⟩ either
    way; under "mean" the engine's values are multiplied by B² per micro-batch.
    ``loss_scale`` is the factor the reduced loss is multiplied by before ``backward``:
    1/K when each of K accumulated micro-batch losses is divided by K, or the AMP
    GradScaler's scale. It is a number, or a function called at the end of each measured
    step. Cosines do not depend on either.

    ``batchnorm="error"`` rejects BatchNorm in train mode, where per-example gradients are
    not defined. ``batchnorm="eval"`` runs BatchNorm with its running statistics on
    measured steps, which changes those training steps: other gradients, and no update of
    the running statistics. ``layers`` adds the minimum cosine of each layer
    (``min_cosine/<layer>``); ``keep_cosines`` keeps every measured step's pair cosines
    (column ``cosines``). ``tensorboard_writer`` (a ``SummaryWriter``) receives each
    measured step as scalars under ``tensorboard_prefix`` and a histogram of its cosines.

    Gradient accumulation: every backward pass between ``start`` and ``stop`` is one
    micro-batch of the same step. The engine computes inner products only within a
    micro-batch, so the pairwise statistics cover the pairs inside each micro-batch, and
    the norms cover all examples (see ``gradconf.monitor.statistics``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        every: int | None = None,
        schedule: Schedule | None = None,
        loss_reduction: str = "mean",
        loss_scale: float | Callable[[], float] = 1.0,
        batchnorm: str = "error",
        layers: bool = True,
        keep_cosines: bool = False,
        tensorboard_writer: Any = None,
        tensorboard_prefix: str = "gradconf",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model must be a torch.nn.Module, received {type(model).__name__}. Pass the "
                "module whose parameters the optimizer trains."
            )
        self.schedule = _make_schedule(every, schedule)
        self.every = every

        check_loss_reduction(loss_reduction)
        if batchnorm not in BATCHNORM_MODES:
            raise ValueError(
                f"batchnorm={batchnorm!r} is not supported; allowed: "
                f"{', '.join(map(repr, BATCHNORM_MODES))}."
            )
        if not callable(loss_scale):
            _check_loss_scale(loss_scale)

        self.model = model
        self.loss_reduction = loss_reduction
        self.loss_scale = loss_scale
        self.batchnorm = batchnorm
        self.layers = layers
        self.keep_cosines = keep_cosines
        self.tensorboard_writer = tensorboard_writer
        self.tensorboard_prefix = tensorboard_prefix

        self.current_step = -1
        self._record = Record()
        self._capture: GramCapture | None = None
        self._open_loss: torch.Tensor | float | None = None  # recorded while measuring
        self._started = 0.0
        self._unwritten: tuple[dict[str, Any], np.ndarray | None] | None = None
        self._warned_single = False
        self._nonfinite_steps = 0
        self._attached = False

        self._plan = inspect_model(model, batchnorm=batchnorm)
        claim_model(model, self)
        self._attached = True

    # -- attaching -------------------------------------------------------------------------

    def inspect(self) -> None:
        """Check the model's layers again, after an intended change such as a new head."""
        self._plan = inspect_model(self.model, batchnorm=self.batchnorm)

    def detach(self) -> None:
        """Close any open measurement and release the model for another monitor."""
        if self._capture is not None:
            self.abort()
        self.flush()
        release_model(self.model, self)
        self._attached = False

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.detach()

    # -- one step --------------------------------------------------------------------------

    def should_measure(self, step: int) -> bool:
        """Return whether ``step`` is scheduled for a measurement."""
        return bool(self.schedule(step))

    def step(self, step: int | None = None) -> StepContext:
        """Return the context of one training step; ``step`` defaults to the previous one + 1."""
        return StepContext(self, step)

    def start(self, step: int | None = None) -> bool:
        """Begin training step ``step``; on a scheduled step, start measuring. Return whether it is.

        Raises ValueError if parameters were added or removed since the monitor attached,
        or if a BatchNorm module is in train mode under ``batchnorm="error"``.
        """
        if not self._attached:
            raise RuntimeError("this Monitor was detached; create a new one to measure again.")
        if self._capture is not None:
            raise RuntimeError(
                f"step {self.current_step} is still being measured; call stop() (or leave its "
                "`with monitor.step()` block) before starting the next step."
            )
        self._write_pending()
        self.current_step = self.current_step + 1 if step is None else int(step)
        if not self.schedule(self.current_step):
            return False
        if check_unchanged(self.model, self._plan):
            self.inspect()  # trainable parameters changed: check the newly trainable layers
        if self.batchnorm == "error":
            in_train = batchnorm_in_train_mode(self.model)
            if in_train:
                raise ValueError(
                    f"BatchNorm modules {in_train} are in train mode at step "
                    f"{self.current_step}, where per-example gradients are not defined. Put "
                    "them in eval mode, or create the Monitor with batchnorm='eval'."
                )
        self._started = time.perf_counter()
        capture = GramCapture(
            self.model,
            loss_reduction=self.loss_reduction,
            batchnorm="none" if self.batchnorm == "error" else "eval",
        )
        capture.__enter__()
        self._capture = capture
        return True

    def stop(self, loss: torch.Tensor | float | None = None) -> dict[str, Any] | None:
        """End the current step; return the measured row (None on an unmeasured step).

        ``loss`` is recorded as with ``record_loss``. A NaN or infinite loss or gradient
        gives a row of NaN statistics with ``finite=False`` instead of an error.
        """
        capture, self._capture = self._capture, None
        if loss is None:
            loss, self._open_loss = self._open_loss, None
        if capture is None:
            if loss is not None:
                self.record_loss(loss)
            return None
        capture.__exit__(None, None, None)
        finished = time.perf_counter()
        try:
            batches = capture.captured_batches()
        except RuntimeError:
            if _gradients_finite(self.model):
                raise
            batches = None  # the engine's checks fail on NaN or infinite gradients
        row = self._measured_row(batches)
        now = time.perf_counter()
        row["measure_seconds"] = now - finished
        row["step_seconds"] = now - self._started
        self._record.add(row)
        if loss is not None:
            self.record_loss(loss)
        return dict(row)

    def abort(self) -> None:
        """Drop the current measurement (the step raised); remove its hooks."""
        capture, self._capture = self._capture, None
        self._open_loss = None
        if capture is not None:
            capture.__exit__(RuntimeError, RuntimeError("step aborted"), None)

    def record_loss(self, loss: torch.Tensor | float, step: int | None = None) -> None:
        """Record the loss of ``step`` (default: the current step).

        The tensor of an unmeasured step is kept and copied to the CPU later, together
        with others (when the record is read, or once 1024 are pending), so that most
        steps do not wait for the device. A non-finite loss of a measured step sets its
        statistics to NaN and ``finite`` to False.
        """
        step = self.current_step if step is None else int(step)
        if self._capture is not None and step == self.current_step:
            self._open_loss = loss  # the row is added by stop()
            return
        rows = self._record.rows
        row = rows[-1] if rows and rows[-1]["step"] == step else None  # a repeat replaces
        if row is None:
            row = {"step": step, "measured": False, "loss": math.nan, "finite": True}
            self._record.add(row)
        self._record.set_loss(row, loss)
        if row["measured"]:
            if not math.isfinite(row["loss"]) and row["finite"]:
                row["finite"] = False
                _clear_statistics(row)
                self._note_nonfinite(step, "loss")
            self._write_pending()

    # -- the record ------------------------------------------------------------------------

    def history(self) -> pd.DataFrame:
        """Return the record as a DataFrame, one row per recorded step (columns in
        ``gradconf.monitor.record``)."""
        self._write_pending()
        return self._record.frame(cosines=self.keep_cosines)

    @property
    def latest(self) -> dict[str, Any] | None:
        """The most recent measured row, or None before the first measurement."""
        for row in reversed(self._record.rows):
            if row["measured"]:
                return {key: value for key, value in row.items() if key != "cosines"}
        return None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the record to ``path`` as Parquet, atomically (``gradconf plot`` reads it)."""
        self._write_pending()
        self._record.save(path, cosines=self.keep_cosines)

    def flush(self) -> None:
        """Write the last measured row to the TensorBoard writer, if it is still pending."""
        self._write_pending()

    def to_tensorboard(self, writer: Any, prefix: str | None = None) -> None:
        """Write the whole record to ``writer`` (a ``SummaryWriter``), losses included."""
        write_history(writer, self.history(), prefix=prefix or self.tensorboard_prefix)

    def state_dict(self) -> dict[str, Any]:
        """Return the record and step counter, for a checkpoint (plain values and tensors)."""
        return {
            "version": STATE_VERSION,
            "current_step": self.current_step,
            "loss_reduction": self.loss_reduction,
            "rows": self._record.state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the record of ``state_dict()``: later steps append to its rows."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"received a monitor state of version {state.get('version')!r}; this gradconf "
                f"reads version {STATE_VERSION}. Save the state with this gradconf version."
            )
        if state["loss_reduction"] != self.loss_reduction:
            raise ValueError(
                f"the saved record measured loss_reduction={state['loss_reduction']!r}, this "
                f"monitor {self.loss_reduction!r}; create the Monitor with the saved value."
            )
        if self._capture is not None:
            raise RuntimeError("cannot load a state while a step is being measured; call stop().")
        self._record.load(state["rows"])
        self.current_step = int(state["current_step"])
        self._unwritten = None

    # -- internals -------------------------------------------------------------------------

    def _measured_row(self, batches: list | None) -> dict[str, Any]:
        row: dict[str, Any] = {"step": self.current_step, "measured": True, "loss": math.nan}
        if batches is None:
            row.update(finite=False, batch_size=None, num_micro_batches=None, coverage=math.nan)
            _clear_statistics(row)
            self._note_nonfinite(self.current_step, "gradient")
            return row

        scale = float(self.loss_scale()) if callable(self.loss_scale) else self.loss_scale
        _check_loss_scale(scale)
        blocks = [
            to_example_units(
                batch.values, batch.batch_size,
                loss_reduction=self.loss_reduction, loss_scale=scale,
            )
            for batch in batches
        ]
        stats, layer_min, cosines = step_statistics(blocks, layers=self.layers)

        batch_size = sum(batch.batch_size for batch in batches)
        finite = not math.isnan(stats["mean_sq_norm"])
        row.update(
            finite=finite,
            batch_size=batch_size,
            num_micro_batches=len(batches),
            coverage=min(batch.coverage.share for batch in batches),
        )
        row.update(stats)
        row.update({f"{LAYER_PREFIX}{layer}": value for layer, value in layer_min.items()})
        if self.keep_cosines:
            row["cosines"] = cosines.astype(np.float32)

        if not finite:
            self._note_nonfinite(self.current_step, "gradient")
        elif stats["num_pairs"] == 0 and not self._warned_single:
            self._warned_single = True
            logger.warning(
                "step %d measured a batch of %d example(s) without pairs, so its pairwise "
                "statistics (η̂, cosines) are NaN; only squared norms are defined",
                self.current_step, batch_size,
            )
        if self.tensorboard_writer is not None:
            self._unwritten = (row, cosines)
        return row

    def _write_pending(self) -> None:
        if self._unwritten is None:
            return
        row, cosines = self._unwritten
        self._unwritten = None
        if not row["finite"]:
            cosines = None
        write_row(self.tensorboard_writer, row, cosines, prefix=self.tensorboard_prefix)

    def _note_nonfinite(self, step: int, what: str) -> None:
        self._nonfinite_steps += 1
        level = logging.WARNING if self._nonfinite_steps == 1 else logging.DEBUG
        logger.log(
            level,
            "step %d has a NaN or infinite %s; its statistics are recorded as NaN with "
            "finite=False (%d such step(s) so far)",
            step, what, self._nonfinite_steps,
        )


def _make_schedule(every: int | None, schedule: Schedule | None) -> Schedule:
    if (every is None) == (schedule is None):
        raise ValueError(
            "pass exactly one of every=k (measure every k-th step) or schedule=callable "
            f"(step -> bool); received every={every!r} and schedule={schedule!r}."
        )
    if schedule is not None:
        if not callable(schedule):
            raise TypeError(f"schedule must be a callable step -> bool, received {schedule!r}.")
        return schedule
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r} is invalid; pass an integer >= 1 (1 measures every step).")
    return lambda step: step % every == 0


def _check_loss_scale(scale: float) -> None:
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"loss_scale={scale!r} is invalid; it must be a finite number > 0, the factor "
            "the reduced loss was multiplied by before backward()."
        )


def _clear_statistics(row: dict[str, Any]) -> None:
    for column in STAT_COLUMNS:
        if column not in ("num_pairs", "undefined_cosines"):
            row[column] = math.nan
    for column in row:
        if column.startswith(LAYER_PREFIX):
            row[column] = math.nan
    row.pop("cosines", None)


def _gradients_finite(model: nn.Module) -> bool:
    return all(
        bool(torch.isfinite(param.grad).all())
        for param in model.parameters()
        if param.grad is not None
    )
