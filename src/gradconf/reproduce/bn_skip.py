"""Batch norm and skip connections: do they keep gradient confusion low as CNNs get deeper?

Sankararaman et al. (ICML 2020) train CNN-β-2 over depths up to 100 in four variants:
plain, with skip connections, with batch norm, and with both. They report that each of the
two alone lowers confusion but degrades with depth, while both together keep confusion low
at every depth. Each (variant, depth) is trained with every rate of a log grid and the rate
with the lowest final training loss is kept (``lr_grid``). Confusion is the minimum cosine
between mini-batch gradients, with BatchNorm using each mini-batch's statistics during the
measurement (``measure.batchnorm="train"``).

Every claim is tested twice: on the minimum cosine at epoch 0, where all networks are
untrained, and at the last measured epoch, where it also depends on how far each network
trained. The rules (R1 is ``gradconf.report.trend_verdict``):

- plain, skip-only and BN-only: the Spearman ρ of depth and min cosine is negative (R1).
- skip+BN: no decrease with depth. Supported when R1's interval for ρ(depth, min cosine)
  contains 0 or lies above it, not supported when it lies below 0.
- at the deepest depth, each of skip, BN and skip+BN has a higher mean min cosine than
  plain: the Welch 95% interval of the difference of means over seeds lies above 0.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradconf.report import (
    Section,
    Verdict,
    figure_html,
    new_figure,
    plot_curves,
    plot_density,
    plot_metric_vs_x,
    run_summary,
    table_html,
    trend_verdict,
)
from gradconf.report.summary import final_cosine_samples
from gradconf.reproduce.base import ExperimentOutput, check_scale, settings_html, t_quantile_975
from gradconf.reproduce.cnn import CONFOUND_NOTE, require_data_root
from gradconf.reproduce.lr_grid import (
    PAPER_PROTOCOL,
    QUICK_PROTOCOL,
    GridPoint,
    SMOKE_VALUES,
    GridResult,
    default_jobs,
    run_config,
    run_grid,
    selection_html,
    smoke_settings,
)

__all__ = ["NAME", "TITLE", "VARIANTS", "difference_verdict", "points", "run", "settings"]

logger = logging.getLogger(__name__)

NAME = "bn-skip"
TITLE = "Batch norm and skip connections: confusion of CNN-β-ℓ vs depth in four variants"

# Variant -> (batchnorm, skip).
VARIANTS: dict[str, tuple[bool, bool]] = {
    "plain": (False, False),
    "skip": (False, True),
    "bn": (True, False),
    "skip+bn": (True, True),
}
VARIANT_COLORS = {"plain": "tab:red", "skip": "tab:orange", "bn": "tab:blue",
                  "skip+bn": "tab:green"}

_SCALES: dict[str, dict[str, Any]] = {
    "paper": {**PAPER_PROTOCOL, "variants": list(VARIANTS), "width": 2,
              "depths": [16, 28, 40, 52, 76, 100]},
    # Skip connections without batch norm diverge at 0.03 from depth 22 on the digits, so the
    # quick grid adds 0.01. Depths stop at 22, where the plain network barely trains.
    "quick": {**QUICK_PROTOCOL, "variants": list(VARIANTS), "width": 1, "depths": [10, 16, 22],
              "lr_grid": [0.01, 0.03, 0.1]},
}
# Column of the per-run summary, and its words in claims, for each moment of measurement.
MOMENTS = (
    ("init_min_cosine", "at initialization", "min cosine at epoch 0"),
    ("final_min_cosine", "after training", "final min cosine"),
)
DIFFERENCE_RULE = (
    "Welch 95% interval of the difference of the mean min cosine over seeds (variant − plain) "
    "at the deepest depth, degrees of freedom rounded down. Supported if it lies above 0, not "
    "supported if below 0, otherwise inconclusive, and also inconclusive with fewer than 2 "
    "runs with a finite min cosine per variant."
)
NO_DECREASE_RULE = (
    "Spearman ρ(depth, min cosine) with the bootstrap interval of the Spearman trend rule. "
    "Supported if the interval contains 0 or lies above 0 (no decrease with depth), not "
    "supported if it lies below 0, inconclusive when no interval can be computed."
)


def settings(scale: str) -> dict[str, Any]:
    """Return the resolved settings of ``scale`` ("quick" or "paper")."""
    return copy.deepcopy(_SCALES[check_scale(scale)])


def points(
    resolved: dict[str, Any], *, data_root: Path | None = None, device: str = "auto"
) -> list[GridPoint]:
    """Return one grid point per (variant, depth); the variant is the study group."""
    grid = []
    for variant in resolved["variants"]:
        batchnorm, skip = VARIANTS[variant]
        for depth in resolved["depths"]:
            config = run_config(resolved, kind="cnn", width=resolved["width"], depth=depth,
                                batchnorm=batchnorm, skip=skip, data_root=data_root,
                                device=device)
            labels = {"group": variant, "x_name": "depth", "x": depth,
                      "width": resolved["width"], "depth": depth}
            varied = {"model.depth": depth, "model.batchnorm": batchnorm, "model.skip": skip}
            grid.append(GridPoint(f"{variant}-depth-{depth}", labels, config, varied))
    return grid


def difference_verdict(
    treated: Any, baseline: Any, *, claim: str, statistic: str, experiment: str = NAME
) -> Verdict:
    """Test that mean(treated) > mean(baseline) with a Welch 95% interval (``DIFFERENCE_RULE``).

    NaN values (diverged runs) are dropped, and the reason gives their count.
    """
    a = np.asarray(treated, dtype=float)
    b = np.asarray(baseline, dtype=float)
    a_finite, b_finite = a[np.isfinite(a)], b[np.isfinite(b)]
    notes = []
    dropped = (a.size - a_finite.size) + (b.size - b_finite.size)
    if dropped:
        notes.append(f"{dropped} run(s) without a finite min cosine left out")

    def result(value: float, low: float, high: float, verdict: str) -> Verdict:
        return Verdict(claim=claim, experiment=experiment, statistic=statistic, value=value,
                       ci_low=low, ci_high=high, expected_sign=1, verdict=verdict,
                       rule=DIFFERENCE_RULE, n_runs=int(a_finite.size + b_finite.size),
                       reason="; ".join(notes), n_x_values=2)

    if a_finite.size < 2 or b_finite.size < 2:
        notes.insert(0, f"{a_finite.size} and {b_finite.size} usable runs; the rule needs 2 each")
        value = (float(a_finite.mean() - b_finite.mean())
                 if a_finite.size and b_finite.size else math.nan)
        return result(value, math.nan, math.nan, "inconclusive")

    difference = float(a_finite.mean() - b_finite.mean())
    var_a = float(a_finite.var(ddof=1)) / a_finite.size
    var_b = float(b_finite.var(ddof=1)) / b_finite.size
    if var_a + var_b == 0.0:
        notes.append("both samples are constant, so the interval has zero width")
        low = high = difference
    else:
        # Welch–Satterthwaite degrees of freedom, rounded down (a wider, conservative interval).
        dof = (var_a + var_b) ** 2 / (var_a**2 / (a_finite.size - 1)
                                      + var_b**2 / (b_finite.size - 1))
        half = t_quantile_975(max(1, math.floor(dof))) * math.sqrt(var_a + var_b)
        low, high = difference - half, difference + half
    verdict = "inconclusive"
    if low > 0:
        verdict = "supported"
    elif high < 0:
        verdict = "not supported"
    return result(difference, low, high, verdict)


def _no_decrease_verdict(rows: pd.DataFrame, column: str, moment: str, label: str) -> Verdict:
    trend = trend_verdict(rows, "x", column, -1, experiment=NAME,
                          claim="CNNs with skip connections and batch norm keep confusion "
                                f"low as depth grows, {moment}",
                          statistic=f"Spearman ρ(depth, {label}), skip+bn")
    if math.isnan(trend.ci_low):
        verdict = "inconclusive"
    else:
        verdict = "not supported" if trend.verdict == "supported" else "supported"
    return dataclasses.replace(trend, expected_sign=0, verdict=verdict, rule=NO_DECREASE_RULE)


def verdicts(summary: pd.DataFrame) -> list[Verdict]:
    """Return the claims of the module docstring, tested on the per-run summary.

    The order is: at initialization, then after training, each with the three depth
    trends, the skip+BN claim and the three comparisons at the deepest depth.
    """
    results = []
    deepest = summary["x"].max()
    at_deepest = summary[summary["x"] == deepest]
    for column, moment, label in MOMENTS:
        for variant, networks in (("plain", "plain CNNs"),
                                  ("skip", "CNNs with skip connections only"),
                                  ("bn", "CNNs with batch norm only")):
            results.append(trend_verdict(
                summary[summary["group"] == variant], "x", column, -1, experiment=NAME,
                claim=f"Confusion of {networks} grows with depth, {moment}",
                statistic=f"Spearman ρ(depth, {label}), {variant}"))
        results.append(
            _no_decrease_verdict(summary[summary["group"] == "skip+bn"], column, moment, label)
        )

        plain = at_deepest.loc[at_deepest["group"] == "plain", column]
        for variant, change in (("skip", "Skip connections"), ("bn", "Batch norm"),
                                ("skip+bn", "Skip connections with batch norm")):
            treated = at_deepest.loc[at_deepest["group"] == variant, column]
            results.append(difference_verdict(
                treated, plain, claim=f"{change} lower confusion of the deepest CNN, {moment}",
                statistic=f"mean {label}, {variant} − plain, depth {deepest:g}"))
    return results


def _figures(result: GridResult, summary: pd.DataFrame) -> str:
    data = result.data
    runs = summary.rename(columns={"group": "variant"})
    finished = runs[runs["status"] != "diverged"]
    deepest = summary["x"].max()
    parts = []
    confusion = ("A higher minimum cosine means less confusion. The paper reports that plain, "
                 "skip-only and BN-only networks fall with depth, and skip+BN stays high.")
    # (column, axis label, caption, rows): epoch 0 is measured before a run can diverge.
    panels = (
        ("init_min_cosine", "minimum gradient cosine at epoch 0", f"At initialization. {confusion}",
         runs),
        ("final_min_cosine", "minimum gradient cosine (last measured epoch)",
         f"After training. {confusion} Diverged runs are left out.", finished),
        ("final_train_loss", "training loss after the last epoch",
         "Final training loss at the selected learning rate. Diverged runs are left out.",
         finished),
        ("final_test_accuracy", "test accuracy (fraction correct, final epoch)",
         "Test accuracy after the last epoch, as context: no claim is tested on it. Diverged "
         "runs are left out.", finished),
    )
    for column, label, caption, rows in panels:
        figure, ax = new_figure()
        plot_metric_vs_x(rows, "x", column, ax=ax, hue="variant", colors=VARIANT_COLORS)
        ax.set(xlabel="depth β (Wide-ResNet layers)", ylabel=label)
        parts.append(figure_html(figure, f"{caption} Error bars: mean ± std over seeds, dots: "
                                 "single seeds.", alt=label))

    figure, ax = new_figure()
    samples = {variant: final_cosine_samples(data, variant).get(deepest, [])
               for variant in VARIANTS}
    plot_density(samples, ax=ax, colors=VARIANT_COLORS)
    ax.set(xlabel=f"cosine of gradient pairs, depth {deepest:g}", ylabel="density")
    parts.append(figure_html(
        figure, "Histogram density of the pairwise cosines of the deepest networks at the last "
        "measured epoch, pooled over seeds. Mass further right means less confusion.",
        alt="cosine densities at the deepest depth"))

    figure, ax = new_figure()
    kept = finished.loc[finished["x"] == deepest, "run_id"]
    metrics = data.metrics[data.metrics["run_id"].isin(kept)].rename(columns={"group": "variant"})
    plot_curves(metrics, "epoch", "train_loss", "variant", ax=ax, colors=VARIANT_COLORS,
                logy=True)
    ax.set(xlabel="epoch", ylabel="training loss")
    parts.append(figure_html(
        figure, f"Training loss of the depth-{deepest:g} networks per variant (mean over "
        "seeds, band ±1 std, log scale).", alt="training loss curves at the deepest depth"))
    return "".join(parts)


def run(
    scale: str,
    out_dir: Path,
    *,
    progress: bool = True,
    smoke: bool = False,
    data_root: Path | None = None,
    device: str = "auto",
) -> ExperimentOutput:
    """Train or resume the four variants over depth under ``out_dir`` and test the claims."""
    resolved = settings(scale)
    if smoke:
        # Four variants multiply the runs, so two depths (one at paper scale) keep it short.
        resolved = smoke_settings(resolved, scale, ["depths"], values=min(2, SMOKE_VALUES[scale]))
    require_data_root(NAME, scale, resolved, data_root)
    grid = points(resolved, data_root=data_root, device=device)
    result = run_grid(grid, resolved["lr_grid"], resolved["seeds"], out_dir, name=NAME,
                      progress=progress, jobs=1 if smoke else default_jobs(device))

    summary = run_summary(result.data)
    columns = ["run_id", "status", "seed", "final_train_loss", "final_test_accuracy",
               "init_min_cosine", "final_min_cosine", "final_eta"]
    table = summary.rename(columns={"group": "variant", "x": "depth β"})
    sections = [
        Section("Learning-rate selection", selection_html(result)),
        Section("Results by variant and depth", _figures(result, summary)),
        Section("Final metrics per run",
                table_html(table[["variant", "depth β", *columns]])),
        Section("Settings", settings_html(resolved)),
    ]

    notes = [
        "Each claim uses the runs at the selected learning rate of its (variant, depth). The "
        "skip+BN claim is a test for the absence of a decrease, so few seeds make it easy to "
        "support; read it with the comparison against plain at the deepest depth.",
        CONFOUND_NOTE,
    ]
    if scale == "quick":
        notes.append(
            f"Quick scale: 8×8 digits, depths up to {max(resolved['depths'])} instead of 100, "
            f"{len(resolved['seeds'])} seeds. With so few seeds the Welch intervals are wide "
            "and inconclusive verdicts are expected. Plain networks this deep barely train on "
            "the digits in 20 epochs."
        )
    return ExperimentOutput(NAME, verdicts(summary), sections, notes)
