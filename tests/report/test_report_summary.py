"""Per-run summary: final values, training speed, diverged runs and claims on a study."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gradconf.report.claims import WIDTH_DEPTH_CLAIMS, TrendClaim, evaluate_claims
from gradconf.report.load import load_study
from gradconf.report.summary import (
    final_cosine_samples,
    run_summary,
    select_measurement,
    train_loss_auc,
)


def test_train_loss_auc_excludes_epoch_zero():
    assert train_loss_auc([0, 1, 2, 3], [9.0, 3.0, 2.0, 1.0]) == pytest.approx(2.0)


def test_train_loss_auc_without_training_is_nan():
    assert math.isnan(train_loss_auc([0], [2.3]))


def test_train_loss_auc_of_nonfinite_loss_is_inf():
    assert train_loss_auc([0, 1, 2], [2.3, 1.0, math.nan]) == math.inf


def test_summary_reads_final_values(shared_study):
    root = shared_study(widths=(8, 32, 128), depths=(1, 2, 4), seeds=(0, 1), epochs=3)
    metrics = pd.read_parquet(root / "runs" / "width-32-seed1" / "metrics.parquet")
    confusion = pd.read_parquet(root / "runs" / "width-32-seed1" / "confusion.parquet")

    summary = run_summary(load_study(root)).set_index("run_id")
    row = summary.loc["width-32-seed1"]

    assert len(summary) == 12
    assert row["final_epoch"] == 3
    assert row["final_train_loss"] == pytest.approx(metrics["train_loss"].iloc[-1])
    assert row["train_loss_auc"] == pytest.approx(metrics["train_loss"].iloc[1:].mean())
    assert row["final_test_accuracy"] == pytest.approx(metrics["test_accuracy"].iloc[-1])
    assert row["final_min_cosine"] == pytest.approx(confusion["min_cosine"].iloc[-1])
    assert row["final_eta"] == pytest.approx(confusion["eta"].iloc[-1])
    assert row["confusion_epoch"] == 3
    assert row["wall_seconds"] == pytest.approx(60.0)


def test_summary_marks_diverged_run(shared_study):
    root = shared_study(
        widths=(8, 32, 128), depths=(1, 2, 8), seeds=(0, 2), diverged=["depth-8-seed2"]
    )

    row = run_summary(load_study(root)).set_index("run_id").loc["depth-8-seed2"]

    assert row["status"] == "diverged"
    assert row["final_epoch"] == 1
    assert row["train_loss_auc"] == math.inf
    assert math.isnan(row["final_min_cosine"])


def test_select_measurement_requires_choice_between_protocols():
    confusion = pd.DataFrame({"granularity": ["minibatch", "example"], "pairing": ["all", "all"]})

    with pytest.raises(ValueError, match="several granularity values \\(example, minibatch\\)"):
        select_measurement(confusion)
    assert len(select_measurement(confusion, granularity="example")) == 1
    with pytest.raises(ValueError, match="pairing='disjoint' not found"):
        select_measurement(confusion, granularity="example", pairing="disjoint")


def test_final_cosines_pool_seeds_of_last_epoch(shared_study):
    root = shared_study(epochs=2, depths=(1, 2, 4), diverged=["width-512-seed0"])

    samples = final_cosine_samples(load_study(root), "width")

    assert list(samples) == [8, 32, 128, 512]
    assert samples[8].size == 3 * 40
    assert samples[512].size == 2 * 40
    cosines = pd.read_parquet(root / "runs" / "width-8-seed0" / "cosines.parquet")
    last = cosines.loc[cosines["epoch"] == 2, "cosine"].to_numpy(dtype=float)
    np.testing.assert_array_equal(samples[8][:40], last)


TREND_VERDICTS = [
    ("paper", "supported"),
    ("reversed", "not supported"),
    ("noise", "inconclusive"),
]


@pytest.mark.parametrize("trend, expected", TREND_VERDICTS, ids=[t for t, _ in TREND_VERDICTS])
def test_claims_follow_the_data(shared_study, trend, expected):
    root = shared_study(trend=trend)

    verdicts = evaluate_claims(run_summary(load_study(root)), WIDTH_DEPTH_CLAIMS)

    assert [v.claim for v in verdicts] == [claim.claim for claim in WIDTH_DEPTH_CLAIMS]
    for verdict in verdicts:
        assert verdict.verdict == expected, verdict
        assert verdict.n_runs == 12


def test_claim_of_absent_experiment_is_inconclusive(shared_study):
    root = shared_study(depths=())

    verdicts = evaluate_claims(run_summary(load_study(root)), WIDTH_DEPTH_CLAIMS)
    by_claim = {verdict.claim: verdict for verdict in verdicts}

    deeper = by_claim["Deeper networks have higher gradient confusion after training"]
    assert deeper.verdict == "inconclusive"
    assert deeper.n_runs == 0
    assert "0 run(s) at 0 distinct x value(s)" in deeper.reason
    assert by_claim["Wider networks have lower gradient confusion after training"].verdict == "supported"


def test_evaluate_claims_rejects_missing_experiment_column():
    claim = TrendClaim("c", "width", "x", "y", 1, experiment_column="sweep")

    with pytest.raises(KeyError, match="column 'sweep' not found"):
        evaluate_claims(pd.DataFrame({"x": [1], "y": [2]}), [claim])
