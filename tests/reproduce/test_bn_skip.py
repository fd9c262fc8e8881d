import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from gradconf.reproduce import bn_skip
from gradconf.reproduce.bn_skip import VARIANTS, difference_verdict, verdicts

FIGURE_MARK = "data:image/png;base64,"
# The t quantiles of gradconf.reproduce.base are tabulated to 3 decimals.
T_TABLE_RELATIVE_TOLERANCE = 1e-3


def welch_interval(a, b):
    """Welch 95% interval with the degrees of freedom rounded down, from scipy's t quantile."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    var_a, var_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    dof = (var_a + var_b) ** 2 / (var_a**2 / (a.size - 1) + var_b**2 / (b.size - 1))
    half = stats.t.ppf(0.975, math.floor(dof)) * math.sqrt(var_a + var_b)
    difference = a.mean() - b.mean()
    return difference - half, difference + half


def summary_frame(cosines_by_variant, depths=(10, 22, 34)):
    """Build a per-run summary: cosines_by_variant[variant][depth index] lists seeds' values.

    The same values serve as the minimum cosine at initialization and after training.
    """
    rows = []
    for variant, per_depth in cosines_by_variant.items():
        for depth, values in zip(depths, per_depth):
            for seed, value in enumerate(values):
                rows.append({"run_id": f"{variant}-{depth}-{seed}", "group": variant, "x": depth,
                             "seed": seed, "status": "completed", "init_min_cosine": value,
                             "final_min_cosine": value})
    return pd.DataFrame(rows)


def test_points_set_batchnorm_and_skip():
    resolved = bn_skip.settings("quick")
    points = bn_skip.points(resolved)
    assert len(points) == len(VARIANTS) * len(resolved["depths"])
    for point in points:
        variant = point.labels["group"]
        model = point.config.model
        assert (model.batchnorm, model.skip) == VARIANTS[variant]
        assert model.depth == point.labels["x"]
        assert point.key == f"{variant}-depth-{model.depth}"


@pytest.mark.parametrize(
    "treated, baseline, expected",
    [([0.5, 0.6, 0.55], [-0.3, -0.2, -0.25], "supported"),
     ([-0.3, -0.2, -0.25], [0.5, 0.6, 0.55], "not supported"),
     ([0.1, -0.2, 0.3], [0.0, 0.2, -0.1], "inconclusive")],
    ids=["higher", "lower", "overlapping"],
)
def test_difference_verdict_matches_welch(treated, baseline, expected):
    verdict = difference_verdict(treated, baseline, claim="c", statistic="s")
    low, high = welch_interval(treated, baseline)
    assert verdict.verdict == expected
    assert verdict.value == pytest.approx(np.mean(treated) - np.mean(baseline))
    assert verdict.ci_low == pytest.approx(low, rel=T_TABLE_RELATIVE_TOLERANCE)
    assert verdict.ci_high == pytest.approx(high, rel=T_TABLE_RELATIVE_TOLERANCE)
    assert verdict.n_runs == 6


def test_difference_verdict_needs_two_runs_each():
    verdict = difference_verdict([0.5, float("nan")], [0.1, 0.2], claim="c", statistic="s")
    assert verdict.verdict == "inconclusive"
    assert math.isnan(verdict.ci_low)
    assert "the rule needs 2 each" in verdict.reason
    assert "1 run(s) without a finite min cosine left out" in verdict.reason


def test_difference_verdict_constant_samples():
    verdict = difference_verdict([0.5, 0.5], [0.1, 0.1], claim="c", statistic="s")
    assert verdict.verdict == "supported"
    assert verdict.ci_low == pytest.approx(0.4)
    assert "zero width" in verdict.reason


def test_verdicts_on_paper_pattern():
    seeds = lambda center: [center - 0.02, center, center + 0.02]  # noqa: E731
    summary = summary_frame({
        "plain": [seeds(0.0), seeds(-0.3), seeds(-0.6)],
        "skip": [seeds(0.2), seeds(0.0), seeds(-0.2)],
        "bn": [seeds(0.2), seeds(0.1), seeds(-0.1)],
        "skip+bn": [seeds(0.3), seeds(0.31), seeds(0.29)],
    })
    results = {verdict.claim: verdict for verdict in verdicts(summary)}
    assert len(results) == 14
    assert {v.experiment for v in results.values()} == {"bn-skip"}
    outcomes = [v.verdict for v in results.values()]
    assert outcomes == ["supported"] * 14
    for moment in ("at initialization", "after training"):
        keeps_low = results["CNNs with skip connections and batch norm keep confusion low as "
                            f"depth grows, {moment}"]
        assert keeps_low.expected_sign == 0
        assert keeps_low.rule == bn_skip.NO_DECREASE_RULE


def test_no_decrease_rejected_when_skip_bn_falls():
    falling = [[0.5, 0.52, 0.48], [0.1, 0.12, 0.08], [-0.3, -0.28, -0.32]]
    summary = summary_frame({"plain": falling, "skip": falling, "bn": falling,
                             "skip+bn": falling})
    rows = summary[summary["group"] == "skip+bn"]
    expected = stats.spearmanr(rows["x"], rows["final_min_cosine"])[0]
    for keeps_low in (verdicts(summary)[3], verdicts(summary)[10]):
        assert "keep confusion low" in keeps_low.claim
        assert keeps_low.verdict == "not supported"
        assert keeps_low.value == pytest.approx(expected)


def test_smoke_run(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        output = bn_skip.run("quick", tmp_path, progress=False, smoke=True, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert output.name == "bn-skip"
    assert len(output.verdicts) == 14
    assert [section.title for section in output.sections] == [
        "Learning-rate selection", "Results by variant and depth", "Final metrics per run",
        "Settings"]
    assert output.sections[1].html.count(FIGURE_MARK) == 6
    selection = pd.read_csv(tmp_path / "lr_selection.csv")
    assert len(selection) == len(VARIANTS) * 2 * 2
