"""Claims as data, evaluated against a per-run summary table.

A ``TrendClaim`` names the experiment (the rows of one group), the x and y columns and the
sign of the predicted rank correlation. ``evaluate_claims`` applies ``trend_verdict`` to each,
so a report can state any number of claims without new code. The width-depth claims below
follow Sankararaman et al., "The Impact of Neural Network Overparameterization on Gradient
Confusion and Stochastic Gradient Descent" (ICML 2020, arXiv:1904.06963): wider networks
have lower gradient confusion and train faster, deeper ones have higher confusion and train
slower.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from gradconf.report.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Verdict,
    trend_verdict,
)

__all__ = ["TrendClaim", "WIDTH_DEPTH_CLAIMS", "evaluate_claims"]


@dataclass(frozen=True)
class TrendClaim:
    """A claim that y rises (``expected_sign=+1``) or falls (-1) with x within one experiment.

    ``experiment`` selects the rows whose ``experiment_column`` equals it. ``x_label`` and
    ``y_label`` name the columns in the statistic shown to readers.
    """

    claim: str
    experiment: str
    x: str
    y: str
    expected_sign: int
    x_label: str = ""
    y_label: str = ""
    experiment_column: str = "group"

    @property
    def statistic(self) -> str:
        """Readable name of the statistic, e.g. "Spearman ρ(width, final min cosine)"."""
        return f"Spearman ρ({self.x_label or self.x}, {self.y_label or self.y})"


# A higher minimum cosine means less confusion, so "lower confusion" predicts a positive ρ.
# A smaller mean training loss over epochs 1..E means faster training. Confusion is judged
# at initialization, where the theorems hold, and after training, where the experiments
# report it; training progress differs between widths and depths there.
WIDTH_DEPTH_CLAIMS = (
    TrendClaim(
        claim="Wider networks have lower gradient confusion at initialization",
        experiment="width",
        x="x",
        y="init_min_cosine",
        expected_sign=1,
        x_label="width",
        y_label="min cosine at epoch 0",
    ),
    TrendClaim(
        claim="Deeper networks have higher gradient confusion at initialization",
        experiment="depth",
        x="x",
        y="init_min_cosine",
        expected_sign=-1,
        x_label="depth",
        y_label="min cosine at epoch 0",
    ),
    TrendClaim(
        claim="Wider networks have lower gradient confusion after training",
        experiment="width",
        x="x",
        y="final_min_cosine",
        expected_sign=1,
        x_label="width",
        y_label="final min cosine",
    ),
    TrendClaim(
        claim="Deeper networks have higher gradient confusion after training",
        experiment="depth",
        x="x",
        y="final_min_cosine",
        expected_sign=-1,
        x_label="depth",
        y_label="final min cosine",
    ),
    TrendClaim(
        claim="Wider networks train faster",
        experiment="width",
        x="x",
        y="train_loss_auc",
        expected_sign=-1,
        x_label="width",
        y_label="mean train loss, epochs 1..E",
    ),
    TrendClaim(
        claim="Deeper networks train slower",
        experiment="depth",
        x="x",
        y="train_loss_auc",
        expected_sign=1,
        x_label="depth",
        y_label="mean train loss, epochs 1..E",
    ),
)


def evaluate_claims(
    summary: pd.DataFrame,
    claims: Iterable[TrendClaim],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> list[Verdict]:
    """Return one verdict per claim, each computed on the summary rows of its experiment.

    An experiment with no rows gets an "inconclusive" verdict, and its reason states why.
    """
    verdicts = []
    for claim in claims:
        if claim.experiment_column not in summary.columns:
            raise KeyError(
                f"column {claim.experiment_column!r} not found; available columns: "
                f"{', '.join(map(str, summary.columns))}. Set TrendClaim.experiment_column to "
                "the column that names each row's experiment."
            )
        rows = summary[summary[claim.experiment_column] == claim.experiment]
        verdicts.append(
            trend_verdict(
                rows,
                claim.x,
                claim.y,
                claim.expected_sign,
                claim=claim.claim,
                experiment=claim.experiment,
                statistic=claim.statistic,
                n_resamples=n_resamples,
                confidence=confidence,
                seed=seed,
            )
        )
    return verdicts
