"""Random tanh MLPs at initialization: how width and depth change the confusion probability.

Sankararaman et al. (ICML 2020) bound, over random Gaussian weights and data uniform on
the sphere, the probability that a confusion bound η holds, P(min_{i≠j} ⟨∇f_i, ∇f_j⟩ ≥ −η).
The bound rises with width and falls with depth. Here each (width, depth) cell is a scalar-output tanh MLP
without biases, init "gaussian" (variance 1/d in the first layer and 1/(κ·fan_in) after,
κ = ``kappa``), square loss, and the draws of ``gradconf.reproduce.theory``.

Gradient norms change with width and depth, so a fixed absolute η would make the
probability 0 or 1 in most cells. The event tested is the scale-free one
η̂ / mean_i ‖∇f_i‖² <= τ, i.e. ⟨∇f_i, ∇f_j⟩ >= −τ · mean‖∇f‖² for all i ≠ j, with τ the
median of η̂ / mean‖∇f‖² over all draws of all cells. Overall half of the draws succeed,
so the grid's differences are neither stuck at 0 nor at 1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gradconf.config import ModelConfig
from gradconf.report import (
    Section,
    figure_html,
    plot_density,
    table_html,
    trend_verdict,
)
from gradconf.reproduce.base import ExperimentOutput, check_scale, settings_html, wilson_interval
from gradconf.reproduce.theory import run_cells

__all__ = ["NAME", "TITLE", "cell_probabilities", "run", "settings"]

logger = logging.getLogger(__name__)

NAME = "theory-width-depth"
TITLE = "Theory: confusion probability of random tanh MLPs vs width and depth"

_QUICK: dict[str, Any] = {
    "num_examples": 32,
    "dim": 10,
    "widths": [10, 40, 160, 640],
    "depths": [2, 4, 8, 16],
    "draws": 50,
    "activation": "tanh",
    "init": "gaussian",
    "kappa": 1.0,
    "bias": False,
    "loss": "square, f_i = ½(f(x_i) − y_i)²",
    "targets": "tanh teacher on the sphere, redrawn per draw",
    "threshold": "τ = median of η̂/mean‖∇f‖² over all draws of all cells",
    "seed": 0,
}
_PAPER = {**_QUICK, "draws": 500}
_SMOKE = {"num_examples": 6, "dim": 4, "widths": [4, 8, 16], "depths": [1, 2, 3], "draws": 4}


def settings(scale: str) -> dict[str, Any]:
    """Return the resolved settings of ``scale`` ("quick" or "paper")."""
    return dict(_QUICK if check_scale(scale) == "quick" else _PAPER)


def cell_probabilities(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Return per (width, depth) the success count, draws, P̂ and its 95% Wilson interval.

    A draw succeeds when its ``eta_normalized`` is at most ``threshold``.
    """
    rows = []
    for (width, depth), group in frame.groupby(["width", "depth"]):
        successes = int((group["eta_normalized"] <= threshold).sum())
        low, high = wilson_interval(successes, len(group))
        rows.append({"width": width, "depth": depth, "successes": successes,
                     "draws": len(group), "probability": successes / len(group),
                     "ci_low": low, "ci_high": high,
                     "mean_min_cosine": float(group["min_cosine"].mean())})
    return pd.DataFrame(rows)


def _heatmap(table: pd.DataFrame, threshold: float) -> str:
    widths = sorted(table["width"].unique())
    depths = sorted(table["depth"].unique())
    grid = table.pivot(index="depth", columns="width", values="probability").loc[depths, widths]
    figure = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(grid.to_numpy(), vmin=0.0, vmax=1.0, cmap="viridis", origin="lower")
    for row in table.itertuples():
        ax.text(widths.index(row.width), depths.index(row.depth),
                f"{row.probability:.2f}\n[{row.ci_low:.2f}, {row.ci_high:.2f}]",
                ha="center", va="center", fontsize=7,
                color="white" if row.probability < 0.6 else "black")
    ax.set_xticks(range(len(widths)), [str(w) for w in widths])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    ax.set(xlabel="width", ylabel="depth (hidden layers)")
    figure.colorbar(image, ax=ax, label="P̂(η̂/mean‖∇f‖² <= τ)")
    return figure_html(
        figure,
        f"Estimated probability that the confusion bound τ·mean‖∇f‖² holds (τ = {threshold:.3g}), "
        "with 95% Wilson intervals. Look for values rising from left to right (width) and "
        "falling from bottom to top (depth).",
        alt="probability heatmap over width and depth",
    )


def _lines(table: pd.DataFrame) -> str:
    figure = Figure(figsize=(10.0, 3.8), layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)
    for ax, (x, hue) in zip(panels, (("width", "depth"), ("depth", "width"))):
        for index, (value, rows) in enumerate(table.groupby(hue)):
            rows = rows.sort_values(x)
            ax.errorbar(rows[x], rows["probability"],
                        yerr=[rows["probability"] - rows["ci_low"],
                              rows["ci_high"] - rows["probability"]],
                        marker="o", capsize=3, label=f"{hue} {value}", color=f"C{index}")
        ax.set(xscale="log", xlabel=x, ylabel="P̂", ylim=(-0.02, 1.02))
        ax.minorticks_off()
        ax.set_xticks(sorted(table[x].unique()), [str(v) for v in sorted(table[x].unique())])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return figure_html(
        figure,
        "The same probabilities as lines, with Wilson intervals: against width per depth "
        "(left, expected to rise) and against depth per width (right, expected to fall).",
        alt="probability vs width and depth",
    )


def _densities(frame: pd.DataFrame) -> str:
    figure = Figure(figsize=(10.0, 3.8), layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)
    middle_depth = sorted(frame["depth"].unique())[len(frame["depth"].unique()) // 2]
    middle_width = sorted(frame["width"].unique())[len(frame["width"].unique()) // 2]
    at_depth = frame[frame["depth"] == middle_depth]
    at_width = frame[frame["width"] == middle_width]
    plot_density({w: g["min_cosine"] for w, g in at_depth.groupby("width")}, ax=panels[0],
                 label_prefix="width ")
    panels[0].set(title=f"depth {middle_depth}", xlabel="min cosine over pairs")
    plot_density({d: g["min_cosine"] for d, g in at_width.groupby("depth")}, ax=panels[1],
                 label_prefix="depth ")
    panels[1].set(title=f"width {middle_width}", xlabel="min cosine over pairs")
    return figure_html(
        figure,
        "Distribution over draws of the minimum pairwise cosine of per-example gradients. "
        "Look for the mass moving right (less confusion) with width and left with depth.",
        alt="min cosine densities",
    )


def run(
    scale: str,
    out_dir: Path,
    *,
    progress: bool = True,
    smoke: bool = False,
    data_root: Path | None = None,
    device: str = "auto",
) -> ExperimentOutput:
    """Measure every (width, depth) cell not yet stored under ``out_dir``, then test the claims.

    ``data_root`` is unused (the data is generated). Cells run on ``device`` in float64.
    """
    config = {**settings(scale), **(_SMOKE if smoke else {})}
    cells = [{"width": width, "depth": depth}
             for width in config["widths"] for depth in config["depths"]]

    def make_config(cell: dict[str, Any]) -> ModelConfig:
        return ModelConfig(kind="mlp", width=cell["width"], depth=cell["depth"],
                           activation=config["activation"], init=config["init"],
                           kappa=config["kappa"], bias=config["bias"])

    frame = run_cells(cells, config["draws"], out_dir, make_config, config, name=NAME,
                      progress=progress, device=device)
    threshold = float(np.median(frame["eta_normalized"]))
    frame["success"] = (frame["eta_normalized"] <= threshold).astype(float)
    table = cell_probabilities(frame, threshold)
    logger.info("threshold tau=%.4g; P-hat ranges from %.2f to %.2f over %d cells", threshold,
                table["probability"].min(), table["probability"].max(), len(table))

    verdicts = [
        trend_verdict(frame, "width", "success", +1, experiment=NAME,
                      claim="Wider tanh MLPs are more likely to satisfy a confusion bound",
                      statistic="Spearman ρ(width, 1[η̂/mean‖∇f‖² <= τ]) over draws"),
        trend_verdict(frame, "depth", "success", -1, experiment=NAME,
                      claim="Deeper tanh MLPs are less likely to satisfy a confusion bound",
                      statistic="Spearman ρ(depth, 1[η̂/mean‖∇f‖² <= τ]) over draws"),
        trend_verdict(frame, "width", "min_cosine", +1, experiment=NAME,
                      claim="Wider tanh MLPs have a higher min cosine (less confusion)",
                      statistic="Spearman ρ(width, min cosine) over draws"),
        trend_verdict(frame, "depth", "min_cosine", -1, experiment=NAME,
                      claim="Deeper tanh MLPs have a lower min cosine (more confusion)",
                      statistic="Spearman ρ(depth, min cosine) over draws"),
    ]
    notes = [
        f"τ = {threshold:.4g} is the pooled median of η̂/mean‖∇f‖², so P̂ is 0.5 over the "
        "whole grid; the claims are about its trend, not its level.",
        "Each width trend pools all depths (and each depth trend all widths); the bootstrap "
        "resamples draws within each width (or depth).",
    ]
    sections = [
        Section("Probability of a confusion bound", _heatmap(table, threshold) + _lines(table)
                + table_html(table, caption="Per cell: successes, P̂ and its Wilson interval")),
        Section("Minimum cosine", _densities(frame)),
        Section("Settings", settings_html(config)),
    ]
    return ExperimentOutput(NAME, verdicts, sections, notes)
