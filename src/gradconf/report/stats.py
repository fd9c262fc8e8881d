"""Rank correlation, its bootstrap interval, and verdicts on monotone-trend claims.

A claim such as "wider networks have lower confusion" is tested on a table with one row
per run: an x column (width), a y column (final minimum cosine) and the sign the claim
predicts for their Spearman correlation. The rule, applied by ``trend_verdict``:

1. ρ is the Spearman rank correlation of x and y over all runs (average ranks for ties).
2. Its 95% interval is the percentile interval of 2000 bootstrap resamples (defaults that
   callers may change). Each resample draws runs with replacement within each x value, so
   every resample keeps the design's x values and only seed-to-seed variation enters the
   interval. The generator seed is fixed, so the verdict is reproducible.
3. "supported" if the interval excludes 0 on the expected side, "not supported" if it
   excludes 0 on the opposite side, otherwise "inconclusive". The verdict is also
   "inconclusive", with the reason, when there are fewer than 3 distinct x values or fewer
   than 2 runs, or when ρ is undefined because x or y is constant.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MIN_RUNS",
    "MIN_X_VALUES",
    "VERDICT_RULE",
    "Verdict",
    "bootstrap_spearman",
    "rank_average",
    "spearman",
    "trend_verdict",
    "verdict_rule",
]

logger = logging.getLogger(__name__)

MIN_X_VALUES = 3
MIN_RUNS = 2
DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0
VERDICTS = ("supported", "not supported", "inconclusive")



def verdict_rule(
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> str:
    """Return the verdict rule as one sentence, with the given bootstrap settings."""
    return (
        f"Spearman rank correlation over runs; {confidence:.0%} percentile interval from "
        f"{n_resamples} bootstrap resamples of runs drawn with replacement within each x value "
        f"(generator seed {seed}). Supported if the interval excludes 0 on the expected side, "
        "not supported if it excludes 0 on the opposite side, otherwise inconclusive; also "
        f"inconclusive with fewer than {MIN_X_VALUES} distinct x values or fewer than "
        f"{MIN_RUNS} runs."
    )


VERDICT_RULE = verdict_rule()


@dataclass(frozen=True)
class Verdict:
    """Outcome of testing one monotone-trend claim against the data.

    ``value`` is the Spearman ρ of x and y, and ``ci_low``/``ci_high`` bound its bootstrap
    interval (NaN when undefined). ``expected_sign`` is +1 or -1. ``reason`` explains an
    inconclusive verdict or a caveat on the interval. ``n_x_values`` counts distinct x values.
    """

    claim: str
    experiment: str
    statistic: str
    value: float
    ci_low: float
    ci_high: float
    expected_sign: int
    verdict: str
    rule: str
    n_runs: int
    reason: str = ""
    n_x_values: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as JSON-compatible data, with NaN written as None."""
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, float) and not math.isfinite(value):
                data[key] = None
        return data


def rank_average(values: Any) -> np.ndarray:
    """Rank 1-D ``values`` from 1 to n, giving tied values the mean of their ranks.

    NaN is not allowed because it has no rank. ±inf ranks as the extreme value.
    """
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"rank_average expects a 1-D array, got shape {array.shape}.")
    if np.isnan(array).any():
        raise ValueError("rank_average received NaN, which has no rank; drop NaN values first.")
    ordered = np.sort(array)
    # Tied values occupy the 0-based positions first..last-1, so their mean 1-based rank
    # is (first + last + 1) / 2.
    first = np.searchsorted(ordered, array, side="left")
    last = np.searchsorted(ordered, array, side="right")
    return (first + last + 1) / 2.0


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    da = a - a.mean()
    db = b - b.mean()
    denominator = math.sqrt(float(da @ da) * float(db @ db))
    if denominator == 0.0:
        return math.nan
    return float(da @ db) / denominator


def spearman(x: Any, y: Any) -> float:
    """Return the Spearman rank correlation of x and y, with average ranks for ties.

    Returns NaN when x or y is constant, or when there are fewer than 2 pairs.
    """
    x_array = np.asarray(x, dtype=float)
    y_array = np.asarray(y, dtype=float)
    if x_array.shape != y_array.shape or x_array.ndim != 1:
        raise ValueError(
            f"spearman expects two 1-D arrays of equal length, got shapes {x_array.shape} "
            f"and {y_array.shape}."
        )
    if x_array.size < 2:
        return math.nan
    return _pearson(rank_average(x_array), rank_average(y_array))


def bootstrap_spearman(
    x: Any,
    y: Any,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float, int]:
    """Return the percentile interval of Spearman ρ under resampling within each x value.

    Each resample draws, for every distinct x, as many runs as that x has, with replacement
    from the runs at that x. Returns ``(low, high, n_undefined)``, where ``n_undefined``
    counts resamples whose ρ was undefined (y constant) and was left out of the interval.
    Both bounds are NaN when every resample is undefined.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples} is invalid; it must be at least 1.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} is invalid; it must lie in (0, 1).")
    x_array = np.asarray(x, dtype=float)
    y_array = np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)

    groups = [np.flatnonzero(x_array == value) for value in np.unique(x_array)]
    # The resampled x column is the same in every resample, so its ranks are computed once.
    x_ranks = rank_average(x_array[np.concatenate(groups)])
    # picks[r] lists the run indices of resample r, grouped by x value: [R, n].
    picks = np.concatenate(
        [
            members[rng.integers(0, members.size, size=(n_resamples, members.size))]
            for members in groups
        ],
        axis=1,
    )
    rhos = np.array([_pearson(x_ranks, rank_average(y_array[row])) for row in picks])

    defined = rhos[~np.isnan(rhos)]
    n_undefined = int(rhos.size - defined.size)
    if defined.size == 0:
        return math.nan, math.nan, n_undefined
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(defined, [tail, 1.0 - tail])
    return float(low), float(high), n_undefined


def _decide(low: float, high: float, expected_sign: int) -> str:
    if expected_sign * low > 0 and expected_sign * high > 0:
        return "supported"
    if expected_sign * low < 0 and expected_sign * high < 0:
        return "not supported"
    return "inconclusive"


def trend_verdict(
    frame: pd.DataFrame,
    x: str,
    y: str,
    expected_sign: int,
    *,
    claim: str,
    experiment: str,
    statistic: str | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Verdict:
    """Test the claim that y rises (``expected_sign=+1``) or falls (-1) with x.

    ``frame`` has one row per run. Rows with NaN in x or y are dropped, and the reason
    gives their number. See the module docstring for the rule.
    """
    if expected_sign not in (1, -1):
        raise ValueError(
            f"expected_sign={expected_sign!r} is invalid; pass +1 when the claim predicts that "
            f"{y} rises with {x}, or -1 when it predicts that {y} falls."
        )
    missing = [column for column in (x, y) if column not in frame.columns]
    if missing:
        raise KeyError(
            f"column(s) {', '.join(missing)} not found; available columns: "
            f"{', '.join(map(str, frame.columns))}. Pass the names of the x and y columns."
        )
    statistic = statistic or f"Spearman ρ({x}, {y})"
    rule = verdict_rule(n_resamples, confidence, seed)

    values = frame[[x, y]].apply(pd.to_numeric, errors="coerce").astype(float)
    usable = values.dropna()
    dropped = len(values) - len(usable)
    notes = [f"{dropped} run(s) left out because {x} or {y} is NaN"] if dropped else []
    n_runs = len(usable)
    n_x_values = int(usable[x].nunique())

    def result(value: float, low: float, high: float, verdict: str) -> Verdict:
        return Verdict(
            claim=claim,
            experiment=experiment,
            statistic=statistic,
            value=value,
            ci_low=low,
            ci_high=high,
            expected_sign=expected_sign,
            verdict=verdict,
            rule=rule,
            n_runs=n_runs,
            reason="; ".join(notes),
            n_x_values=n_x_values,
        )

    if n_runs < MIN_RUNS or n_x_values < MIN_X_VALUES:
        notes.insert(
            0,
            f"{n_runs} run(s) at {n_x_values} distinct {x} value(s); the rule needs at least "
            f"{MIN_RUNS} runs and {MIN_X_VALUES} distinct values",
        )
        rho = spearman(usable[x], usable[y]) if n_runs >= 2 else math.nan
        return result(rho, math.nan, math.nan, "inconclusive")

    rho = spearman(usable[x], usable[y])
    if math.isnan(rho):
        notes.insert(0, f"{y} is constant across runs, so the rank correlation is undefined")
        return result(rho, math.nan, math.nan, "inconclusive")

    low, high, n_undefined = bootstrap_spearman(
        usable[x], usable[y], n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    if n_undefined:
        notes.append(f"{n_undefined} of {n_resamples} resamples had constant {y} and were left out")
    if usable.groupby(x)[y].size().max() == 1:
        notes.append(
            f"each {x} value has one run, so the interval has zero width and carries no "
            "seed-to-seed variation"
        )
    verdict = "inconclusive" if math.isnan(low) else _decide(low, high, expected_sign)
    logger.info("%s (%s): %s, rho=%.3f [%.3f, %.3f]", claim, experiment, verdict, rho, low, high)
    return result(rho, low, high, verdict)
