"""Draw a monitor record: loss, cosines and η̂ over training steps.

The figure is built on ``matplotlib.figure.Figure`` with the Agg canvas, never through
pyplot, so it renders without a display and leaves no global figure state.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gradconf.runs.io import write_bytes_atomic

__all__ = ["plot_record"]

# Cosine quantities drawn in the middle panel: column -> legend label.
_COSINE_LINES = {
    "min_cosine": "min",
    "q05_cosine": "5%",
    "median_cosine": "median",
    "mean_cosine": "mean",
}


def plot_record(frame: pd.DataFrame, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Draw ``frame`` (``Monitor.history()`` or ``read_record``) to a PNG at ``path``.

    Three panels share the step axis. The first shows the loss of every step that has
    one, the second the min, 5%, median and mean cosine of the measured steps, and the
    third their η̂. Red vertical lines mark steps whose loss or gradients were not
    finite. Returns the path.
    Raises ValueError if the record has no measured step and no loss.
    """
    losses = frame[np.isfinite(frame["loss"].astype(float))]
    measured = frame[frame["measured"] & frame["finite"]]
    if losses.empty and measured.empty:
        raise ValueError(
            "the record has no finite loss and no finite measured step, so there is nothing "
            "to plot. Record losses with monitor.record_loss() and measure at least one step."
        )
    figure = Figure(figsize=(7.0, 7.0), layout="constrained")
    loss_axes, cosine_axes, eta_axes = figure.subplots(3, 1, sharex=True)

    loss_axes.plot(losses["step"], losses["loss"], color="black", linewidth=1.0)
    loss_axes.set_ylabel("loss")

    for column, label in _COSINE_LINES.items():
        cosine_axes.plot(measured["step"], measured[column], marker=".", linewidth=1.0, label=label)
    cosine_axes.axhline(0.0, color="gray", linewidth=0.6)
    cosine_axes.set_ylabel("cosine of per-example\ngradient pairs")
    cosine_axes.legend(loc="best", fontsize="small")

    eta_axes.plot(measured["step"], measured["eta"], marker=".", linewidth=1.0, color="tab:red")
    eta_axes.set_ylabel("η̂ = max(0, −min ⟨∇f_i, ∇f_j⟩)")
    eta_axes.set_xlabel("step")

    for step in frame.loc[~frame["finite"], "step"]:
        for axes in (loss_axes, cosine_axes, eta_axes):
            axes.axvline(float(step), color="red", alpha=0.4, linewidth=0.8)
    for axes in (loss_axes, cosine_axes, eta_axes):
        axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return write_bytes_atomic(Path(path), buffer.getvalue())
