"""Deep linear networks at initialization: orthogonal init makes confusion depth-independent.

For a linear MLP without biases whose layers are orthogonal (the first an isometric
embedding R^d -> R^width, the head a unit-norm row), every layer's gradient term of
example i is the residual r_i times an isometric image of x_i, so the Gram is
(depth + 1) · r_i r_j x_iᵀx_j with r distributed as for depth 1. Cosines and the
normalized confusion η̂ / mean‖∇f_i‖² therefore have the same distribution at every
depth. With Gaussian init (variance 1/fan_in) products of random matrices distort the
inner products more as depth grows, so confusion rises with depth. See
``gradconf.reproduce.theory`` for one Monte Carlo draw.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from gradconf.config import ModelConfig
from gradconf.report import (
    Section,
    Verdict,
    bootstrap_spearman,
    figure_html,
    plot_metric_vs_x,
    spearman,
    table_html,
    trend_verdict,
)
from gradconf.reproduce.base import ExperimentOutput, check_scale, settings_html
from gradconf.reproduce.theory import run_cells

__all__ = ["NAME", "TITLE", "independence_verdict", "run", "settings"]

logger = logging.getLogger(__name__)

NAME = "theory-orthogonal"
TITLE = "Theory: deep linear networks, orthogonal vs Gaussian init"

_QUICK: dict[str, Any] = {
    "num_examples": 32,
    "dim": 16,
    "width": 32,
    "depths": [1, 2, 4, 8, 16, 32],
    "inits": ["orthogonal", "gaussian"],
    "activation": "identity",
    "bias": False,
    "kappa": 1.0,
    "draws": 40,
    # Largest allowed max/min ratio of the per-depth mean statistic for "independent of depth".
    "ratio_band": 1.25,
    "targets": "tanh teacher on the sphere, redrawn per draw",
    "seed": 0,
}
_PAPER = {**_QUICK, "draws": 500}
_SMOKE = {"num_examples": 6, "dim": 4, "width": 6, "depths": [1, 2, 4], "draws": 4}

STATISTICS = {
    "eta_normalized": ("normalized confusion η̂/mean‖∇f‖²", +1),
    "min_cosine": ("min cosine", -1),
}


def settings(scale: str) -> dict[str, Any]:
    """Return the resolved settings of ``scale`` ("quick" or "paper")."""
    return dict(_QUICK if check_scale(scale) == "quick" else _PAPER)


def independence_rule(band: float) -> str:
    """Return the rule of the "independent of depth" claim with ratio band ``band``."""
    return (
        "Spearman ρ(depth, statistic) over draws with the 95% percentile interval of 2000 "
        "bootstrap resamples within each depth (seed 0), and R = max/min over depths of "
        f"|mean statistic|. Supported if the interval contains 0 and R <= {band}; not "
        "supported if the interval excludes 0 and R exceeds the band; otherwise inconclusive."
    )


def independence_verdict(
    frame: pd.DataFrame, column: str, label: str, band: float, *, claim: str
) -> Verdict:
    """Test that ``column`` does not depend on ``depth`` (see ``independence_rule``)."""
    means = frame.groupby("depth")[column].mean().abs()
    ratio = float(means.max() / means.min()) if means.min() > 0 else math.inf
    logger.info("%s: max/min of the per-depth means R=%.3f", column, ratio)
    rho = spearman(frame["depth"], frame[column])
    low, high, _ = bootstrap_spearman(frame["depth"], frame[column])
    contains_zero = not math.isnan(low) and low <= 0 <= high
    within = ratio <= band
    if math.isnan(low):
        verdict = "inconclusive"
    elif contains_zero and within:
        verdict = "supported"
    elif not contains_zero and not within:
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    return Verdict(
        claim=claim, experiment=NAME, statistic=f"Spearman ρ(depth, {label})", value=rho,
        ci_low=low, ci_high=high, expected_sign=0, verdict=verdict,
        rule=independence_rule(band), n_runs=len(frame),
        reason=f"max/min of the per-depth means R = {ratio:.3f} (band {band})",
        n_x_values=int(frame["depth"].nunique()),
    )


def _verdicts(frame: pd.DataFrame, band: float) -> list[Verdict]:
    verdicts = []
    orthogonal = frame[frame["init"] == "orthogonal"]
    gaussian = frame[frame["init"] == "gaussian"]
    for column, (label, sign) in STATISTICS.items():
        verdicts.append(independence_verdict(
            orthogonal, column, label, band,
            claim=f"Orthogonal init: the {label} of a deep linear network does not depend "
            "on depth",
        ))
        verdicts.append(trend_verdict(
            gaussian, "depth", column, sign, experiment=NAME,
            claim=f"Gaussian init: the {label} of a deep linear network "
            f"{'rises' if sign > 0 else 'falls'} with depth (more confusion)",
            statistic=f"Spearman ρ(depth, {label})",
        ))
    return verdicts


def _sections(frame: pd.DataFrame, config: dict[str, Any]) -> list[Section]:
    figure = Figure(figsize=(10.0, 3.8), layout="constrained")
    for ax, (column, (label, _)) in zip(figure.subplots(1, 2), STATISTICS.items()):
        plot_metric_vs_x(frame, "depth", column, ax=ax, hue="init", show_points=False)
        ax.set(xlabel="depth (hidden layers)", ylabel=label)
    plot_html = figure_html(
        figure,
        "Confusion statistics of deep linear networks at initialization, mean ± std over "
        f"{config['draws']} draws per depth. Look for flat orthogonal curves and Gaussian "
        "curves that move away from them as depth grows (min cosine towards −1, normalized "
        "confusion up).",
        alt="confusion vs depth for orthogonal and Gaussian init",
    )
    table = (frame.groupby(["init", "depth"])[list(STATISTICS)].mean().reset_index())
    return [
        Section("Confusion vs depth", plot_html
                + table_html(table, caption="Mean over draws per init and depth")),
        Section("Settings", settings_html(config)),
    ]


def run(
    scale: str,
    out_dir: Path,
    *,
    progress: bool = True,
    smoke: bool = False,
    data_root: Path | None = None,
    device: str = "auto",
) -> ExperimentOutput:
    """Measure every (init, depth) cell not yet stored under ``out_dir``, then test the claims.

    ``data_root`` is unused (the data is generated). Cells run on ``device`` in float64.
    """
    config = {**settings(scale), **(_SMOKE if smoke else {})}
    cells = [{"init": init, "depth": depth}
             for init in config["inits"] for depth in config["depths"]]

    def make_config(cell: dict[str, Any]) -> ModelConfig:
        return ModelConfig(kind="mlp", width=config["width"], depth=cell["depth"],
                           activation=config["activation"], init=cell["init"],
                           kappa=config["kappa"], bias=config["bias"])

    frame = run_cells(cells, config["draws"], out_dir, make_config, config, name=NAME,
                      progress=progress, device=device)
    notes = [
        f"Each depth has {config['draws']} draws; the independence rule's band "
        f"R <= {config['ratio_band']} allows for Monte Carlo error of the per-depth means.",
    ]
    return ExperimentOutput(NAME, _verdicts(frame, config["ratio_band"]),
                            _sections(frame, config), notes)
