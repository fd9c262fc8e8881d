"""Reusable matplotlib figure helpers for study reports.

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot, so they
render with the Agg canvas whatever backend the user selected, and no global figure state
is left behind. Every ``plot_*`` helper draws on the ``ax`` it receives and returns it.
Colors follow the order of x (smallest x darkest) so one x value has the same color in
every figure of a report.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, LogFormatter, NullLocator

__all__ = [
    "figure_to_base64",
    "figure_to_png",
    "format_value",
    "new_figure",
    "ordered_colors",
    "plot_curves",
    "plot_density",
    "plot_metric_vs_x",
]

Color = tuple[float, float, float, float]

# The top of viridis is a light yellow that is hard to see on white, so it is left out.
COLORMAP_SPAN = (0.0, 0.85)
# x values spanning at least this ratio are drawn on a log2 axis (widths 16..1024, say).
LOG_X_RATIO = 8.0
DEFAULT_DPI = 110
MIN_AUTO_BINS, MAX_AUTO_BINS = 10, 80


class PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain numbers (0.2, 3) on the ticks matplotlib would label."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def new_figure(width: float = 6.4, height: float = 4.0) -> tuple[Figure, Axes]:
    """Create a figure (size in inches) with one set of axes and a constrained layout."""
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.add_subplot()


def figure_to_png(figure: Figure, dpi: int = DEFAULT_DPI) -> bytes:
    """Render ``figure`` to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_to_base64(figure: Figure | bytes, dpi: int = DEFAULT_DPI) -> str:
    """Return the PNG of ``figure`` (or already rendered PNG bytes) as base64 text."""
    png = figure if isinstance(figure, bytes) else figure_to_png(figure, dpi)
    return base64.b64encode(png).decode("ascii")


def format_value(value: Any) -> str:
    """Format a label value, writing whole floats such as 64.0 as integers."""
    is_float = isinstance(value, (float, np.floating))
    if is_float and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def ordered_colors(values: Sequence[Any], cmap: str = "viridis") -> dict[Any, Color]:
    """Map each distinct value, in sorted order, to a color of ``cmap``."""
    distinct = sorted(set(values))
    colormap = matplotlib.colormaps[cmap]
    low, high = COLORMAP_SPAN
    if len(distinct) == 1:
        return {distinct[0]: colormap((low + high) / 2)}
    return {
        value: colormap(low + (high - low) * position / (len(distinct) - 1))
        for position, value in enumerate(distinct)
    }


def _use_log_x(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() >= LOG_X_RATIO


def _set_x_ticks(ax: Axes, values: np.ndarray, logx: bool) -> None:
    if logx:
        ax.set_xscale("log", base=2)
    ticks = np.unique(values[np.isfinite(values)])
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([format_value(tick) for tick in ticks])


def plot_curves(
    frame: pd.DataFrame,
    x: str,
    y: str,
    hue: str,
    *,
    ax: Axes,
    colors: Mapping[Any, Color] | None = None,
    hue_label: str | None = None,
    logy: bool = False,
) -> Axes:
    """Draw the mean of y against x for each hue value, with a band of ±1 std.

    Rows sharing a hue value and an x value (for example the seeds of one width at one
    epoch) are averaged. The band is the sample standard deviation over those rows, absent
    where there is one row. The legend counts the rows per point.
    """
    if frame.empty:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
        return ax
    colors = colors or ordered_colors(frame[hue].tolist())
    for hue_value, rows in sorted(frame.groupby(hue), key=lambda item: item[0]):
        stats = rows.groupby(x)[y].agg(["mean", "std", "count"]).sort_index()
        mean = stats["mean"].to_numpy(dtype=float)
        spread = stats["std"].fillna(0.0).to_numpy(dtype=float)
        count = int(stats["count"].max())
        color = colors.get(hue_value)
        label = f"{hue_label or hue} {format_value(hue_value)} (n={count})"
        x_values = stats.index.to_numpy(dtype=float)
        ax.plot(x_values, mean, color=color, label=label, linewidth=1.6)
        ax.fill_between(
            x_values, mean - spread, mean + spread, color=color, alpha=0.2, linewidth=0
        )
    if logy:
        ax.set_yscale("log", nonpositive="clip")
        ax.yaxis.set_major_formatter(PlainLogFormatter())
        ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_metric_vs_x(
    frame: pd.DataFrame,
    x: str,
    y: str,
    *,
    ax: Axes,
    hue: str | None = None,
    colors: Mapping[Any, Color] | None = None,
    logx: bool | None = None,
    show_points: bool = True,
) -> Axes:
    """Draw the mean ± std of y at each x value as error bars, with each row as a dot.

    The mean is a hollow circle, so the dots of single rows stay visible inside it.
    Without ``hue`` the mean is a black line and the dots take the color of their x value.
    With ``hue`` each hue value gets its own colored series. ``logx=None`` picks a log2
    axis when x is positive and spans a ratio of at least 8. Non-finite y values are left out.
    """
    data = frame[np.isfinite(pd.to_numeric(frame[y], errors="coerce").astype(float))]
    if data.empty:
        ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center")
        return ax
    x_values = data[x].to_numpy(dtype=float)
    series = [(None, data)] if hue is None else sorted(data.groupby(hue), key=lambda item: item[0])
    if colors is None:
        colors = ordered_colors(data[x].tolist() if hue is None else data[hue].tolist())

    for hue_value, rows in series:
        stats = rows.groupby(x)[y].agg(["mean", "std"]).sort_index()
        line_color = "black" if hue is None else colors.get(hue_value)
        label = "mean ± std" if hue is None else f"{hue} {format_value(hue_value)}"
        ax.errorbar(
            stats.index.to_numpy(dtype=float),
            stats["mean"].to_numpy(dtype=float),
            yerr=stats["std"].fillna(0.0).to_numpy(dtype=float),
            color=line_color,
            marker="o",
            markersize=11,
            markerfacecolor="none",
            capsize=4,
            linewidth=1.4,
            label=label,
            zorder=2,
        )
        if show_points:
            dot_colors = [colors.get(v) if hue is None else line_color for v in rows[x]]
            ax.scatter(rows[x], rows[y], c=dot_colors, s=22, alpha=0.8, zorder=3, edgecolors="none")

    _set_x_ticks(ax, x_values, _use_log_x(x_values) if logx is None else logx)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_density(
    samples_by_label: Mapping[Any, Any],
    *,
    ax: Axes,
    colors: Mapping[Any, Color] | None = None,
    bins: int | None = None,
    value_range: tuple[float, float] | None = None,
    label_prefix: str = "",
) -> Axes:
    """Draw a histogram density (area 1) of each label's samples as a step line.

    All curves share the same bin edges: ``bins`` equal bins over ``value_range``, or over
    the range of all finite samples. ``bins=None`` applies the Rice rule, 2·n^(1/3) bins for
    the smallest sample count n, clipped to 10..80. Non-finite samples are dropped, samples outside
    ``value_range`` are not counted, and the legend gives the number of finite samples.
    """
    if bins is not None and bins < 1:
        raise ValueError(
            f"bins={bins} is invalid; pass at least 1, or None to apply the Rice rule."
        )
    cleaned = {}
    for label, samples in samples_by_label.items():
        array = np.asarray(samples, dtype=float).ravel()
        cleaned[label] = array[np.isfinite(array)]
    pooled = np.concatenate(list(cleaned.values())) if cleaned else np.empty(0)
    if pooled.size == 0:
        ax.text(0.5, 0.5, "no samples", transform=ax.transAxes, ha="center", va="center")
        return ax

    low, high = value_range if value_range is not None else (pooled.min(), pooled.max())
    if high <= low:
        low, high = low - 0.05, high + 0.05
    if bins is None:
        smallest = min(samples.size for samples in cleaned.values() if samples.size > 0)
        bins = int(np.clip(round(2 * smallest ** (1 / 3)), MIN_AUTO_BINS, MAX_AUTO_BINS))
    edges = np.linspace(low, high, bins + 1)
    colors = colors or ordered_colors(list(cleaned))
    for label, samples in cleaned.items():
        if samples.size == 0:
            continue
        density, _ = np.histogram(samples, bins=edges, density=True)
        ax.stairs(
            density,
            edges,
            color=colors.get(label),
            linewidth=1.6,
            label=f"{label_prefix}{format_value(label)} (n={samples.size})",
        )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax
