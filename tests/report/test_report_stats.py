"""Spearman correlation, its bootstrap interval and the trend verdict rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gradconf.report.stats import (
    VERDICT_RULE,
    Verdict,
    bootstrap_spearman,
    rank_average,
    spearman,
    trend_verdict,
)

# Correlations below are exact ratios of small integers, so float64 rounding is the only error.
EXACT = 1e-12


def test_rank_average_gives_ties_mean_rank():
    ranks = rank_average([10.0, 20.0, 20.0, 30.0, 5.0])

    np.testing.assert_allclose(ranks, [2.0, 3.5, 3.5, 5.0, 1.0], rtol=0, atol=EXACT)


def test_rank_average_ranks_infinity_last():
    ranks = rank_average([1.0, math.inf, 0.5])

    np.testing.assert_allclose(ranks, [2.0, 3.0, 1.0], rtol=0, atol=EXACT)


def test_rank_average_rejects_nan():
    with pytest.raises(ValueError, match="NaN, which has no rank"):
        rank_average([1.0, math.nan])


# (id, x, y, expected ρ worked out by hand from the average ranks)
HAND_CASES = [
    # ranks y = [1, 2, 3.5, 5, 3.5]; Σdxdy = 8, Σdx² = 10, Σdy² = 9.5 -> 8 / sqrt(95)
    ("ties-in-y", [1, 2, 3, 4, 5], [5, 6, 7, 8, 7], 8 / math.sqrt(95)),
    # ranks x = [1.5, 1.5, 3.5, 3.5], y = [1, 2.5, 2.5, 4] -> 3 / sqrt(4 * 4.5) = 1 / sqrt(2)
    ("ties-in-both", [1, 1, 2, 2], [1, 2, 2, 3], 1 / math.sqrt(2)),
    ("increasing", [1, 2, 3, 4], [0.1, 0.5, 0.7, 9.0], 1.0),
    ("decreasing", [1, 2, 3, 4], [4.0, 3.0, 2.0, 1.0], -1.0),
    # ranks y = [3, 2, 1, 4]; centered: Σdxdy = 1, Σdx² = Σdy² = 5 -> 0.2
    ("mixed", [1, 2, 3, 4], [30, 20, 10, 40], 0.2),
]


@pytest.mark.parametrize("x, y, expected", [case[1:] for case in HAND_CASES],
                         ids=[case[0] for case in HAND_CASES])
def test_spearman_matches_hand_value(x, y, expected):
    assert spearman(x, y) == pytest.approx(expected, abs=EXACT)


def test_spearman_is_nan_for_constant_input():
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    assert math.isnan(spearman([1], [2]))


def test_spearman_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="equal length"):
        spearman([1, 2, 3], [1, 2])


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    for _ in range(20):
        x = rng.integers(0, 5, size=15).astype(float)
        y = rng.integers(0, 4, size=15).astype(float)
        expected = stats.spearmanr(x, y).statistic

        assert spearman(x, y) == pytest.approx(expected, abs=1e-12)


def test_bootstrap_is_reproducible_with_seed():
    x = np.repeat([1, 2, 3, 4], 3)
    y = np.random.default_rng(1).normal(size=x.size)

    first = bootstrap_spearman(x, y, seed=5)
    second = bootstrap_spearman(x, y, seed=5)
    other = bootstrap_spearman(x, y, seed=6)

    assert first == second
    assert first != other


def test_bootstrap_interval_collapses_with_one_run_per_x():
    low, high, undefined = bootstrap_spearman([1, 2, 3, 4], [0.1, 0.4, 0.3, 0.9])

    assert low == pytest.approx(0.8, abs=EXACT)
    assert high == pytest.approx(0.8, abs=EXACT)
    assert undefined == 0


def test_bootstrap_counts_undefined_resamples():
    # At x=1 both runs have y=0; every resample that also picks y=0 twice at x=2 and x=3 has
    # constant y and no defined correlation.
    x = [1, 1, 2, 2, 3, 3]
    y = [0.0, 0.0, 0.0, 1.0, 0.0, 1.0]

    low, high, undefined = bootstrap_spearman(x, y, n_resamples=400, seed=0)

    assert 0 < undefined < 400
    assert low <= high


def _frame(x, y):
    return pd.DataFrame({"width": x, "min_cosine": y})


def _verdict(frame, expected_sign=1):
    return trend_verdict(frame, "width", "min_cosine", expected_sign,
                         claim="wider means lower confusion", experiment="width")


WIDTHS = np.repeat([8, 32, 128, 512], 3)
RISING = np.repeat([-0.6, -0.45, -0.3, -0.15], 3) + np.tile([0.0, 0.01, -0.01], 4)


def test_verdict_supported_when_trend_matches():
    verdict = _verdict(_frame(WIDTHS, RISING))

    assert verdict.verdict == "supported"
    assert verdict.ci_low > 0
    assert verdict.n_runs == 12
    assert verdict.n_x_values == 4
    assert verdict.rule == VERDICT_RULE


def test_verdict_not_supported_when_trend_reversed():
    verdict = _verdict(_frame(WIDTHS, -RISING))

    assert verdict.verdict == "not supported"
    assert verdict.ci_high < 0


def test_verdict_follows_expected_sign():
    verdict = _verdict(_frame(WIDTHS, -RISING), expected_sign=-1)

    assert verdict.verdict == "supported"
    assert verdict.expected_sign == -1


def test_verdict_inconclusive_when_y_depends_on_seed_only():
    # The same three values at every width: ρ is exactly 0.
    seed_only = np.tile([-0.5, -0.3, -0.1], 4)

    verdict = _verdict(_frame(WIDTHS, seed_only))

    assert verdict.verdict == "inconclusive"
    assert verdict.value == pytest.approx(0.0, abs=EXACT)
    assert verdict.ci_low < 0 < verdict.ci_high


def test_verdict_inconclusive_with_two_x_values():
    verdict = _verdict(_frame([8, 8, 32, 32], [0.1, 0.2, 0.3, 0.4]))

    assert verdict.verdict == "inconclusive"
    assert "at least 2 runs and 3 distinct values" in verdict.reason
    assert math.isnan(verdict.ci_low)


def test_verdict_inconclusive_with_one_run():
    verdict = _verdict(_frame([8], [0.1]))

    assert verdict.verdict == "inconclusive"
    assert verdict.n_runs == 1
    assert math.isnan(verdict.value)


def test_verdict_inconclusive_for_constant_y():
    verdict = _verdict(_frame(WIDTHS, np.zeros(WIDTHS.size)))

    assert verdict.verdict == "inconclusive"
    assert "constant" in verdict.reason


def test_verdict_drops_nan_rows():
    y = RISING.copy()
    y[0] = math.nan

    verdict = _verdict(_frame(WIDTHS, y))

    assert verdict.n_runs == 11
    assert "1 run(s) left out" in verdict.reason
    assert verdict.verdict == "supported"


def test_verdict_notes_single_run_per_x():
    verdict = _verdict(_frame([8, 32, 128], [0.1, 0.2, 0.3]))

    assert verdict.verdict == "supported"
    assert "zero width" in verdict.reason


def test_verdict_rejects_invalid_expected_sign():
    with pytest.raises(ValueError, match="expected_sign=0 is invalid; pass \\+1"):
        _verdict(_frame(WIDTHS, RISING), expected_sign=0)


def test_verdict_rejects_missing_column():
    with pytest.raises(KeyError, match="min_cosine.*not found; available columns: width, other"):
        _verdict(pd.DataFrame({"width": [1], "other": [2]}))


def test_verdict_to_dict_writes_nan_as_none():
    verdict = Verdict("c", "e", "s", math.nan, math.nan, math.nan, 1, "inconclusive", "r", 0)

    data = verdict.to_dict()

    assert data["value"] is None
    assert data["ci_low"] is None
    assert data["verdict"] == "inconclusive"
