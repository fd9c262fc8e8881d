"""The monitor's record: one row per step that was measured or had its loss recorded.

Columns, in order:

- ``step``, ``measured`` (the step's Gram was measured), ``loss`` (NaN if none was given)
  and ``finite``. It is False when the loss or a measured gradient was NaN or infinite,
  and the statistics of such a step are NaN;
- ``batch_size`` (examples N over all micro-batches), ``num_micro_batches`` (backward
  passes K) and ``coverage`` (share of trainable parameters the Gram covers);
- the statistics of ``gradconf.monitor.statistics.STAT_COLUMNS``, with inner products and
  squared norms in per-example-loss units;
- ``measure_seconds`` (wall time of the monitor's work after the backward) and
  ``step_seconds`` (wall time from ``start`` to the end of ``stop``, user code included);
- ``min_cosine/<layer>``, the minimum cosine between per-example gradients of one layer;
- ``cosines`` (an array per measured step) when the monitor keeps them.

Losses of unmeasured steps stay tensors until the record is read, so recording them
does not wait for the device.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd
import torch

from gradconf.monitor.statistics import STAT_COLUMNS
from gradconf.runs.io import write_parquet_atomic

__all__ = ["BASE_COLUMNS", "LAYER_PREFIX", "TIMING_COLUMNS", "Record", "read_record"]

BASE_COLUMNS = ("step", "measured", "loss", "finite", "batch_size", "num_micro_batches", "coverage")
TIMING_COLUMNS = ("measure_seconds", "step_seconds")
LAYER_PREFIX = "min_cosine/"
_INTEGER_COLUMNS = ("step", "batch_size", "num_micro_batches", "num_pairs", "undefined_cosines")
# Pending loss tensors are copied to the CPU together once this many have accumulated.
_LOSS_CHUNK = 1024
STATE_VERSION = 1


def loss_value(loss: torch.Tensor | float) -> float:
    """Return a scalar loss as a float; raise ValueError for a tensor with several entries."""
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(
                f"received a loss tensor of shape {tuple(loss.shape)}; the monitor records one "
                "scalar loss per step. Pass the reduced loss that backward() was called on."
            )
        return float(loss.detach())
    return float(loss)


class Record:
    """Rows of the monitor's record, in the order the steps ran."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._layers: dict[str, None] = {}  # layer names in order of first appearance
        self._pending: list[dict[str, Any]] = []  # rows whose loss is still a tensor

    def add(self, row: dict[str, Any]) -> None:
        """Append a row (its loss a float; use ``set_loss`` for a tensor)."""
        self.rows.append(row)
        for key in row:
            if key.startswith(LAYER_PREFIX):
                self._layers.setdefault(key)

    def set_loss(self, row: dict[str, Any], loss: torch.Tensor | float) -> None:
        """Set the loss of ``row``: kept as a detached tensor on unmeasured rows, else a float.

        The caller sets ``finite`` of measured rows, which also depends on the gradients.
        """
        if isinstance(loss, torch.Tensor) and not row["measured"]:
            if loss.numel() != 1:
                loss_value(loss)  # raises the ValueError
            row["loss"] = loss.detach()
            self._pending.append(row)
            if len(self._pending) >= _LOSS_CHUNK:
                self.read_losses()
            return
        row["loss"] = loss_value(loss)
        if not row["measured"]:
            row["finite"] = math.isfinite(row["loss"])

    def read_losses(self) -> None:
        """Copy every pending loss tensor to a float, one transfer per device and dtype."""
        pending, self._pending = self._pending, []
        groups: dict[tuple[torch.device, torch.dtype], list[dict[str, Any]]] = {}
        for row in pending:
            loss = row["loss"]
            if isinstance(loss, torch.Tensor):  # else replaced by a later record_loss
                groups.setdefault((loss.device, loss.dtype), []).append(row)
        for rows in groups.values():
            values = torch.stack([row["loss"].reshape(()) for row in rows]).double().cpu()
            for row, value in zip(rows, values.tolist(), strict=True):
                row["loss"] = value
                if not row["measured"]:
                    row["finite"] = math.isfinite(value)

    def frame(self, *, cosines: bool) -> pd.DataFrame:
        """Return the rows as a DataFrame with the columns in the documented order."""
        self.read_losses()
        columns = [*BASE_COLUMNS, *STAT_COLUMNS, *TIMING_COLUMNS, *self._layers]
        if cosines:
            columns.append("cosines")
        frame = pd.DataFrame(self.rows, columns=columns)
        if cosines:
            # An object column, so that unmeasured steps hold None rather than NaN.
            frame["cosines"] = pd.Series([row.get("cosines") for row in self.rows], dtype=object)
        for column in _INTEGER_COLUMNS:
            frame[column] = frame[column].astype("Int64")
        for column in ("measured", "finite"):
            frame[column] = frame[column].astype(bool)
        return frame

    def save(self, path: str | os.PathLike[str], *, cosines: bool) -> None:
        """Write the record to ``path`` as Parquet, atomically."""
        write_parquet_atomic(path, self.frame(cosines=cosines))

    def state(self) -> list[dict[str, Any]]:
        """Return the rows as plain Python values and tensors (loadable with weights_only)."""
        self.read_losses()
        rows = []
        for row in self.rows:
            plain = dict(row)
            if isinstance(plain.get("cosines"), np.ndarray):
                plain["cosines"] = torch.from_numpy(plain["cosines"])
            rows.append(plain)
        return rows

    def load(self, rows: list[dict[str, Any]]) -> None:
        """Replace the rows by those of ``state()``."""
        self.rows = []
        self._layers = {}
        self._pending = []
        for row in rows:
            restored = dict(row)
            if isinstance(restored.get("cosines"), torch.Tensor):
                restored["cosines"] = restored["cosines"].numpy()
            self.add(restored)


def read_record(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a record written by ``Monitor.save``; raise ValueError for another Parquet file."""
    frame = pd.read_parquet(path)
    missing = [column for column in ("step", "measured", "loss", "eta", "min_cosine") if column not in frame]
    if missing:
        raise ValueError(
            f"{os.fspath(path)} is not a monitor record: columns {missing} are missing. Pass a "
            "file written by gradconf.Monitor.save()."
        )
    return frame
