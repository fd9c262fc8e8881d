"""TensorBoard output of the monitor's record through a ``SummaryWriter``-like object.

Only ``add_scalar(tag, value, global_step)`` and ``add_histogram(tag, values,
global_step)`` are called, so this module imports neither tensorboard nor
``torch.utils.tensorboard``; pass a ``torch.utils.tensorboard.SummaryWriter``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from gradconf.monitor.record import LAYER_PREFIX

__all__ = ["SCALAR_COLUMNS", "write_history", "write_row"]

# Record columns written as scalars, under "<prefix>/<column>".
SCALAR_COLUMNS = (
    "loss",
    "eta",
    "min_cosine",
    "mean_cosine",
    "median_cosine",
    "q05_cosine",
    "q95_cosine",
    "negative_fraction",
    "mean_sq_norm",
    "gradient_diversity",
    "noise_scale",
)


def write_row(writer: Any, row: dict[str, Any], cosines: np.ndarray | None, *, prefix: str) -> None:
    """Write one row's scalars, its per-layer minimum cosines and a histogram of ``cosines``.

    A NaN loss (none recorded) is not written; NaN statistics are, so that a non-finite
    step shows up as a gap in TensorBoard.
    """
    step = int(row["step"])
    for column in SCALAR_COLUMNS:
        value = row.get(column)
        if value is None or (column == "loss" and math.isnan(value)):
            continue
        writer.add_scalar(f"{prefix}/{column}", float(value), step)
    if not row.get("measured", False):
        return
    for column, value in row.items():
        if column.startswith(LAYER_PREFIX):
            writer.add_scalar(f"{prefix}/{column}", float(value), step)
    if cosines is not None:
        defined = cosines[~np.isnan(cosines)]
        if defined.size:
            writer.add_histogram(f"{prefix}/cosines", defined, step)


def write_history(writer: Any, frame: pd.DataFrame, *, prefix: str) -> None:
    """Write every row of a record frame (``Monitor.history()`` or a saved Parquet file)."""
    has_cosines = "cosines" in frame.columns
    for row in frame.to_dict("records"):
        cosines = row.pop("cosines", None) if has_cosines else None
        if cosines is not None:
            cosines = np.asarray(cosines, dtype=np.float64)
        if not row["measured"]:
            row = {"step": row["step"], "loss": row["loss"], "measured": False}
        write_row(writer, row, cosines, prefix=prefix)
